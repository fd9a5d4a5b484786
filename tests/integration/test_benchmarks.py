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

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"


def _run(script: str, *args: str, tmp_path: Path) -> str:
    proc = subprocess.run([sys.executable, str(BENCH / script), "--quick", "--tmp-dir",
                           str(tmp_path), *args], capture_output=True, text=True, timeout=600,
                          cwd=REPO)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow  # > 5 s on 2 cores: keeps -m "not slow" under 3 min
def test_loader_benchmark_json_on_the_real_davis_sample(tmp_path, real_davis):
    r = json.loads(_run("loader_throughput.py", "--json", "--davis-root", str(real_davis),
                        tmp_path=tmp_path))
    assert r["data"].startswith("real DAVIS-2016")
    assert set(r["clips_per_s"]) >= {"loader", "loader-frames", "folder", "ceiling", "ceiling+mask"}
    assert all(_positive(v["best"]) and _positive(v["median"]) for v in r["clips_per_s"].values())
    assert set(r["targets"]) == {"loader/folder", "loader/ceiling+mask", "loader-frames/ceiling"}
    for name in r["targets"]:
        assert _positive(r["ratios"][name])
        assert isinstance(r["pass"][name], bool)
    assert not any(tmp_path.iterdir()), "the benchmark left files behind"


@pytest.mark.slow  # > 5 s on 2 cores: keeps -m "not slow" under 3 min
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
    # the target is on bytes written, at 2 workers
    assert set(r["written_ratios_to_tar"]) == {"preprocess w=1", "preprocess w=2"}
    assert set(r["pass"]) == {"preprocess w=2"} and isinstance(r["pass"]["preprocess w=2"], bool)
    assert r["pass"]["preprocess w=2"] == (r["written_ratios_to_tar"]["preprocess w=2"] >= 0.5)
    assert not any(tmp_path.iterdir()), "the benchmark left files behind"


@pytest.mark.slow  # > 5 s: keeps `-m "not slow"` under 3 min
def test_s3_streaming_benchmark_json(tmp_path):
    r = json.loads(_run("s3_streaming.py", "--synthetic", "--json", tmp_path=tmp_path))
    assert set(r["clips_per_s"]) == {"local", "s3"}
    assert all(_positive(v["best"]) and _positive(v["median"]) for v in r["clips_per_s"].values())
    assert _positive(r["ratio_s3_to_local"]) and isinstance(r["pass"], bool)
    assert not any(tmp_path.iterdir()), "the benchmark left files behind"


SHARED = REPO.parent / "shared" / "data"


@pytest.mark.parametrize("root,split", [(SHARED / "DAVIS", "trainval"),
                                        (SHARED / "DAVIS-2016-240p" / "DAVIS", "val")],
                         ids=["DAVIS-480p-trainval", "DAVIS-2016-240p-val"])
def test_evaluation_equals_vos_benchmark_on_real_davis(tmp_path, root, split):
    """Our J and F per sequence == vos-benchmark's, bit for bit, on real annotations with
    derived predictions (shifted, eroded, emptied frames)."""
    pytest.importorskip("vos_benchmark")
    if not (root / "Annotations" / "480p").is_dir():
        pytest.skip(f"real DAVIS data not found ({root})")
    r = json.loads(_run("evaluate_vs_vos_benchmark.py", "--json", "--davis-root", str(root),
                        "--split", split, tmp_path=tmp_path))
    n_sequences = len({ln.split()[0].split("/")[3]
                       for ln in (root / "ImageSets" / "480p" / f"{split}.txt").read_text()
                       .splitlines() if ln.strip()})
    assert r["sequences"] == n_sequences and r["evaluated_frames"] > 0
    assert r["identical"] is True and r["max_abs_diff"] == 0
    assert _positive(r["ratio"]) and isinstance(r["pass"], bool)
    assert not any(tmp_path.iterdir()), "the benchmark left files behind"


@pytest.mark.slow  # > 5 s: keeps `-m "not slow"` under 3 min
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


@pytest.mark.slow  # > 5 s: keeps `-m "not slow"` under 3 min
def test_online_speed_benchmark_json(tmp_path):
    """Tuning and inference s/frame (tiny model, CPU) against the paper's 3.90 s/frame."""
    r = json.loads(_run("online_speed.py", "--quick", "--synthetic", "--json", tmp_path=tmp_path))
    assert r["iterations"] == 20 and len(r["sequences"]) == 1
    for key in ("tune_s_per_frame", "infer_s_per_frame", "total_s_per_frame", "ratio_to_paper"):
        assert _positive(r[key]), key
    assert math.isclose(r["ratio_to_paper"], r["total_s_per_frame"] / 3.90)
    assert not any(tmp_path.iterdir()), "the benchmark left files behind"


def test_lucid_dream_speed_benchmark_json(tmp_path):
    """The lucid-dream speed target (64x64 < 0.1 s, once a unit test) is judged here."""
    r = json.loads(_run("lucid_dream_speed.py", "--json", tmp_path=tmp_path))
    row = r["results"]["64x64"]
    assert len(row["runs"]) == 2 and _positive(row["median_s"])
    assert r["pass"]["64x64"] == (row["median_s"] < r["target_small_s"] == 0.1)


