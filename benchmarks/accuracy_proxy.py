#!/usr/bin/env python
"""Does the pipeline learn from real video, and do the paper's ablations (Sec. 4.1.2, Tables 3,
4, 5) hold at CPU scale? The CPU-scale STCNN recipe (``configs/proxy/``) and its ablated
variants trained on a DAVIS-2016 root's train split, then scored on its val split.

    python benchmarks/accuracy_proxy.py --davis-root /data/DAVIS-2016-240p \\
        --out runs/proxy [--budget-min 60] [--seeds 3] [--json]
    python benchmarks/accuracy_proxy.py --eval-only --checkpoint runs/proxy/weights.pt \\
        --davis-root /data/DAVIS --out runs/proxy_full      # another root, same online settings;
        # the ablations' weights beside the checkpoint (tcb_noattn_weights.pt,
        # ssb_alone_weights.pt) are evaluated too, the missing ones named
    python benchmarks/accuracy_proxy.py --replot runs/proxy/report.json [--out DIR]  # the plots
    [--train-set KEY=VALUE ...] [--segment-set KEY=VALUE ...]   # phase / online overrides

**Training**, every run through its launcher (``launch/preprocess.py`` for the train split's
shards, then ``launch/pretrain_tcb.py``, ``launch/pretrain_ssb.py``, ``launch/train_offline.py``
with ``configs/proxy/``), in ``OUT/train/<run>/``, all tracked in ``OUT/mlflow.db`` (experiment
``stcnn-proxy``, nested under one ``accuracy_proxy`` run): ``pretrain_tcb``; ``pretrain_ssb``;
``pretrain_ssb_noattn`` (``model_overrides=[spatial.attention=false]``); ``train_offline`` (from
the TCB and the SSB: ``OUT/weights.pt``); ``train_offline_noattn`` (from the TCB and the SSB
without attention: ``OUT/tcb_noattn_weights.pt``); ``ssb_alone`` (the SSB without attention
trained on from ``pretrain_ssb_noattn`` for as many SSB steps as ``train_offline`` takes:
``OUT/ssb_alone_weights.pt``).

**Evaluation** (``launch/segment.py --config OUT/segment.yaml``: online tuning, segmentation, the
official evaluation; the variants are ``_ablations.VARIANTS``): ``copy_first`` (the first mask
copied to every frame, ``launch/evaluate.py``), ``online_only`` (a random STCNN, lucid dreams),
``full`` (``weights.pt``, lucid dreams), ``full_plain`` (``weights.pt``, ``online.augment=plain``),
``tcb_noattn`` and ``ssb_alone`` (plain; ``ssb_alone`` with ``online.temporal=false``). Each tuned
variant runs with ``--seeds`` online seeds; ``online_only`` and ``full`` are also segmented after
0, N/6, N/3 and 2N/3 of the N online steps (``online.segment_at``; N = 150: 0, 25, 50, 100;
``full`` at 0 is Table 5's "offline only"). The report (``OUT/report.json``, tables printed, plots
in ``OUT/plots/``) holds every variant's per-sequence per-seed J/F/T, Tables 3, 4 and 5 beside the
paper's figures, each paper difference with a paired 95% interval over sequences x seeds and its
verdict, the targets (``_ablations``) and the minutes of every phase and variant.

**Budget.** The configs' step counts (300 GAN, 600 SSB, 400 alternating steps; 380 SSB steps of
``ssb_alone``) took 22 minutes of training on 2 CPU cores busy with other work (about 11 on 2
quiet cores) for ``pretrain_tcb``, ``pretrain_ssb``, ``train_offline`` and ``ssb_alone``;
``--budget-min M`` scales every run's steps by M / 22 (default 60: 2.7 times longer: 818 GAN,
1636 SSB, 1091 alternating and 1036 ``ssb_alone`` steps), and the two runs without attention
repeat ``pretrain_ssb``'s and ``train_offline``'s steps on top. The evaluation comes on top: 5
tuned variants x ``--seeds``, ``online_only`` and ``full`` with 4 more segmentation passes each.
Measured: see README.

**Resumable.** Re-running a stopped run with the same arguments continues where it stopped;
what is finished is kept and said to be skipped. A training run is skipped when its
``weights.pt`` and its record ``OUT/state/<run>.json`` (written when it ends, with its command
and the digests of the weights it starts from) exist for the same settings; an interrupted one
continues from its last checkpoint (``checkpoint.every`` = 100 steps). An evaluation (variant,
seed) is skipped when its record ``OUT/state/eval-<variant>-seed<k>.json`` names the same
settings, weights and ``segment.yaml``; an interrupted one re-runs ``launch/segment.py`` on the
same folder, which keeps its finished sequences. ``OUT/settings.json`` records the arguments that
decide the results (mode, DAVIS root, budget, overrides, sequences, checkpoint): a run with other
ones is refused, naming OUT. ``--seeds`` and ``--ranks`` may change.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _p in (REPO, HERE):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from _ablations import (VARIANTS, analyse, format_tables, segment_at,  # noqa: E402
                        sequence_table, summarise)
from _proxy_state import (check_settings, digest, log as _log, read_json,  # noqa: E402
                          relative, run_step, run_unit, write_json)
from pipeline.core.atomic import atomic_write_text  # noqa: E402
from pipeline.core.errors import PipelineError  # noqa: E402
from pipeline.train.registry import by_command  # noqa: E402

PROXY = REPO / "configs" / "proxy"
BUDGET_REFERENCE_MIN = 22.0   # minutes the configs/proxy step counts took on 2 busy CPU cores (11 quiet)
DEFAULT_BUDGET_MIN = 60.0
EXPERIMENT = "stcnn-proxy"
CHECKPOINT_EVERY = 100        # steps between a run's checkpoints (a stopped run continues there)


def _run(cmd: list[str], log: Path, env: dict[str, str]) -> float:
    """Run a launcher; its output goes to ``log``; raises naming the log on failure."""
    t = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:            # a resumed run's log follows the stopped one's
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"[accuracy_proxy] failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                         f"--- last lines of {log} ---\n{tail}")
    return time.perf_counter() - t


# ------------------------------------------------------------------------------------------------
# training
@dataclass(frozen=True)
class TrainingRun:
    name: str
    config: str                   # configs/proxy/<config>.yaml: its phase command
    init: tuple[str, ...]         # the runs whose weights.pt it starts from
    attention: bool
    steps: str                    # its step count: tcb, ssb, offline or ssb_share (see plan)
    exports: str | None           # OUT/<file> its weights.pt is copied to
    register_as: str | None       # None: the config's


TRAINING: tuple[TrainingRun, ...] = (
    TrainingRun("pretrain_tcb", "pretrain_tcb", (), True, "tcb", None, None),
    TrainingRun("pretrain_ssb", "pretrain_ssb", (), True, "ssb", None, None),
    TrainingRun("pretrain_ssb_noattn", "pretrain_ssb", (), False, "ssb", None,
                "stcnn-ssb-noattn"),
    TrainingRun("train_offline", "train_offline", ("pretrain_tcb", "pretrain_ssb"), True,
                "offline", "weights.pt", None),
    TrainingRun("train_offline_noattn", "train_offline", ("pretrain_tcb", "pretrain_ssb_noattn"),
                False, "offline", "tcb_noattn_weights.pt", "stcnn-tcb-noattn"),
    TrainingRun("ssb_alone", "pretrain_ssb", ("pretrain_ssb_noattn",), False, "ssb_share",
                "ssb_alone_weights.pt", "stcnn-ssb-alone"),
)


def _phase_config(config: Path):
    """The phase config of a ``configs/proxy`` file, through its defaults (steps, rounds)."""
    from pipeline.core.config import load_config

    return load_config(by_command(config.stem).config_class, config, [])


def plan_steps(budget_min: float) -> tuple[dict[str, int], dict[str, int]]:
    """(steps per step kind, alternating rounds) of a budget: the configs' steps x M / 22."""
    factor = budget_min / BUDGET_REFERENCE_MIN
    cfgs = {n: _phase_config(PROXY / f"{n}.yaml") for n in ("pretrain_tcb", "pretrain_ssb",
                                                       "train_offline")}
    steps = {"tcb": max(1, round(cfgs["pretrain_tcb"].steps * factor)),
             "ssb": max(1, round(cfgs["pretrain_ssb"].steps * factor)),
             "offline": max(1, round(cfgs["train_offline"].steps * factor))}
    alt = cfgs["train_offline"].alternating
    # smaller budgets shorten the rounds too, so that the phase still alternates
    rounds = {"tcb_steps": max(1, round(alt.tcb_steps * min(1.0, factor))),
              "ssb_steps": max(1, round(alt.ssb_steps * min(1.0, factor)))}
    steps["ssb_share"] = max(1, round(steps["offline"] * rounds["ssb_steps"]
                                      / (rounds["tcb_steps"] + rounds["ssb_steps"])))
    return steps, rounds


