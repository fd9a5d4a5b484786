"""The paper's ablations (Sec. 4.1.2, Tables 3, 4 and 5) at CPU scale, as the accuracy benchmark
(``accuracy_proxy.py``) measures and judges them: the variants it evaluates and the paper cells
each fills (:data:`VARIANTS`), the paper's figures, the paired bootstrap behind every difference's
verdict, the targets and the printed tables. Everything here reads the report's scores only, so a
``report.json`` is enough to recompute it (the plots: ``_ablation_plots.py``).

**Scores.** ``runs[variant][point]`` holds, per online seed, ``{sequence: {"J", "F", "T",
"eval_t"}}`` (``point``: ``"final"`` after all ``online.iterations``, or ``"<k>"`` after ``k``
steps, ``online.segment_at``), and ``timing[variant][point]`` the seconds per frame per seed.

**The interval of a difference** ``a - b`` (two variants, or one variant at two points): a
two-stage paired bootstrap over sequences x seeds. Each of :data:`DRAWS` draws (one
``numpy.random.default_rng(RNG_SEED)`` per difference) resamples the sequences with replacement,
then, within each drawn sequence, the seeds with replacement; a drawn (sequence, seed) contributes
``a - b`` of that sequence with the same seed index in both (paired: both variants tuned with
``online.seed`` = that index). The interval is the 2.5 and 97.5 percentiles of the draws' means.
The sequences are those scored in both; for T only the ``eval_t`` ones with a T in every seed of
both (T: lower is better). Seeds: the first ``min`` of the two counts.

**The verdict** of a difference against the paper's: ``reproduced`` (the interval excludes 0, on
the paper's side), ``opposite`` (it excludes 0, on the other side), ``inconclusive`` (it holds 0),
``missing`` (a side was not measured).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DRAWS = 10_000
RNG_SEED = 0
LEVEL = 0.95


# ------------------------------------------------------------------------------------------------
# the registry: what is evaluated, from which weights, with which online settings
@dataclass(frozen=True)
class Variant:
    name: str
    weights: str | None           # the file beside weights.pt it is tuned from (None: no model)
    trained_by: str | None        # the training run that writes that file (None: made here)
    online: tuple[str, ...]       # online overrides of this variant (on OUT/segment.yaml)
    snapshots: bool               # also segmented after each step of segment_at (Table 4)
    cells: tuple[str, ...]        # the paper cells it fills
    about: str


VARIANTS: tuple[Variant, ...] = (
    Variant("copy_first", None, None, (), False, (),
            "the first mask copied to every frame (no model)"),
    Variant("online_only", "random_weights.pt", None, ("online.augment=lucid",), True,
            ("Table 5 online only", "Table 4"),
            "online tuning on lucid dreams from a randomly initialised STCNN (full config)"),
    Variant("full", "weights.pt", "train_offline", ("online.augment=lucid",), True,
            ("Table 3 STCNN", "Table 5 all", "Table 5 offline only (iteration 0)", "Table 4"),
            "the offline-trained STCNN tuned on lucid dreams"),
    Variant("full_plain", "weights.pt", "train_offline", ("online.augment=plain",), False,
            ("Table 3 no lucid dreams",),
            "the offline-trained STCNN tuned on the first frame with the loader's augmentation"),
    Variant("tcb_noattn", "tcb_noattn_weights.pt", "train_offline_noattn",
            ("online.augment=plain",), False, ("Table 3 no attention",),
            "TCB + SSB without attention trained offline, no lucid dreams"),
    Variant("ssb_alone", "ssb_alone_weights.pt", "ssb_alone",
            ("online.augment=plain", "online.temporal=false"), False, ("Table 3 SSB alone",),
            "the SSB without attention and without the TCB, no lucid dreams"),
)
BY_NAME = {v.name: v for v in VARIANTS}
TUNED = tuple(v.name for v in VARIANTS if v.weights is not None)
SNAPSHOT_FRACTIONS = (0.0, 1 / 6, 1 / 3, 2 / 3)   # of online.iterations: 0, 25, 50, 100 of 150


def segment_at(iterations: int) -> list[int]:
    """The snapshot steps for ``iterations`` online steps: 0, N/6, N/3 and 2N/3 (150: 0, 25, 50,
    100), each below N, without repeats."""
    return sorted({min(round(iterations * f), iterations - 1) for f in SNAPSHOT_FRACTIONS}
                  - {-1})


def reference_step(iterations: int) -> int:
    """Table 4's reference point: the snapshot at N/3 (50 of 150)."""
    return min(round(iterations / 3), iterations - 1)


