"""The accuracy benchmark's statistics and verdicts (``benchmarks/accuracy_proxy.py``,
``benchmarks/_ablations.py``, ``benchmarks/_proxy_state.py``) on known inputs: the per-variant
summary worked out by hand; the two-stage paired bootstrap on differences whose intervals are
known exactly; the verdicts; Tables 3, 4, 5 and the targets on made-up scores; the resumability
records; the plots redrawn from a report; and the copy-first baseline the benchmark scores,
against ``launch/evaluate.py`` on masks written here (the first annotation copied to every frame)
and J computed here."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from support import child_env

REPO = Path(__file__).resolve().parents[2]


def _load(name: str):
    """A module of benchmarks/ (its dataclasses need it in ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_benchmark():
    return _load("accuracy_proxy")      # puts benchmarks/ on sys.path for its siblings


def ablations():
    return sys.modules["_ablations"] if "_ablations" in sys.modules else _load("_ablations")


def scores(**per_seq: tuple[float, float]) -> dict[str, dict[str, float]]:
    """One seed's scores: ``name=(J, F)``."""
    return {n: {"J": j, "F": f} for n, (j, f) in per_seq.items()}


# Values are multiples of 1/8, so that sums and the means over 2 or 3 seeds are exact in
# floating point.
SCORES = {
    "copy_first": [scores(a=(0.5, 0.25), b=(0.5, 0.5), c=(0.875, 0.75))],
    "online_only": [scores(a=(0.25, 0.125), b=(0.25, 0.25), c=(0.5, 0.5)),
                    scores(a=(0.5, 0.375), b=(0.5, 0.5), c=(0.5, 0.25))],
    "full": [scores(a=(0.5, 0.5), b=(0.25, 0.25), c=(0.75, 0.5)),
             scores(a=(0.75, 0.75), b=(0.5, 0.5), c=(1.0, 0.75)),
             scores(a=(1.0, 0.5), b=(0.75, 0.25), c=(0.5, 1.0))],
}


def test_summarise_means_and_spread_by_hand():
    A = ablations()
    r = A.summarise(SCORES)
    approx = lambda v: pytest.approx(v, abs=1e-12)  # noqa: E731

    # per sequence: the mean over seeds (copy_first: its one run)
    assert list(r["sequences"]) == ["a", "b", "c"]
    want_seq = {
        "copy_first": {"a": (0.5, 0.25), "b": (0.5, 0.5), "c": (0.875, 0.75)},
        # J: (.25+.5)/2, (.25+.5)/2, (.5+.5)/2;  F: (.125+.375)/2, (.25+.5)/2, (.5+.25)/2
        "online_only": {"a": (0.375, 0.25), "b": (0.375, 0.375), "c": (0.5, 0.375)},
        # J: (.5+.75+1)/3, (.25+.5+.75)/3, (.75+1+.5)/3;  F: (.5+.75+.5)/3, (.25+.5+.25)/3, ...
        "full": {"a": (0.75, 1.75 / 3), "b": (0.5, 1 / 3), "c": (0.75, 0.75)},
    }
    for v, rows in want_seq.items():
        for n, (j, f) in rows.items():
            assert r["sequences"][n][v] == {"J": approx(j), "F": approx(f)}, (v, n)
    assert list(r["mean"]) == list(r["spread"]) == ["copy_first", "online_only", "full"]

    # the means: over the sequences' means
    assert r["mean"]["copy_first"] == {"J": approx(1.875 / 3), "F": approx(1.5 / 3)}
    assert r["mean"]["online_only"] == {"J": approx(1.25 / 3), "F": approx(1.0 / 3)}
    assert r["mean"]["full"] == {"J": approx(2 / 3), "F": approx((1.75 / 3 + 1 / 3 + 0.75) / 3)}

    # the spread: population std of each seed's mean J over the sequences
    # online_only: seed means 1/3, 1/2 -> deviations -+1/12 -> std 1/12
    # full: seed means 1/2, 3/4, 3/4 (mean 2/3) -> deviations -1/6, 1/12, 1/12
    #       -> variance (1/36 + 2/144) / 3 = 1/72
    assert r["spread"]["copy_first"] == {"J_std_over_seeds": 0.0, "J_per_seed": [approx(1.875 / 3)],
                                         "seeds": 1}
    assert r["spread"]["online_only"] == {"J_std_over_seeds": approx(1 / 12),
                                          "J_per_seed": [approx(1 / 3), approx(0.5)], "seeds": 2}
    assert r["spread"]["full"] == {"J_std_over_seeds": approx(math.sqrt(1 / 72)),
                                   "J_per_seed": [approx(0.5), approx(0.75), approx(0.75)],
                                   "seeds": 3}
    text = A.sequence_table(r)
    assert "mean" in text and "0.667 / 0.556" in text     # full: J 2/3, F (1.75/3+1/3+.75)/3


def test_summarise_leaves_out_a_missing_score():
    """A NaN (an empty CSV field) or a null (read back from a report) is left out of a mean."""
    A = ablations()
    r = A.summarise({"full": [{"a": {"J": 0.5, "F": None}, "b": {"J": math.nan, "F": 0.25}}]})
    assert r["mean"]["full"] == {"J": 0.5, "F": 0.25}


# ------------------------------------------------------------------------------------------------
# the two-stage paired bootstrap: inputs whose intervals are known exactly

def test_bootstrap_of_a_constant_difference_is_that_constant():
    A = ablations()
    assert A.DRAWS == 10_000 and A.LEVEL == 0.95
    assert A.two_stage_bootstrap(np.full((13, 3), 0.125)) == (0.125, 0.125, 0.125)


def test_bootstrap_resamples_the_sequences():
    """Two sequences whose seeds agree, +1 and -1: a draw's mean is -1, 0 or +1 (both drawn
    twice: probability 1/4 each), so the 2.5 and 97.5 percentiles are -1 and +1. Resampling
    the seeds alone would give 0 every time."""
    A = ablations()
    d = np.array([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])
    assert A.two_stage_bootstrap(d) == (0.0, -1.0, 1.0)


def test_bootstrap_resamples_the_seeds_within_each_sequence():
    """One sequence, its seeds +1 and -1: resampling the sequences alone would give 0 every time;
    the seeds drawn within it give -1, 0, +1 (1/4, 1/2, 1/4): the interval is [-1, +1]."""
    A = ablations()
    assert A.two_stage_bootstrap(np.array([[1.0, -1.0]])) == (0.0, -1.0, 1.0)


def test_bootstrap_is_reproducible_and_its_interval_covers_the_mean():
    A = ablations()
    d = np.random.default_rng(5).normal(0.02, 0.05, size=(13, 3))
    first = A.two_stage_bootstrap(d)
    assert first == A.two_stage_bootstrap(d)          # a fixed generator: same draws
    v, lo, hi = first
    assert v == pytest.approx(d.mean())
    assert lo < v < hi
    # the sequences vary about 0.05/sqrt(3) each, so the mean of 13 about 0.05/sqrt(39) = 0.008:
    # a 95% interval about 2 x 1.96 x 0.008 = 0.031 wide (a percentile bootstrap: a bit narrower)
    assert 0.02 < hi - lo < 0.04


def _seeds(values: dict[str, list[float]], metric: str = "J", **extra) -> list[dict]:
    """Per seed ``{sequence: {metric: value}}`` from ``{sequence: [value per seed]}``."""
    n = len(next(iter(values.values())))
    return [{s: {metric: v[i], **extra.get(s, {})} for s, v in values.items()} for i in range(n)]


def test_differences_pair_the_same_seed_of_both_variants():
    """A seed effect shared by both variants (+-0.25 on every sequence) cancels in the paired
    difference: a constant +0.125, interval [+0.125, +0.125]. Unpaired, the interval would hold
    0."""
    A = ablations()
    e = [0.0, 0.25, -0.25]
    a = _seeds({"x": [0.5 + x for x in e], "y": [0.625 + x for x in e]})
    b = _seeds({"x": [0.375 + x for x in e], "y": [0.5 + x for x in e]})
    r = A.paired_difference(a, b, "J")
    assert r == {"value": 0.125, "low": 0.125, "high": 0.125, "sequences": 2, "seeds": 3}
    assert A.verdict(0.01, r["low"], r["high"]) == "reproduced"
    assert A.verdict(-0.01, r["low"], r["high"]) == "opposite"


def test_differences_use_the_shared_seeds_and_sequences_and_for_T_the_eval_t_ones():
    A = ablations()
    # a has 3 seeds, b 2: the first 2 are paired; z only in a: left out
    a = _seeds({"x": [0.5, 0.5, 0.0], "y": [0.75, 0.75, 0.0]})
    a[0]["z"] = a[1]["z"] = {"J": 1.0}
    b = _seeds({"x": [0.25, 0.25], "y": [0.5, 0.5]})
    assert A.paired_difference(a, b, "J") == {"value": 0.25, "low": 0.25, "high": 0.25,
                                              "sequences": 2, "seeds": 2}
    # T: only eval_t sequences with a T in every seed of both (y: eval_t False; w: a NaN T)
    flags = {"x": {"eval_t": True}, "y": {"eval_t": False}, "w": {"eval_t": True}}
    ta = _seeds({"x": [0.25, 0.25], "y": [0.0, 0.0], "w": [math.nan, 0.5]}, "T", **flags)
    tb = _seeds({"x": [0.375, 0.375], "y": [1.0, 1.0], "w": [0.0, 0.0]}, "T", **flags)
    r = A.paired_difference(ta, tb, "T")
    assert (r["value"], r["sequences"]) == (-0.125, 1)
    assert A.verdict(-0.031, r["low"], r["high"]) == "reproduced"   # T: lower is better
    assert A.paired_difference(ta, [], "T")["sequences"] == 0


@pytest.mark.parametrize("paper,low,high,want", [
    (0.01, 0.002, 0.03, "reproduced"), (-0.03, -0.05, -0.01, "reproduced"),
    (0.01, -0.03, -0.002, "opposite"), (-0.03, 0.01, 0.02, "opposite"),
    (0.01, -0.01, 0.02, "inconclusive"), (0.01, 0.0, 0.02, "inconclusive"),
    (-0.01, -0.02, 0.0, "inconclusive"), (0.01, math.nan, math.nan, "missing"),
    (0.01, None, None, "missing")])
def test_verdicts(paper, low, high, want):
    assert ablations().verdict(paper, low, high) == want


# ------------------------------------------------------------------------------------------------
# Tables 3, 4, 5 and the targets on made-up scores

def _flat(j: float, f: float | None = None, t: float = 0.25, seeds: int = 2) -> list[dict]:
    """``seeds`` seeds of two sequences that all score the same (intervals of zero width)."""
    f = j if f is None else f
    return [{s: {"J": j, "F": f, "T": t, "eval_t": True} for s in ("x", "y")}
            for _ in range(seeds)]


def made_up_runs(online_only_at_100: float = 0.5) -> tuple[dict, dict]:
    runs = {"copy_first": {"final": _flat(0.25, seeds=1)},
            "ssb_alone": {"final": _flat(0.5, t=0.375)},
            "tcb_noattn": {"final": _flat(0.625, t=0.25)},     # TCB: J F +0.125, T -0.125
            "full_plain": {"final": _flat(0.625, t=0.25)},     # attention: 0 (inconclusive)
            "full": {"final": _flat(0.5625), "0": _flat(0.375), "25": _flat(0.5),
                     "50": _flat(0.546875), "100": _flat(0.5625)},   # lucid: -0.0625 (opposite)
            "online_only": {"final": _flat(0.5), "0": _flat(0.0), "25": _flat(0.25),
                            "50": _flat(0.375), "100": _flat(online_only_at_100)}}
    timing = {v: {p: [{"total_s_per_frame": 0.5 + (int(p) if p != "final" else 150) / 100}] * 2
                  for p in pts} for v, pts in runs.items() if v != "copy_first"}
    return runs, timing


def test_tables_and_targets_on_made_up_scores():
    A = ablations()
    runs, timing = made_up_runs()
    st = A.analyse(runs, timing, 150, draws=200)
    got = {(d["table"], d["label"], d["metric"]): (d["value"], d["verdict"])
           for d in st["differences"]}
    assert got[("Table 3", "the TCB", "J")] == (0.125, "reproduced")
    assert got[("Table 3", "the TCB", "T")] == (-0.125, "reproduced")
    assert got[("Table 3", "the attention", "F")] == (0.0, "inconclusive")
    assert got[("Table 3", "lucid dreams", "J")] == (-0.0625, "opposite")
    assert got[("Table 3", "lucid dreams", "T")] == (0.0, "inconclusive")
    # Table 5: offline only = full@0 (0.375), online only 0.5, all 0.5625
    assert got[("Table 5", "online tuning (all - offline only)", "J")] == (0.1875, "reproduced")
    assert got[("Table 5", "offline training (all - online only)", "F")] == (0.0625, "reproduced")
    assert got[("Table 5", "online only - offline only", "J")] == (0.125, "reproduced")
    assert len(st["differences"]) == 3 * 3 + 3 * 2
    assert [(r["iterations"], r["J"], r["s_per_frame"]) for r in st["table4"]["full"]] == [
        (0, 0.375, 0.5), (25, 0.5, 0.75), (50, 0.546875, 1.0), (100, 0.5625, 1.5),
        (150, 0.5625, 2.0)]
    assert st["means"]["full"]["0"]["J"] == {"value": 0.375, "low": 0.375, "high": 0.375,
                                             "sequences": 2, "seeds": 2}

    t = st["targets"]
    assert t["full_minus_online_only_J"]["value"] == 0.0625
    assert t["full_minus_online_only_J"]["pass"] is True                  # >= 0.05
    assert t["table3_table5_directions"]["value"] == 15 - 6               # 6 not reproduced
    assert t["table3_table5_directions"]["pass"] is False
    assert "Table 3 lucid dreams J: opposite" in t["table3_table5_directions"]["not_reproduced"]
    assert t["tcb_lowers_T"]["pass"] is True
    assert t["table4_plateau"]["value"] == 0.015625 and t["table4_plateau"]["pass"] is True
    # online_only never reaches full@50 (0.546875) by 150: more than 3x
    assert t["table4_online_only_factor"] == {
        "value": "> 150", "factor": "> 3", "pass": True,
        "target": "online_only needs >= 3x the 50 steps of full@50 to reach its J"}

    text = A.format_tables({"iterations": 150, "ablations": st})
    assert "  the TCB                                       T   -0.031   -0.125" in text
    assert "[-0.125, -0.125]  reproduced" in text
    assert "  + lucid (STCNN)     full             0.838 / 0.562" in text
    assert "  offline only        full@0               0.742 / 0.375" in text
    assert "target full_minus_online_only_J: +0.062 [+0.062, +0.062] (want >= 0.05) MET" in text
    assert "target table3_table5_directions: 9/15 (not: " in text
    assert "target table4_online_only_factor: k > 150, factor > 3" in text


def test_table4_factor_and_plateau_misses():
    """online_only at 100 steps reaches full@50: 2x, under 3x (missed); full@150 0.1 above
    full@50 (missed)."""
    A = ablations()
    runs, timing = made_up_runs(online_only_at_100=0.625)
    runs["full"]["final"] = _flat(0.65)
    t = A.analyse(runs, timing, 150, draws=200)["targets"]
    assert t["table4_online_only_factor"]["value"] == 100
    assert t["table4_online_only_factor"]["factor"] == 2.0
    assert t["table4_online_only_factor"]["pass"] is False
    assert t["table4_plateau"]["value"] == pytest.approx(0.103125)
    assert t["table4_plateau"]["pass"] is False
    # a variant not measured: its differences are missing, the targets not measured
    runs.pop("ssb_alone")
    st = A.analyse(runs, timing, 150, draws=200)
    assert st["targets"]["tcb_lowers_T"]["pass"] is None
    assert {d["verdict"] for d in st["differences"] if d["label"] == "the TCB"} == {"missing"}


def test_snapshot_steps_scale_with_the_online_iterations():
    A = ablations()
    assert A.segment_at(150) == [0, 25, 50, 100] and A.reference_step(150) == 50
    assert A.segment_at(6) == [0, 1, 2, 4] and A.reference_step(6) == 2
    assert A.segment_at(2) == [0, 1]


def test_the_registry_names_weights_a_training_run_writes():
    """Every tuned variant's weights come from a training run that exports that file (or are the
    random STCNN made for online_only); every table column names a registered variant."""
    bench, A = load_benchmark(), ablations()
    exports = {r.name: r.exports for r in bench.TRAINING}
    for v in A.VARIANTS:
        if v.trained_by is not None:
            assert exports[v.trained_by] == v.weights, v.name
    assert {v.name for v in A.VARIANTS if v.weights and not v.trained_by} == {"online_only"}
    for _, v, _ in (*A.TABLE3_COLUMNS, *A.TABLE5_COLUMNS):
        assert v in A.BY_NAME
    runs = {r.name: r for r in bench.TRAINING}
    assert not runs["ssb_alone"].attention and not runs["train_offline_noattn"].attention
    assert runs["ssb_alone"].init == ("pretrain_ssb_noattn",)
    assert runs["train_offline_noattn"].init == ("pretrain_tcb", "pretrain_ssb_noattn")
    steps, rounds = bench.plan_steps(60)
    # ssb_alone: the SSB share of train_offline's steps (190 of every 200)
    assert steps["ssb_share"] == round(steps["offline"] * 190 / 200)


def test_plots_are_redrawn_from_a_report_alone(tmp_path):
    A, bench = ablations(), load_benchmark()
    runs, timing = made_up_runs()
    report = {"iterations": 150, "ablations": A.analyse(runs, timing, 150, draws=200)}
    path = tmp_path / "run" / "report.json"
    path.parent.mkdir()
    path.write_text(json.dumps(report))
    plots = bench.replot(path, None)
    assert [p.relative_to(tmp_path).as_posix() for p in plots] == [
        "run/plots/iterations.png", "run/plots/components.png"]
    for p in plots:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 400


# ------------------------------------------------------------------------------------------------
# resumability records

def test_other_arguments_are_refused_naming_the_folder(tmp_path):
    bench = load_benchmark()
    state = _load("_proxy_state")
    bench.check_settings(tmp_path, {"budget_min": 60.0, "train_set": []})
    bench.check_settings(tmp_path, {"budget_min": 60.0, "train_set": []})     # same: fine
    with pytest.raises(state.PipelineError) as e:
        bench.check_settings(tmp_path, {"budget_min": 30.0, "train_set": []})
    assert str(tmp_path) in str(e.value) and "budget_min: 60.0 there, 30.0 now" in str(e.value)
    assert e.value.fix and "another --out" in e.value.fix


def test_a_finished_step_is_skipped_a_stopped_one_continues_another_restarts(tmp_path):
    state = _load("_proxy_state")
    folder, output = tmp_path / "train" / "p", tmp_path / "train" / "p" / "weights.pt"
    calls = []

    def run(fail: bool = False):
        def go():
            calls.append("run")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "checkpoint").write_text("x")
            if fail:
                raise SystemExit("stopped")
            output.write_text("w")
            return 2.0
        return go

    with pytest.raises(SystemExit):                    # stopped: the record says running
        state.run_step("p", {"k": 1}, tmp_path, folder, output, run(fail=True))
    assert state.read_json(tmp_path / "state" / "p.json")["state"] == "running"
    rec = state.run_step("p", {"k": 1}, tmp_path, folder, output, run())  # continues in place
    assert (folder / "checkpoint").exists() and rec["skipped"] is False
    assert rec["state"] == "done" and rec["seconds"] == 2.0
    rec = state.run_step("p", {"k": 1}, tmp_path, folder, output, run())  # done: skipped
    assert rec["skipped"] is True and calls == ["run", "run"]
    output.unlink()                                     # done, but its output gone: run again
    assert state.run_step("p", {"k": 1}, tmp_path, folder, output, run())["skipped"] is False
    (folder / "old").write_text("o")                    # another key: the folder started afresh
    state.run_step("p", {"k": 2}, tmp_path, folder, output, run())
    assert not (folder / "old").exists() and len(calls) == 4