@pytest.mark.slow  # FFCV's JIT compilation: > 5 s
def test_ffcv_vs_webdataset_benchmark_json(tmp_path):
    """The FFCV store against the WebDataset loader: same pixels, positive samples/s."""
    pytest.importorskip("ffcv")
    r = json.loads(_run("ffcv_vs_webdataset.py", "--json", tmp_path=tmp_path))
    assert r["pixels_equal"] == 4
    assert set(r["samples_per_s"]) == {"webdataset", "ffcv-raw"}
    assert all(_positive(v["best"]) and _positive(v["median"]) for v in r["samples_per_s"].values())
    assert set(r["ratios"]) == {"ffcv-raw/webdataset"}
    assert _positive(r["ratios"]["ffcv-raw/webdataset"])
    assert not any(tmp_path.iterdir()), "the benchmark left files behind"


@pytest.mark.slow  # > 5 s: keeps `-m "not slow"` under 3 min
def test_micro_claims_benchmark_json(tmp_path):
    """Every speed claim of the code and docs is measured against its baseline and reported."""
    r = json.loads(_run("micro_claims.py", "--json", tmp_path=tmp_path))
    names = {"tar", "tarwrite", "writeback", "png", "jpeg", "gif"}
    assert set(r["ratios"]) == set(r["claims"]) == set(r["pass"]) == names
    assert all(_positive(v) for v in r["ratios"].values())
    assert all(r["pass"][k] == (r["ratios"][k] > 1.0) for k in names)
    assert r["results"]["writeback"]["writeback_starts"] >= 1
    assert not any(tmp_path.iterdir()), "the benchmark left files behind"


@pytest.mark.slow
def test_accuracy_proxy_trains_and_evaluates_on_a_davis_root(tmp_path):
    """``accuracy_proxy.py`` end to end on a generated DAVIS-2016 root (train + val), at a budget
    of one step per phase: every phase runs through the launchers, ``OUT/weights.pt`` and
    ``OUT/segment.yaml`` are written, the report holds the four variants per val sequence with
    seeds and minutes, and ``--eval-only`` re-scores the checkpoint with the same settings."""
    from pipeline.synthetic import SyntheticSpec, write_dataset

    root = write_dataset("davis2016", tmp_path / "DAVIS",
                         SyntheticSpec(size=(64, 48), n_sequences=2, n_frames=6, seed=0))
    out = tmp_path / "proxy"
    small = ["--budget-min", "0.01", "--ranks", "1",
             "--train-set", "data.augment.size=[48,64]", "batch.size=2",
             "--segment-set", "online.iterations=2", "online.dreams=2", "online.size=[48,64]"]
    proc = subprocess.run([sys.executable, str(BENCH / "accuracy_proxy.py"), "--davis-root",
                           str(root), "--out", str(out), "--seeds", "2", "--json", *small],
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    r = json.loads(proc.stdout)
    assert r == json.loads((out / "report.json").read_text())
    val = sorted(p.name for p in (root / "JPEGImages" / "480p").iterdir()
                 if p.name in (root / "ImageSets" / "480p" / "val.txt").read_text())
    assert sorted(r["sequences"]) == val and len(val) == 2
    variants = {"copy_first", "online_only", "ssb_only", "full"}
    assert set(r["mean"]) == variants
    for row in r["sequences"].values():
        assert set(row) == variants
        assert all(0.0 <= row[v][m] <= 1.0 for v in variants for m in "JF")
    assert all(r["spread"][v]["seeds"] == 2 for v in ("online_only", "ssb_only", "full"))
    assert set(r["targets"]) == {"full_mean_J", "full_minus_online_only_J",
                                 "full_beats_copy_first_everywhere"}
    assert {"preprocess", "pretrain_tcb", "pretrain_ssb", "train_offline", "ssb_only",
            "eval_full"} <= set(r["minutes"])
    assert all(n == 1 for n in r["steps"].values()), r["steps"]   # the budget scaled the steps
    assert (out / "weights.pt").is_file() and (out / "ssb_only_weights.pt").is_file()
    seg = yaml.safe_load((out / "segment.yaml").read_text())
    assert seg["online"]["iterations"] == 2 and seg["online"]["size"] == [48, 64]

    # --eval-only: the same checkpoint on a root, online settings taken from OUT/segment.yaml
    again = tmp_path / "again"
    proc = subprocess.run([sys.executable, str(BENCH / "accuracy_proxy.py"), "--eval-only",
                           "--checkpoint", str(out / "weights.pt"), "--davis-root", str(root),
                           "--out", str(again), "--seeds", "1", "--ranks", "1"],
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "target full_mean_J" in proc.stdout
    r2 = json.loads((again / "report.json").read_text())
    assert set(r2["mean"]) == variants                # ssb_only_weights.pt found beside it
    assert r2["mean"]["copy_first"] == r["mean"]["copy_first"]
    assert yaml.safe_load((again / "segment.yaml").read_text()) == seg
