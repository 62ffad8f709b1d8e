"""Redis down at ingest: signed webhooks are spooled to disk, then delivered once, in order."""

from __future__ import annotations

import json
from pathlib import Path

import hl7
import pytest

from core.crypto import Cipher
from core.embedded_redis import EmbeddedRedis
from core.spool import IngestSpool
from tests.factories import appointment_bodies, placer_of
from tests.support import KEY, PHI_STRINGS, config_text, post_signed, wait_for


def outbox_messages(outbox: Path) -> list[tuple[str, str]]:
    out = []
    for path in sorted(outbox.glob("*.hl7")):
        msg = hl7.parse(path.read_bytes().decode("utf-8"))
        out.append((str(msg["SCH.F1.R1.C1"]), str(msg["MSH.F9.R1.C2"])))
    return out


@pytest.mark.slow
def test_redis_down_twenty_webhooks_spooled_then_all_delivered_once_in_order(
        tmp_path, stack, outbox):
    own = EmbeddedRedis(tmp_path / "own-redis")
    own.start()
    try:
        stack.redis_url = own.url
        stack.write_config(config_text(outbox) + "\n[spool]\ndrain_interval_seconds = 0.2\n")
        base = stack.web()
        stack.worker()
        own.stop()
        bodies = []
        for i in range(10):
            b = appointment_bodies(i, "S")
            bodies += [b["created"], b["rescheduled"]]
        answers = [post_signed(base, body) for body in bodies]
        assert [a.status_code for a in answers] == [202] * 20
        assert all(a.json()["spooled"] for a in answers)
        spool_dir = tmp_path / "var" / "spool"
        raw = b"".join(p.read_bytes() for p in spool_dir.glob("*.spool"))
        assert not any(s.encode() in raw for s in PHI_STRINGS)  # encrypted on disk
        assert IngestSpool(spool_dir, Cipher((KEY,)), 10**9).pending() == 20

        own.start()
        got = wait_for(lambda: len(m := outbox_messages(outbox)) >= 20 and m, 90, 0.2,
                       "all 20 spooled webhooks delivered")
        assert len(got) == 20
        for i in range(10):
            assert [e for p, e in got if p == placer_of(i, "S")] == ["S12", "S13"]
        wait_for(lambda: not list(spool_dir.glob("*.spool")), 10, message="spool emptied")
        ready = json.loads(__import__("requests").get(f"{base}/readyz", timeout=5).text)
        assert ready["status"] == "ready"
        # the same bodies again, now with Redis up: exact duplicates, nothing new
        again = [post_signed(base, body).json()["duplicate"] for body in bodies[:4]]
        assert again == [True] * 4
    finally:
        stack.stop()
        own.stop()


@pytest.mark.slow
def test_a_torn_record_in_the_spool_is_quarantined_counted_and_later_ones_drain(
        tmp_path, stack, outbox):
    own = EmbeddedRedis(tmp_path / "own-redis")
    own.start()
    try:
        stack.redis_url = own.url
        stack.write_config(config_text(outbox) + "\n[spool]\ndrain_interval_seconds = 0.2\n")
        base = stack.web()
        stack.worker()
        own.stop()
        bodies = [appointment_bodies(i, "T")["created"] for i in range(3)]
        spool_dir = tmp_path / "var" / "spool"
        assert post_signed(base, bodies[0]).json()["spooled"]
        active = spool_dir / "active.spool"
        whole = active.read_bytes()
        with open(active, "ab") as fh:  # a web worker that died half-way through an append
            fh.write(whole[: len(whole) // 2])
        assert all(post_signed(base, b).json()["spooled"] for b in bodies[1:])

        own.start()
        got = wait_for(lambda: len(m := outbox_messages(outbox)) >= 3 and m, 60, 0.2,
                       "the three good records delivered")
        assert sorted(p for p, _ in got) == sorted(placer_of(i, "T") for i in range(3))
        quarantined = wait_for(lambda: list((spool_dir / "quarantine").glob("torn-*.bin")), 10,
                               message="the torn bytes quarantined")
        assert quarantined[0].read_bytes() == whole[: len(whole) // 2]
        metrics = __import__("requests").get(f"{base}/metrics", timeout=5).text
        assert "calehr_spool_torn_records_total 1.0" in metrics
        assert "torn spool record(s) skipped" in stack.procs[0].output()
    finally:
        stack.stop()
        own.stop()
