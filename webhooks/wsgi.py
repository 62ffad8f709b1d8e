"""WSGI entry for gunicorn: `gunicorn webhooks.wsgi:app`. Settings are read here, once."""

from core.logging import setup_logging
from webhooks import create_app

setup_logging()
app = create_app()
