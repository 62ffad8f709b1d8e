from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.config import ConfigError, Settings
from tests.support import ROOT, config_text


def load(text: str, env: dict[str, str] | None = None) -> Settings:
    return Settings.from_toml(text, env or {})


def test_example_config_is_valid():
    s = load((ROOT / "core" / "example.toml").read_text())
    assert s.targets[0].kind == "file"
    assert s.routes[0].targets == ("ehr-files",)


def test_env_expansion(tmp_path: Path):
    text = config_text(tmp_path).replace('"whsec_demo_3f9a1c2e7b"', '"${HOOK_SECRET}"')
    s = load(text, {"HOOK_SECRET": "from-env", "REDIS_URL": "redis://x"})
    assert s.calcom.webhook_secrets == ("from-env",)
    assert s.redis_url == "redis://x"


@pytest.mark.parametrize(("change", "key"), [
    (lambda t: t.replace('webhook_secrets = ["whsec_demo_3f9a1c2e7b"]', 'webhook_secrets = "${MISSING}"'),
     "calcom.webhook_secrets"),
    (lambda t: t.replace('timezone = "America/Chicago"', 'timezone = "Mars/Base"'), "targets[0].timezone"),
    (lambda t: t.replace('kind = "file"', 'kind = "ftp"'), "targets[0].kind"),
    (lambda t: t.replace('kind = "file"', 'kind = "file"\nbogus = 1'), "targets[0].bogus"),
    (lambda t: t.replace("task_time_limit = 15", "task_time_limit = 600"), "worker.task_time_limit"),
    (lambda t: t.replace("circuit_failure_threshold = 3", 'circuit_failure_threshold = "3"'),
     "delivery.circuit_failure_threshold"),
    (lambda t: t.replace('targets = ["files"]', 'targets = ["nowhere"]'), "routes[0].targets"),
    (lambda t: t.replace('encryption_keys = ["', 'encryption_keys = ["x'), "security.encryption_keys[0]"),
    (lambda t: t.replace("[calcom]", '[calcom]\nblocker_attendee_email = "nobody"'),
     "calcom.blocker_attendee_email"),
    (lambda t: t + '\n[inbound]\nfhir_token = 12\n', "inbound.fhir_token"),
    (lambda t: t + '\n[inbound]\ntoken = "x"\n', "inbound.token"),
])
def test_errors_name_the_key(tmp_path: Path, change, key):
    text = change(config_text(tmp_path))
    with pytest.raises(ConfigError) as err:
        load(text)
    assert str(err.value).startswith(key), str(err.value)


def test_reverse_direction_settings(tmp_path: Path):
    s = load(config_text(tmp_path))
    assert s.inbound.fhir_token == ""  # FHIR inbound refused until a token is configured
    assert (s.calcom.blocker_event_type_id, s.calcom.blocker_event_type_slug) == (0, "ehr-hold")
    text = config_text(tmp_path).replace("[calcom]", "[calcom]\nblocker_event_type_id = 4711\n"
                                         'blocker_attendee_email = "holds@clinic.test"')
    s = load(text + '\n[inbound]\nfhir_token = "${FHIR_TOKEN}"\n', {"FHIR_TOKEN": "t0k"})
    assert s.inbound.fhir_token == "t0k"
    assert s.calcom.blocker_event_type_id == 4711
    assert s.calcom.blocker_attendee_email == "holds@clinic.test"


def test_encryption_keys_from_env_come_first(tmp_path: Path):
    from cryptography.fernet import Fernet

    new = Fernet.generate_key().decode()
    s = load(config_text(tmp_path), {"CALEHR_ENCRYPTION_KEYS": new})
    assert s.security.encryption_keys[0] == new and len(s.security.encryption_keys) == 2


def test_config_check_command(tmp_path: Path):
    good = tmp_path / "good.toml"
    good.write_text(config_text(tmp_path))
    bad = tmp_path / "bad.toml"
    bad.write_text(config_text(tmp_path).replace('kind = "file"', 'kind = "ftp"'))
    run = [sys.executable, "-m", "calehr.cli", "config", "check"]
    ok = subprocess.run(run, env={"CALEHR_CONFIG": str(good), "PATH": "/usr/bin"},
                        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert ok.returncode == 0 and "config ok" in ok.stdout
    err = subprocess.run(run, env={"CALEHR_CONFIG": str(bad), "PATH": "/usr/bin"},
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert err.returncode == 2 and "targets[0].kind" in err.stderr


@pytest.mark.parametrize(("extra", "key"), [
    ('ack_mode = "fast"', "targets[0].ack_mode"),
    ('ack_mode = "enhanced"\naccept_ack_type = "XX"', "targets[0].accept_ack_type"),
    ('ack_mode = "enhanced"\naccept_ack_type = "NE"\napplication_ack_type = "ER"',
     "targets[0].application_ack_type"),
    ('ehr_echoes = "yes"', "targets[0].ehr_echoes"),
])
def test_ack_mode_and_echo_settings_are_checked(tmp_path: Path, extra, key):
    text = config_text(tmp_path).replace('kind = "file"', f'kind = "file"\n{extra}', 1)
    with pytest.raises(ConfigError) as err:
        load(text)
    assert str(err.value).startswith(key), str(err.value)


def test_ack_mode_echoes_and_fhir_id_parse(tmp_path: Path):
    text = config_text(tmp_path).replace(
        'kind = "file"', 'kind = "file"\nack_mode = "enhanced"\napplication_ack_type = "NE"\n'
        "ehr_echoes = false", 1).replace('ics_token = "tok-okafor"',
                                         'ics_token = "tok-okafor"\nfhir_id = "prac-1"', 1)
    s = load(text)
    t = s.target("files")
    assert (t.ack_mode, t.accept_ack_type, t.application_ack_type, t.ehr_echoes) == (
        "enhanced", "AL", "NE", False)
    assert s.providers[0].fhir_id == "prac-1"
    default = load(config_text(tmp_path)).target("files")
    assert (default.ack_mode, default.ehr_echoes) == ("original", True)
def test_console_secret_key_and_password_hashes_must_be_strong(tmp_path):
    """Issue 17 finding 7: a short session key or a weak hash refuses to start."""
    from werkzeug.security import generate_password_hash

    def users(secret: str, pw_hash: str) -> str:
        return (config_text(tmp_path / "out") + f'\n[console]\nsecret_key = "{secret}"\n'
                f'\n[[users]]\nusername = "ada"\npassword_hash = "{pw_hash}"\nrole = "admin"\n')

    good = generate_password_hash("a-long-password")
    assert Settings.from_toml(users("k" * 32, good), {}).console.secret_key == "k" * 32
    with pytest.raises(ConfigError, match="console.secret_key: at least 32"):
        Settings.from_toml(users("k" * 31, good), {})
    assert Settings.from_toml(users("k" * 32, generate_password_hash("x", "pbkdf2")), {})
    for weak in ("pbkdf2:sha256:1000", "pbkdf2:sha1:2000000", "scrypt:1024:8:1",
                 "scrypt:32768:1:1"):
        with pytest.raises(ConfigError, match=r"users\[0\].password_hash: weaker"):
            Settings.from_toml(users("k" * 32, generate_password_hash("x", weak)), {})
