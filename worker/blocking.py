"""Apply a BlockChange from the EHR: busy blocks, conflicts, and the api strategy's queue.

Used by the MLLP listener and the FHIR inbound endpoint, right after the message is stored.
"""

from __future__ import annotations

import logging

import redis

from core.blocks import BLOCK, MOVE, NONE, RELEASE, Block, BlockChange, BusyBlockStore
from core.config import ProviderSettings, Settings
from core.conflicts import ConflictChecker
from core.crypto import Cipher
from core.deadletters import DeadLetterStore
from core.interfaces import Applied
from worker.blocker_sync import BlockerSync

log = logging.getLogger(__name__)


class BlockingService:
    def __init__(self, settings: Settings, client: redis.Redis, cipher: Cipher) -> None:
        prefix = settings.key_prefix
        self.settings = settings
        self.providers: dict[str, ProviderSettings] = {p.ehr_id: p for p in settings.providers}
        self.blocks = BusyBlockStore(client, prefix)
        deadletters = DeadLetterStore(client, cipher, prefix)
        self.conflicts = ConflictChecker(client, cipher, prefix)
        self.sync = BlockerSync(settings, client, self.blocks, deadletters)

    def sync_now(self, members: list[str]) -> int:
        """Push these `provider|uid` blocks to Cal.com now (short timeouts; failures stay queued)."""
        return self.sync.run(members)

    def apply(self, change: BlockChange) -> Applied:
        if change.action == NONE:
            return Applied("nothing")
        uid = change.uid
        if change.action == RELEASE:
            removed = self.blocks.release(uid)
            # every api provider, not only those released now: a resend after a crash between
            # the release and the mark finds nothing to release but must still cancel
            pending = [self.sync.mark(p, uid) for p in {*self.sync.providers, *(b.provider for b in removed)}]
            log.info("busy block released", extra={"outcome": "released"})
            return Applied("released" if removed else "nothing",
                           tuple(b.provider for b in removed), api_pending=any(pending))
        if change.action not in (BLOCK, MOVE) or change.start is None or change.end is None:
            raise ValueError(f"cannot apply {change.action} without start and end")
        dropped = self.blocks.owners(uid) - set(change.providers)
        pending = [self.sync.mark(b.provider, uid) for b in self.blocks.release(uid, dropped)]
        changed_any, moved, conflicts = False, False, 0
        for ehr_id in change.providers:
            changed, previous = self.blocks.upsert(ehr_id, uid, change.start, change.end,
                                                   change.origin.partition(":")[0])
            changed_any = changed_any or changed
            moved = moved or (changed and previous is not None)
            # also when unchanged: a resend after a crash between the upsert and these steps
            # must finish them (both are idempotent: a set member, a conflict seen once)
            pending.append(self.sync.mark(ehr_id, uid))
            block = Block(ehr_id, uid, change.start, change.end, 0, change.origin, 0.0)
            conflicts += len(self.conflicts.check_block(self.providers[ehr_id], block))
        outcome = ("moved" if moved else "blocked") if changed_any else "unchanged"
        log.info("busy block %s", outcome, extra={"outcome": outcome})
        return Applied(outcome, change.providers, conflicts, any(pending))