# ------------------------------------------------------------------------------------------------
# the paper's figures (Tables 3, 4, 5)
PAPER_TABLE3 = {"ssb_alone": {"J": 0.812, "F": 0.807, "T": 0.231},
                "tcb_noattn": {"J": 0.822, "F": 0.820, "T": 0.200},
                "full_plain": {"J": 0.832, "F": 0.835, "T": 0.192},
                "full": {"J": 0.838, "F": 0.838, "T": 0.191}}
PAPER_TABLE5 = {"offline only": {"J": 0.742, "F": 0.743},
                "online only": {"J": 0.786, "F": 0.790},
                "all": {"J": 0.838, "F": 0.838}}
PAPER_TABLE4 = {"iterations": [100, 200, 300, 400, 500, 600],
                "J": [0.830, 0.834, 0.836, 0.838, 0.838, 0.838],
                "s_per_frame": [1.11, 2.04, 2.97, 3.90, 4.83, 5.76]}

# the columns: (label, variant, point)
TABLE3_COLUMNS = (("SSB alone", "ssb_alone", "final"), ("+ TCB", "tcb_noattn", "final"),
                  ("+ attention", "full_plain", "final"), ("+ lucid (STCNN)", "full", "final"))
TABLE5_COLUMNS = (("offline only", "full", "0"), ("online only", "online_only", "final"),
                  ("all", "full", "final"))


@dataclass(frozen=True)
class Difference:
    table: str
    label: str
    a: tuple[str, str]            # (variant, point) - (variant, point)
    b: tuple[str, str]
    paper: dict[str, float]       # metric -> the paper's a - b


def _t3(a: str, b: str, label: str) -> Difference:
    return Difference("Table 3", label, (a, "final"), (b, "final"),
                      {m: round(PAPER_TABLE3[a][m] - PAPER_TABLE3[b][m], 3) for m in "JFT"})


def _t5(a: int, b: int, label: str) -> Difference:
    (_, va, pa), (_, vb, pb) = TABLE5_COLUMNS[a], TABLE5_COLUMNS[b]
    ca, cb = TABLE5_COLUMNS[a][0], TABLE5_COLUMNS[b][0]
    return Difference("Table 5", label, (va, pa), (vb, pb),
                      {m: round(PAPER_TABLE5[ca][m] - PAPER_TABLE5[cb][m], 3) for m in "JF"})


DIFFERENCES: tuple[Difference, ...] = (
    _t3("tcb_noattn", "ssb_alone", "the TCB"),
    _t3("full_plain", "tcb_noattn", "the attention"),
    _t3("full", "full_plain", "lucid dreams"),
    _t5(2, 0, "online tuning (all - offline only)"),
    _t5(2, 1, "offline training (all - online only)"),
    _t5(1, 0, "online only - offline only"),
)
TARGETS = {"full_minus_online_only_J": 0.05, "table4_plateau_J": 0.02, "table4_factor": 3.0}


# ------------------------------------------------------------------------------------------------
# statistics
def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def sequences_for(seeds_a: list[dict], seeds_b: list[dict] | None, metric: str) -> list[str]:
    """The sequences a comparison uses: scored in every seed of both sides; for T only the
    ``eval_t`` ones with a finite T everywhere."""
    runs = seeds_a + (seeds_b or [])
    if not runs:
        return []
    names = set(runs[0])
    for r in runs[1:]:
        names &= set(r)
    keep = []
    for n in sorted(names):
        vals = [r[n].get(metric) for r in runs]
        if not all(_finite(v) for v in vals):
            continue
        if metric == "T" and not all(r[n].get("eval_t", True) for r in runs):
            continue
        keep.append(n)
    return keep


def matrix(seeds: list[dict], names: list[str], metric: str) -> np.ndarray:
    """[sequences, seeds] of one metric."""
    return np.array([[r[n][metric] for r in seeds] for n in names], dtype=np.float64)


def two_stage_bootstrap(d: np.ndarray, draws: int = DRAWS, seed: int = RNG_SEED,
                        level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high) of ``d`` [sequences, seeds]: the sequences resampled with replacement,
    then the seeds within each drawn sequence; the percentile interval of the draws' means."""
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 2 or d.size == 0:
        return math.nan, math.nan, math.nan
    n_seq, n_seed = d.shape
    rng = np.random.default_rng(seed)
    seq = rng.integers(0, n_seq, size=(draws, n_seq))
    sd = rng.integers(0, n_seed, size=(draws, n_seq, n_seed))
    means = d[seq[:, :, None], sd].mean(axis=(1, 2))
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(d.mean()), float(lo), float(hi)


