from __future__ import annotations

import redis
from cryptography.fernet import Fernet

from core.crypto import Cipher
from core.store import EventStore
from tests.support import fixture_bytes


def test_body_is_encrypted_and_deduplicated(rclient: redis.Redis):
    store = EventStore(rclient, Cipher([Fernet.generate_key().decode()]))
    body = fixture_bytes("02_booking_created.json")
    event_id, dup = store.put(body, "BOOKING_CREATED")
    again, dup2 = store.put(body, "BOOKING_CREATED")
    assert (dup, dup2, again) == (False, True, event_id)
    raw = rclient.hget(f"calehr:event:{event_id}", "body")
    assert b"Reyes" not in raw and b"jordan" not in raw
    assert store.get(event_id).body == body


def test_rotation_new_key_first_old_still_reads(rclient: redis.Redis):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    body = fixture_bytes("03_booking_requested.json")
    event_id, _ = EventStore(rclient, Cipher([old])).put(body, "BOOKING_REQUESTED")
    rotated = EventStore(rclient, Cipher([new, old]))
    assert rotated.get(event_id).body == body
    assert rotated.rotate() == 1
    assert EventStore(rclient, Cipher([new])).get(event_id).body == body