def test_an_evaluation_is_kept_for_the_same_key_only(tmp_path):
    state = _load("_proxy_state")
    n = []

    def run():
        n.append(1)
        return {"final": {"x": {"J": 0.5, "T": math.nan}}}, {}

    first = state.run_unit(tmp_path, "full-seed0", {"weights": "a"}, run)
    again = state.run_unit(tmp_path, "full-seed0", {"weights": "a"}, run)
    assert (first["skipped"], again["skipped"], len(n)) == (False, True, 1)
    assert again["scores"] == {"final": {"x": {"J": 0.5, "T": None}}}   # NaN stored as null
    assert state.run_unit(tmp_path, "full-seed0", {"weights": "b"}, run)["skipped"] is False
    assert len(n) == 2


# ------------------------------------------------------------------------------------------------
# copy-first: the benchmark's scores == launch/evaluate.py on masks written here == J by hand

def _per_sequence_csv(ev: Path) -> dict[str, dict[str, float]]:
    with open(ev / "per-sequence_results-val.csv") as f:
        return {r["Sequence"]: {"J": float(r["J-Mean"]), "F": float(r["F-Mean"])}
                for r in csv.DictReader(f)}


def _foreground(path: Path) -> np.ndarray:
    with Image.open(path) as im:       # DAVIS-2016: grey (+ alpha); foreground = grey > 0
        return np.array(im.getchannel(0)) > 0