def train(args, out: Path, env: dict[str, str]) -> dict:
    py = sys.executable
    lake = out / "lake"
    minutes: dict[str, float] = {}
    skipped: list[str] = []
    cmd = [py, "launch/preprocess.py", "davis2016", "--src", str(args.davis_root),
           "--out", str(lake), "--split", "train", "--workers", "2"]
    rec = run_step("preprocess", {"command": relative(cmd, out)}, out, lake, lake,
                   lambda: _run(cmd, out / "logs" / "preprocess.log", env))
    minutes["preprocess"] = rec["seconds"] / 60
    skipped += ["preprocess"] if rec["skipped"] else []
    steps, rounds = plan_steps(args.budget_min)
    train_dir = out / "train"
    common = ["data.lake=" + str(lake), f"tracking.experiment={EXPERIMENT}",
              "tracking.alias=proxy", f"checkpoint.every={CHECKPOINT_EVERY}",
              "checkpoint.resume=true"]
    run_steps = {}
    for run in TRAINING:
        launcher = by_command(run.config).launcher
        n = steps[run.steps]
        run_steps[run.name] = n
        extra = []
        if run.init:
            extra += ["init_from=[" + ",".join(str(train_dir / i / "weights.pt")
                                               for i in run.init) + "]"]
        if run.config == "train_offline":
            extra += ["init_missing=error", f"alternating.tcb_steps={rounds['tcb_steps']}",
                      f"alternating.ssb_steps={rounds['ssb_steps']}"]
        if not run.attention:
            extra += ["model_overrides=[spatial.attention=false]"]
        if run.register_as:
            extra += [f"tracking.register_as={run.register_as}"]
        cmd = [py, launcher, "--config", str(PROXY / f"{run.config}.yaml"),
               f"run_dir={train_dir / run.name}", f"steps={n}", *common, *extra,
               *args.train_set]
        key = {"command": relative(cmd, out),
               "init": {i: digest(train_dir / i / "weights.pt") for i in run.init}}
        _log(f"{run.name}: {n} steps ({launcher} --config configs/proxy/{run.config}.yaml"
             f"{'' if run.attention else ', no attention'})")
        folder = train_dir / run.name
        rec = run_step(run.name, key, out, folder, folder / "weights.pt",
                       lambda: _run(cmd, out / "logs" / f"{run.name}.log", env))
        minutes[run.name] = rec["seconds"] / 60
        skipped += [run.name] if rec["skipped"] else []
        if run.exports:
            shutil.copyfile(train_dir / run.name / "weights.pt", out / run.exports)
    return {"minutes": minutes, "steps": run_steps, "rounds": rounds, "skipped": skipped}


