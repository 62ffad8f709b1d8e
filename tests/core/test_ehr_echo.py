"""The per-target record of what the EHR holds of our appointments (real Redis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.ehr_echo import EhrEchoLedger, Filler, fingerprint

T1 = datetime(2031, 3, 4, 9, 0, tzinfo=UTC)
T2, T3 = T1 + timedelta(days=1), T1 + timedelta(days=2)


def booked(start: datetime) -> str:
    return fingerprint("S13", start, start + timedelta(minutes=30))


def test_fingerprints():
    assert booked(T1) == "booked|2031-03-04T09:00:00Z|2031-03-04T09:30:00Z"
    assert fingerprint("S12", T1, None) == ""  # no end: says nothing about the state
    assert fingerprint("S15", None, None) == fingerprint("S14", T1, T2, "Cancelled") == "cancelled"
    assert fingerprint("S26", None, None) == fingerprint("S14", T1, T2, "noshow") == "noshow"


def test_a_late_echo_of_an_older_message_is_an_echo_only_for_an_echoing_ehr(rclient):
    ledger = EhrEchoLedger(rclient)
    for state in (booked(T1), booked(T2)):
        ledger.sent("K1", "ehr", state)
    assert ledger.is_echo("K1", "ehr", booked(T2), echoes=False)  # what it has now
    assert ledger.is_echo("K1", "ehr", booked(T1), echoes=True)  # the S12's echo, late
    assert not ledger.is_echo("K1", "ehr", booked(T1), echoes=False)  # a real move back
    assert not ledger.is_echo("K1", "ehr", booked(T3), echoes=True)
    assert not ledger.is_echo("K1", "other", booked(T2), echoes=True)  # per target


def test_an_ehr_change_ends_the_echo_window_and_is_never_sent_back(rclient):
    ledger = EhrEchoLedger(rclient)
    ledger.sent("K1", "ehr", booked(T1))
    ledger.reported("K1", "ehr", booked(T3))
    assert ledger.ehr_made("K1", "ehr", booked(T3))
    assert not ledger.is_echo("K1", "ehr", booked(T1), echoes=True)  # moved back: a change
    ledger.sent("K1", "ehr", booked(T2))  # a later Cal.com change went out
    assert not ledger.ehr_made("K1", "ehr", booked(T3))
    assert not ledger.ehr_made("K1", "ehr", booked(T2))  # we said it, the EHR did not


def test_filler_ids_per_target_and_the_way_back(rclient):
    ledger = EhrEchoLedger(rclient)
    assert ledger.record_filler("K1", "ehr", Filler("E-7781", "EHR"))
    assert not ledger.record_filler("K1", "ehr", Filler("E-7781", "EHR"))  # the same again
    assert ledger.filler("K1", "ehr") == Filler("E-7781", "EHR")
    assert ledger.filler("K1", "other") is None
    assert ledger.key_for_filler("ehr", "E-7781") == "K1"
    assert ledger.key_for_filler("other", "E-7781") is None
