"""WSGI entry for gunicorn: `gunicorn calehr.wsgi:app`. Settings are read here, once."""

from calehr.web import create_app
from core.logging import setup_logging
from core.sentry import init_sentry

setup_logging()
init_sentry("web")
app = create_app()
