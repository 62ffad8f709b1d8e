"""One inbound HL7 message from the EHR: store it, apply it, answer with an ACK.

Order: read MSH → store encrypted (dedupe on MSH-3, MSH-4, MSH-10) → parse the SIU → apply the
block change → store the ACK → return it. A repeat gets the stored ACK and changes nothing.
ACK codes: AA/AE/AR, or CA/CE/CR when MSH-15 or MSH-16 asks for enhanced mode.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from zoneinfo import ZoneInfo

import redis

from adapters.hl7v2.ack import build_ack
from adapters.hl7v2.charset import codec_for, decode_message, sniff_msh18
from adapters.hl7v2.inbound import Header, InboundError, parse_header, parse_refs, parse_siu
from core.config import Settings, TargetSettings
from core.crypto import Cipher
from core.ehr_echo import Filler
from core.faults import crash_point
from core.inbound_store import InboundStore, dedupe_key
from core.redis_client import make_redis
from core.replication import confirm
from worker.blocking import BlockingService
from worker.ehr_changes import EhrReport, OwnAppointments

log = logging.getLogger(__name__)
ENHANCED = {"AA": "CA", "AE": "CE", "AR": "CR"}


def site_zone(settings: Settings, header: Header) -> ZoneInfo:
    """The zone for times without an offset: the target whose receiving facility is the sender's
    facility, else the one zone all targets share, else UTC."""
    facility = header.sending_facility.split("^")[0].strip().lower()
    for target in settings.targets:
        if facility and target.receiving_facility.lower() == facility:
            return target.zone
    zones = {t.timezone for t in settings.targets}
    return ZoneInfo(zones.pop()) if len(zones) == 1 else ZoneInfo("UTC")


def ehr_target(settings: Settings, header: Header) -> TargetSettings | None:
    """The HL7 target the sender is: its receiving facility (MSH-4) or application (MSH-3)
    names the sender, else the only HL7 target there is."""
    hl7 = sorted((t for t in settings.targets if t.kind in ("mllp", "file")),
                 key=lambda t: t.kind != "mllp")  # the EHR that talks MLLP to us, first
    facility = header.sending_facility.split("^")[0].strip().lower()
    application = header.sending_application.split("^")[0].strip().lower()
    for target in hl7:
        if facility and target.receiving_facility.lower() == facility:
            return target
    for target in hl7:
        if application and target.receiving_application.lower() == application:
            return target
    return hl7[0] if len(hl7) == 1 else None


class Hl7InboundHandler:
    def __init__(self, settings: Settings, client: redis.Redis,
                 on_pending: Callable[[], None] | None = None) -> None:
        cipher = Cipher(settings.security.encryption_keys)
        self.settings = settings
        self.redis = client
        self.store = InboundStore.for_settings(settings, client, cipher)
        self.blocking = BlockingService(settings, client, cipher)
        self.own = OwnAppointments(settings, client, cipher)
        self.known = frozenset(p.ehr_id for p in settings.providers)
        self.on_pending = on_pending

    def handle(self, raw: bytes) -> bytes:
        codec = codec_for(sniff_msh18(raw))
        text = decode_message(raw)
        try:
            header = parse_header(text)
        except InboundError as exc:
            log.warning("inbound message rejected: %s", exc.text,
                        extra={"outcome": "rejected", "ack_code": exc.ack_code})
            return build_ack(text, exc.ack_code, text=exc.text, error_code=exc.error_code).encode(
                codec, "replace")
        ctx = {"control_id": header.control_id[:40]}
        try:
            claim = self.store.claim(raw, source="mllp", kind=f"{header.message_type}^{header.event}",
                                     dedupe=dedupe_key(header.sending_application,
                                                       header.sending_facility, header.control_id))
        except redis.RedisError as exc:
            log.error("inbound store unavailable: %s", exc.__class__.__name__, extra=ctx)
            return self._ack(text, header, "AR", "message store unavailable, send again later",
                             "207", "").encode(codec, "replace")
        if claim.ack is not None:
            log.info("repeat of a stored message: the stored ACK is sent again",
                     extra={**ctx, "outcome": "duplicate"})
            return self._confirmed(claim.ack, text, header, codec)
        crash_point("mllp_after_store")  # stored, no ACK sent: the EHR sends it again
        ack_text, outcome, final = self._process(text, header, claim.message_id)
        ack = ack_text.encode(codec, "replace")
        if final:
            self.store.finish(claim.message_id, outcome, ack)
        log.info("inbound message %s", outcome,
                 extra={**ctx, "outcome": outcome, "ack_code": ack_text.split("MSA|")[1][:2]})
        return self._confirmed(ack, text, header, codec)

    def _confirmed(self, ack: bytes, text: str, header: Header, codec: str) -> bytes:
        """The ACK once a replica holds what it acknowledges, else AR 207: the EHR sends again."""
        try:
            confirm(self.redis, self.settings.redis, self.settings.key_prefix)
        except redis.RedisError as exc:
            log.error("inbound message not confirmed by a replica: %s", exc.__class__.__name__,
                      extra={"control_id": header.control_id[:40], "outcome": "not_replicated"})
            return self._ack(text, header, "AR", "message store not replicated, send again later",
                             "207", "").encode(codec, "replace")
        return ack

    def _process(self, text: str, header: Header, message_id: str) -> tuple[str, str, bool]:
        """(ACK text, outcome code, final). Not final: a repeat of the message is processed again."""
        zone = site_zone(self.settings, header)
        try:
            own = self._own_appointment(text, header, zone)
            if own is not None:
                if own.endswith("_queued") and self.on_pending is not None:
                    self.on_pending()
                return self._ack(text, header, "AA", "", "", message_id), own, True
            change = parse_siu(text, self.known, zone)
            applied = self.blocking.apply(change)
        except InboundError as exc:
            return (self._ack(text, header, exc.ack_code, exc.text, exc.error_code, message_id),
                    f"rejected:{exc.error_code}", True)
        except redis.RedisError as exc:
            log.error("busy block store unavailable: %s", exc.__class__.__name__,
                      extra={"control_id": header.control_id[:40]})
            return (self._ack(text, header, "AR", "busy block store unavailable, send again later",
                              "207", message_id), "store_unavailable", False)
        if applied.api_pending and self.on_pending is not None:
            self.on_pending()
        return self._ack(text, header, "AA", "", "", message_id), applied.outcome, True

    def _own_appointment(self, text: str, header: Header, zone: ZoneInfo) -> str | None:
        """The outcome when the SIU is about a Cal.com booking of ours, else None."""
        if header.message_type != "SIU":
            return None
        try:
            refs = parse_refs(text, zone)
        except InboundError:
            return None  # parse_siu names the problem
        target = ehr_target(self.settings, header)
        key = self.own.key_for(refs.placer_id, refs.placer_namespace, refs.filler_id, target)
        if key is None:
            return None
        filler = Filler(refs.filler_id, refs.filler_namespace) if refs.filler_id else None
        return self.own.handle(key, target, EhrReport(
            event=refs.event, start=refs.start, end=refs.end, status=refs.status,
            reason=refs.reason, filler=filler, origin=f"hl7:{refs.event}"))

    @staticmethod
    def _ack(text: str, header: Header, code: str, reason: str, error_code: str,
             message_id: str) -> str:
        code = ENHANCED[code] if header.enhanced else code
        control_id = "A" + hashlib.sha256(message_id.encode()).hexdigest()[:19].upper() \
            if message_id else ""
        return build_ack(text, code, text=reason, error_code=error_code, control_id=control_id)


class InboundApp:
    """What `calehr mllp` runs besides the socket: the handler and the api strategy's sync loop."""

    SYNC_INTERVAL = 5.0

    def __init__(self, settings: Settings) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kick: asyncio.Event | None = None
        self.handler = Hl7InboundHandler(settings, make_redis(settings), on_pending=self._wake)

    def _wake(self) -> None:
        if self._loop is not None and self._kick is not None:
            self._loop.call_soon_threadsafe(self._kick.set)

    async def sync_loop(self, stop: asyncio.Event) -> None:
        """Create and cancel Cal.com blocker bookings for api-strategy providers, and make the
        EHR's changes to Cal.com bookings in Cal.com, until `stop`."""
        sync = self.handler.blocking.sync
        own = self.handler.own
        if not sync.providers and not own.settings.calcom.api_key:
            return
        self._loop, self._kick = asyncio.get_running_loop(), asyncio.Event()
        while not stop.is_set():
            self._kick.clear()
            try:
                if sync.providers:
                    await asyncio.to_thread(sync.run_pending)
                await asyncio.to_thread(own.run_pending)
            except redis.RedisError as exc:
                log.error("blocker sync: Redis unavailable: %s", exc.__class__.__name__)
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one failure
                log.error("blocker sync failed: %s", exc.__class__.__name__)
            waits = [asyncio.ensure_future(self._kick.wait()), asyncio.ensure_future(stop.wait())]
            _, pending = await asyncio.wait(waits, timeout=self.SYNC_INTERVAL,
                                            return_when=asyncio.FIRST_COMPLETED)
            for fut in pending:
                fut.cancel()