def paired_difference(seeds_a: list[dict], seeds_b: list[dict], metric: str,
                      draws: int = DRAWS) -> dict:
    """``a - b`` over the shared sequences and the first ``min`` seeds, with its interval."""
    r = min(len(seeds_a), len(seeds_b))
    names = sequences_for(seeds_a[:r], seeds_b[:r], metric) if r else []
    if not names:
        return {"value": math.nan, "low": math.nan, "high": math.nan, "sequences": 0,
                "seeds": r}
    d = matrix(seeds_a[:r], names, metric) - matrix(seeds_b[:r], names, metric)
    v, lo, hi = two_stage_bootstrap(d, draws)
    return {"value": v, "low": lo, "high": hi, "sequences": len(names), "seeds": r}


def mean_interval(seeds: list[dict], metric: str, draws: int = DRAWS) -> dict:
    names = sequences_for(seeds, None, metric)
    if not names:
        return {"value": math.nan, "low": math.nan, "high": math.nan, "sequences": 0,
                "seeds": len(seeds)}
    v, lo, hi = two_stage_bootstrap(matrix(seeds, names, metric), draws)
    return {"value": v, "low": lo, "high": hi, "sequences": len(names), "seeds": len(seeds)}


def verdict(paper: float, low: float, high: float) -> str:
    """``reproduced`` / ``opposite`` / ``inconclusive`` / ``missing`` (module docstring)."""
    if not (_finite(low) and _finite(high)):
        return "missing"
    if low <= 0.0 <= high:
        return "inconclusive"
    return "reproduced" if (low > 0) == (paper > 0) else "opposite"


# ------------------------------------------------------------------------------------------------
# the analysis of one report
def _seeds(runs: dict, variant: str, point: str) -> list[dict]:
    return runs.get(variant, {}).get(point, [])


def _point_label(point: str, iterations: int) -> str:
    return f"@{iterations}" if point == "final" else f"@{point}"


def analyse(runs: dict, timing: dict, iterations: int, draws: int = DRAWS) -> dict:
    """Means with intervals per (variant, point), the differences with verdicts, Table 4 and the
    targets, from the scores alone."""
    means: dict = {}
    for v, points in runs.items():
        for p, seeds in points.items():
            if seeds:
                means.setdefault(v, {})[p] = {m: mean_interval(seeds, m, draws) for m in "JFT"}
    diffs = []
    for d in DIFFERENCES:
        for m, paper in d.paper.items():
            r = paired_difference(_seeds(runs, *d.a), _seeds(runs, *d.b), m, draws)
            diffs.append({"table": d.table, "label": d.label, "metric": m,
                          "a": f"{d.a[0]}{_point_label(d.a[1], iterations)}",
                          "b": f"{d.b[0]}{_point_label(d.b[1], iterations)}",
                          "paper": paper, **r, "verdict": verdict(paper, r["low"], r["high"])})
    table4 = table4_rows(runs, timing, iterations, means)
    out = {"means": means, "differences": diffs, "table4": table4}
    out["targets"] = targets(runs, diffs, table4, iterations, draws)
    return out


def table4_rows(runs: dict, timing: dict, iterations: int, means: dict) -> dict:
    """Per variant with snapshots: J (interval) and s/frame at each measured step."""
    rows: dict = {}
    for v in (x.name for x in VARIANTS if x.snapshots):
        if v not in runs:
            continue
        steps = sorted(int(p) for p in runs[v] if p != "final")
        pts = [(k, str(k)) for k in steps] + ([(iterations, "final")] if "final" in runs[v]
                                              else [])
        rows[v] = []
        for k, p in pts:
            t = [s.get("total_s_per_frame") for s in timing.get(v, {}).get(p, [])]
            t = [x for x in t if _finite(x)]
            j = means.get(v, {}).get(p, {}).get("J", {})
            rows[v].append({"iterations": k, "J": j.get("value", math.nan),
                            "low": j.get("low", math.nan), "high": j.get("high", math.nan),
                            "s_per_frame": float(np.mean(t)) if t else math.nan})
    return rows


def _j_at(table4: dict, variant: str, k: int) -> float:
    for row in table4.get(variant, []):
        if row["iterations"] == k:
            return row["J"]
    return math.nan


