"""``launch/evaluate.py --year 2017`` against outside oracles (fixture ``davis2017_reference``:
a DAVIS-2017 root with void bands, results with a lost-and-found object, an object never found
and an empty frame, and what the official tool wrote for them).

* davis2017-evaluation: our ``global_results-val.csv`` and ``per-sequence_results-val.csv`` must
  equal the official files cell for cell. Both tools write ``%.3f``, so the cells are compared
  as written text: equal after the same rounding, no further tolerance. The per-object mean,
  recall and decay of J and F are compared with the official full-precision values within 1e-9
  (summation order only).
* vos-benchmark (``vos_benchmark.benchmark.benchmark``): per-object mean J and F of objects
  1..K within 1e-9 (its values are x100). It differs on purpose elsewhere: it does not read 255
  as void but scores it as one more object (J = F = 0 here, as no result holds 255), and its
  global J/F average over those rows too; it has no recall or decay.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.evaluation.davis import evaluate_davis

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "launch" / "evaluate.py"
TOL = 1e-9


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(path.read_text().splitlines()))


def test_cli_csvs_equal_the_official_davis2017_evaluation_csvs_cell_for_cell(
        davis2017_reference, tmp_path):
    ref = davis2017_reference
    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, str(CLI), "--davis-root", str(ref / "DAVIS"),
                           "--results", str(ref / "results"), "--year", "2017", "--split", "val",
                           "--out", str(out), "--workers", "1", "--no-plot"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    for name in ("global_results-val.csv", "per-sequence_results-val.csv"):
        ours, official = read_csv(out / name), read_csv(ref / "official" / name)
        assert ours[0] == official[0], f"{name}: columns"
        assert len(ours) == len(official), f"{name}: number of rows"
        if official[0][0] == "Sequence":
            assert [r[0] for r in ours] == [r[0] for r in official], f"{name}: rows or their order"
        diffs = [f"row {i} / {col}: ours {a}, official {b}"
                 for i, (row, orow) in enumerate(zip(ours[1:], official[1:]), 1)
                 for col, a, b in zip(official[0], row, orow) if a != b]
        assert not diffs, f"{name}: cells differ:\n" + "\n".join(diffs)


def test_per_object_statistics_equal_the_official_full_precision_values(davis2017_reference):
    ref = davis2017_reference
    full = json.loads((ref / "official" / "metrics_full_precision.json").read_text())
    rep = evaluate_davis(ref / "DAVIS", ref / "results", 2017, "val")
    rows = rep.object_rows()
    assert [r[0] for r in rows] == list(full["J"]["M_per_object"])
    diffs = []
    for i, (name, j, f) in enumerate(rows):
        for measure, ours in (("J", j), ("F", f)):
            for stat, value in zip("MRD", ours):
                want = full[measure][stat][i]
                if not math.isclose(value, want, rel_tol=0, abs_tol=TOL):
                    diffs.append(f"{name} {measure}-{stat}: ours {value!r}, official {want!r}")
    g = rep.global_row()
    want_g = [float(np.mean(full[m][s])) for m, s in (("J", "M"), ("J", "R"), ("J", "D"),
                                                ("F", "M"), ("F", "R"), ("F", "D"))]
    want_g.insert(0, (want_g[0] + want_g[3]) / 2)
    for col, value, want in zip(("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean",
                                 "F-Recall", "F-Decay"), g, want_g):
        if not math.isclose(value, want, rel_tol=0, abs_tol=TOL):
            diffs.append(f"global {col}: ours {value!r}, official {want!r}")
    assert not diffs, "\n".join(diffs)


@pytest.mark.slow  # a process pool; 2 s idle, over 5 s on 2 loaded cores
def test_vos_benchmark_per_object_j_and_f_equal_ours_for_objects_1_to_k(davis2017_reference,
                                                                         tmp_path):
    from vos_benchmark.benchmark import benchmark

    ref = davis2017_reference
    preds = tmp_path / "results"  # vos-benchmark writes results.csv into the predictions folder
    shutil.copytree(ref / "results", preds)
    with contextlib.redirect_stdout(io.StringIO()):
        *_, per_object = benchmark([str(ref / "DAVIS" / "Annotations" / "480p")], [str(preds)],
                                   num_processes=1, verbose=False)
    vos = per_object[0]
    rep = evaluate_davis(ref / "DAVIS", ref / "results", 2017, "val")
    assert sorted(vos) == sorted(s.name for s in rep.sequences)
    diffs = []
    for s in rep.sequences:
        iou, bf = vos[s.name]
        k_objects = s.J.shape[0]
        # the void band (255) is one more "object" there, scored 0 (no result holds 255)
        assert sorted(iou) == [*range(1, k_objects + 1), 255], s.name
        assert iou[255] == 0 and bf[255] == 0, s.name
        for k in range(k_objects):
            for measure, ours, theirs in (("J", s.J[k], iou), ("F", s.F[k], bf)):
                a, b = float(np.mean(ours)) * 100, float(theirs[k + 1])
                if not math.isclose(a, b, rel_tol=0, abs_tol=TOL):
                    diffs.append(f"{s.name}_{k + 1} {measure}: ours {a!r}, vos-benchmark {b!r}")
    assert not diffs, "\n".join(diffs)
