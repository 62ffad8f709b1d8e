"""The console over real HTTP (gunicorn): login, roles, CSRF, sessions, masking, audit.

Dead letters are written with the real DeadLetterStore into the real Redis; the end-to-end
path (worker, EHR simulator, browser) is in test_console_browser.py.
"""

from __future__ import annotations

import json

import pytest

from core.audit import AuditLog
from tests.deadletter.console_support import ConsoleClient, console_config, dead_letter_store
from tests.deadletter.samples import PATIENT_PHI, SIU_S12
from tests.support import free_port, wait_for


@pytest.fixture
def console_base(stack, outbox) -> str:
    stack.write_config(console_config(outbox, free_port()))
    return stack.web()


@pytest.fixture
def store(rclient):
    return dead_letter_store(rclient)


def add_delivery_dead_letter(store, n: int = 0, **kw) -> str:
    fields = {"stage": "delivery", "error_code": "ack_AE", "error_class": "PermanentDeliveryError",
              "error_text": "EHR answered AE", "target": "ehr",
              "appointment_key": f"appt-{n}@Cal.com", "event_id": f"ev_{n}",
              "delivery_id": f"dv_{n}", "wire": SIU_S12.encode(), "message_event": "S12"}
    fields.update(kw)
    return store.add(**fields)


def audit(rclient) -> list[dict]:
    return [json.loads(e) for e in rclient.lrange("calehr:audit", 0, -1)]


def test_unauthenticated_requests_are_redirected_or_refused(console_base, store):
    dl_id = add_delivery_dead_letter(store)
    c = ConsoleClient(console_base)
    for path in ("/console/", "/console/deadletters", f"/console/deadletters/{dl_id}",
                 "/console/audit", "/console/conflicts"):
        r = c.get(path, allow_redirects=False)
        assert r.status_code in (302, 308), path
        if r.status_code == 302:
            assert "/console/login" in r.headers["Location"]
    for path in (f"/console/deadletters/{dl_id}/replay", f"/console/deadletters/{dl_id}/reveal",
                 f"/console/deadletters/{dl_id}/discard", "/console/bulk-replay",
                 "/console/logout"):
        assert c.post(path, {"reason": "x"}, csrf=False).status_code == 401, path
    assert store.get(dl_id).state == "open"


