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
    of one step per training run and one online seed: every run goes through its launcher; the
    run is killed while a variant is being segmented, and the same command then keeps every
    training run and the finished evaluations (said to be skipped) while the killed segment job
    keeps its finished sequence; a third run skips everything and reports the same scores; other
    arguments are refused; ``--eval-only`` scores the weights found beside a checkpoint and names
    the missing ones."""
    import os
    import shutil
    import signal
    import sqlite3
    import time

    from pipeline.synthetic import SyntheticSpec, write_dataset

    root = write_dataset("davis2016", tmp_path / "DAVIS",
                         SyntheticSpec(size=(64, 48), n_sequences=2, n_frames=6, seed=0))
    out = tmp_path / "proxy"
    cmd = [sys.executable, str(BENCH / "accuracy_proxy.py"), "--davis-root", str(root), "--out",
           str(out), "--json", "--budget-min", "0.01", "--ranks", "1", "--seeds", "1",
           "--train-set", "data.augment.size=[48,64]", "batch.size=2",
           "--segment-set", "online.iterations=3", "online.dreams=2", "online.size=[48,64]"]

    # 1. killed (the whole process group) once online_only has finished one of its 2 sequences
    err = tmp_path / "killed.stderr"
    with open(err, "w") as f:
        killed = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=f,
                                  start_new_session=True)
    done_seq = out / "eval" / "online_only" / "seed0" / ".complete"
    deadline = time.monotonic() + 600
    while killed.poll() is None and not any(done_seq.glob("*.json")):
        assert time.monotonic() < deadline, "online_only never finished a sequence"
        time.sleep(0.05)
    assert killed.poll() is None, err.read_text()[-3000:]
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(timeout=60)
    assert not (out / "state" / "eval-online_only-seed0.json").exists()

    # 2. the same command continues
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    runs = ("preprocess", "pretrain_tcb", "pretrain_ssb", "pretrain_ssb_noattn", "train_offline",
            "train_offline_noattn", "ssb_alone")
    for name in runs:
        assert f"{name}: done with the same settings: skipped" in proc.stderr, name
    assert "copy_first: complete with the same settings and weights: skipped" in proc.stderr
    log = (out / "logs" / "segment-online_only-seed0.log").read_text()
    assert "of 2 sequences already complete" in log      # the killed job's sequence kept
    r = json.loads(proc.stdout)
    assert r == json.loads((out / "report.json").read_text())
    assert r["skipped"] == [*runs, "copy_first"]
    val = sorted(p.name for p in (root / "JPEGImages" / "480p").iterdir()
                 if p.name in (root / "ImageSets" / "480p" / "val.txt").read_text())
    assert sorted(r["sequences"]) == val and len(val) == 2
    variants = ["copy_first", "online_only", "full", "full_plain", "tcb_noattn", "ssb_alone"]
    assert list(r["mean"]) == variants and r["missing"] == {}
    # per sequence and seed J/F/T; online_only and full also after 0, 1, 2 of the 3 steps
    assert r["segment_at"] == [0, 1, 2] and r["iterations"] == 3
    for v in variants:
        points = ["final", "0", "1", "2"] if v in ("online_only", "full") else ["final"]
        assert sorted(r["runs"][v]) == sorted(points), v
        for p in points:
            [seed] = r["runs"][v][p]
            assert sorted(seed) == val
            assert all(0.0 <= seed[n][m] <= 1.0 for n in val for m in "JF")
            assert all("T" in seed[n] and "eval_t" in seed[n] for n in val)
    assert r["timing"]["full"]["0"][0]["total_s_per_frame"] > 0
    st = r["ablations"]
    assert len(st["differences"]) == 15
    assert {d["verdict"] for d in st["differences"]} <= {"reproduced", "opposite",
                                                         "inconclusive", "missing"}
    assert [row["iterations"] for row in st["table4"]["full"]] == [0, 1, 2, 3]
    assert set(st["targets"]) == {"full_minus_online_only_J", "table3_table5_directions",
                                  "tcb_lowers_T", "table4_plateau", "table4_online_only_factor"}
    assert set(runs) | {f"eval_{v}" for v in variants} <= set(r["minutes"])
    assert all(n == 1 for n in r["steps"].values()), r["steps"]   # the budget scaled the steps
    for f in ("weights.pt", "tcb_noattn_weights.pt", "ssb_alone_weights.pt", "plots/iterations.png",
              "plots/components.png"):
        assert (out / f).is_file(), f
    seg = yaml.safe_load((out / "segment.yaml").read_text())
    assert seg["online"]["iterations"] == 3 and seg["online"]["size"] == [48, 64]
    with sqlite3.connect(out / "mlflow.db") as db:             # one experiment for every run
        names = {n for (n,) in db.execute("SELECT DISTINCT e.name FROM runs r JOIN experiments e "
                                          "ON r.experiment_id = e.experiment_id")}
        n_runs = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert names == {"stcnn-proxy"} and n_runs >= 6 + 5   # training runs + tuned variants

    # 3. again: everything kept, the same scores
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert again.returncode == 0, again.stderr[-3000:]
    r3 = json.loads(again.stdout)
    assert r3["runs"] == r["runs"] and r3["ablations"] == r["ablations"]
    assert r3["skipped"] == [*runs, "copy_first", *(f"{v} seed 0" for v in variants[1:])]

    # other arguments: refused, naming the folder
    other = [c if c != "0.01" else "0.02" for c in cmd]
    proc = subprocess.run(other, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 2 and str(out) in proc.stderr and "budget_min" in proc.stderr

    # --eval-only: weights.pt alone beside the checkpoint with its segment.yaml (its settings,
    # one step fewer here), one sequence
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for f in ("weights.pt", "segment.yaml"):
        shutil.copyfile(out / f, ckpt / f)
    proc = subprocess.run([sys.executable, str(BENCH / "accuracy_proxy.py"), "--eval-only",
                           "--checkpoint", str(ckpt / "weights.pt"), "--davis-root", str(root),
                           "--out", str(tmp_path / "again"), "--seeds", "1", "--ranks", "1",
                           "--sequences", val[0], "--segment-set", "online.iterations=2"],
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "not evaluated (no weights): tcb_noattn" in proc.stdout and "target " in proc.stdout
    r2 = json.loads((tmp_path / "again" / "report.json").read_text())
    assert sorted(r2["missing"]) == ["ssb_alone", "tcb_noattn"]
    assert list(r2["mean"]) == variants[:4] and list(r2["sequences"]) == [val[0]]
    assert r2["mean"]["copy_first"]["J"] == r["sequences"][val[0]]["copy_first"]["J"]
    assert r2["segment_at"] == [0, 1] and sorted(r2["runs"]["full"]) == ["0", "1", "final"]
    seg2 = yaml.safe_load((tmp_path / "again" / "segment.yaml").read_text())
    assert seg2["online"] == {**seg["online"], "iterations": 2}
