"""The README is executed: every shell block and every `calehr ...` command it shows is run here,
with its placeholders filled, against a real `calehr up` in an empty folder. A command added to
the README without a run here, or one that does not work as written, fails this test.

Placeholders: port 8000 -> a free port (and the MLLP listener on a free port, not 6661),
`<secret>` and the admin password -> what `calehr up` printed, `<dead letter id>` -> the id
`calehr deadletter list` shows, NAME/ROLE/FILE/P/DIR/ID -> concrete values.
`scripts/run` is `scripts/bootstrap` (run by scripts/test before this suite) plus `calehr up`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deadletter.console_support import ConsoleClient
from tests.support import ROOT, free_port, wait_for, wait_http

pytestmark = pytest.mark.slow
README = (ROOT / "README.md").read_text()
CALEHR = str(ROOT / ".venv" / "bin" / "calehr") if (ROOT / ".venv/bin/calehr").exists() else ""

# README blocks not run here, and why (the list is checked: a stale entry fails too)
NOT_RUN = {
    "scripts/test": "this test runs inside it",
    "apt-get install -y wrk": "the bench section: installs packages and runs for minutes",
}


def readme_blocks() -> list[tuple[str, str]]:
    return re.findall(r"^```(\w+)\n(.*?)^```", README, re.M | re.S)


def first_line(body: str) -> str:
    return body.strip().splitlines()[0].split("#")[0].strip()


def readme_commands() -> set[str]:
    spans = re.findall(r"`((?:\.venv/bin/)?calehr [^`]*)`", README)
    return {s.replace("\\|", "|").removeprefix(".venv/bin/") for s in spans}


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALEHR_", "REDIS_"))}
    env.update(PYTHONUNBUFFERED="1", PATH=f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}")
    return env


@dataclass
class Bridge:
    folder: Path
    port: int
    mllp_port: int
    proc: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)
    secret: str = ""
    password: str = ""

    def start(self) -> str:
        log = self.folder / f"up-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [CALEHR, "up", "--port", str(self.port), "--mllp-port", str(self.mllp_port)],
                cwd=self.folder, env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        wait_http(f"http://127.0.0.1:{self.port}/readyz", 90)
        # what a person waits for before typing on: every component reports in
        wait_for(self.components_up, 60, 0.5, "every component up in calehr status")
        return log.read_text()

    def components_up(self) -> bool:
        run = self.calehr("status", "--json")
        return run.returncode in (0, 1) and all(c["up"] for c in json.loads(run.stdout)["components"])

    def stop(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGINT)  # Ctrl-C
        assert self.proc.wait(60) == 0

    def calehr(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CALEHR, *args], cwd=self.folder, env=clean_env(), input=stdin,
                              capture_output=True, text=True, timeout=60)

    def fill(self, text: str) -> str:
        return (text.replace("127.0.0.1:8000", f"127.0.0.1:{self.port}")
                .replace("<secret>", self.secret))

    def sh(self, script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-euo", "pipefail", "-c", self.fill(script)],
                              cwd=self.folder, env=clean_env(), capture_output=True, text=True,
                              timeout=120)

    def outbox(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted((self.folder / "var" / "outbox").glob("*.hl7"))]

    def dead_letters(self) -> list[dict]:
        listed = self.calehr("deadletter", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        return json.loads(listed.stdout)["items"]


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    assert CALEHR, "run scripts/bootstrap first (the README's scripts/run does)"
    folder = tmp_path_factory.mktemp("readme")
    for name in ("tests", "examples"):  # what the README's commands read from a clone
        (folder / name).symlink_to(ROOT / name)
    (folder / ".venv").symlink_to(ROOT / ".venv")
    b = Bridge(folder, free_port(), free_port())
    yield b
    if b.proc is not None and b.proc.poll() is None:
        os.killpg(b.proc.pid, signal.SIGKILL)
        b.proc.wait(10)


def ok(result: subprocess.CompletedProcess[str], *codes: int) -> str:
    assert result.returncode in (codes or (0,)), (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def serves(bridge: Bridge, args: list[str], ready: str) -> None:
    """Start a long-running command as the README shows it, see it serve, stop it."""
    log = bridge.folder / f"{args[0]}-{len(bridge.logs)}.log"
    bridge.logs.append(log)
    with open(log, "wb") as out:
        proc = subprocess.Popen([CALEHR, *args], cwd=bridge.folder, env=clean_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if ready.startswith("http"):
            wait_http(ready, 60)
        else:
            wait_for(lambda: ready in log.read_text() or proc.poll() is not None, 60, 0.1, ready)
            assert proc.poll() is None, log.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_every_readme_block_is_run_or_named_here():
    first_lines = {first_line(body) for kind, body in readme_blocks() if kind == "sh"}
    for line in NOT_RUN:
        assert line in first_lines, f"NOT_RUN names {line!r}, which the README no longer shows"


def test_quick_start_and_support_path_as_written(bridge: Bridge):
    blocks = [(kind, body) for kind, body in readme_blocks()
              if first_line(body) not in NOT_RUN]
    assert [k for k, _ in blocks] == ["sh", "sh", "sh", "toml", "sh"], blocks
    (_, run), (_, post), (_, support), (_, provider), (_, replay) = blocks
    assert run.strip() == "scripts/run"
    assert (ROOT / "scripts/run").read_text().rstrip().endswith('exec .venv/bin/calehr up "$@"')
    printed = bridge.start()
    bridge.secret = re.search(r"and this secret: (\S+)", printed).group(1)
    bridge.password = re.search(r"calehr up: password: (\S+)", printed).group(1)
    assert f"calehr up: console http://127.0.0.1:{bridge.port}/console/" in printed
    assert "first console user: admin" in printed

    shown = ok(bridge.sh(post))
    assert '"duplicate":false' in shown.replace(" ", "") and "bridge: HEALTHY" in shown
    wait_for(lambda: any(b"SIU^S12" in m for m in bridge.outbox()), 60, 0.2, "the S12 in var/outbox")

    ok(bridge.sh(support))
    dls = wait_for(bridge.dead_letters, 60, 0.3, "the new doctor's dead letter")
    assert len(dls) == 1 and dls[0]["stage"] == "mapping" and dls[0]["state"] == "open"
    client = ConsoleClient(f"http://127.0.0.1:{bridge.port}")
    assert client.login("admin", bridge.password).status_code == 302
    page = client.get("/console/deadletters")
    assert dls[0]["id"] in page.text and "mapping" in page.text
    status_page = client.get("/console/status").text
    assert "Needs attention" in status_page and "1 open dead letter(s)" in status_page

    config = bridge.folder / "var" / "calehr.toml"
    config.write_text(config.read_text() + "\n" + provider)
    bridge.stop()  # Ctrl-C, then scripts/run again
    bridge.start()
    ok(bridge.sh(replay.replace("<dead letter id>", dls[0]["id"])))
    wait_for(lambda: any(b"LEE01" in m for m in bridge.outbox()), 60, 0.2,
             "the replayed S12 for dr-lee in var/outbox")
    wait_for(lambda: bridge.dead_letters()[0]["state"] == "resolved", 30, 0.3, "resolved")


def config_schema_validates(b: Bridge) -> None:
    import tomllib

    import jsonschema

    schema = json.loads(ok(b.calehr("config", "schema")))
    config = tomllib.loads((b.folder / "var" / "calehr.toml").read_text())
    jsonschema.Draft202012Validator(schema).validate(config)


def _commands(b: Bridge) -> dict[str, Callable[[], None]]:
    fixture = "tests/fixtures/calcom/02_booking_created.json"
    web_port, sim_port, mllp_port = free_port(), free_port(), free_port()

    def users() -> None:
        ok(b.calehr("users", "add", "nora", "--role", "viewer"))
        assert "nora" in ok(b.calehr("users", "list"))
        ok(b.calehr("users", "set-role", "nora", "operator"))
        assert "password:" in ok(b.calehr("users", "reset-password", "nora"))
        ok(b.calehr("users", "remove", "nora"))
        assert "nora" not in ok(b.calehr("users", "list"))

    def admin_password() -> None:
        new = re.search(r"password: (\S+)", ok(b.calehr("users", "reset-password", "admin")))
        client = ConsoleClient(f"http://127.0.0.1:{b.port}")
        assert client.login("admin", new.group(1)).status_code == 302

    def dead_letter_desk() -> None:
        dl_id = b.dead_letters()[0]["id"]
        ok(b.calehr("deadletter", "list"))
        ok(b.calehr("deadletter", "show", dl_id))
        refused = b.calehr("deadletter", "replay", dl_id)  # resolved already: says so
        assert refused.returncode == 1 and dl_id in refused.stdout, refused
        refused = b.calehr("deadletter", "discard", dl_id, "--reason", "readme")
        assert refused.returncode == 1 and dl_id in refused.stderr, refused

    return {
        "calehr up": lambda: None,  # the quick start runs it (twice)
        "calehr up [--port 8000]": lambda: None,
        "calehr web": lambda: serves(b, ["web", "--port", str(web_port)],
                                     f"http://127.0.0.1:{web_port}/healthz"),
        "calehr worker": lambda: serves(b, ["worker", "--hostname", "readme@%h"], "ready."),
        "calehr beat": lambda: serves(b, ["beat"], "beat: Starting"),
        "calehr config check [FILE]": lambda: (ok(b.calehr("config", "check")),
                                               ok(b.calehr("config", "check", "var/calehr.toml"))),
        "calehr config schema": lambda: config_schema_validates(b),
        "calehr status [--json]": lambda: (ok(b.calehr("status"), 0, 1),
                                           json.loads(ok(b.calehr("status", "--json"), 0, 1))),
        "calehr reconcile": lambda: ok(b.calehr("reconcile"), 2),  # no Cal.com API key: says so
        "calehr audit [--record ID] [--actor NAME] [--json]": lambda: (
            ok(b.calehr("audit")),
            ok(b.calehr("audit", "--record", "user:admin", "--actor", "system:calehr-up", "--json"))),
        "calehr map FILE.json [FILE.json ...] [--target NAME]": lambda: ok(b.calehr(
            "map", fixture, fixture.replace("02_booking_created", "05_booking_cancelled"),
            "--target", "ehr-files")),
        "calehr map tests/fixtures/calcom/02_booking_created.json": lambda: ok(b.calehr("map",
                                                                                       fixture)),
        "calehr ehr-sim --port P --out DIR [--ack AA|AE|AR] [--delay-ms N] [--mismatch] "
        "[--max-frame-bytes N] [--commit-first] [--stray]": lambda: serves(
            b, ["ehr-sim", "--port", str(sim_port), "--out", "var/sim", "--ack", "AE",
                "--delay-ms", "5", "--mismatch", "--max-frame-bytes", "65536", "--commit-first",
                "--stray"], "listening"),
        "calehr deadletter list|show|replay|discard": dead_letter_desk,
        "calehr deadletter list --stage conflict": lambda: ok(b.calehr("deadletter", "list",
                                                                       "--stage", "conflict")),
        "calehr deadletter list --stage ehr_change": lambda: ok(b.calehr(
            "deadletter", "list", "--stage", "ehr_change")),
        "calehr mllp --port 6661": lambda: serves(b, ["mllp", "--port", str(mllp_port)],
                                                  "listening"),
        "calehr hash-password": lambda: ok(b.calehr("hash-password", stdin="a long password 1\n")),
        "calehr users": users,
        "calehr users add NAME --role ROLE": users,
        "calehr users add NAME --role viewer|operator|admin": users,
        "calehr users list": users,
        "calehr users set-role NAME ROLE": users,
        "calehr users reset-password NAME": users,
        "calehr users reset-password admin": admin_password,
        "calehr users remove NAME": users,
    }


def test_every_calehr_command_in_the_readme_works(bridge: Bridge):
    assert bridge.proc is not None and bridge.proc.poll() is None, "the quick start test runs first"
    commands = _commands(bridge)
    shown = readme_commands()
    assert shown == set(commands), {"not run here": shown - set(commands),
                                    "no longer in the README": set(commands) - shown}
    done: set[int] = set()
    for command in sorted(shown):
        run = commands[command]
        if id(run) in done:
            continue
        done.add(id(run))
        run()
    bridge.stop()
