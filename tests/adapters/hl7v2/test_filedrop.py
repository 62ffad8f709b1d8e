"""File transport: atomic files, one per message, in send order, idempotent per control id."""

from __future__ import annotations

from adapters.hl7v2 import FileDropTransport
from core.config import TargetSettings


def test_writes_one_file_per_message_in_send_order(tmp_path):
    t = FileDropTransport(TargetSettings(name="f", kind="file", path=str(tmp_path / "out")))
    for n in range(5):
        assert t.send(f"MSH|{n}\r".encode(), f"CTRL{n}").ok
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert [f.split("_", 1)[1] for f in files] == [f"CTRL{n}.hl7" for n in range(5)]
    assert (tmp_path / "out" / files[3]).read_bytes() == b"MSH|3\r"


def test_same_control_id_twice_writes_one_file(tmp_path):
    t = FileDropTransport(TargetSettings(name="f", kind="file", path=str(tmp_path)))
    first, second = t.send(b"MSH|a\r", "SAME"), t.send(b"MSH|a\r", "SAME")
    assert first.ok and second.ok and second.detail == "file already written"
    assert len(list(tmp_path.glob("*.hl7"))) == 1
    assert not list(tmp_path.glob(".*"))  # no temp file left behind


def test_folder_that_is_a_file_is_transient_and_clear(tmp_path):
    blocker = tmp_path / "outbox"
    blocker.write_text("not a folder")
    result = FileDropTransport(TargetSettings(name="f", kind="file", path=str(blocker))).send(
        b"MSH|x\r", "C1")
    assert not result.ok and result.transient and result.detail.startswith("file_write_failed")
