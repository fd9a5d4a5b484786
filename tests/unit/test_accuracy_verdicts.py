"""The accuracy benchmark's verdicts (``benchmarks/accuracy_proxy.py``) on known inputs:
``summarise()`` given hand-made scores, every number and PASS/MISS checked against values worked
out by hand here; and the copy-first baseline the benchmark scores, against ``launch/evaluate.py``
on masks written here (the first annotation copied to every frame) and J computed here."""

from __future__ import annotations

import csv
import importlib.util
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


def load_benchmark():
    spec = importlib.util.spec_from_file_location("accuracy_proxy",
                                                  REPO / "benchmarks" / "accuracy_proxy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def scores(**per_seq: tuple[float, float]) -> dict[str, dict[str, float]]:
    """One seed's scores: ``name=(J, F)``."""
    return {n: {"J": j, "F": f} for n, (j, f) in per_seq.items()}


# Values are multiples of 1/8, so that sums and the means over 2 or 3 seeds that a tie needs
# are exact in floating point.
SCORES = {
    "copy_first": [scores(a=(0.5, 0.25), b=(0.5, 0.5), c=(0.875, 0.75))],
    "online_only": [scores(a=(0.25, 0.125), b=(0.25, 0.25), c=(0.5, 0.5)),
                    scores(a=(0.5, 0.375), b=(0.5, 0.5), c=(0.5, 0.25))],
    "full": [scores(a=(0.5, 0.5), b=(0.25, 0.25), c=(0.75, 0.5)),
             scores(a=(0.75, 0.75), b=(0.5, 0.5), c=(1.0, 0.75)),
             scores(a=(1.0, 0.5), b=(0.75, 0.25), c=(0.5, 1.0))],
}


def test_summarise_means_spread_and_targets_by_hand():
    bench = load_benchmark()
    r = bench.summarise(SCORES)
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
    assert set(r["mean"]) == set(r["spread"]) == set(want_seq)   # ssb_only absent: left out

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

    # the targets: full mean J 2/3 >= 0.60 PASS; full - online_only = 2/3 - 5/12 = 1/4 >= 0.20
    # PASS; beats copy_first: a (.75 > .5) yes, b (.5 == .5, a tie) no, c (.75 < .875) no
    t = r["targets"]
    assert t["full_mean_J"] == {"value": approx(2 / 3), "target": 0.60, "pass": True}
    assert t["full_minus_online_only_J"] == {"value": approx(0.25), "target": 0.20, "pass": True}
    assert t["full_beats_copy_first_everywhere"] == {"value": 1, "of": 3, "pass": False,
                                                     "not_beaten": ["b", "c"]}
    text = bench.table({**r, "minutes": {}})
    assert "target full_mean_J: 0.667 (want 0.6) PASS" in text
    assert "target full_minus_online_only_J: 0.25 (want 0.2) PASS" in text
    assert "target full_beats_copy_first_everywhere: 1/3 (want all) MISS" in text


def test_a_tie_with_copy_first_is_not_beaten_and_targets_are_met_at_equality():
    """Full J equal to copy-first's on a sequence does not beat it; a value equal to its target
    passes (the targets read ">=")."""
    bench = load_benchmark()
    r = bench.summarise({"copy_first": [scores(x=(0.5, 0.5), y=(0.6, 0.5))],
                         "online_only": [scores(x=(0.375, 0.5), y=(0.375, 0.5))],
                         "full": [scores(x=(0.6, 0.5), y=(0.6, 0.5))]})
    t = r["targets"]
    assert t["full_mean_J"] == {"value": 0.6, "target": 0.60, "pass": True}
    assert t["full_beats_copy_first_everywhere"] == {"value": 1, "of": 2, "pass": False,
                                                     "not_beaten": ["y"]}
    # 0.6 - 0.375 = 0.225 >= 0.20
    assert t["full_minus_online_only_J"]["pass"] is True


def test_misses_and_a_full_win_over_copy_first():
    bench = load_benchmark()
    r = bench.summarise({"copy_first": [scores(x=(0.25, 0.5), y=(0.5, 0.5))],
                         "online_only": [scores(x=(0.375, 0.5), y=(0.5, 0.5)),
                                         scores(x=(0.5, 0.5), y=(0.625, 0.5))],
                         "ssb_only": [scores(x=(0.25, 0.5), y=(0.25, 0.5)),
                                      scores(x=(0.5, 0.5), y=(0.5, 0.5))],
                         "full": [scores(x=(0.5, 0.5), y=(0.625, 0.5)),
                                  scores(x=(0.625, 0.5), y=(0.5, 0.5))]})
    # full: x 0.5625, y 0.5625 -> mean 0.5625 < 0.60 MISS; online_only: x 0.4375, y 0.5625
    # -> mean 0.5, so full - online_only = 0.0625 < 0.20 MISS; full > copy_first on x and y
    t = r["targets"]
    assert t["full_mean_J"] == {"value": 0.5625, "target": 0.60, "pass": False}
    assert t["full_minus_online_only_J"] == {"value": 0.0625, "target": 0.20, "pass": False}
    assert t["full_beats_copy_first_everywhere"] == {"value": 2, "of": 2, "pass": True,
                                                     "not_beaten": []}
    # ssb_only: seed means 0.25, 0.5 -> spread 0.125; full's seed means are equal -> 0
    assert r["spread"]["ssb_only"]["J_std_over_seeds"] == 0.125
    assert r["spread"]["full"]["J_std_over_seeds"] == 0.0
    assert r["mean"]["ssb_only"] == {"J": 0.375, "F": 0.5}
    text = bench.table({**r, "minutes": {}})
    assert "target full_mean_J: 0.562 (want 0.6) MISS" in text
    assert "target full_minus_online_only_J: 0.062 (want 0.2) MISS" in text
    assert "target full_beats_copy_first_everywhere: 2/2 (want all) PASS" in text


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
    assert ev == got
    for name in val:
        assert got[name]["J"] == pytest.approx(hand_j[name], abs=0.0005), name  # CSV: 3 decimals
    assert any(got[n]["J"] < 1.0 for n in val)   # the objects move: copying is not perfect
