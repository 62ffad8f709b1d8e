"""[redis] replicas_to_confirm: nothing is acknowledged before a replica holds it (Redis WAIT).
Real redis-server master and replica; the replica is detached (REPLICAOF NO ONE) to stand for
one that has fallen behind or is gone."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from adapters.hl7v2.ack import build_ack
from bench.sentinel_set import SentinelSet
from calehr.web import create_app
from core.config import Settings
from core.redis_client import make_redis
from core.replication import NotReplicated, confirm
from core.runtime import Runtime
from tests.adapters.hl7v2.inbound_samples import siu
from tests.support import config_text, fixture_bytes, free_port, mllp_target, sign
from worker import pipeline
from worker.delivery import drain
from worker.hl7_inbound import Hl7InboundHandler

CONFIRM = "\n[redis]\nreplicas_to_confirm = 1\nreplica_wait_ms = 300\n"


class Pair:
    def __init__(self, tmp: Path) -> None:
        self.set = SentinelSet(tmp, replicas=1)
        self.master, self.replica_port = self.set.ports
        self.set.start_node(self.master)
        self.set.start_node(self.replica_port, replica_of=self.master)
        self.set.wait_replicated(self.master)
        self.url = f"redis://127.0.0.1:{self.master}/0"
        self.replica = redis.Redis(port=self.replica_port, socket_timeout=5)

    def detach(self) -> None:
        self.replica.execute_command("REPLICAOF", "NO", "ONE")

    def attach(self) -> None:
        self.replica.execute_command("REPLICAOF", "127.0.0.1", str(self.master))
        self.set.wait_replicated(self.master)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    p = Pair(tmp_path_factory.mktemp("pair"))
    yield p
    p.set.stop()


@pytest.fixture
def attached(pair: Pair) -> Pair:
    redis.Redis(port=pair.master).flushall()
    if pair.set.role(pair.replica_port) == "master":
        pair.attach()
    return pair


def settings_for(tmp_path: Path, url: str, extra_targets: str = "", routes: str | None = None,
                 confirm_text: str = CONFIRM) -> Settings:
    text = config_text(tmp_path / "outbox", extra_targets=extra_targets, routes=routes)
    return Settings.from_toml(text + confirm_text, {"REDIS_URL": url})


def test_confirm_waits_for_the_replica_and_raises_a_redis_error_without_one(attached, tmp_path):
    settings = settings_for(tmp_path, attached.url)
    client = make_redis(settings)
    client.set("k", "v")
    confirm(client, settings.redis)  # the replica holds it
    assert attached.replica.get("k") == b"v"
    attached.detach()
    with pytest.raises(NotReplicated) as caught:
        confirm(client, settings.redis)
    assert isinstance(caught.value, redis.RedisError) and caught.value.got == 0
    off = settings_for(tmp_path, attached.url, confirm_text="")
    confirm(client, off.redis)  # off by default: no WAIT at all


def test_webhook_is_spooled_not_acknowledged_from_redis_when_no_replica_confirms(attached,
                                                                                 tmp_path):
    client = create_app(settings_for(tmp_path, attached.url)).test_client()
    body = fixture_bytes("02_booking_created.json")
    headers = {"Content-Type": "application/json", "X-Cal-Signature-256": sign(body)}
    stored = client.post("/webhooks/calcom", data=body, headers=headers)
    assert stored.status_code == 202 and stored.get_json()["event_id"]
    attached.detach()
    other = fixture_bytes("04_booking_rescheduled.json")
    spooled = client.post("/webhooks/calcom", data=other, headers={
        "Content-Type": "application/json", "X-Cal-Signature-256": sign(other)})
    assert spooled.status_code == 202 and spooled.get_json()["spooled"] is True


def test_mllp_message_gets_ar_207_until_a_replica_confirms_it(attached, tmp_path):
    settings = settings_for(tmp_path, attached.url)
    handler = Hl7InboundHandler(settings, make_redis(settings))
    attached.detach()
    refused = handler.handle(siu("S12", "EHR-REPL-1")).decode()
    assert "MSA|AR|EHR-REPL-1" in refused and "207" in refused.split("ERR|")[1]
    attached.attach()
    again = handler.handle(siu("S12", "EHR-REPL-1")).decode()  # the EHR sends it again
    assert "MSA|AA|EHR-REPL-1" in again


def _ehr_that_detaches(pair: Pair, port: int, received: list[bytes]) -> threading.Thread:
    """An EHR that takes one message, then the replica falls away, then it answers AA."""
    server = socket.create_server(("127.0.0.1", port))

    def serve() -> None:
        conn, _ = server.accept()
        with conn, server:
            data = b""
            while not data.endswith(b"\x1c\r"):
                data += conn.recv(65536)
            received.append(data)
            pair.detach()
            ack = build_ack(data.strip(b"\x0b\x1c\r").decode(), "AA")
            conn.sendall(b"\x0b" + ack.encode() + b"\x1c\r")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_delivery_is_retried_when_its_done_record_is_not_confirmed(attached, tmp_path):
    port = free_port()
    settings = settings_for(tmp_path, attached.url, mllp_target(port),
                            routes='[[routes]]\ntargets = ["ehr"]\n')
    kicks: list[tuple[str, str]] = []
    rt = Runtime.build(settings, kick=lambda k, t, c: kicks.append((k, t)),
                       reprocess=lambda *a: None)
    received: list[bytes] = []
    ehr = _ehr_that_detaches(attached, port, received)
    event_id, _ = rt.store.put(fixture_bytes("02_booking_created.json"), "BOOKING_CREATED")
    assert pipeline.process_event(rt, event_id) == "accepted"
    ehr.join(10)
    assert len(received) == 1
    key = rt.store.get(event_id).appointment_key
    assert kicks == [(key, "ehr")]  # not confirmed: the drain task runs again
    with pytest.raises(NotReplicated):  # the lock itself is not taken while no replica confirms
        drain(rt, key, "ehr")
    attached.attach()
    assert drain(rt, key, "ehr") == "empty"  # the record held: nothing is sent twice
    assert len(received) == 1


def test_fhir_inbound_answers_503_until_a_replica_confirms(attached, tmp_path):
    from tests.webhooks.test_fhir_inbound import TOKEN, appointment

    settings = settings_for(tmp_path, attached.url,
                            confirm_text=CONFIRM + f'\n[inbound]\nfhir_token = "{TOKEN}"\n')
    client = create_app(settings).test_client()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/fhir+json"}
    attached.detach()
    refused = client.post("/fhir/Appointment", json=appointment(), headers=headers)
    assert refused.status_code == 503
    attached.attach()
    stored = client.post("/fhir/Appointment", json=appointment(), headers=headers)
    assert stored.status_code in (200, 201), stored.get_data(as_text=True)