def test_login_sets_strict_httponly_cookie_and_is_audited(console_base, rclient):
    c = ConsoleClient(console_base)
    c.get("/console/login")
    r = c.post("/console/login", {"username": "omar", "password": "operator-pass-1234"},
               allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"].endswith("/console/deadletters")
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # secure_cookies is off in this config
    assert c.get("/console/deadletters").status_code == 200
    entry = audit(rclient)[0]
    assert entry["actor"] == "console:omar" and entry["action"] == "console.login"
    assert entry["ts"] > 0


def test_wrong_password_and_csrf_less_login_are_refused(console_base, rclient):
    c = ConsoleClient(console_base)
    c.get("/console/login")
    assert c.post("/console/login", {"username": "omar", "password": "nope"}).status_code == 401
    assert c.post("/console/login", {"username": "nobody", "password": "nope"}).status_code == 401
    no_token = c.post("/console/login", {"username": "omar", "password": "operator-pass-1234"},
                      csrf=False)
    assert no_token.status_code == 400
    failed = [e for e in AuditLog(rclient).entries() if e.action == "console.login_failed"]
    assert sorted(e.actor for e in failed) == ["console:nobody", "console:omar"]
    assert all(e.details["attempts"] == 1 for e in failed)
    assert c.get("/console/deadletters", allow_redirects=False).status_code == 302


def test_posts_without_the_session_csrf_token_are_refused(console_base, store, rclient):
    dl_id = add_delivery_dead_letter(store)
    c = ConsoleClient(console_base)
    c.login("omar")
    assert c.post(f"/console/deadletters/{dl_id}/replay", csrf=False).status_code == 400
    c.token = "forged"
    assert c.post(f"/console/deadletters/{dl_id}/discard", {"reason": "x"}).status_code == 400
    other = ConsoleClient(console_base)  # a token of another session is no good either
    other.login("ada")
    c.token = other.token
    assert c.post(f"/console/deadletters/{dl_id}/reveal").status_code == 400
    assert store.get(dl_id).state == "open"
    assert {e["action"] for e in audit(rclient)} == {"console.login"}


def test_viewer_sees_masked_detail_and_is_refused_every_action(console_base, store, rclient):
    dl_id = add_delivery_dead_letter(store)
    c = ConsoleClient(console_base)
    c.login("vera")
    page = c.get(f"/console/deadletters/{dl_id}")
    assert page.status_code == 200
    for phi in PATIENT_PHI:
        assert phi not in page.text, phi
    assert "SIU^S12^SIU_S12" in page.text and 'class="masked"' in page.text
    assert 'id="replay"' not in page.text and 'id="reveal"' not in page.text
    for action in ("replay", "reveal", "edit", "discard"):
        r = c.post(f"/console/deadletters/{dl_id}/{action}", {"reason": "r", "wire": "MSH|x"})
        assert r.status_code == 403, action
    assert c.post("/console/bulk-replay", {"expected": "1"}).status_code == 403
    assert c.get("/console/audit").status_code == 403
    assert store.get(dl_id).state == "open"
    assert [e["action"] for e in audit(rclient)] == ["console.login"]


def test_operator_reveal_is_audited_and_shows_the_message(console_base, store, rclient):
    dl_id = add_delivery_dead_letter(store)
    c = ConsoleClient(console_base)
    c.login("omar")
    page = c.post(f"/console/deadletters/{dl_id}/reveal")
    assert page.status_code == 200
    assert "Reyes^Jordan" in page.text and "jordan.reyes@example.com" in page.text
    assert page.headers["Cache-Control"] == "no-store"
    entry = audit(rclient)[0]
    assert (entry["actor"], entry["action"], entry["record"]) == (
        "console:omar", "deadletter.reveal", dl_id)
    assert store.get(dl_id).audit[-1]["action"] == "reveal"
    again = c.get(f"/console/deadletters/{dl_id}")  # the reveal does not stick
    assert "Reyes^Jordan" not in again.text


def test_discard_needs_a_reason_and_is_audited(console_base, store, rclient):
    dl_id = add_delivery_dead_letter(store)
    c = ConsoleClient(console_base)
    c.login("omar")
    assert c.post(f"/console/deadletters/{dl_id}/discard", {"reason": "  "}).status_code == 400
    assert store.get(dl_id).state == "open"
    r = c.post(f"/console/deadletters/{dl_id}/discard", {"reason": "booked by phone"})
    assert r.status_code == 200 and "Discarded." in r.text
    assert store.get(dl_id).state == "discarded"
    entry = audit(rclient)[0]
    assert (entry["actor"], entry["action"], entry["record"]) == (
        "console:omar", "deadletter.discard", dl_id)
    assert entry["details"]["reason"] == "booked by phone"


def test_logout_and_idle_expiry_end_the_session(console_base, rclient):
    c = ConsoleClient(console_base)
    c.login("ada")
    keys = rclient.keys("calehr:console:session:*")
    assert len(keys) == 1
    assert 29 * 60 < rclient.ttl(keys[0]) <= 30 * 60  # session_minutes = 30, idle timeout
    copied = dict(c.http.cookies)
    assert c.post("/console/logout", allow_redirects=False).status_code == 302
    replayed = ConsoleClient(console_base)
    replayed.http.cookies.update(copied)  # the old cookie is dead after logout
    assert replayed.get("/console/deadletters", allow_redirects=False).status_code == 302
    c.login("ada")
    key = rclient.keys("calehr:console:session:*")[0]
    rclient.pexpire(key, 1)  # the idle time has run out
    wait_for(lambda: not rclient.exists(key), 5, message="the session to expire")
    assert c.get("/console/deadletters", allow_redirects=False).status_code == 302
    assert [e["action"] for e in audit(rclient)][:2] == ["console.login", "console.logout"]


def test_list_filters_counts_and_paging(console_base, store):
    for i in range(60):
        add_delivery_dead_letter(store, i)
    for i in range(60, 70):
        add_delivery_dead_letter(store, i, error_code="retries_exhausted")
    add_delivery_dead_letter(store, 70, stage="conflict", error_code="slot_conflict")
    mapped = add_delivery_dead_letter(store, 71, stage="mapping", error_code="unknown_provider",
                                      delivery_id="", wire=None)
    c = ConsoleClient(console_base)
    c.login("vera")
    page = c.get("/console/deadletters").text
    assert 'class="count">72<' in page and "1–50 of 72" in page and "<svg" in page
    assert page.count('href="/console/deadletters/dl_') == 50
    second = c.get("/console/deadletters?state=open&page=2").text
    assert "51–72 of 72" in second
    only = c.get("/console/deadletters?state=open&error_code=retries_exhausted").text
    assert 'class="count">10<' in only
    assert 'class="count">1<' in c.get("/console/deadletters?stage=mapping").text
    assert mapped in c.get("/console/deadletters?appointment_key=appt-71%40Cal.com").text
    assert 'class="count">0<' in c.get("/console/deadletters?state=resolved").text
    assert 'class="count">0<' in c.get("/console/deadletters?since=2099-01-01T00:00").text
    conflicts = c.get("/console/conflicts").text
    assert 'class="count">1<' in conflicts and "slot_conflict" in conflicts
    bad = c.get("/console/deadletters?since=yesterday")
    assert bad.status_code == 200 and "Filter ignored" in bad.text


def test_admin_audit_page_shows_who_did_what_when(console_base, store):
    dl_id = add_delivery_dead_letter(store)
    op = ConsoleClient(console_base)
    op.login("omar")
    op.post(f"/console/deadletters/{dl_id}/reveal")
    admin = ConsoleClient(console_base)
    admin.login("ada")
    page = admin.get("/console/audit")
    assert page.status_code == 200
    assert "console:omar" in page.text and "deadletter.reveal" in page.text and dl_id in page.text
    assert admin.get(f"/console/audit?record={dl_id}").text.count("deadletter.reveal") == 1


def test_edit_is_validated_and_conflicts_and_event_level_records_render(console_base, store,
                                                                        rclient):
    dl_id = add_delivery_dead_letter(store)
    conflict = add_delivery_dead_letter(store, 1, stage="conflict", error_code="slot_conflict",
                                        delivery_id="", wire=None)
    mapping = add_delivery_dead_letter(store, 2, stage="mapping", error_code="unknown_provider",
                                       delivery_id="", wire=None)
    c = ConsoleClient(console_base)
    c.login("omar")
    empty = c.post(f"/console/deadletters/{dl_id}/edit", {"wire": "PID|1||x"})
    assert empty.status_code == 400 and "must start with an MSH segment" in empty.text
    same = c.post(f"/console/deadletters/{dl_id}/edit", {"wire": SIU_S12.replace("\r", "\n")})
    assert same.status_code == 400 and "Nothing was changed" in same.text
    assert store.get(dl_id).state == "open"
    assert "deadletter.edit" not in {e["action"] for e in audit(rclient)}
    page = c.get(f"/console/deadletters/{conflict}").text
    assert 'id="replay"' not in page and 'id="discard"' in page
    refused = c.post(f"/console/deadletters/{conflict}/replay")
    assert "Not replayed: a conflict is resolved by a person" in refused.text
    assert "No wire message was built" in c.get(f"/console/deadletters/{mapping}").text
    missing = c.get("/console/deadletters/dl_missing")
    assert missing.status_code == 404 and "no dead letter dl_missing" in missing.text


def test_login_goes_back_only_inside_the_console_and_is_throttled(console_base):
    c = ConsoleClient(console_base)
    r = c.get("/console/audit", allow_redirects=False)
    assert r.headers["Location"].endswith("/console/login?next=/console/audit")
    c.get("/console/login")
    ok = c.post("/console/login", {"username": "ada", "password": "admin-pass-12345",
                                   "next": "/console/audit"}, allow_redirects=False)
    assert ok.headers["Location"] == "/console/audit"
    evil = ConsoleClient(console_base)
    evil.get("/console/login")
    r = evil.post("/console/login", {"username": "ada", "password": "admin-pass-12345",
                                     "next": "https://evil.example/console/x"},
                  allow_redirects=False)
    assert r.headers["Location"] == "/console/deadletters"
    guesser = ConsoleClient(console_base)
    guesser.get("/console/login")
    for _ in range(5):  # [console] login_free_attempts
        assert guesser.post("/console/login", {"username": "vera", "password": "guess"}
                            ).status_code == 401
    locked = guesser.post("/console/login", {"username": "vera", "password": "viewer-pass-1234"})
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) >= 1


