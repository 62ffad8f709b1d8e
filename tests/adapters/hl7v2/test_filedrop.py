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


def test_files_are_0640_by_default_under_umask_022_and_configurable(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        t = FileDropTransport(TargetSettings(name="f", kind="file", path=str(tmp_path / "a")))
        assert t.send(b"MSH|x\r", "C1").ok
        wide = FileDropTransport(TargetSettings(name="f", kind="file", path=str(tmp_path / "b"),
                                                file_mode=0o600))
        assert wide.send(b"MSH|x\r", "C2").ok
    finally:
        os.umask(old)
    (a,), (b,) = (tmp_path / "a").glob("*.hl7"), (tmp_path / "b").glob("*.hl7")
    assert stat.S_IMODE(a.stat().st_mode) == 0o640
    assert stat.S_IMODE(b.stat().st_mode) == 0o600


def test_file_mode_setting_is_octal_and_never_world_writable(tmp_path):
    import pytest

    from core.config import ConfigError, Settings
    from tests.support import config_text

    base = config_text(tmp_path / "out")
    assert Settings.from_toml(base, {}).target("files").file_mode == 0o640
    text = base.replace('kind = "file"', 'kind = "file"\nfile_mode = "0660"')
    assert Settings.from_toml(text, {}).target("files").file_mode == 0o660
    for bad in ('"0666"', '"rw-r"', '"1777"'):
        with pytest.raises(ConfigError, match="files.file_mode|file_mode"):
            Settings.from_toml(base.replace('kind = "file"', f'kind = "file"\nfile_mode = {bad}'),
                               {})


def test_a_control_id_that_is_not_a_plain_name_never_names_a_file(tmp_path):
    t = FileDropTransport(TargetSettings(name="f", kind="file", path=str(tmp_path / "out")))
    for bad in ("../evil", "a/b", "*", "x\x00y", "a\nb", ""):
        result = t.send(b"MSH|x\r", bad)
        assert not result.ok and not result.transient and "file_name_refused" in result.detail
    assert not (tmp_path / "evil").exists() and not list(tmp_path.rglob("*.hl7"))
