"""The `api` strategy: make Cal.com hold a blocker booking for each busy block, and no other.

Each change marks (provider, block uid) as pending. `sync_one` compares what should be (the
busy block) with what Cal.com holds (our record of the blocker booking) and creates or cancels
to match, writing the echo ledger before every call. A failed call leaves the item pending for
the next run; a refusal that will not change (4xx) becomes a conflict for a person.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

import redis

from adapters.calcom import api as calcom_api
from adapters.calcom.api import BlockerApi
from adapters.calcom.http import CalcomApiError
from core.blocks import Block, BusyBlockStore
from core.config import ProviderSettings, Settings
from core.deadletters import DeadLetterStore

log = logging.getLogger(__name__)


class BlockerSync:
    def __init__(self, settings: Settings, client: redis.Redis, blocks: BusyBlockStore,
                 deadletters: DeadLetterStore, api: BlockerApi | None = None) -> None:
        self.settings = settings
        self.r = client
        self.p = settings.key_prefix
        self.blocks = blocks
        self.deadletters = deadletters
        self.api = api or BlockerApi(settings.calcom)
        self.providers = {p.ehr_id: p for p in settings.providers if p.strategy == "api"}

    @property
    def pending_key(self) -> str:
        return f"{self.p}:blocker:pending"

    def _held_key(self, provider: str, uid: str) -> str:
        return f"{self.p}:blocker:held:{provider}|{uid}"

    def mark(self, provider: str, uid: str) -> bool:
        """Queue a sync if this provider uses the api strategy."""
        if provider not in self.providers:
            return False
        self.r.sadd(self.pending_key, f"{provider}|{uid}")
        return True

    def run_pending(self, limit: int = 200) -> int:
        """Sync every pending item once. Returns how many are done."""
        return self.run([m.decode() for m in self.r.srandmember(self.pending_key, limit) or []])

    def run(self, members: list[str]) -> int:
        """Sync these `provider|uid` items now; what fails stays pending."""
        done = 0
        for member in members:
            provider, _, uid = member.partition("|")
            if provider not in self.providers:
                self.r.srem(self.pending_key, member)
                continue
            # removed only once in sync, so a crash here leaves it pending; looked at again
            # after the removal, so a change (and its mark) made meanwhile is not lost either
            if self.sync_one(provider, uid) and self._in_sync(provider, uid):
                self.r.srem(self.pending_key, member)
                if self._in_sync(provider, uid):
                    done += 1
                else:  # changed while we worked: go again next run
                    self.r.sadd(self.pending_key, member)
        return done

    def sync_one(self, provider_id: str, uid: str) -> bool:
        provider = self.providers.get(provider_id)
        if provider is None:
            return True  # no longer an api provider: nothing to hold
        lock = self.r.lock(f"{self.p}:lock:blocker:{provider_id}|{uid}", timeout=60,
                           blocking=False)
        if not lock.acquire():
            return False
        try:
            return self._reconcile(provider, uid)
        except CalcomApiError as exc:
            if exc.transient:
                log.warning("blocker sync failed, will retry: %s", exc,
                            extra={"target": "calcom-api", "outcome": "retry"})
                return False
            self._refused(provider, uid, exc)
            return True
        finally:
            lock.release()

    def _reconcile(self, provider: ProviderSettings, uid: str) -> bool:
        want = self.blocks.get(provider.ehr_id, uid)
        held = self._held(provider.ehr_id, uid)
        if want and held and held["start"] == _iso(want.start) and held["end"] == _iso(want.end):
            return True
        if held and held["booking_uid"]:
            calcom_api.expect_cancel(self.r, self.p, held["booking_uid"], uid)
            self.api.cancel(held["booking_uid"])
            log.info("blocker cancelled", extra={"target": "calcom-api", "outcome": "cancelled"})
        if held:
            self.r.delete(self._held_key(provider.ehr_id, uid))
        if want:
            self._create(provider, want)
        return True

    def _create(self, provider: ProviderSettings, block: Block) -> None:
        calcom_api.expect_create(self.r, self.p, provider, block.start, block.uid)
        try:
            booking_uid = self.api.create(provider, block.start, block.end, block.uid)
        except CalcomApiError:
            if not self._still_wanted(provider, block):
                calcom_api.forget_slot(self.r, self.p, provider, block.start)
            raise
        calcom_api.created(self.r, self.p, provider, block.start, block.end, booking_uid,
                           block.uid)
        self.r.set(self._held_key(provider.ehr_id, block.uid), json.dumps(
            {"booking_uid": booking_uid, "start": _iso(block.start), "end": _iso(block.end)}))
        log.info("blocker created", extra={"target": "calcom-api", "outcome": "created"})

    def _still_wanted(self, provider: ProviderSettings, block: Block) -> bool:
        now = self.blocks.get(provider.ehr_id, block.uid)
        return now is not None and now.start == block.start

    def _held(self, provider: str, uid: str) -> dict[str, str] | None:
        raw = self.r.get(self._held_key(provider, uid))
        return json.loads(raw) if raw else None

    def _in_sync(self, provider: str, uid: str) -> bool:
        want, held = self.blocks.get(provider, uid), self._held(provider, uid)
        if want is None or held is None:
            return want is None and held is None
        return held["start"] == _iso(want.start) and held["end"] == _iso(want.end)

    def _refused(self, provider: ProviderSettings, uid: str, exc: CalcomApiError) -> None:
        """Cal.com will not hold this time: a person decides. Not retried until the block moves."""
        want = self.blocks.get(provider.ehr_id, uid)
        if want is not None:
            self.r.set(self._held_key(provider.ehr_id, uid), json.dumps(
                {"booking_uid": "", "start": _iso(want.start), "end": _iso(want.end)}))
        dl_id = self.deadletters.add(
            stage="conflict", error_code="calcom_refused_blocker", error_class="CalcomApiError",
            error_text=(f"Cal.com refused the blocker booking for EHR block {uid}, provider "
                        f"{provider.ehr_id}: {exc} (the ICS feed still shows the block)"),
            target=provider.ehr_id)
        log.warning("blocker refused by Cal.com", extra={"dead_letter_id": dl_id,
                                                         "target": "calcom-api",
                                                         "outcome": "refused"})


def _iso(value: datetime) -> str:
    return calcom_api.utc_iso(value)
