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


def _record_bytes(tmp_path, body: bytes) -> bytes:
    """The exact bytes one append writes (a spool of its own, read back)."""
    one = spool(tmp_path / "one")
    one.append(body, "BOOKING_CREATED")
    return (tmp_path / "one" / ACTIVE).read_bytes()


def got_raw(into: list[bytes]):
    return lambda item: into.append(item.raw)


def test_a_record_torn_at_any_offset_is_quarantined_and_later_records_drain(tmp_path):
    good_before = _record_bytes(tmp_path / "a", b"before")
    victim = _record_bytes(tmp_path / "b", b"torn-victim")
    after = [_record_bytes(tmp_path / f"c{i}", f"after-{i}".encode()) for i in range(3)]
    for cut in range(1, len(victim)):  # every offset inside the record
        folder = tmp_path / f"cut{cut}"
        folder.mkdir()
        (folder / ACTIVE).write_bytes(good_before + victim[:cut] + b"".join(after))
        s = spool(folder)
        got: list[bytes] = []
        torn: list[tuple] = []
        moved = s.drain(got_raw(got), lambda *args, into=torn: into.append(args))
        assert got == [b"before", b"after-0", b"after-1", b"after-2"], cut
        assert moved == 4
        assert torn and torn[0][0] == 1 and torn[0][1] == cut, cut
        assert torn[0][2].read_bytes() == victim[:cut]
        assert not list(folder.glob("*.spool"))  # nothing left to block the next drain


def test_a_short_write_refuses_and_leaves_no_torn_record(tmp_path):
    """A real short write: a file size limit (RLIMIT_FSIZE) in a child process, like a full disk."""
    code = """
import resource, signal, sys
from pathlib import Path
from core.crypto import Cipher
from core.spool import ACTIVE, IngestSpool, SpoolWriteError
from tests.support import KEY
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
s = IngestSpool(Path(sys.argv[1]), Cipher((KEY,)), 10**7)
s.append(b"fits", "BOOKING_CREATED")
size = (Path(sys.argv[1]) / ACTIVE).stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, size + 40))
try:
    s.append(b"x" * 500, "BOOKING_CREATED")
except SpoolWriteError as exc:
    print("refused:", exc)
print("size", (Path(sys.argv[1]) / ACTIVE).stat().st_size == size)
"""
    import subprocess
    import sys

    from tests.support import ROOT

    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, text=True,
                            capture_output=True, timeout=60, env={"PYTHONPATH": str(ROOT)})
    assert "refused: short write" in result.stdout, result.stdout + result.stderr
    assert "size True" in result.stdout
    got = []
    assert spool(tmp_path).drain(lambda item: got.append(item.raw)) == 1 and got == [b"fits"]
