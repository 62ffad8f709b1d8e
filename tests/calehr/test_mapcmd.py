"""`calehr map` for every trigger the worker handles (the worker's own output is compared in
tests/worker/test_real_bodies.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from calehr.mapcmd import run_map
from core.config import Settings
from tests.factories import praxis_nord, with_changes
from tests.support import FIXTURES, config_text, fixture_bytes


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    text = config_text(tmp_path / "outbox", extra_targets=praxis_nord(tmp_path / "praxis"),
                       routes='[[routes]]\ntargets = ["praxis"]\n')
    return Settings.from_toml(text, {})


def segments(out: str, name: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(f"{name}|")]


def test_a_no_show_maps_with_its_booking_given_first(settings, capsys):
    files = [FIXTURES / n for n in ("BOOKING_REQUESTED--confirm-flow.json",
                                    "BOOKING_CREATED--after-confirmation.json",
                                    "BOOKING_NO_SHOW_UPDATED.json")]
    assert run_map(settings, files, None) == 0
    out = capsys.readouterr().out
    assert [s.split("|")[8] for s in segments(out, "MSH")] == [
        "SIU^S12^SIU_S12", "SIU^S14^SIU_S12", "SIU^S26^SIU_S12"]
    assert {s.split("|")[1] for s in segments(out, "SCH")} == {"qnGnk2ny5q43bExHjgVgdy^CALCOM"}
    assert segments(out, "TQ1")[2] == segments(out, "TQ1")[1]  # the no-show has the times
    assert len(segments(out, "PID")) == 3


def test_a_cancel_after_the_cancel_and_a_stale_request_are_not_sent(settings, capsys):
    files = [FIXTURES / n for n in ("BOOKING_CREATED--after-confirmation.json",
                                    "BOOKING_REQUESTED--confirm-flow.json",  # older: stale
                                    "BOOKING_CREATED--paid.json", "BOOKING_CANCELLED--paid.json",
                                    "BOOKING_CANCELLED--paid.json")]
    assert run_map(settings, files, None) == 0
    out = capsys.readouterr().out
    assert "BOOKING_REQUESTED: not sent (stale:createdAt older than the last applied event)" in out
    assert "BOOKING_CANCELLED: not sent (the same news as BOOKING_CANCELLED--paid.json)" in out
    assert [s.split("|")[8] for s in segments(out, "MSH")] == [
        "SIU^S12^SIU_S12", "SIU^S12^SIU_S12", "SIU^S15^SIU_S12"]


def test_a_cal_video_no_show_maps_once_and_a_host_no_show_is_not_sent(settings, capsys,
                                                                       tmp_path):
    by_host = tmp_path / "by-host.json"
    by_host.write_bytes(with_changes(fixture_bytes("BOOKING_NO_SHOW_UPDATED.json"),
                                     bookingUid="m3x55KsT8qx2SK2HFDi4zV"))
    files = [FIXTURES / n for n in ("BOOKING_CREATED--video.json",
                                    "AFTER_HOSTS_CAL_VIDEO_NO_SHOW.json",
                                    "AFTER_GUESTS_CAL_VIDEO_NO_SHOW.json")] + [by_host]
    assert run_map(settings, files, None) == 0
    out = capsys.readouterr().out
    assert "AFTER_HOSTS_CAL_VIDEO_NO_SHOW: not mapped" in out
    assert "BOOKING_NO_SHOW_UPDATED: not sent (the same news as AFTER_GUESTS_CAL_VIDEO" in out
    assert [s.split("|")[8] for s in segments(out, "MSH")] == ["SIU^S12^SIU_S12",
                                                                "SIU^S26^SIU_S12"]


def test_a_no_show_alone_says_what_it_needs(settings, capsys):
    assert run_map(settings, [FIXTURES / "BOOKING_NO_SHOW_UPDATED.json"], None) == 2
    err = capsys.readouterr().err
    assert "qnGnk2ny5q43bExHjgVgdy" in err and "calehr map BOOKING.json NO_SHOW.json" in err


def test_sch_2_carries_the_filler_id_the_bridge_learned(tmp_path, redis_url, rclient, capsys):
    from core.ehr_echo import EhrEchoLedger, Filler

    text = config_text(tmp_path / "outbox", extra_targets=praxis_nord(tmp_path / "praxis"),
                       routes='[[routes]]\ntargets = ["praxis"]\n')
    settings = Settings.from_toml(text, {"REDIS_URL": redis_url})
    created = FIXTURES / "BOOKING_CREATED.json"
    assert run_map(settings, [created], None) == 0
    assert segments(capsys.readouterr().out, "SCH")[0].split("|")[2] == ""  # not known yet
    EhrEchoLedger(rclient).record_filler("b8nxY3NhrSVA36YRNA8SpK", "praxis",
                                         Filler("E-7781", "EHR"))
    assert run_map(settings, [created], None) == 0
    assert segments(capsys.readouterr().out, "SCH")[0].split("|")[2] == "E-7781^EHR"
