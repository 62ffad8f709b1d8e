"""`calehr deadletter` against real processes: list, replay (order and staleness), force, discard."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.factories import sim_messages
from tests.support import ROOT, config_text, fixture_bytes, free_port, post_signed, wait_for
from tests.worker.helpers import dead_letters

pytestmark = pytest.mark.slow


def cli(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "calehr.cli", "deadletter", *args], env=stack.env,
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def setup(stack, outbox, tmp_path, ack: str):
    port = free_port()
    target = f'[[targets]]\nname = "ehr"\nkind = "mllp"\nport = {port}\nread_timeout = 2.0\n'
    stack.write_config(config_text(outbox, extra_targets=target,
                                   routes='[[routes]]\ntargets = ["ehr"]\n'))
    sim = stack.ehr_sim(port, tmp_path / "rejecting", ack=ack)
    base = stack.web()
    stack.worker()
    return port, sim, base


def test_replay_after_the_fix_delivers_once_with_the_same_control_id(stack, outbox, tmp_path,
                                                                      rclient):
    port, sim, base = setup(stack, outbox, tmp_path, "AE")
    post_signed(base, fixture_bytes("02_booking_created.json"))
    wait_for(lambda: dead_letters(rclient), 30, message="a dead letter")
    listed = json.loads(cli(stack, "list", "--json", "--stage", "delivery").stdout)
    assert listed["total"] == 1
    dl = listed["items"][0]
    assert dl["error_code"] == "ack_AE" and dl["state"] == "open"

    sim.stop()
    good = tmp_path / "accepting"
    stack.ehr_sim(port, good, name="ehr-sim-ok")
    out = cli(stack, "replay", dl["id"], "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"replayed": 1, "failed": []}
    got = wait_for(lambda: sim_messages(good), 30, message="the replayed S12")
    first = sim_messages(tmp_path / "rejecting")[0]
    assert [m["control_id"] for m in got] == [first["control_id"]]
    shown = wait_for(lambda: (d := json.loads(cli(stack, "show", dl["id"], "--json").stdout))
                     ["state"] == "resolved" and d, 30, message="dead letter resolved")
    actions = [a["action"] for a in shown["audit"]]
    assert actions[:2] == ["created", "replay"] and "delivered" in actions
    assert shown["audit"][1]["actor"].startswith("cli:")
    again = cli(stack, "replay", dl["id"])
    assert again.returncode == 1 and "resolved" in again.stdout


def test_stale_replay_is_skipped_unless_forced_and_force_is_audited(stack, outbox, tmp_path,
                                                                    rclient):
    port, sim, base = setup(stack, outbox, tmp_path, "AE")
    post_signed(base, fixture_bytes("02_booking_created.json"))
    dl_id = wait_for(lambda: dead_letters(rclient), 30, message="S12 dead letter")[0]["id"]
    sim.stop()
    good = tmp_path / "accepting"
    stack.ehr_sim(port, good, name="ehr-sim-ok")
    post_signed(base, fixture_bytes("04_booking_rescheduled.json"))
    wait_for(lambda: sim_messages(good), 30, message="the S13")

    assert cli(stack, "replay", dl_id).returncode == 0
    shown = wait_for(lambda: (d := json.loads(cli(stack, "show", dl_id, "--json").stdout))
                     and any("skipped" in a["action"] for a in d["audit"]) and d, 30,
                     message="the stale replay to be skipped")
    assert [m["event"] for m in sim_messages(good)] == ["S13"]  # the old S12 did not overtake

    assert shown["state"] == "open"  # a replay that sent nothing is back in front of a person
    forced = cli(stack, "replay", dl_id, "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    wait_for(lambda: [m["event"] for m in sim_messages(good)] == ["S13", "S12"], 30,
             message="the forced S12")
    audit = [json.loads(e) for e in rclient.lrange("calehr:audit", 0, -1)]
    assert any(e["action"] == "deadletter.replay" and e["details"].get("force") is True
               and e["actor"].startswith("cli:") for e in audit)


def test_discard_needs_a_reason_and_unknown_ids_are_clear_errors(stack, outbox, tmp_path, rclient):
    _, _, base = setup(stack, outbox, tmp_path, "AE")
    post_signed(base, fixture_bytes("02_booking_created.json"))
    dl_id = wait_for(lambda: dead_letters(rclient), 30, message="a dead letter")[0]["id"]
    no_reason = cli(stack, "discard", dl_id)
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    assert cli(stack, "discard", dl_id, "--reason", "duplicate booking, fixed by phone").returncode == 0
    assert json.loads(cli(stack, "show", dl_id, "--json").stdout)["state"] == "discarded"
    missing = cli(stack, "show", "dl_nope")
    assert missing.returncode == 1 and "no dead letter dl_nope" in missing.stderr
