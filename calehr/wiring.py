"""Concrete classes wired to the interfaces in core/interfaces.py: only the composition root
imports the worker's services for the web app and the MLLP listener."""

from __future__ import annotations

import redis

from adapters.hl7v2.mllp_server import Background, Handler
from core.config import Settings
from core.crypto import Cipher
from core.interfaces import BusyBlocks, EhrChanges


def ehr_services(settings: Settings, client: redis.Redis, cipher: Cipher) -> tuple[BusyBlocks, EhrChanges]:
    from worker.blocking import BlockingService
    from worker.ehr_changes import OwnAppointments

    return BlockingService(settings, client, cipher), OwnAppointments(settings, client, cipher)


def inbound_mllp_app(settings: Settings) -> tuple[Handler, Background]:
    from worker.hl7_inbound import InboundApp

    app = InboundApp(settings)
    return app.handler.handle, app.sync_loop
