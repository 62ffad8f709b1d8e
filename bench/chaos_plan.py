"""The scenario one chaos seed makes (bench/chaos.py runs it): each booking's life as Cal.com
would send it, duplicates, a shuffle, and when to kill what."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tests.support import fixture_bytes


# -- the scenario a seed makes ----------------------------------------------------------------
@dataclass
class Change:
    appointment: int
    index: int  # place in the appointment's own history
    trigger: str
    body: bytes
    group: str  # logical duplicates share it


def _body(name: str, trigger: str, at: datetime, **payload: object) -> dict:
    data = json.loads(fixture_bytes(name))
    data["triggerEvent"] = trigger
    data["createdAt"] = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    data["payload"].update(payload)
    return data


def appointment_history(rng: random.Random, n: int, tag: str) -> list[Change]:
    """One booking's life, in the order Cal.com would send it."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    base = now + timedelta(days=30 + n)  # ahead of today, whatever today is
    at = now - timedelta(hours=2)
    uid = f"{tag}{n:05d}u0"
    key = f"{uid}@Cal.com"
    seq = 0
    start = base + timedelta(hours=9)
    out: list[dict] = []

    def times(s: datetime) -> dict:
        return {"startTime": s.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "endTime": (s + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")}

    def step() -> datetime:
        nonlocal at
        at += timedelta(seconds=rng.randint(5, 600))
        return at

    common = {"iCalUID": key, "bookingId": 100000 + n}
    if rng.random() < 0.3:  # a request first: confirmed or rejected
        out.append(_body("02_booking_created.json", "BOOKING_REQUESTED", step(), uid=uid,
                         iCalSequence=0, status="PENDING", **common, **times(start)))
        if rng.random() < 0.3:
            out.append(_body("05_booking_cancelled.json", "BOOKING_REJECTED", step(), uid=uid,
                             iCalSequence=0, status="REJECTED", rejectionReason="full",
                             cancellationReason=None, rescheduleUid=None, **common, **times(start)))
            return _changes(n, out)
    out.append(_body("02_booking_created.json", "BOOKING_CREATED", step(), uid=uid,
                     iCalSequence=0, status="ACCEPTED", **common, **times(start)))
    for k in range(1, rng.choice([0, 0, 1, 1, 2, 3]) + 1):
        previous, uid = uid, f"{tag}{n:05d}u{k}"
        seq += 1
        start += timedelta(hours=rng.randint(1, 48))
        out.append(_body("04_booking_rescheduled.json", "BOOKING_RESCHEDULED", step(), uid=uid,
                         rescheduleUid=previous, iCalSequence=seq, status="ACCEPTED", **common,
                         **times(start)))
    end = rng.random()
    if end < 0.4:
        out.append(_body("05_booking_cancelled.json", "BOOKING_CANCELLED", step(), uid=uid,
                         iCalSequence=seq + 1, status="CANCELLED", rescheduleUid=None, **common,
                         **times(start)))
    elif end < 0.55:
        out.append({"triggerEvent": "BOOKING_NO_SHOW_UPDATED",
                    "createdAt": step().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "payload": {"bookingUid": uid, "bookingId": 100000 + n,
                                "attendees": [{"email": "patient@example.org", "noShow": True}]}})
    return _changes(n, out)


def _changes(n: int, bodies: list[dict]) -> list[Change]:
    return [Change(n, i, b["triggerEvent"], json.dumps(b, separators=(",", ":")).encode(),
                   f"{n}.{i}") for i, b in enumerate(bodies)]


@dataclass
class Plan:
    seed: int
    changes: list[Change]  # each logical change once
    posts: list[Change]  # what is posted, shuffled, with exact and logical duplicates
    chaos: list[tuple[float, str]]  # (seconds after the first post, action)


def make_plan(seed: int, appointments: int, chaos_seconds: float) -> Plan:
    rng = random.Random(seed)
    changes = [c for n in range(appointments)
               for c in appointment_history(rng, n, f"S{seed % 100000:05d}A")]
    posts = list(changes)
    for c in changes:
        r = rng.random()
        if r < 0.15:  # an exact duplicate: the same bytes again
            posts.append(c)
        elif r < 0.25:  # a logical duplicate: same booking, sequence and trigger, other bytes
            data = json.loads(c.body)
            data["payload"]["title"] = f"resent {rng.randint(0, 10**6)}"
            posts.append(Change(c.appointment, c.index, c.trigger,
                                json.dumps(data, separators=(",", ":")).encode(), c.group))
    rng.shuffle(posts)
    chaos = [(rng.uniform(0.5, chaos_seconds), "kill9") for _ in range(rng.randint(1, 2))]
    chaos.append((rng.uniform(1.0, chaos_seconds), "redis_restart"))
    chaos.append((rng.uniform(0.5, chaos_seconds), "ehr_down"))
    return Plan(seed, changes, posts, sorted(chaos))
