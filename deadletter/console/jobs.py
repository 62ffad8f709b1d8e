"""Bulk replay jobs: a record in Redis that a runner thread updates as it goes.

Ids move todo -> doing -> (replayed | refused), so a runner that died (web process
restarted) leaves a resumable job; replaying twice is harmless because `replay` only
takes open dead letters and refuses the rest.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import uuid
from collections import Counter
from dataclasses import dataclass

import redis

from core import clock
from core.deadletters import DeadLetterStore
from core.runtime import Runtime
from deadletter.replay import ReplayError, replay

log = logging.getLogger(__name__)
KEEP_SECONDS = 14 * 86400
STALLED_AFTER = 30.0


@dataclass(frozen=True)
class BulkReplayJob:
    id: str
    actor: str
    state: str  # running | done
    total: int
    replayed: int
    refused: int
    created_at: float
    updated_at: float
    finished_at: float
    filters: dict[str, str]

    @property
    def handled(self) -> int:
        return self.replayed + self.refused

    @property
    def stalled(self) -> bool:
        return self.state == "running" and clock.now() - self.updated_at > STALLED_AFTER


class BulkReplayJobs:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.r = client
        self.p = f"{prefix}:console:job"

    def _k(self, job_id: str, part: str = "") -> str:
        return f"{self.p}:{job_id}" + (f":{part}" if part else "")

    def create(self, actor: str, ids: list[str], filters: dict[str, str]) -> str:
        job_id = "job_" + uuid.uuid4().hex[:12]
        now = repr(clock.now())
        pipe = self.r.pipeline()
        pipe.hset(self._k(job_id), mapping={
            "id": job_id, "actor": actor, "state": "running" if ids else "done",
            "total": len(ids), "replayed": 0, "refused": 0, "created_at": now,
            "updated_at": now, "finished_at": now if not ids else 0,
            "filters": json.dumps(filters)})
        if ids:
            pipe.rpush(self._k(job_id, "ids"), *ids)
            pipe.rpush(self._k(job_id, "todo"), *ids)
        for part in ("", "ids", "todo"):
            pipe.expire(self._k(job_id, part), KEEP_SECONDS)
        pipe.execute()
        return job_id

    def get(self, job_id: str) -> BulkReplayJob | None:
        data = {k.decode(): v.decode() for k, v in self.r.hgetall(self._k(job_id)).items()}
        if not data:
            return None
        return BulkReplayJob(
            id=data["id"], actor=data["actor"], state=data["state"], total=int(data["total"]),
            replayed=int(data["replayed"]), refused=int(data["refused"]),
            created_at=float(data["created_at"]), updated_at=float(data["updated_at"]),
            finished_at=float(data["finished_at"]), filters=json.loads(data["filters"]))

    def ids(self, job_id: str) -> list[str]:
        return [i.decode() for i in self.r.lrange(self._k(job_id, "ids"), 0, -1)]

    def refusals(self, job_id: str, limit: int = 200) -> list[dict[str, str]]:
        return [json.loads(r) for r in self.r.lrange(self._k(job_id, "refusals"), 0, limit - 1)]

    def dead_letter_states(self, job_id: str, store: DeadLetterStore) -> Counter[str]:
        """How the job's dead letters stand now (replayed = still in flight)."""
        return Counter(store.states(self.ids(job_id)))

    # the runner ---------------------------------------------------------------------------
    def claim(self, job_id: str, token: str) -> bool:
        if not self.r.set(self._k(job_id, "runner"), token, nx=True, ex=int(STALLED_AFTER)):
            return False
        doing = self._k(job_id, "doing")  # a dead runner's half-done item goes first again
        while item := self.r.lmove(doing, self._k(job_id, "todo"), "RIGHT", "LEFT"):
            self.r.sadd(self._k(job_id, "resumed"), item)
            self.r.expire(self._k(job_id, "resumed"), KEEP_SECONDS)
        return True

    def was_half_done(self, job_id: str, dl_id: str) -> bool:
        """A dead runner had taken this item: its replay may have gone through."""
        return bool(self.r.sismember(self._k(job_id, "resumed"), dl_id))

    def next_id(self, job_id: str, token: str) -> str | None:
        if (self.r.get(self._k(job_id, "runner")) or b"").decode() != token:
            return None  # lost the claim: another runner took over
        self.r.expire(self._k(job_id, "runner"), int(STALLED_AFTER))
        item = self.r.lmove(self._k(job_id, "todo"), self._k(job_id, "doing"), "LEFT", "RIGHT")
        return item.decode() if item else None

    def handled(self, job_id: str, dl_id: str, error: str | None) -> None:
        pipe = self.r.pipeline()
        pipe.lrem(self._k(job_id, "doing"), 1, dl_id)
        pipe.hincrby(self._k(job_id), "refused" if error else "replayed", 1)
        pipe.hset(self._k(job_id), "updated_at", repr(clock.now()))
        if error:
            pipe.rpush(self._k(job_id, "refusals"), json.dumps({"id": dl_id, "error": error}))
            pipe.expire(self._k(job_id, "refusals"), KEEP_SECONDS)
        pipe.execute()

    def finish(self, job_id: str, token: str) -> None:
        if self.r.llen(self._k(job_id, "todo")) or self.r.llen(self._k(job_id, "doing")):
            return
        now = repr(clock.now())
        self.r.hset(self._k(job_id), mapping={"state": "done", "finished_at": now,
                                              "updated_at": now})
        if (self.r.get(self._k(job_id, "runner")) or b"").decode() == token:
            self.r.delete(self._k(job_id, "runner"))


def run_job(jobs: BulkReplayJobs, rt: Runtime, job_id: str, actor: str) -> None:
    token = secrets.token_hex(8)
    if not jobs.claim(job_id, token):
        return
    while (dl_id := jobs.next_id(job_id, token)) is not None:
        try:
            replay(rt, dl_id, actor)
            jobs.handled(job_id, dl_id, None)
        except ReplayError as exc:  # ids and states only, no PHI
            done_before = jobs.was_half_done(job_id, dl_id) and \
                rt.deadletters.states([dl_id])[0] in ("replayed", "resolved")
            jobs.handled(job_id, dl_id, None if done_before else str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the job
            log.exception("bulk replay item failed", extra={"dead_letter_id": dl_id})
            jobs.handled(job_id, dl_id, f"internal error: {exc.__class__.__name__}")
    jobs.finish(job_id, token)


def start_job_thread(jobs: BulkReplayJobs, rt: Runtime, job_id: str, actor: str) -> None:
    thread = threading.Thread(target=run_job, args=(jobs, rt, job_id, actor),
                              name=f"bulk-replay-{job_id}", daemon=True)
    thread.start()
