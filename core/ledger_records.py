"""Delivery records in the ledger: one hash per delivery, its attempts, wire and answers.

A mixin of `Ledger` (core/ledger.py): the ledger decides, these read and write one record.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from core import clock
from core.crypto import Cipher
from core.deliveries import Delivery
from core.ledger_scripts import START_ATTEMPT, UNSTART_ATTEMPT
from core.redis_client import queue_script


class DeliveryRecords:
    r: redis.Redis
    cipher: Cipher
    p: str

    def _init_records(self) -> None:
        self._start_attempt = self.r.register_script(START_ATTEMPT)
        self._unstart = self.r.register_script(UNSTART_ATTEMPT)

    def delivery_key(self, delivery_id: str) -> str:
        return f"{self.p}:delivery:{delivery_id}"

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        pipe = self.r.pipeline(transaction=False)  # one round trip for the record and history
        self.queue_delivery_read(pipe, delivery_id)
        data, attempts = pipe.execute()
        return Delivery.from_record(delivery_id, data, attempts)

    def queue_delivery_read(self, pipe: Any, delivery_id: str) -> None:
        """Two answers for `Delivery.from_record`: the record and its attempts."""
        pipe.hgetall(self.delivery_key(delivery_id))
        pipe.lrange(self.delivery_key(delivery_id) + ":attempts", 0, -1)

    def update_delivery(self, delivery_id: str, **fields: Any) -> None:
        fields["updated_at"] = repr(clock.now())
        clean = {k: (int(v) if isinstance(v, bool) else v) for k, v in fields.items()}
        self.r.hset(self.delivery_key(delivery_id), mapping=clean)

    def record_attempt(self, delivery_id: str, entry: dict[str, Any]) -> None:
        self.r.rpush(self.delivery_key(delivery_id) + ":attempts", json.dumps(entry))

    def store_wire(self, delivery_id: str, wire: bytes) -> None:
        self.r.hset(self.delivery_key(delivery_id), "wire", self.cipher.encrypt(wire))

    def wire(self, delivery_id: str) -> bytes | None:
        token = self.r.hget(self.delivery_key(delivery_id), "wire")
        return self.cipher.decrypt(token) if token else None

    def store_response(self, delivery_id: str, text: str) -> None:
        """The EHR's last answer (ACK with ERR, OperationOutcome): may echo PHI, so encrypted."""
        self.r.hset(self.delivery_key(delivery_id), "response", self.cipher.encrypt(text.encode()))

    def response(self, delivery_id: str) -> str | None:
        token = self.r.hget(self.delivery_key(delivery_id), "response")
        return self.cipher.decrypt(token).decode() if token else None

    def set_override(self, delivery_id: str, wire: bytes | None) -> None:
        if wire is None:
            self.r.hdel(self.delivery_key(delivery_id), "override")
        else:
            self.r.hset(self.delivery_key(delivery_id), "override", self.cipher.encrypt(wire))

    def override(self, delivery_id: str) -> bytes | None:
        token = self.r.hget(self.delivery_key(delivery_id), "override")
        return self.cipher.decrypt(token) if token else None

    def deliveries_for_event(self, event_id: str) -> list[str]:
        return [d.decode() for d in self.r.smembers(f"{self.p}:event-deliveries:{event_id}")]

    def queue_start_attempt(self, pipe: Any, delivery_id: str) -> None:
        """`start_attempt` in the caller's pipeline: its answer is the attempt number."""
        queue_script(pipe, self._start_attempt, [self.delivery_key(delivery_id)],
                     [repr(clock.now())])

    def unstart_attempt(self, delivery_id: str) -> None:
        """An attempt started in a batch that was not sent after all (see UNSTART_ATTEMPT)."""
        self._unstart(keys=[self.delivery_key(delivery_id)], args=[repr(clock.now())])
