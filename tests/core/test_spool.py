"""IngestSpool on its own: encrypted records, torn tails, concurrent appenders, bounded size."""

from __future__ import annotations

import multiprocessing

import pytest

from core.crypto import Cipher
from core.spool import ACTIVE, IngestSpool, SpoolFull
from tests.support import KEY


def spool(tmp_path, max_bytes: int = 10**7) -> IngestSpool:
    return IngestSpool(tmp_path, Cipher((KEY,)), max_bytes)


def _append_many(folder: str, n: int) -> None:
    s = IngestSpool(__import__("pathlib").Path(folder), Cipher((KEY,)), 10**8)
    for i in range(n):
        s.append(f"body-{folder[-3:]}-{i}".encode(), "BOOKING_CREATED")


def test_concurrent_appenders_lose_nothing(tmp_path):
    procs = [multiprocessing.get_context("spawn").Process(target=_append_many,
                                                          args=(str(tmp_path), 100))
             for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    got = []
    assert spool(tmp_path).drain(lambda item: got.append(item.raw)) == 400
    assert len(got) == 400 and not list(tmp_path.glob("*.spool"))


def test_torn_tail_is_ignored_and_earlier_records_survive(tmp_path):
    s = spool(tmp_path)
    s.append(b"first", "BOOKING_CREATED")
    with open(tmp_path / ACTIVE, "ab") as fh:
        fh.write(b"\x00\x00\x10\x00gAAAA")  # a crash mid-append
    got = []
    s.drain(lambda item: got.append(item.raw))
    assert got == [b"first"]


def test_a_failing_put_keeps_the_file_for_the_next_drain(tmp_path):
    s = spool(tmp_path)
    s.append(b"one", "BOOKING_CREATED")

    def broken(_item):
        raise ConnectionError("redis gone again")

    with pytest.raises(ConnectionError):
        s.drain(broken)
    got = []
    assert s.drain(lambda item: got.append(item.raw)) == 1 and got == [b"one"]


def test_size_bound(tmp_path):
    s = spool(tmp_path, max_bytes=500)
    s.append(b"x" * 100, "BOOKING_CREATED")
    with pytest.raises(SpoolFull):
        s.append(b"y" * 400, "BOOKING_CREATED")
    assert s.full
    s.drain(lambda item: None)
    assert not s.full