# ------------------------------------------------------------------------------------------------
# evaluation
def random_weights(checkpoint: Path, dest: Path, seed: int = 0) -> Path:
    """A randomly initialised STCNN of the checkpoint's model config (the online-only baseline);
    an existing file is kept (its digest keys the finished evaluations)."""
    from pipeline.train.weights import load_weights, save_random_weights

    if dest.is_file():
        return dest
    return save_random_weights(dest, load_weights(checkpoint)["model_config"], seed=seed)


def _copy_first(args, out: Path, env: dict[str, str]) -> Path:
    from pipeline.inference.masks import read_mask_png, save_mask_png
    from pipeline.sources import get_source

    res = out / "eval" / "copy_first" / "results"
    seqs = get_source("davis2016", args.davis_root).sequences("val")
    for s in seqs:
        if args.sequences and s.name not in args.sequences:
            continue
        first = read_mask_png(s.frames[0].mask)
        for f in s.frames:
            save_mask_png(res / s.name / f"{f.frame_id}.png", first)
    ev = out / "eval" / "copy_first" / "eval"
    cmd = [sys.executable, "launch/evaluate.py", "--davis-root", str(args.davis_root),
           "--results", str(res), "--year", "2016", "--split", "val", "--out", str(ev),
           "--no-plot"]
    if args.sequences:
        cmd += ["--sequences", *args.sequences]
    _run(cmd, out / "logs" / "evaluate-copy_first.log", env)
    return ev


def _num(text: str) -> float:
    return float(text) if text not in ("", None) else math.nan


