"""The EHR changes appointments that came from Cal.com, through a failover (bench/failover.py).

A few bookings are made in Cal.com (a webhook each, and the booking in the local fake of Cal.com's
API v2, tests/worker/fake_calcom.py). Once its S12 is at the EHR, the EHR moves each twice (S13)
and cancels it (S15), naming SCH-1 as the bridge sent it, each sent again until it is answered
AA. Counted at the fake: every change the EHR got an AA for is POSTed once (a second POST of the
same change is a duplicate even when Cal.com refuses it), in the EHR's order per booking.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bench.chaos_plan import Change, _body
from tests.factories import sim_messages
from tests.worker.fake_calcom import API_KEY, FakeCalcom, api_booking

STEPS = ("S13", "S13", "S15")  # per booking: moved, moved again, cancelled


@dataclass
class CalcomFigures:
    bookings: int = 0
    changes_acked: int = 0  # S13/S15 the EHR got an AA for
    change_resends: int = 0  # sent again after AR 207, no answer or a refused connection
    posts: int = 0  # POSTs at the fake Cal.com API
    lost: int = 0  # AA'd, never POSTed
    duplicated: int = 0  # POSTed more than once (per booking)
    out_of_order: int = 0  # bookings whose POSTs came in another order than the EHR's
    stray: int = 0  # a POST for a booking the run did not make


def _z(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _hl7(value: datetime) -> str:
    return value.strftime("%Y%m%d%H%M%S+0000")


def ehr_change(event: str, control_id: str, placer: str, filler: str, start: datetime) -> bytes:
    """An SIU the EHR sends for an appointment it has from us: SCH-1 is our placer id."""
    s, e = _hl7(start), _hl7(start + timedelta(minutes=30))
    status = "Cancelled" if event == "S15" else "Booked"
    return ("\r".join([
        f"MSH|^~\\&|ORBIS|HOSPITAL|CALEHR|CALCOM|{s}||SIU^{event}^SIU_S12|{control_id}|P|2.5.1",
        f"SCH|{placer}|{filler}^EHR||||Changed in the EHR|Normal^Normal^HL70277|30|"
        f"min^minutes^ANS+|^^30^{s}^{e}|||||||||||||{status}^{status}^HL70278",
        f"TQ1|1||||||{s}|{e}|||||30^min",
        "PID|1||MRN-4411^^^ORBIS^MR||Wexford^Hannelore||19620415|F",
        "RGS|1|A",
        f"AIP|1|A|OKAFOR01^Okafor^Amina^^^Dr.|D^Doctor^HL70182||{s}|||30|min",
    ]) + "\r").encode()


class CalcomChanges:
    def __init__(self, bookings: int, tag: str = "FOC") -> None:
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        self.fake = FakeCalcom()
        self.fig = CalcomFigures(bookings=bookings)
        self.starts: dict[str, datetime] = {}
        self.webhooks: list[Change] = []
        for n in range(bookings):
            uid = f"{tag}{n:04d}u0"
            start = now + timedelta(days=40 + n, hours=9)
            self.starts[uid] = start
            self.fake.put(api_booking(uid, _z(start), _z(start + timedelta(minutes=30)),
                                      _z(now)))
            body = _body("02_booking_created.json", "BOOKING_CREATED", now - timedelta(hours=1),
                         uid=uid, iCalSequence=0, status="ACCEPTED", iCalUID=f"{uid}@Cal.com",
                         bookingId=900000 + n, startTime=start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                         endTime=(start + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ"))
            self.webhooks.append(Change(5000 + n, 0, "BOOKING_CREATED", json.dumps(body).encode(),
                                        f"{5000 + n}.0"))
        self.acked: dict[str, list[tuple[str, str]]] = {uid: [] for uid in self.starts}
        self.lock = threading.Lock()

    def config(self, text: str) -> str:
        return text.replace("[calcom]\n", f'[calcom]\napi_url = "{self.fake.url}"\n'
                                          f'api_key = "{API_KEY}"\n', 1)

    def placers(self, ehr_out, timeout: float) -> dict[str, str]:  # noqa: ANN001
        """uid → SCH-1 of the S12 the EHR got for it (waits for all of them)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = {m["placer"]: m for m in sim_messages(ehr_out) if m["event"] == "S12"}
            found = {uid: _sch1(got[k]["raw"]) for uid in self.starts for k in got
                     if uid in k}
            if len(found) == len(self.starts):
                return found
            time.sleep(0.1)
        raise RuntimeError("the EHR did not get the S12 of every Cal.com booking")

    def run(self, placers: dict[str, str], seconds: float,
            until_aa: Callable[[bytes], int]) -> None:
        """Each step for every booking, spread over `seconds`; `until_aa` sends one message
        until it is answered AA and returns how often it was sent again (-1: never AA)."""
        gap = seconds / len(STEPS)
        for step, event in enumerate(STEPS):
            for n, (uid, placer) in enumerate(placers.items()):
                start = self.starts[uid] + timedelta(days=step + 1)
                msg = ehr_change(event, f"FOC{n:03d}S{step}", placer, f"E-{n:04d}", start)
                resends = until_aa(msg)
                if resends < 0:
                    continue
                with self.lock:
                    self.fig.change_resends += resends
                    self.fig.changes_acked += 1
                    self.acked[uid].append(("cancel", "") if event == "S15"
                                           else ("reschedule", _z(start)))
            time.sleep(gap)

    def observed(self) -> dict[str, list[tuple[str, str]]]:
        """Root booking uid → the changes POSTed for it, in arrival order."""
        root: dict[str, str] = {uid: uid for uid in self.starts}
        for _ in range(len(STEPS) + 1):  # follow reschedules back to the booking made here
            for booking in list(self.fake.bookings.values()):
                old = booking.get("rescheduledFromUid")
                if old in root:
                    root[booking["uid"]] = root[old]
        out: dict[str, list[tuple[str, str]]] = {uid: [] for uid in self.starts}
        self.fig.stray = 0
        for post in self.fake.posts():
            _, _, uid, action = post["path"].split("/")[1:5]
            if uid not in root:
                self.fig.stray += 1
                continue
            out[root[uid]].append((action, str(post["body"].get("start", ""))))
        return out

    def settled(self) -> bool:
        with self.lock:
            want = sum(len(v) for v in self.acked.values())
        return len(self.fake.posts()) >= want

    def check(self, problems: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout  # the bridge's sync loop runs every 5 s
        while not self.settled() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)  # a late second POST would show now
        seen = self.observed()
        fig = self.fig
        fig.posts = len(self.fake.posts())
        fig.lost = fig.duplicated = fig.out_of_order = 0
        for uid, want in self.acked.items():
            got = seen[uid]
            fig.lost += sum(1 for change in want if change not in got)
            fig.duplicated += len(got) - len(set(got))
            firsts = list(dict.fromkeys(got))
            if [c for c in firsts if c in want] != [c for c in want if c in firsts]:
                fig.out_of_order += 1
        for name in ("lost", "duplicated", "out_of_order", "stray"):
            if getattr(fig, name):
                problems.append(f"EHR changes at Cal.com: {name}={getattr(fig, name)}")
        if fig.changes_acked != fig.bookings * len(STEPS):
            problems.append(f"EHR changes answered AA: {fig.changes_acked} of "
                            f"{fig.bookings * len(STEPS)}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.fake.close()


def _sch1(raw: str) -> str:
    sch = next(s for s in raw.replace("\n", "\r").split("\r") if s.startswith("SCH|"))
    return sch.split("|")[1]