@pytest.mark.slow
def test_copy_first_scores_equal_launch_evaluate_on_copied_first_masks(tmp_path):
    from pipeline.synthetic import SyntheticSpec, write_dataset

    bench = load_benchmark()
    root = write_dataset("davis2016", tmp_path / "DAVIS",
                         SyntheticSpec(size=(64, 48), n_sequences=2, n_frames=6, seed=0))
    env = child_env()
    got = bench._read_scores(bench._copy_first(SimpleNamespace(davis_root=root, sequences=None),
                                               tmp_path / "bench", env))

    ann = root / "Annotations" / "480p"
    val = sorted({line.split()[0].split("/")[3]
                  for line in (root / "ImageSets" / "480p" / "val.txt").read_text().splitlines()
                  if line.strip()})
    assert sorted(got) == val and len(val) == 2
    mine = tmp_path / "mine"
    hand_j = {}
    for name in val:
        gts = sorted((ann / name).glob("*.png"))
        first = _foreground(gts[0])
        for p in gts:
            (mine / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(first.astype(np.uint8) * 255).save(mine / name / p.name)
        # the DAVIS protocol leaves out the first and the last frame
        ious = [np.logical_and(first, g).sum() / np.logical_or(first, g).sum()
                if np.logical_or(first, g).any() else 1.0
                for g in map(_foreground, gts[1:-1])]
        hand_j[name] = float(np.mean(ious))
    proc = subprocess.run([sys.executable, "launch/evaluate.py", "--davis-root", str(root),
                           "--results", str(mine), "--year", "2016", "--split", "val",
                           "--out", str(tmp_path / "ev"), "--no-plot"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ev = {n.rsplit("_", 1)[0]: s for n, s in _per_sequence_csv(tmp_path / "ev").items()}
    assert ev == {n: {"J": s["J"], "F": s["F"]} for n, s in got.items()}
    assert all(s["eval_t"] in (True, False) and "T" in s for s in got.values())
    for name in val:
        assert got[name]["J"] == pytest.approx(hand_j[name], abs=0.0005), name  # CSV: 3 decimals
    assert any(got[n]["J"] < 1.0 for n in val)   # the objects move: copying is not perfect
