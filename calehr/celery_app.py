"""Celery entry point: `celery -A calehr.celery_app worker`. Settings are read here, once."""

from core.config import Settings
from core.logging import setup_logging
from core.sentry import init_sentry
from worker.factory import make_celery
from worker.heartbeats import install_heartbeats

setup_logging()
init_sentry("worker")
settings = Settings.load()
app = make_celery(settings, with_tasks=True)
install_heartbeats(settings)
