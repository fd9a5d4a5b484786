"""Smoke test of ``benchmarks/fault_figures.py``: a reduced scenario runs and reports its row,
and ``--from-report`` prints the rows the fault tests write to ``$STCNN_FAULT_REPORT``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from faultlib import REPO, clean_env, record

SCRIPT = REPO / "benchmarks" / "fault_figures.py"


def _run(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=600, cwd=REPO, env=env or clean_env())


@pytest.mark.slow  # > 5 s: keeps `-m "not slow"` under 3 min
def test_preprocess_kill_scenario_json(tmp_path):
    proc = _run("--only", "preprocess-kill", "--kills", "2", "--json", "--tmp-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    r = result["scenarios"]["preprocess-kill"]
    assert r["ok"] is True and r["times"] == 2 and "byte-identical" in r["survived"]
    assert r["seconds"] > 0
    assert not any(tmp_path.iterdir()), "the script left files behind"


def test_table_from_a_report_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("STCNN_FAULT_REPORT", str(tmp_path / "report"))
    record("demo-ok", fault="a fault", where="somewhere", times=3, survived="all of it", ok=True,
           seconds=1.5)
    record("demo-bad", fault="another fault", where="elsewhere", times=1, survived="NO: nothing",
           ok=False)
    proc = _run("--from-report", str(tmp_path / "report"))
    assert proc.returncode == 1, proc.stderr               # a scenario that did not survive
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("| fault injected | where | how many times | what survived")
    assert "| a fault | somewhere | 3 | all of it | yes | 1.5 |" in lines
    assert any(line.startswith("| another fault |") and "| NO |" in line for line in lines)
