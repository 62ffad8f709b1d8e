"""Celery entry point: `celery -A calehr.celery_app worker`. Settings are read here, once."""

from core.config import Settings
from core.logging import setup_logging
from core.sentry import init_sentry
from worker.factory import make_celery

setup_logging()
init_sentry("worker")
app = make_celery(Settings.load(), with_tasks=True)
