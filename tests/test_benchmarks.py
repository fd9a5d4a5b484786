"""Smoke tests of the benchmarks: they run (``--quick``) and report ratios.

No speed is asserted here: throughput goals are judged by running the benchmarks themselves
(benchmarks/README.md), never by timed unit tests on a shared CI machine.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


def _run(script: str, *args: str, tmp_path: Path) -> str:
    proc = subprocess.run([sys.executable, str(BENCH / script), "--quick", "--tmp-dir",
                           str(tmp_path), *args], capture_output=True, text=True, timeout=600,
                          cwd=REPO)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_loader_benchmark_json(tmp_path):
    r = json.loads(_run("loader_throughput.py", "--json", tmp_path=tmp_path))
    assert set(r["clips_per_s"]) >= {"loader", "loader-frames", "folder", "ceiling", "ceiling+mask"}
    assert all(_positive(v["best"]) and _positive(v["median"]) for v in r["clips_per_s"].values())
    assert set(r["targets"]) == {"loader/folder", "loader/ceiling+mask", "loader-frames/ceiling"}
    for name in r["targets"]:
        assert _positive(r["ratios"][name])
        assert isinstance(r["pass"][name], bool)
    assert not any(tmp_path.iterdir()), "the benchmark left files behind"


def test_loader_benchmark_table_on_synthetic_data(tmp_path):
    out = _run("loader_throughput.py", "--synthetic", tmp_path=tmp_path)
    assert "synthetic" in out
    for name in ("loader/folder", "loader/ceiling+mask", "loader-frames/ceiling"):
        line = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
        assert ("PASS" in line) != ("FAIL" in line), line


def test_preprocess_benchmark_json(tmp_path):
    r = json.loads(_run("preprocess_throughput.py", "--json", tmp_path=tmp_path))
    assert set(r["results"]) == {"tar", "preprocess w=1", "preprocess w=2"}
    assert all(_positive(v["mb_per_s"]) for v in r["results"].values())
    assert r["results"]["preprocess w=1"]["written_mb"] > 0
    assert set(r["ratios_to_tar"]) == {"preprocess w=1", "preprocess w=2"}
    assert all(_positive(v) for v in r["ratios_to_tar"].values())
    assert not any(tmp_path.iterdir()), "the benchmark left files behind"


def test_train_step_benchmark_json(tmp_path):
    """One real segmentation run at 1 rank (tiny config, synthetic lake): positive figures."""
    proc = subprocess.run([sys.executable, str(BENCH / "train_step.py"), "--phase", "segmentation",
                           "--ranks", "1", "--steps", "3", "--json", "--tmp-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, f"train_step.py failed:\n{proc.stdout}\n{proc.stderr}"
    r = json.loads(proc.stdout)
    assert (r["steps"], r["warmup_steps"], r["timed_steps"]) == (3, 2, 1)
    [case] = r["results"]
    assert (case["phase"], case["ranks"], case["world_size"]) == ("segmentation", 1, 1)
    assert case["completed"] and case["steps"] == 3
    assert case["global_batch"] == case["per_rank_batch"] == r["global_batch"]
    for key in ("mean_step_s", "samples_per_s", "samples_per_s_median", "summary_mean_step_s",
                "wall_s", "threads_per_rank"):
        assert _positive(case[key]), (key, case[key])
    assert math.isclose(case["samples_per_s"], case["global_batch"] / case["mean_step_s"])
    assert len(case["logged_step_s"]) == 3
    assert r["scaling"] == r["scaling_median"] == {"segmentation": {}}  # nothing to compare with
    assert not any(tmp_path.iterdir()), "the benchmark left files behind"


def test_online_speed_benchmark_json(tmp_path):
    """Tuning and inference s/frame (tiny model, CPU) against the paper's 3.90 s/frame."""
    r = json.loads(_run("online_speed.py", "--quick", "--synthetic", "--json", tmp_path=tmp_path))
    assert r["iterations"] == 20 and len(r["sequences"]) == 1
    for key in ("tune_s_per_frame", "infer_s_per_frame", "total_s_per_frame", "ratio_to_paper"):
        assert _positive(r[key]), key
    assert math.isclose(r["ratio_to_paper"], r["total_s_per_frame"] / 3.90)
    assert not any(tmp_path.iterdir()), "the benchmark left files behind"
