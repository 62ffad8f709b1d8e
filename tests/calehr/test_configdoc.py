"""`calehr config schema` / `check` and the README's configuration table come from the settings
models: the schema is valid JSON Schema that accepts our configs and refuses bad ones, and the
README's table is exactly the generated one."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest

from calehr import configdoc
from calehr.up import fresh_config_text
from core.config import Settings, file_schema
from tests.support import ROOT, config_text

EXAMPLE = (ROOT / "core" / "example.toml").read_text()


def validator() -> jsonschema.Draft202012Validator:
    schema = file_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_accepts_the_example_the_generated_and_the_test_configs(tmp_path: Path):
    check = validator()
    for text in (EXAMPLE, fresh_config_text(EXAMPLE), config_text(tmp_path)):
        assert Settings.from_toml(text, {}).targets  # the parser accepts them too
        assert [e.message for e in check.iter_errors(tomllib.loads(text))] == []


@pytest.mark.parametrize(("change", "where"), [
    (lambda t: "bogus = 1\n" + t, "$"),
    (lambda t: t.replace('kind = "file"', 'kind = "file"\nretries = 3'), "$.targets[0]"),
    (lambda t: t.replace('kind = "file"', 'kind = "ftp"'), "$.targets[0].kind"),
    (lambda t: t + "\n[worker]\nconcurrency = true\n", "$.worker.concurrency"),
    (lambda t: t + "\n[delivery]\nretry_base_seconds = \"2\"\n", "$.delivery.retry_base_seconds"),
    (lambda t: t + "\n[mllp]\nmax_connections = 0\n", "$.mllp.max_connections"),
    (lambda t: t.replace('name = "Lakeside Clinic"', "name = 7"), "$.locations[0].name"),
    (lambda t: t.replace("[calcom]", "[calcom_api]"), "$"),
])
def test_schema_refuses_a_bad_file_where_the_parser_does(change, where):
    bad = change(EXAMPLE)
    errors = list(validator().iter_errors(tomllib.loads(bad)))
    assert errors and errors[0].json_path == where, [(e.json_path, e.message) for e in errors]
    with pytest.raises(ValueError, match=r"^(calcom|\w+|\w+\[0\])"):
        Settings.from_toml(bad, {})


def test_every_key_has_a_description():
    schema = file_schema()
    tables = [schema, *schema["$defs"].values()]
    missing = [f"{t.get('title')}.{key}" for t in tables for key, prop in t["properties"].items()
               if not prop.get("description") and "$ref" not in prop and "items" not in prop]
    assert not missing
    assert all(d.get("description") for d in schema["$defs"].values())


def test_readme_table_is_the_generated_one(tmp_path: Path):
    readme = (ROOT / "README.md").read_text()
    assert configdoc.readme_with_table(readme) == readme, "run: python -m calehr.configdoc"
    table = configdoc.config_table()
    assert "| `port` | integer | `0` | mllp: EHR port (1-65535) |" in table
    assert "| **`[[targets]]`** |" in table and "| `role` | `viewer` \\| `operator` \\| `admin` |" in table
    copy = tmp_path / "README.md"
    copy.write_text(readme.replace("| mllp: EHR port (1-65535) |", "| an old text |"))
    assert configdoc.main(["--check", str(copy)]) == 1
    assert configdoc.main([str(copy)]) == 0 and copy.read_text() == readme
    assert configdoc.main(["--check", str(copy)]) == 0


def test_config_commands(tmp_path: Path):
    run = [sys.executable, "-m", "calehr.cli", "config"]
    env = {"PATH": "/usr/bin"}
    schema = subprocess.run([*run, "schema"], env=env, capture_output=True, text=True, cwd=ROOT,
                            timeout=60, check=True)
    assert json.loads(schema.stdout) == file_schema()
    table = subprocess.run([*run, "table"], env=env, capture_output=True, text=True, cwd=ROOT,
                           timeout=60, check=True)
    assert table.stdout == configdoc.config_table()
    bad = tmp_path / "bad.toml"
    bad.write_text("bogus = 1\n" + EXAMPLE + "\n[worker]\nconcurrency = true\n")
    err = subprocess.run([*run, "check", str(bad)], env=env, capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert err.returncode == 2
    assert sorted(err.stderr.removeprefix("config error: ").splitlines()) == [
        "bogus: unknown key", "worker.concurrency: expected an integer, got a boolean"]
    good = subprocess.run([*run, "check", str(ROOT / "core" / "example.toml")], env=env,
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert good.returncode == 0 and "config ok" in good.stdout