def targets(runs: dict, diffs: list[dict], table4: dict, iterations: int,
            draws: int = DRAWS) -> dict:
    """The benchmark's targets, each with its figure and ``pass`` (None: not measured)."""
    out: dict = {}
    d = paired_difference(_seeds(runs, "full", "final"), _seeds(runs, "online_only", "final"),
                          "J", draws)
    want = TARGETS["full_minus_online_only_J"]
    out["full_minus_online_only_J"] = {
        "value": d["value"], "low": d["low"], "high": d["high"], "target": f">= {want}",
        "pass": (d["value"] >= want) if _finite(d["value"]) else None}
    judged = [x for x in diffs if x["table"] in ("Table 3", "Table 5")]
    bad = [f"{x['table']} {x['label']} {x['metric']}: {x['verdict']}" for x in judged
           if x["verdict"] != "reproduced"]
    out["table3_table5_directions"] = {
        "value": len(judged) - len(bad), "of": len(judged), "target": "all reproduced",
        "not_reproduced": bad,
        "pass": None if all(x["verdict"] == "missing" for x in judged) else not bad}
    tcb = next((x for x in diffs if x["label"] == "the TCB" and x["metric"] == "T"), None)
    out["tcb_lowers_T"] = {
        "value": tcb["value"] if tcb else math.nan, "low": tcb["low"] if tcb else math.nan,
        "high": tcb["high"] if tcb else math.nan,
        "target": "T(tcb_noattn) - T(ssb_alone) < 0, interval excluding 0",
        "pass": None if not tcb or tcb["verdict"] == "missing" else tcb["verdict"] == "reproduced"}
    ref = reference_step(iterations)
    j_ref, j_end = _j_at(table4, "full", ref), _j_at(table4, "full", iterations)
    gap = j_end - j_ref
    want = TARGETS["table4_plateau_J"]
    p = paired_difference(_seeds(runs, "full", "final"), _seeds(runs, "full", str(ref)), "J",
                          draws)
    out["table4_plateau"] = {
        "value": gap, "low": p["low"], "high": p["high"],
        "target": f"|J(full@{iterations}) - J(full@{ref})| <= {want}",
        "pass": abs(gap) <= want if _finite(gap) else None}
    reach = [r["iterations"] for r in table4.get("online_only", [])
             if _finite(r["J"]) and _finite(j_ref) and r["J"] >= j_ref]
    k = min(reach) if reach else None
    measured = bool(table4.get("online_only")) and _finite(j_ref)
    factor = (k / ref if ref else math.inf) if k is not None else None
    want = TARGETS["table4_factor"]
    out["table4_online_only_factor"] = {
        "value": (k if k is not None else f"> {iterations}") if measured else None,
        "factor": factor if factor is not None else (f"> {iterations / ref:g}" if ref and measured
                                                     else None),
        "target": f"online_only needs >= {want:g}x the {ref} steps of full@{ref} to reach its J",
        "pass": None if not measured else (k is None or factor >= want)}
    return out


def _fmean(values) -> float:
    vals = [v for v in values if _finite(v)]
    return float(np.mean(vals)) if vals else math.nan


def summarise(scores: dict[str, list[dict]]) -> dict:
    """Per sequence J/F (mean over seeds), means over the sequences and the spread over seeds
    (population standard deviation of each seed's mean J) of each variant's seeds ``scores``;
    a score that is not a number is left out of its means."""
    present = [v for v in [*BY_NAME, *sorted(set(scores) - set(BY_NAME))] if scores.get(v)]
    if not present:
        return {"mean": {}, "spread": {}, "sequences": {}}
    names = sorted(scores["copy_first"][0]) if scores.get("copy_first") else \
        sorted(scores[present[0]][0])
    seqs: dict = {n: {} for n in names}
    mean, spread = {}, {}
    for v in present:
        runs = scores[v]
        for n in names:
            seqs[n][v] = {m: _fmean(r.get(n, {}).get(m) for r in runs) for m in "JF"}
        per_seed = [_fmean(r.get(n, {}).get("J") for n in names) for r in runs]
        mean[v] = {m: _fmean(seqs[n][v][m] for n in names) for m in "JF"}
        spread[v] = {"J_std_over_seeds": float(np.std(per_seed)) if len(per_seed) > 1 else 0.0,
                     "J_per_seed": per_seed, "seeds": len(runs)}
    return {"mean": mean, "spread": spread, "sequences": seqs}


