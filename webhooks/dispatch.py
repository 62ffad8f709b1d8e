"""The dispatcher: moves new event ids from the store's dispatch list to the workers, in batches.

The webhook's request path ends at one durable write (the store's script stores the body and
appends its id to the list). A thread in each web process pops up to BATCH_MAX ids at a time
and sends them as a few `calehr.process_events` tasks, so a burst costs a handful of Celery
publishes instead of one per webhook. An id popped and then lost (this process dies, or the
publish fails) is still in the store's unprocessed set: the sweep sends it after
`stuck_event_seconds`, as it does for a web worker that dies between store and publish.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

import redis

from core.interfaces import TASK_QUEUE
from core.store import EventStore

log = logging.getLogger(__name__)

BATCH_MAX = 100  # ids popped per round
TASK_MAX = 16  # ids per task at most
SPREAD = 4  # a round's ids go out as at least this many tasks (when there are that many ids),
# so that a small burst is spread over the worker processes instead of queueing in one task
WAIT_SECONDS = 1.0  # how long one pop blocks (also how soon a stop is noticed)
LINGER_SECONDS = 0.002  # after the first id, let a burst gather: fewer, fuller tasks
QUEUE_AHEAD = 8  # tasks already waiting in the broker: the workers are busy; the ids wait in
BUSY_PAUSE_SECONDS = 0.02  # the list, where each batch task claims more (worker/tasks.py)
# while the workers stay busy the pause doubles up to this, so that a long backlog (or no
# worker at all) does not cost the web process a Redis round trip every 20 ms
BUSY_PAUSE_MAX_SECONDS = 0.2

SendBatch = Callable[[list[str]], None]


def split(ids: list[str], per_task: int = TASK_MAX, spread: int = SPREAD) -> list[list[str]]:
    """Even chunks, in arrival order: at least `spread` of them (ids allowing), at most
    `per_task` ids each."""
    if not ids:
        return []
    chunks = max(math.ceil(len(ids) / per_task), min(spread, len(ids)))
    size = math.ceil(len(ids) / chunks)
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def broker_busy(store: EventStore, broker_queue: str) -> bool:
    """QUEUE_AHEAD tasks or more wait in the broker: the workers have enough to do."""
    return store.r.llen(broker_queue) >= QUEUE_AHEAD


def dispatch_once(store: EventStore, send: SendBatch, wait: float = WAIT_SECONDS,
                  broker_queue: str | None = None) -> int:
    """One round: pop what is there (waiting up to `wait` s for the first) and send it.
    With `broker_queue`: nothing while that many tasks wait there already (back-pressure)."""
    if broker_queue is not None and broker_busy(store, broker_queue):
        time.sleep(BUSY_PAUSE_SECONDS)
        return 0
    ids = store.take_dispatch(BATCH_MAX, wait)
    if 0 < len(ids) < BATCH_MAX and LINGER_SECONDS > 0:
        time.sleep(LINGER_SECONDS)
        ids += store.take_dispatch(BATCH_MAX - len(ids), 0)
    for chunk in split(ids):
        try:
            send(chunk)
        except Exception as exc:  # noqa: BLE001 - the ids are in the unprocessed set: the sweep sends them
            log.error("dispatch failed, left for the sweep: %s", exc.__class__.__name__,
                      extra={"events": len(chunk)})
    return len(ids)


def start_dispatcher(store: EventStore, send: SendBatch,
                     broker_queue: str | None = TASK_QUEUE) -> threading.Event:
    """A daemon thread running dispatch_once until the returned event is set. While the
    broker queue stays long it checks again after 20, 40, 80 ms ... at most
    BUSY_PAUSE_MAX_SECONDS."""
    stop = threading.Event()

    def run() -> None:
        pause = BUSY_PAUSE_SECONDS
        while not stop.is_set():
            try:
                if broker_queue is not None and broker_busy(store, broker_queue):
                    stop.wait(pause)
                    pause = min(2 * pause, BUSY_PAUSE_MAX_SECONDS)
                    continue
                pause = BUSY_PAUSE_SECONDS
                dispatch_once(store, send)
            except redis.RedisError as exc:  # Redis away: webhooks spool meanwhile
                log.warning("dispatcher cannot reach Redis: %s", exc.__class__.__name__)
                stop.wait(WAIT_SECONDS)
            except Exception:  # noqa: BLE001 - the dispatcher must outlive one bad round
                log.exception("dispatch round failed; will retry")
                stop.wait(WAIT_SECONDS)

    threading.Thread(target=run, name="event-dispatcher", daemon=True).start()
    return stop