def test_bulk_replay_job_reports_refusals_and_checks_the_selection(console_base, store):
    ids = [add_delivery_dead_letter(store, i, error_code="retries_exhausted") for i in range(3)]
    add_delivery_dead_letter(store, 9)  # another code: not in the selection
    op = ConsoleClient(console_base)
    op.login("omar")
    confirm = op.get("/console/bulk-replay?error_code=retries_exhausted")
    assert "Replay 3 open dead letters?" in confirm.text
    moved = op.post("/console/bulk-replay", {"error_code": "retries_exhausted", "expected": "5"})
    assert "The selection changed from 5 to 3" in moved.text
    r = op.post("/console/bulk-replay", {"error_code": "retries_exhausted", "expected": "3"},
                allow_redirects=False)
    assert r.status_code == 303 and "/console/jobs/job_" in r.headers["Location"]
    job_path = r.headers["Location"]
    viewer = ConsoleClient(console_base)
    viewer.login("vera")
    done = wait_for(lambda: (p := viewer.get(job_path).text) and 'data-state="done"' in p and p,
                    30, message="the job to finish")
    assert 'id="job-refused">3<' in done  # no ledger delivery behind these: refused, not lost
    for dl_id in ids:
        assert dl_id in done and store.get(dl_id).state == "open"


def test_an_ehr_change_action_item_is_listed_and_shown_but_not_replayed(console_base, store):
    text = ("The EHR (ehr) cancelled appointment appt-9@Cal.com (hl7:S15). Action needed in "
            "Cal.com: cancel booking BK9, so the patient is told.")
    item = add_delivery_dead_letter(store, 9, stage="ehr_change", error_code="no_api_key",
                                    error_class="EhrSideChange", error_text=text,
                                    delivery_id="", event_id="", wire=None, message_event="S15")
    c = ConsoleClient(console_base)
    c.login("omar")
    listed = c.get("/console/deadletters?stage=ehr_change").text
    assert item in listed and "no_api_key" in listed
    page = c.get(f"/console/deadletters/{item}").text
    assert "cancel booking BK9" in page
    assert 'id="replay"' not in page and 'id="discard"' in page
    refused = c.post(f"/console/deadletters/{item}/replay")
    assert "Not replayed: an EHR-side change is made in Cal.com by a person" in refused.text