def _read_scores(ev: Path) -> dict[str, dict]:
    """Per sequence J and F (``per-sequence_results-val.csv``) and, where written, T and
    whether it counts (``per-sequence_T-val.csv``)."""
    with open(ev / "per-sequence_results-val.csv") as f:
        out = {r["Sequence"].rsplit("_", 1)[0]: {"J": _num(r["J-Mean"]), "F": _num(r["F-Mean"])}
               for r in csv.DictReader(f)}
    t_csv = ev / "per-sequence_T-val.csv"
    if t_csv.is_file():
        with open(t_csv) as f:
            for r in csv.DictReader(f):
                if r["Sequence"] in out:
                    out[r["Sequence"]].update(T=_num(r["T-Mean"]), eval_t=r["eval_t"] == "True")
    return out


def write_segment_config(out: Path, overrides: list[str] = (), base: Path | None = None) -> Path:
    """``OUT/segment.yaml``: ``base`` (default ``configs/proxy/segment.yaml``) with
    ``overrides`` (``--segment-set``) resolved (no ``defaults``), so that it works from any
    folder and records what every tuned variant ran with; rewritten only when it changes."""
    from pipeline.core.config import dump_yaml, load_config
    from pipeline.jobs.segment import SegmentConfig

    cfg = load_config(SegmentConfig, base or PROXY / "segment.yaml", list(overrides))
    cfg.checkpoint, cfg.davis_root, cfg.out = None, None, "runs/segment"
    text = ("# the online settings of benchmarks/accuracy_proxy.py (configs/proxy/"
            "segment.yaml, resolved):\n#   python launch/segment.py --config "
            "segment.yaml --checkpoint weights.pt --davis-root ROOT --split val "
            "--out OUT\n" + dump_yaml(cfg))
    path = out / "segment.yaml"
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)
    return path


def _segment_results(res: Path, iterations: int) -> tuple[dict, dict]:
    """(scores, timing) by point (``final`` and each ``segment_at`` step) of a finished
    ``launch/segment.py`` folder."""
    summary = read_json(res / "summary.json") or {}
    steps = summary.get("iterations", {})
    scores, timing = {"final": _read_scores(res / "eval")}, {}
    timing["final"] = (steps.get(str(iterations), {}).get("timing") or summary.get("timing", {}))
    for k, entry in steps.items():
        if k != str(iterations):
            scores[k] = _read_scores(res / "iterations" / k / "eval")
            timing[k] = entry.get("timing", {})
    return scores, timing


