"""core/faults: crash points are off unless CALEHR_FAULTS names them; then os._exit at the point."""

from __future__ import annotations

import subprocess
import sys

import pytest

from core import faults
from tests.support import ROOT


def test_parse_reads_points_and_probabilities_and_refuses_unknown_ones() -> None:
    assert faults.parse("") == {}
    assert faults.parse("after_accept:0.1, spool_drain") == {"after_accept": 0.1, "spool_drain": 1.0}
    with pytest.raises(faults.FaultConfigError, match="unknown point"):
        faults.parse("after_lunch:0.5")
    with pytest.raises(faults.FaultConfigError, match=r"\[0, 1\]"):
        faults.parse("after_accept:2")


def run(env: dict[str, str], point: str = "after_accept") -> subprocess.CompletedProcess:
    code = f"from core.faults import crash_point\ncrash_point({point!r})\nprint('survived')"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env}, timeout=30)


def test_unset_means_no_crash() -> None:
    result = run({})
    assert result.returncode == 0 and "survived" in result.stdout


def test_a_named_point_exits_at_once_and_logs_it(tmp_path) -> None:
    log = tmp_path / "faults.log"
    result = run({"CALEHR_FAULTS": "after_accept:1", "CALEHR_FAULT_LOG": str(log)})
    assert result.returncode == faults.EXIT_CODE and "survived" not in result.stdout
    assert log.read_text().split()[0] == "after_accept"
    other = run({"CALEHR_FAULTS": "after_accept:1"}, point="spool_drain")
    assert other.returncode == 0  # only the named point


def test_zero_probability_never_fires() -> None:
    assert run({"CALEHR_FAULTS": "after_accept:0", "CALEHR_FAULT_SEED": "3"}).returncode == 0
