"""WSGI entry for gunicorn: `gunicorn calehr.wsgi:app`. Settings are read here, once."""

from calehr.web import create_app
from core.heartbeat import start_heartbeat
from core.logging import setup_logging
from core.sentry import init_sentry

setup_logging()
init_sentry("web")
app = create_app()
start_heartbeat(app.extensions["calehr"].settings, "web")  # per gunicorn worker
