"""The console in a real headless Chromium against the real stack: gunicorn, a Celery worker,
beat, Redis and the MLLP EHR simulator. Dead letters are made end to end (the simulator
answers AE); replays are checked at the simulator's out folder.

Screenshots of the pages go to test-artifacts/console-*.png.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from tests.deadletter.console_support import PASSWORDS, console_config
from tests.factories import appointment_bodies, sim_messages
from tests.support import PHI_STRINGS, ROOT, free_port, post_signed, wait_for
from tests.worker.helpers import dead_letters

pytestmark = pytest.mark.slow
SHOTS = ROOT / "test-artifacts"


def shot(page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"console-{name}.png"), full_page=True)


def login(page, base: str, username: str) -> None:
    page.goto(f"{base}/console/deadletters")
    assert "/console/login" in page.url  # not logged in yet: sent to the login page
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORDS[username])
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/console/deadletters.*"))


def audit(rclient) -> list[dict]:
    return [json.loads(e) for e in rclient.lrange("calehr:audit", 0, -1)]


@pytest.fixture
def ehr(stack, outbox, tmp_path: Path) -> dict:
    """The stack with an EHR that rejects everything (AE): each event becomes a dead letter."""
    port = free_port()
    stack.write_config(console_config(outbox, port))
    rejecting = stack.ehr_sim(port, tmp_path / "ehr-rejecting", ack="AE", name="ehr-ae")
    base = stack.web()
    stack.worker()
    stack.beat()
    return {"port": port, "base": base, "rejecting": rejecting, "tmp": tmp_path}


def make_dead_letters(ehr: dict, rclient, n: int, tag: str) -> list[dict]:
    for i in range(n):
        assert post_signed(ehr["base"], appointment_bodies(i, tag)["created"]).status_code == 202
    return wait_for(lambda: len(dead_letters(rclient)) >= n and dead_letters(rclient), 120, 0.2,
                    f"{n} dead letters")


def accepting_ehr(stack, ehr: dict) -> Path:
    """Swap the rejecting EHR for one that accepts (AA), on the same port."""
    ehr["rejecting"].stop()
    out = ehr["tmp"] / "ehr-accepting"
    stack.ehr_sim(ehr["port"], out, ack="AA", name="ehr-aa")
    return out


def test_viewer_filters_opens_a_masked_dead_letter_and_cannot_replay(stack, ehr, rclient,
                                                                      new_browser):
    dls = make_dead_letters(ehr, rclient, 3, "V")
    wanted = next(d for d in dls if d["appointment_key"].startswith("V000000000000000000001"))
    page = new_browser("viewer")
    login(page, ehr["base"], "vera")
    assert page.locator("#dead-letters tbody tr").count() == 3
    page.fill("input[name=appointment_key]", wanted["appointment_key"])
    page.click("#filters button[type=submit]")
    page.wait_for_url(re.compile(r".*appointment_key=.*"))
    assert page.locator("#dead-letters tbody tr").count() == 1
    assert "ack_AE" in page.inner_text("#reasons")
    shot(page, "list")
    page.click(f"#dead-letters a:has-text('{wanted['id']}')")
    page.wait_for_url(re.compile(rf".*/console/deadletters/{wanted['id']}$"))
    content = page.content()
    assert "SIU^S12^SIU_S12" in page.inner_text("#wire")
    for phi in PHI_STRINGS:
        assert phi not in content, f"{phi} shown to a viewer"
    timeline = page.inner_text("#timeline")
    assert "Received BOOKING_CREATED" in timeline and "Attempt 1: ACK AE" in timeline
    assert page.locator("#replay").count() == 0 and page.locator("#reveal").count() == 0
    shot(page, "detail-masked")
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    refused = page.request.post(f"{ehr['base']}/console/deadletters/{wanted['id']}/replay",
                                form={"csrf_token": token}, max_redirects=0)
    assert refused.status == 403  # refused by the server, not only hidden
    assert dead_letters(rclient)[0]["state"] == "open"
    assert not any(e["action"] == "deadletter.replay" for e in audit(rclient))


def test_operator_reveals_edits_and_resends_and_the_ehr_gets_the_edit(stack, ehr, rclient,
                                                                      new_browser):
    dl = make_dead_letters(ehr, rclient, 1, "E")[0]
    accepted = accepting_ehr(stack, ehr)
    page = new_browser("operator")
    login(page, ehr["base"], "omar")
    page.goto(f"{ehr['base']}/console/deadletters/{dl['id']}")
    assert "Reyes" not in page.inner_text("#wire")
    page.click("#reveal")
    page.wait_for_selector("#wire-editor")
    assert "Reyes^Jordan" in page.inner_text("#wire")
    shot(page, "detail-revealed")
    original = page.input_value("#wire-editor")
    edited = original.replace("Reyes^Jordan", "Reyes-Diaz^Jordan")
    assert edited != original
    page.fill("#wire-editor", edited)
    page.click("#resend")
    page.wait_for_selector(".flash-ok")
    got = wait_for(lambda: sim_messages(accepted), 60, message="the edited message at the EHR")
    assert len(got) == 1 and "PID|" in got[0]["raw"] and "Reyes-Diaz^Jordan" in got[0]["raw"]
    assert got[0]["control_id"] == json.loads(dl["attempts"])[0]["control_id"]  # same MSH-10
    wait_for(lambda: dead_letters(rclient)[0]["state"] == "resolved", 30,
             message="the dead letter to resolve")
    page.reload()
    assert "resolved" in page.inner_text(".page-head").lower()  # the badge is upper-cased by CSS
    assert "Resolved: delivered" in page.inner_text("#timeline")
    mine = [(e["action"], e["record"]) for e in audit(rclient) if e["actor"] == "console:omar"]
    for action in ("deadletter.reveal", "deadletter.edit", "deadletter.replay"):
        assert (action, dl["id"]) in mine, action
    admin = new_browser("admin")
    login(admin, ehr["base"], "ada")
    admin.click("nav >> text=Audit log")
    table = admin.inner_text("#audit")
    assert "console:omar" in table and "deadletter.edit" in table and dl["id"] in table
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", table)
    shot(admin, "audit")
    for proc in stack.procs:  # reveal and edit put no PHI into the web or worker logs
        if proc.name in ("web", "worker", "beat"):
            leaked = [phi for phi in PHI_STRINGS + ("Reyes-Diaz",) if phi in proc.output()]
            assert leaked == [], f"{proc.name} log has {leaked}"


def test_bulk_replay_of_100_dead_letters_delivers_each_once(stack, ehr, rclient, new_browser):
    n = 100
    make_dead_letters(ehr, rclient, n, "B")
    accepted = accepting_ehr(stack, ehr)
    page = new_browser("bulk")
    login(page, ehr["base"], "omar")
    assert "1–50 of 100" in page.inner_text(".pager")
    shot(page, "list-100")
    page.click("#bulk-replay")
    page.wait_for_selector("#bulk-start")
    assert f"Replay {n}" in page.inner_text("#bulk-start")
    page.click("#bulk-start")
    page.wait_for_url(re.compile(r".*/console/jobs/job_.*"))

    def resolved() -> bool:
        try:  # the page refreshes itself while the job runs
            return page.inner_text("#job-resolved", timeout=2000) == str(n)
        except Exception:  # noqa: BLE001 - caught mid-reload; look again
            return False

    wait_for(resolved, 180, 0.5, "the progress page to show 100 delivered")
    assert page.inner_text("#job-replayed") == str(n) and page.inner_text("#job-refused") == "0"
    shot(page, "bulk-job")
    wait_for(lambda: rclient.scard("calehr:pending-index") == 0, 30,
             message="every delivery queue to drain")
    msgs = sim_messages(accepted)
    assert len(msgs) == n
    assert len({m["control_id"] for m in msgs}) == n
    assert Counter(m["placer"] for m in msgs).most_common(1)[0][1] == 1
    assert {d["state"] for d in dead_letters(rclient)} == {"resolved"}
    entries = audit(rclient)
    assert sum(1 for e in entries if e["action"] == "deadletter.replay"
               and e["actor"] == "console:omar") == n
    assert any(e["action"] == "deadletter.bulk_replay" and e["details"]["count"] == n
               for e in entries)