def variant_weights(checkpoint: Path, out: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """(weights by tuned variant, missing ones with the path looked for): the files beside
    ``checkpoint`` named in the registry; the random STCNN made in ``out``."""
    found, missing = {}, {}
    for v in VARIANTS:
        if v.weights is None:
            continue
        if v.name == "online_only":
            found[v.name] = random_weights(checkpoint, out / v.weights)
            continue
        p = checkpoint if v.weights == "weights.pt" else checkpoint.parent / v.weights
        if p.is_file():
            found[v.name] = p
        else:
            missing[v.name] = str(p)
    return found, missing


def evaluate(args, out: Path, env: dict[str, str], weights: dict[str, Path],
             on_seed=None) -> dict:
    """Every variant's scores: copy_first once, then per seed (the outer loop) every tuned
    variant with weights; ``on_seed(result)`` after each seed."""
    from pipeline.core.config import load_config
    from pipeline.jobs.segment import SegmentConfig

    seg_cfg = out / "segment.yaml"
    iterations = load_config(SegmentConfig, seg_cfg, []).online.iterations
    ks = segment_at(iterations)
    base = {"davis_root": str(args.davis_root), "sequences": args.sequences,
            "segment_yaml": digest(seg_cfg)}
    digests = {v: digest(p) for v, p in weights.items()}
    result = {"iterations": iterations, "segment_at": ks, "runs": {}, "timing": {},
              "minutes": {}, "skipped": []}

    def keep(variant: str, rec: dict) -> None:
        for point, s in rec["scores"].items():
            result["runs"].setdefault(variant, {}).setdefault(point, []).append(s)
        for point, t in rec["timing"].items():
            result["timing"].setdefault(variant, {}).setdefault(point, []).append(t)
        key = f"eval_{variant}"
        result["minutes"][key] = result["minutes"].get(key, 0.0) + rec["seconds"] / 60
        if rec["skipped"]:
            result["skipped"].append(variant if variant == "copy_first"
                                     else f"{variant} seed {rec['key']['seed']}")

    keep("copy_first", run_unit(out, "copy_first", {"davis_root": base["davis_root"],
                                                 "sequences": args.sequences},
                             lambda: ({"final": _read_scores(_copy_first(args, out, env))}, {})))
    launcher = [sys.executable, "launch/segment.py"]
    renv = dict(env)
    if args.ranks > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={args.ranks}", "launch/segment.py"]
        renv["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // args.ranks))
    for seed in range(args.seeds):
        for v in VARIANTS:
            if v.name not in weights:
                continue
            overrides = list(v.online)
            if v.snapshots:
                overrides.append("online.segment_at=[" + ",".join(map(str, ks)) + "]")
            res = out / "eval" / v.name / f"seed{seed}"
            cmd = [*launcher, "--config", str(seg_cfg), "--checkpoint", str(weights[v.name]),
                   "--davis-root", str(args.davis_root), "--split", "val", "--out", str(res),
                   f"online.seed={seed}", f"tracking.run_name=segment-{v.name}-seed{seed}",
                   *overrides]
            if args.sequences:
                cmd += ["--sequences", *args.sequences]
            key = {**base, "variant": v.name, "seed": seed, "overrides": overrides,
                   "weights": digests[v.name]}

            def run(cmd=cmd, res=res, name=f"{v.name}-seed{seed}"):
                # the folder is kept: launch/segment.py skips its finished sequences
                _run(cmd, out / "logs" / f"segment-{name}.log", renv)
                return _segment_results(res, iterations)

            keep(v.name, run_unit(out, f"{v.name}-seed{seed}", key, run))
        if on_seed is not None:
            on_seed(result, seed)
    return result


# ------------------------------------------------------------------------------------------------
# the report
def build_report(report: dict, ev: dict) -> dict:
    """``report`` (the run's arguments) with the scores of ``ev``, their summary, the ablation
    analysis (``_ablations.analyse``), minutes and skips."""
    final = {v: points["final"] for v, points in ev["runs"].items() if points.get("final")}
    return {**report, "iterations": ev["iterations"], "segment_at": ev["segment_at"],
            "minutes": {**report.get("minutes", {}), **ev["minutes"]},
            "skipped": [*report.get("skipped", []), *ev["skipped"]],
            "runs": ev["runs"], "timing": ev["timing"], **summarise(final),
            "ablations": analyse(ev["runs"], ev["timing"], ev["iterations"])}


def text_report(report: dict) -> str:
    lines = [sequence_table(report), "", format_tables(report)]
    if report.get("missing"):
        lines.append("not evaluated (no weights): " + ", ".join(
            f"{v} ({p})" for v, p in report["missing"].items()))
    mins = report.get("minutes", {})
    if mins:
        lines.append("minutes: " + ", ".join(f"{k} {v:.1f}" for k, v in mins.items()))
    if report.get("skipped"):
        lines.append("kept from an earlier run: " + ", ".join(report["skipped"]))
    return "\n".join(lines)


def _tracking(out: Path, args) -> tuple[object, dict[str, str]]:
    from pipeline.tracking import environment_info, git_info, Tracker, TrackingConfig

    name = "accuracy_proxy-eval" if args.eval_only else "accuracy_proxy"
    state = out / "logs" / name    # the run's tracking state: a later invocation starts a new run
    if state.exists():
        shutil.rmtree(state)
    tracker = Tracker(TrackingConfig(experiment=EXPERIMENT, run_name=name),
                      phase="accuracy_proxy", run_dir=state, default_store=out)
    tracker.start({"args": {k: str(v) for k, v in vars(args).items()}},
                  {"phase": "accuracy_proxy", **environment_info(1, "cpu"), **git_info()})
    env = dict(os.environ)
    env.update(tracker.child_env())
    return tracker, env


def replot(report_path: Path, folder: Path | None) -> list[Path]:
    """The plots of a ``report.json`` in ``folder`` (default: ``plots/`` beside it)."""
    from _ablation_plots import write_plots

    report = json.loads(Path(report_path).read_text())
    return write_plots(report, folder or Path(report_path).parent / "plots")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--davis-root", help="DAVIS-2016 root (train and val splits)")
    p.add_argument("--out", help="output folder (with --replot: where plots/ goes)")
    p.add_argument("--budget-min", type=float, default=DEFAULT_BUDGET_MIN,
                   help="scales every training run's steps by M / 22 (default 60; the configs' "
                        f"step counts take {BUDGET_REFERENCE_MIN:g} minutes on 2 busy cores)")
    p.add_argument("--seeds", type=int, default=3, help="online-tuning seeds per variant")
    p.add_argument("--ranks", type=int, default=2, help="segmentation ranks (torchrun)")
    p.add_argument("--sequences", nargs="+", help="only these val sequences")
    p.add_argument("--eval-only", action="store_true",
                   help="evaluate --checkpoint and the ablation weights beside it")
    p.add_argument("--checkpoint", help="with --eval-only: the offline-trained weights.pt "
                                        "(tcb_noattn_weights.pt, ssb_alone_weights.pt beside it)")
    p.add_argument("--replot", metavar="REPORT", help="draw the plots of a report.json, no run")
    p.add_argument("--json", action="store_true", help="print report.json instead of the tables")
    p.add_argument("--train-set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides for every training run (e.g. data.augment.size=[120,214])")
    p.add_argument("--segment-set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides of the online settings (written into OUT/segment.yaml; every "
                        "tuned variant uses them), e.g. online.iterations=100")
    return p


def main(argv=None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.replot:
        for path in replot(Path(args.replot), Path(args.out) / "plots" if args.out else None):
            print(path)
        return 0
    if not args.davis_root or not args.out:
        p.error("--davis-root and --out are needed (or --replot REPORT)")
    if args.eval_only and not args.checkpoint:
        p.error("--eval-only needs --checkpoint")
    args.davis_root = Path(args.davis_root).resolve()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(args.checkpoint).resolve() if args.eval_only else out / "weights.pt"
    settings = {"mode": "eval-only" if args.eval_only else "train",
                "davis_root": str(args.davis_root), "segment_set": args.segment_set,
                "sequences": args.sequences,
                "budget_min": None if args.eval_only else args.budget_min,
                "train_set": [] if args.eval_only else args.train_set,
                "checkpoint": str(checkpoint) if args.eval_only else None}
    try:
        check_settings(out, settings)
    except PipelineError as e:
        print(f"[accuracy_proxy] {e}", file=sys.stderr)
        return e.exit_status

    tracker, env = _tracking(out, args)
    report: dict = {**settings, "seeds": args.seeds, "minutes": {}, "skipped": [],
                    "variants": {v.name: {"weights": v.weights, "trained_by": v.trained_by,
                                          "online": list(v.online), "cells": list(v.cells),
                                          "about": v.about} for v in VARIANTS}}
    try:
        if args.eval_only:
            src = checkpoint.parent / "segment.yaml"
            write_segment_config(out, args.segment_set, src if src.is_file() else None)
        else:
            trained = train(args, out, env)
            report["minutes"].update(trained["minutes"])
            report["skipped"] += trained["skipped"]
            report["steps"], report["rounds"] = trained["steps"], trained["rounds"]
            report["training_minutes"] = sum(trained["minutes"].values())
            write_segment_config(out, args.segment_set)
        weights, missing = variant_weights(checkpoint, out)
        report["weights"] = {v: str(w) for v, w in weights.items()}
        report["missing"] = missing
        for v, path in missing.items():
            _log(f"{v}: no weights ({path}): not evaluated")

        def partial(ev, seed):
            write_json(out / "report.partial.json", build_report(report, ev))
            _log(f"seed {seed + 1} of {args.seeds} done")

        report = build_report(report, evaluate(args, out, env, weights, on_seed=partial))
        from _ablation_plots import write_plots

        plots = write_plots(report, out / "plots")
        metrics = {f"{v}/{p}/mean_{m}": c["value"]
                   for v, pts in report["ablations"]["means"].items()
                   for p, ms in pts.items() for m, c in ms.items()}
        tracker.log_metrics({k: v for k, v in metrics.items()
                             if isinstance(v, float) and math.isfinite(v)}, step=0)
        write_json(out / "report.json", report)
        (out / "report.partial.json").unlink(missing_ok=True)
        tracker.log_artifact(out / "report.json")
        for path in plots:
            tracker.log_artifact(path, "plots")
        tracker.end("FINISHED")
    except BaseException:
        tracker.end("FAILED")
        raise
    report = json.loads((out / "report.json").read_text())
    print(json.dumps(report, indent=1) if args.json else text_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
