"""Mapping: SIU messages per second from build_siu, and the same messages built with hl7apy."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from hl7apy.core import Message

from adapters.calcom.payload import normalise, parse_body
from adapters.hl7v2 import SiuProfile, build_siu
from adapters.hl7v2.escape import components, escape
from adapters.hl7v2.siu import EVENT_REASONS, STATUS_BY_KIND, _pid, hl7_time
from bench.stack import TARGET, bench_config
from core.config import Settings
from core.lookup import find_event_type, find_location, find_provider
from core.models import AppointmentEvent, EventKind
from tests.support import fixture_bytes

CASES = (("02_booking_created.json", "S12"), ("03_booking_requested.json", "S12"),
         ("04_booking_rescheduled.json", "S13"), ("05_booking_cancelled.json", "S15"))
WHEN = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)


def build_with_hl7apy(event: AppointmentEvent, p: SiuProfile, *, message_event: str,
                      control_id: str, message_time: datetime) -> bytes:
    """The message build_siu makes, field by field through hl7apy's Message API.

    Values are worked out as build_siu does (same helpers, same escaping); only the
    assembly differs, so the ratio is the cost of the message library.
    """
    zone = p.zone
    provider = find_provider(p.providers, event)
    status = STATUS_BY_KIND[event.kind]
    start, end = hl7_time(event.start, zone), hl7_time(event.end, zone)
    minutes = str(event.duration_minutes or 0)
    xcn = f"{escape(provider.ehr_id)}^{components(provider.name)}"
    kind = "Tentative" if event.kind is EventKind.REQUESTED else "Normal"

    m = Message("SIU_S12", version="2.5.1")
    msh = m.msh
    msh.msh_3, msh.msh_4 = escape(p.sending_application), escape(p.sending_facility)
    msh.msh_5, msh.msh_6 = escape(p.receiving_application), escape(p.receiving_facility)
    msh.msh_7 = hl7_time(message_time, zone)
    msh.msh_9 = f"SIU^{message_event}^SIU_S12"
    msh.msh_10, msh.msh_11, msh.msh_12 = escape(control_id), escape(p.processing_id), "2.5.1"
    msh.msh_18 = escape(p.charset)
    sch = m.sch
    sch.sch_1 = f"{escape(event.appointment_key)}^{escape(p.placer_namespace)}"
    sch.sch_6 = f"{message_event}^{EVENT_REASONS[message_event]}^HL70003"
    sch.sch_8 = f"{kind}^{kind}^HL70277"
    sch.sch_9, sch.sch_10 = minutes, "min^minutes^ANS+"
    sch.sch_16 = xcn
    sch.sch_20 = f"{escape(p.placer_namespace)}^Cal.com online booking"
    sch.sch_25 = f"{status}^{status}^HL70278"
    tq1 = m.add_segment("TQ1")
    tq1.tq1_1, tq1.tq1_7, tq1.tq1_8, tq1.tq1_13 = "1", start, end, f"{minutes}^min"
    pid = m.add_group("SIU_S12_PATIENT").add_segment("PID")
    for number, value in enumerate(_pid(event, p).split("|")[1:], start=1):
        for repetition in filter(None, value.split("~")):
            pid.add_field(f"pid_{number}").value = repetition
    res = m.add_group("SIU_S12_RESOURCES")
    rgs = res.add_segment("RGS")
    rgs.rgs_1, rgs.rgs_2 = "1", "A"
    etype = find_event_type(p.event_types, event)
    ais = res.add_group("SIU_S12_SERVICE").add_segment("AIS")
    ais.ais_1, ais.ais_2 = "1", "A"
    ais.ais_3 = f"{components(etype.code)}^{escape(etype.name or etype.code)}^99CALEHR"
    ais.ais_4, ais.ais_7, ais.ais_8, ais.ais_10 = start, minutes, "min", status
    loc = find_location(p.locations, event)
    ail = res.add_group("SIU_S12_LOCATION_RESOURCE").add_segment("AIL")
    ail.ail_1, ail.ail_2, ail.ail_3 = "1", "A", components(loc.code)
    ail.ail_6, ail.ail_9, ail.ail_10, ail.ail_12 = start, minutes, "min", status
    aip = res.add_group("SIU_S12_PERSONNEL_RESOURCE").add_segment("AIP")
    aip.aip_1, aip.aip_2, aip.aip_3, aip.aip_4 = "1", "A", xcn, "D^Doctor^HL70182"
    aip.aip_6, aip.aip_9, aip.aip_10, aip.aip_12 = start, minutes, "min", status
    return (m.to_er7() + "\r").encode()


def _rate(build, jobs: list[tuple[AppointmentEvent, str]], p: SiuProfile, n: int,
          budget: float) -> tuple[float, int]:
    """Messages per second over at most `n` builds or `budget` seconds."""
    done, started = 0, time.perf_counter()
    while done < n and time.perf_counter() - started < budget:
        event, message_event = jobs[done % len(jobs)]
        build(event, p, message_event=message_event, control_id=f"C{done:019d}",
              message_time=WHEN)
        done += 1
    return done / (time.perf_counter() - started), done


def run(n: int = 20_000, budget: float = 15.0) -> dict:
    settings = Settings.from_toml(bench_config(Path("/nonexistent/outbox"), 6661), {})
    p = SiuProfile.from_settings(settings, TARGET)
    jobs = [(normalise(f"ev-{i}", parse_body(fixture_bytes(name)), lambda uid: None), ev)
            for i, (name, ev) in enumerate(CASES)]
    for event, ev in jobs:  # the baseline must build the very same bytes
        ours = build_siu(event, p, message_event=ev, control_id="C1", message_time=WHEN)
        theirs = build_with_hl7apy(event, p, message_event=ev, control_id="C1", message_time=WHEN)
        if ours != theirs:
            raise AssertionError(f"hl7apy baseline differs:\n{ours!r}\n{theirs!r}")
    _rate(build_siu, jobs, p, 2000, 2.0)  # warm-up
    _rate(build_with_hl7apy, jobs, p, 20, 2.0)
    ours_rate, ours_n = _rate(build_siu, jobs, p, n, budget)
    apy_rate, apy_n = _rate(build_with_hl7apy, jobs, p, n, budget)
    return {"figure": "mapping", "build_siu_per_s": round(ours_rate),
            "hl7apy_per_s": round(apy_rate), "ratio": round(ours_rate / apy_rate, 1),
            "messages": ours_n, "hl7apy_messages": apy_n, "identical_bytes": True}
