"""A drain whose lock vanished (expired, or lost with a Redis master in a failover) stops after
the message in hand instead of draining on beside the worker that may hold the queue now."""

from __future__ import annotations

import socket
import threading

from adapters.hl7v2.ack import build_ack
from core.config import Settings
from core.runtime import Runtime
from tests.support import config_text, fixture_bytes, free_port, mllp_target
from worker import pipeline
from worker.delivery import drain


def ehr(port: int, received: list[str], on_first) -> threading.Thread:  # noqa: ANN001
    """An EHR answering AA to each message; `on_first` runs before the first answer."""
    server = socket.create_server(("127.0.0.1", port))

    def serve() -> None:
        with server:
            while True:
                conn, _ = server.accept()
                with conn:
                    data = b""
                    while not data.endswith(b"\x1c\r"):
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    if not data:
                        continue
                    text = data.strip(b"\x0b\x1c\r").decode()
                    received.append(text.split("|")[8].split("^")[1])  # MSH-9's trigger
                    if len(received) == 1:
                        on_first()
                    conn.sendall(b"\x0b" + build_ack(text, "AA").encode() + b"\x1c\r")
                    if len(received) >= 2:
                        return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_a_drain_that_lost_its_lock_stops_and_the_next_drain_goes_on_in_order(tmp_path,
                                                                              redis_url, rclient):
    port = free_port()
    text = config_text(tmp_path / "outbox", extra_targets=mllp_target(port),
                       routes='[[routes]]\ntargets = ["ehr", "files"]\n')
    (tmp_path / "outbox").mkdir()
    settings = Settings.from_toml(text, {"REDIS_URL": redis_url})
    rt = Runtime.build(settings, kick=lambda *a: None, reprocess=lambda *a: None)
    ids = [rt.store.put(fixture_bytes(name), trigger)[0] for name, trigger in
           (("02_booking_created.json", "BOOKING_CREATED"),
            ("04_booking_rescheduled.json", "BOOKING_RESCHEDULED"))]
    for event_id in ids:  # two targets: queued and kicked, not drained inline
        assert pipeline.process_event(rt, event_id) == "accepted"
    key = rt.store.get(ids[0]).appointment_key
    assert rt.store.get(ids[1]).appointment_key == key
    lock = rt.ledger.lock_name(f"drain:{key}|ehr")
    received: list[str] = []
    server = ehr(port, received, on_first=lambda: rclient.delete(lock))

    assert drain(rt, key, "ehr") == "lost-lock"
    assert len(received) == 1  # the second waits for a drain that holds the lock
    assert drain(rt, key, "ehr") == "empty"
    server.join(10)
    assert received == ["S12", "S13"]  # created, then rescheduled: in order, once each
