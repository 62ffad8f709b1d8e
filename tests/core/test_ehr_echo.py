"""The per-target record of what the EHR holds of our appointments (real Redis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core import clock
from core.ehr_echo import LATE_ECHO_SECONDS, EhrEchoLedger, Filler, fingerprint

T1 = datetime(2031, 3, 4, 9, 0, tzinfo=UTC)
T2, T3 = T1 + timedelta(days=1), T1 + timedelta(days=2)


def booked(start: datetime) -> str:
    return fingerprint("S13", start, start + timedelta(minutes=30))


def test_fingerprints():
    assert booked(T1) == "booked|2031-03-04T09:00:00Z|2031-03-04T09:30:00Z"
    assert fingerprint("S12", T1, None) == ""  # no end: says nothing about the state
    assert fingerprint("S15", None, None) == fingerprint("S14", T1, T2, "Cancelled") == "cancelled"
    assert fingerprint("S26", None, None) == fingerprint("S14", T1, T2, "noshow") == "noshow"


def test_an_older_state_we_sent_is_a_possible_late_echo_only_shortly_after(rclient):
    ledger = EhrEchoLedger(rclient)
    sent_at = clock.now()
    with clock.frozen_at(sent_at):
        for state in (booked(T1), booked(T2)):
            ledger.sent("K1", "ehr", state)
        assert ledger.echo_of("K1", "ehr", booked(T2), echoes=False) == "current"
        assert ledger.echo_of("K1", "ehr", booked(T1), echoes=True) == "recent"
        assert ledger.echo_of("K1", "ehr", booked(T1), echoes=False) == ""  # a real move back
        assert ledger.echo_of("K1", "ehr", booked(T3), echoes=True) == ""
        assert ledger.echo_of("K1", "other", booked(T2), echoes=True) == ""  # per target
    with clock.frozen_at(sent_at + LATE_ECHO_SECONDS + 1):  # no echo is that late: a change
        assert ledger.echo_of("K1", "ehr", booked(T1), echoes=True) == ""
        assert ledger.echo_of("K1", "ehr", booked(T2), echoes=True) == "current"


def test_an_ehr_change_ends_the_echo_window_and_is_never_sent_back(rclient):
    ledger = EhrEchoLedger(rclient)
    ledger.sent("K1", "ehr", booked(T1))
    ledger.reported("K1", "ehr", booked(T3))
    assert ledger.ehr_made("K1", "ehr", booked(T3))
    assert ledger.echo_of("K1", "ehr", booked(T1), echoes=True) == ""  # moved back: a change
    ledger.sent("K1", "ehr", booked(T2))  # a later Cal.com change went out
    assert not ledger.ehr_made("K1", "ehr", booked(T3))
    assert not ledger.ehr_made("K1", "ehr", booked(T2))  # we said it, the EHR did not


def test_states_made_in_cal_com_for_the_ehr_stay_echoes_by_booking_uid(rclient):
    ledger = EhrEchoLedger(rclient)
    ledger.reported("K1", "ehr", booked(T2))
    ledger.made_in_calcom("K1", "ehr", booked(T2), "UID-2")  # the reschedule's new booking
    ledger.reported("K1", "ehr", "cancelled")
    ledger.made_in_calcom("K1", "ehr", "cancelled", "UID-2")
    # Cal.com's RESCHEDULED webhook arrives after the EHR cancelled: still its own change
    assert ledger.ehr_made("K1", "ehr", booked(T2), "UID-2")
    assert ledger.ehr_made("K1", "ehr", "cancelled", "UID-2")
    assert not ledger.ehr_made("K1", "ehr", booked(T2))  # no uid: only the current state
    assert not ledger.ehr_made("K1", "ehr", booked(T2), "UID-3")  # the patient's own move
    assert not ledger.ehr_made("K1", "other", booked(T2), "UID-2")


def test_filler_ids_per_target_and_the_way_back(rclient):
    ledger = EhrEchoLedger(rclient)
    assert ledger.record_filler("K1", "ehr", Filler("E-7781", "EHR"))
    assert not ledger.record_filler("K1", "ehr", Filler("E-7781", "EHR"))  # the same again
    assert ledger.filler("K1", "ehr") == Filler("E-7781", "EHR")
    assert ledger.filler("K1", "other") is None
    assert ledger.key_for_filler("ehr", "E-7781") == "K1"
    assert ledger.key_for_filler("other", "E-7781") is None


def test_filler_ids_not_seen_for_long_are_pruned(rclient):
    ledger = EhrEchoLedger(rclient)
    start = clock.now()
    with clock.frozen_at(start):
        ledger.record_filler("K1", "ehr", Filler("E-1", "EHR"))
    with clock.frozen_at(start + 100 * 86400):
        ledger.record_filler("K2", "ehr", Filler("E-2", "EHR"))
        assert ledger.prune_fillers("ehr", older_than_seconds=50 * 86400) == 1
    assert ledger.key_for_filler("ehr", "E-1") is None
    assert ledger.key_for_filler("ehr", "E-2") == "K2"