# ------------------------------------------------------------------------------------------------
# printed tables
def _f(v, nd: int = 3) -> str:
    return f"{v:.{nd}f}" if _finite(v) else "-"


def _signed(v) -> str:
    return f"{v:+.3f}" if _finite(v) else "-"


def _interval(d: dict) -> str:
    return f"[{_signed(d['low'])}, {_signed(d['high'])}]"


def sequence_table(report: dict) -> str:
    """Per sequence J / F of every variant after all online iterations, the means, the spread
    over seeds."""
    present = list(report["mean"])
    head = f"{'sequence':<22}" + "".join(f"{v + ' J/F':>22}" for v in present)
    lines = [head, "-" * len(head)]
    for n, row in report["sequences"].items():
        lines.append(f"{n:<22}" + "".join(f"{_f(row[v]['J']):>13} /{_f(row[v]['F']):>6}"
                                          for v in present))
    lines.append("-" * len(head))
    lines.append(f"{'mean':<22}" + "".join(
        f"{_f(report['mean'][v]['J']):>13} /{_f(report['mean'][v]['F']):>6}" for v in present))
    lines.append(f"{'J spread (std, seeds)':<22}" + "".join(
        f"{_f(report['spread'][v]['J_std_over_seeds']):>22}" for v in present))
    return "\n".join(lines)


def format_tables(report: dict) -> str:
    """Tables 3, 5 and 4 (the paper's figure beside ours; each difference with its interval and
    verdict) and the targets."""
    stats, n = report["ablations"], report["iterations"]
    means = stats["means"]
    out: list[str] = []

    def cell(v: str, p: str, m: str) -> str:
        c = means.get(v, {}).get(p, {}).get(m)
        return _f(c["value"]) if c else "-"

    def diff_lines(table: str) -> None:
        out.append(f"  {'difference':<40}{'metric':>7}{'paper':>9}{'ours':>9}"
                   f"{'95% interval':>20}  verdict")
        for d in stats["differences"]:
            if d["table"] == table:
                out.append(f"  {d['label']:<40}{d['metric']:>7}{_signed(d['paper']):>9}"
                           f"{_signed(d['value']):>9}{_interval(d):>20}  {d['verdict']}")

    out.append("Table 3 (components): paper / ours")
    out.append(f"  {'column':<20}{'variant':<14}" + "".join(f"{m:>16}" for m in "JFT"))
    for label, v, p in TABLE3_COLUMNS:
        out.append(f"  {label:<20}{v:<14}" + "".join(
            f"{_f(PAPER_TABLE3[v][m]):>8} /{cell(v, p, m):>6}" for m in "JFT"))
    diff_lines("Table 3")
    out.append("")
    out.append("Table 5 (training phases): paper / ours")
    out.append(f"  {'column':<20}{'variant':<18}" + "".join(f"{m:>16}" for m in "JF"))
    for label, v, p in TABLE5_COLUMNS:
        out.append(f"  {label:<20}{v + _point_label(p, n):<18}" + "".join(
            f"{_f(PAPER_TABLE5[label][m]):>8} /{cell(v, p, m):>6}" for m in "JF"))
    diff_lines("Table 5")
    out.append("")
    out.append("Table 4 (online iterations): paper " + ", ".join(
        f"{i}: J {j:.3f} {s:.2f} s/f" for i, j, s in zip(PAPER_TABLE4["iterations"],
                                                       PAPER_TABLE4["J"],
                                                       PAPER_TABLE4["s_per_frame"])))
    for v, rows in stats["table4"].items():
        out.append(f"  {v:<12}" + ", ".join(
            f"{r['iterations']}: J {_f(r['J'])} [{_f(r['low'])}, {_f(r['high'])}] "
            f"{_f(r['s_per_frame'], 2)} s/f" for r in rows))
    out.append("")
    for k, t in stats["targets"].items():
        state = {True: "MET", False: "MISSED", None: "NOT MEASURED"}[t["pass"]]
        if "of" in t:
            val = f"{t['value']}/{t['of']}"
            if t["not_reproduced"]:
                val += " (not: " + "; ".join(t["not_reproduced"]) + ")"
        elif "factor" in t:
            f = t["factor"]
            val = f"k {t['value']}, factor {f if isinstance(f, str) else _f(f, 2)}"
        else:
            val = _signed(t["value"]) + (f" {_interval(t)}" if "low" in t else "")
        out.append(f"target {k}: {val} (want {t['target']}) {state}")
    return "\n".join(out)
