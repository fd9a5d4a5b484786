#!/usr/bin/env python
"""Does the pipeline learn from real video? The CPU-scale STCNN recipe (``configs/proxy/``)
trained on a DAVIS-2016 root's train split, then scored on its val split against baselines.

    python benchmarks/accuracy_proxy.py --davis-root /data/DAVIS-2016-240p \\
        --out runs/proxy [--budget-min 60] [--seeds 3] [--json]
    python benchmarks/accuracy_proxy.py --eval-only --checkpoint runs/proxy/weights.pt \\
        --davis-root /data/DAVIS --out runs/proxy_full      # another root, same online settings
    [--train-set KEY=VALUE ...] [--segment-set KEY=VALUE ...]   # phase / online overrides

Everything goes through the user's path: ``launch/preprocess.py`` (train split -> shards),
``launch/pretrain_tcb.py`` (GAN pretraining of the TCB on the train frames as unlabelled video),
``launch/pretrain_ssb.py`` (the SSB on the train frames as images with masks),
``launch/train_offline.py`` (alternating offline training, from the two phases' weights), all
tracked in ``OUT/mlflow.db`` (experiment ``stcnn-proxy``, nested under one ``accuracy_proxy``
run), then ``launch/segment.py --config OUT/segment.yaml`` (online tuning on lucid dreams of each
val sequence's first frame + segmentation + the official evaluation) for

* ``copy_first``: the first mask copied to every frame (no model; ``launch/evaluate.py``),
* ``online_only``: the same online tuning from a randomly initialised model,
* ``ssb_only``: the SSB trained offline for as many SSB steps as the full pipeline, without the
  TCB (the paper's ablation; tuned and run with ``online.temporal=false``),
* ``full``: the offline-trained STCNN (``OUT/weights.pt``).

The tuned variants use the same online budget and are repeated with ``--seeds`` seeds
(``online.seed``); the report gives per sequence J and F (mean over seeds), the means, the spread
over seeds (standard deviation of the mean J), the minutes of each phase, and the benchmark's
targets (full mean J >= 0.60, full - online_only >= 0.20, full > copy_first on every sequence).

The training budget: the phase step counts in ``configs/proxy/`` (300 GAN, 600 SSB, 400
alternating steps, and the ablation's 380 SSB steps) took 22 minutes of training on 2 CPU cores
busy with other work, about 11 on 2 quiet cores; ``--budget-min M`` scales every phase's steps by
M / 22, so the default of 60 minutes trains each phase 2.7 times longer: 30.7 minutes on 2 quiet
cores (README "Does it learn?"), the budget being an upper bound. The evaluation comes on top:
about 18 minutes per seed for the three tuned variants on the 13 val sequences at 240p.
Writes ``OUT/weights.pt``, ``OUT/segment.yaml``, ``OUT/report.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


from pipeline.core.atomic import atomic_write_text  # noqa: E402
from pipeline.train.registry import by_command  # noqa: E402

PROXY = REPO / "configs" / "proxy"
VARIANTS = ("copy_first", "online_only", "ssb_only", "full")
TUNED = ("online_only", "ssb_only", "full")
BUDGET_REFERENCE_MIN = 22.0   # minutes the configs/proxy step counts took on 2 busy CPU cores (11 quiet)
DEFAULT_BUDGET_MIN = 60.0
EXPERIMENT = "stcnn-proxy"
TARGETS = {"full_mean_J": 0.60, "full_minus_online_only_J": 0.20}


def _log(msg: str) -> None:
    print(f"[accuracy_proxy] {msg}", file=sys.stderr, flush=True)   # stdout: table or JSON


def _run(cmd: list[str], log: Path, env: dict[str, str]) -> float:
    """Run a launcher; its output goes to ``log``; raises naming the log on failure."""
    t = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"[accuracy_proxy] failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                         f"--- last lines of {log} ---\n{tail}")
    return time.perf_counter() - t


def _phase_config(config: Path):
    """The phase config of a ``configs/proxy`` file, through its defaults (steps, rounds)."""
    from pipeline.core.config import load_config

    return load_config(by_command(config.stem).config_class, config, [])


# ------------------------------------------------------------------------------------------------
# training
def train(args, out: Path, env: dict[str, str]) -> dict:
    py = sys.executable
    lake = out / "lake"
    minutes: dict[str, float] = {}
    sec = _run([py, "launch/preprocess.py", "davis2016", "--src", str(args.davis_root),
                "--out", str(lake), "--split", "train", "--workers", "2"],
               out / "logs" / "preprocess.log", env)
    minutes["preprocess"] = sec / 60
    factor = args.budget_min / BUDGET_REFERENCE_MIN
    cfgs = {n: _phase_config(PROXY / f"{n}.yaml") for n in ("pretrain_tcb", "pretrain_ssb",
                                                       "train_offline")}
    steps = {n: max(1, round(c.steps * factor)) for n, c in cfgs.items()}
    alt = cfgs["train_offline"].alternating
    # smaller budgets shorten the rounds too, so that the phase still alternates
    tcb_round = max(1, round(alt.tcb_steps * min(1.0, factor)))
    ssb_round = max(1, round(alt.ssb_steps * min(1.0, factor)))
    steps["ssb_only"] = max(1, round(steps["train_offline"] * ssb_round / (tcb_round + ssb_round)))
    train_dir = out / "train"
    common = ["data.lake=" + str(lake), f"tracking.experiment={EXPERIMENT}",
              "tracking.alias=proxy", "checkpoint.every=100000", "checkpoint.resume=false"]
    plan = [
        ("pretrain_tcb", "pretrain_tcb", []),
        ("pretrain_ssb", "pretrain_ssb", []),
        ("train_offline", "train_offline",
         [f"init_from=[{train_dir / 'pretrain_tcb' / 'weights.pt'},"
          f"{train_dir / 'pretrain_ssb' / 'weights.pt'}]", "init_missing=error",
          f"alternating.tcb_steps={tcb_round}", f"alternating.ssb_steps={ssb_round}"]),
        # the ablation: the SSB alone, trained on as many more steps as the full pipeline's SSB
        ("ssb_only", "pretrain_ssb",
         [f"init_from=[{train_dir / 'pretrain_ssb' / 'weights.pt'}]",
          "tracking.register_as=stcnn-ssb-only"]),
    ]
    for name, config, extra in plan:      # the run, its phase command, its extra keys
        launcher = by_command(config).launcher
        _log(f"{name}: {steps[name]} steps ({launcher} --config configs/proxy/{config}.yaml)")
        sec = _run([py, launcher, "--config", str(PROXY / f"{config}.yaml"),
                    f"run_dir={train_dir / name}", f"steps={steps[name]}", *common, *extra,
                    *args.train_set],
                   out / "logs" / f"{name}.log", env)
        minutes[name] = sec / 60
        _log(f"{name}: {sec / 60:.1f} min")
    shutil.copyfile(train_dir / "train_offline" / "weights.pt", out / "weights.pt")
    shutil.copyfile(train_dir / "ssb_only" / "weights.pt", out / "ssb_only_weights.pt")
    return {"minutes": minutes, "steps": steps,
            "rounds": {"tcb_steps": tcb_round, "ssb_steps": ssb_round}}


# ------------------------------------------------------------------------------------------------
# evaluation
def random_weights(checkpoint: Path, dest: Path, seed: int = 0) -> Path:
    """A randomly initialised STCNN of the checkpoint's model config (the online-only baseline)."""
    from pipeline.train.weights import load_weights, save_random_weights

    return save_random_weights(dest, load_weights(checkpoint)["model_config"], seed=seed)


def _segment(args, out: Path, variant: str, checkpoint: Path, seed: int, env: dict[str, str],
             extra: list[str]) -> Path:
    res = out / "eval" / variant / f"seed{seed}"
    if res.exists():
        shutil.rmtree(res)
    launcher = [sys.executable, "launch/segment.py"]
    if args.ranks > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={args.ranks}", "launch/segment.py"]
    cmd = [*launcher, "--config", str(out / "segment.yaml"), "--checkpoint", str(checkpoint),
           "--davis-root", str(args.davis_root), "--split", "val", "--out", str(res),
           f"online.seed={seed}", f"tracking.run_name=segment-{variant}-seed{seed}", *extra]
    if args.sequences:
        cmd += ["--sequences", *args.sequences]
    renv = dict(env)
    if args.ranks > 1:
        renv["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // args.ranks))
    sec = _run(cmd, out / "logs" / f"segment-{variant}-seed{seed}.log", renv)
    _log(f"{variant} seed {seed}: {sec / 60:.1f} min")
    return res / "eval"


def _copy_first(args, out: Path, env: dict[str, str]) -> Path:
    from pipeline.sources import get_source
    from pipeline.inference.masks import read_mask_png, save_mask_png

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


def _read_scores(ev: Path) -> dict[str, dict[str, float]]:
    with open(ev / "per-sequence_results-val.csv") as f:
        rows = list(csv.DictReader(f))
    return {r["Sequence"].rsplit("_", 1)[0]: {"J": float(r["J-Mean"]), "F": float(r["F-Mean"])}
            for r in rows}


def write_segment_config(out: Path, overrides: list[str] = ()) -> Path:
    """``OUT/segment.yaml``: ``configs/proxy/segment.yaml`` with ``overrides`` (``--segment-set``)
    resolved (no ``defaults``), so that it works from any folder and records what every tuned
    variant ran with."""
    from pipeline.core.config import dump_yaml, load_config
    from pipeline.jobs.segment import SegmentConfig

    cfg = load_config(SegmentConfig, PROXY / "segment.yaml", list(overrides))
    cfg.checkpoint, cfg.davis_root, cfg.out = None, None, "runs/segment"
    path = out / "segment.yaml"
    path.write_text("# the online settings of benchmarks/accuracy_proxy.py (configs/proxy/"
                    "segment.yaml, resolved):\n#   python launch/segment.py --config "
                    "segment.yaml --checkpoint weights.pt --davis-root ROOT --split val "
                    "--out OUT\n" + dump_yaml(cfg))
    return path


def evaluate(args, out: Path, env: dict[str, str], checkpoint: Path,
             ssb_checkpoint: Path | None, on_seed=None) -> dict:
    """Scores of every variant; seeds are the outer loop, and ``on_seed(scores, minutes)`` is
    called after each (the benchmark writes ``OUT/report.partial.json`` there: a long run that is
    stopped keeps its finished seeds)."""
    seg_cfg = out / "segment.yaml"
    if not seg_cfg.is_file() or args.segment_set:
        write_segment_config(out, args.segment_set)
    rand = random_weights(checkpoint, out / "random_weights.pt")
    scores: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    minutes: dict[str, float] = {}
    t = time.perf_counter()
    scores["copy_first"].append(_read_scores(_copy_first(args, out, env)))
    minutes["eval_copy_first"] = (time.perf_counter() - t) / 60
    runs = [("online_only", rand, []), ("full", checkpoint, [])]
    if ssb_checkpoint is not None:
        runs.insert(1, ("ssb_only", ssb_checkpoint, ["online.temporal=false"]))
    for seed in range(args.seeds):
        for variant, ckpt, extra in runs:
            t = time.perf_counter()
            scores[variant].append(_read_scores(_segment(args, out, variant, ckpt, seed, env,
                                                         extra)))
            key = f"eval_{variant}"
            minutes[key] = minutes.get(key, 0.0) + (time.perf_counter() - t) / 60
        if on_seed is not None:
            on_seed(scores, minutes)
    return {"scores": scores, "minutes": minutes}


def summarise(scores: dict[str, list[dict]]) -> dict:
    """Per sequence J/F (mean over seeds), means, spread over seeds (population standard
    deviation of each seed's mean J), targets (met at equality: ``>=``). ``full`` beats
    ``copy_first`` on a sequence only with a strictly higher mean J: a tie is not beaten."""
    present = [v for v in VARIANTS if scores.get(v)]
    names = sorted(scores["copy_first"][0]) if scores.get("copy_first") else \
        sorted(next(iter(scores[present[0]])))
    seqs = {n: {} for n in names}
    mean, spread = {}, {}
    for v in present:
        runs = scores[v]
        for n in names:
            seqs[n][v] = {m: statistics.fmean(r[n][m] for r in runs) for m in ("J", "F")}
        per_seed = [statistics.fmean(r[n]["J"] for n in names) for r in runs]
        mean[v] = {m: statistics.fmean(seqs[n][v][m] for n in names) for m in ("J", "F")}
        spread[v] = {"J_std_over_seeds": statistics.pstdev(per_seed) if len(per_seed) > 1
                     else 0.0, "J_per_seed": per_seed, "seeds": len(runs)}
    targets = {}
    if "full" in mean:
        targets["full_mean_J"] = {"value": mean["full"]["J"], "target": TARGETS["full_mean_J"],
                                  "pass": mean["full"]["J"] >= TARGETS["full_mean_J"]}
        if "online_only" in mean:
            d = mean["full"]["J"] - mean["online_only"]["J"]
            targets["full_minus_online_only_J"] = {
                "value": d, "target": TARGETS["full_minus_online_only_J"],
                "pass": d >= TARGETS["full_minus_online_only_J"]}
        if "copy_first" in mean:
            worse = [n for n in names if seqs[n]["full"]["J"] <= seqs[n]["copy_first"]["J"]]
            targets["full_beats_copy_first_everywhere"] = {"value": len(names) - len(worse),
                                                           "of": len(names), "pass": not worse,
                                                           "not_beaten": worse}
    return {"mean": mean, "spread": spread, "sequences": seqs, "targets": targets}


def table(report: dict) -> str:
    present = [v for v in VARIANTS if v in report["mean"]]
    head = f"{'sequence':<22}" + "".join(f"{v + ' J/F':>22}" for v in present)
    lines = [head, "-" * len(head)]
    for n, row in report["sequences"].items():
        lines.append(f"{n:<22}" + "".join(f"{row[v]['J']:>13.3f} /{row[v]['F']:>6.3f}"
                                          for v in present))
    lines.append("-" * len(head))
    lines.append(f"{'mean':<22}" + "".join(
        f"{report['mean'][v]['J']:>13.3f} /{report['mean'][v]['F']:>6.3f}" for v in present))
    lines.append(f"{'J spread (std, seeds)':<22}" + "".join(
        f"{report['spread'][v]['J_std_over_seeds']:>22.3f}" for v in present))
    for k, t in report["targets"].items():
        val = t["value"] if "of" not in t else f"{t['value']}/{t['of']}"
        want = t.get("target", "all")
        lines.append(f"target {k}: {val if isinstance(val, str) else round(val, 3)} "
                     f"(want {want}) {'PASS' if t['pass'] else 'MISS'}")
    mins = report.get("minutes", {})
    if mins:
        lines.append("minutes: " + ", ".join(f"{k} {v:.1f}" for k, v in mins.items()))
    return "\n".join(lines)


def _tracking(out: Path, args) -> tuple[object, dict[str, str]]:
    from pipeline.tracking import Tracker, TrackingConfig, environment_info, git_info

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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--davis-root", required=True, help="DAVIS-2016 root (train and val splits)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--budget-min", type=float, default=DEFAULT_BUDGET_MIN,
                   help="training minutes on 2 CPU cores the phase steps are scaled to (default "
                        f"60; the configs' step counts take {BUDGET_REFERENCE_MIN:g})")
    p.add_argument("--seeds", type=int, default=3, help="online-tuning seeds per variant")
    p.add_argument("--ranks", type=int, default=2, help="segmentation ranks (torchrun)")
    p.add_argument("--sequences", nargs="+", help="only these val sequences")
    p.add_argument("--eval-only", action="store_true", help="evaluate --checkpoint only")
    p.add_argument("--checkpoint", help="with --eval-only: the offline-trained weights.pt")
    p.add_argument("--ssb-checkpoint", help="with --eval-only: the ssb_only ablation's weights")
    p.add_argument("--json", action="store_true", help="print report.json instead of the table")
    p.add_argument("--train-set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides for every training phase (e.g. data.augment.size=[120,214])")
    p.add_argument("--segment-set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides of the online settings (written into OUT/segment.yaml; every "
                        "tuned variant uses them), e.g. online.iterations=100")
    args = p.parse_args(argv)
    args.davis_root = Path(args.davis_root).resolve()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.eval_only and not args.checkpoint:
        p.error("--eval-only needs --checkpoint")

    tracker, env = _tracking(out, args)
    report: dict = {"davis_root": str(args.davis_root), "budget_min": args.budget_min,
                    "seeds": args.seeds, "train_set": args.train_set,
                    "segment_set": args.segment_set, "minutes": {}}
    try:
        if args.eval_only:
            checkpoint = Path(args.checkpoint).resolve()
            ssb = Path(args.ssb_checkpoint).resolve() if args.ssb_checkpoint else None
            if ssb is None and (checkpoint.parent / "ssb_only_weights.pt").is_file():
                ssb = checkpoint.parent / "ssb_only_weights.pt"
            if not (out / "segment.yaml").is_file():
                src = checkpoint.parent / "segment.yaml"
                if src.is_file():
                    shutil.copyfile(src, out / "segment.yaml")
        else:
            trained = train(args, out, env)
            report["minutes"].update(trained["minutes"])
            report["steps"], report["rounds"] = trained["steps"], trained["rounds"]
            report["training_minutes"] = sum(trained["minutes"].values())
            checkpoint, ssb = out / "weights.pt", out / "ssb_only_weights.pt"
            write_segment_config(out, args.segment_set)

        def partial(scores, minutes):
            done = {**report, "minutes": {**report["minutes"], **minutes},
                    "seeds_done": len(scores["full"]), **summarise(scores)}
            atomic_write_text(out / "report.partial.json", json.dumps(done, indent=1) + "\n")
            _log(f"seed {len(scores['full'])} of {args.seeds} done: "
                 + ", ".join(f"{v} J {m['J']:.3f}" for v, m in done["mean"].items()))

        ev = evaluate(args, out, env, checkpoint, ssb, on_seed=partial)
        report["minutes"].update(ev["minutes"])
        report.update(summarise(ev["scores"]))
        if "ssb_only" not in report["mean"]:
            report["notes"] = ["ssb_only not evaluated: no --ssb-checkpoint (or "
                               "ssb_only_weights.pt beside --checkpoint)"]
        metrics = {f"{v}/mean_{m}": report["mean"][v][m] for v in report["mean"] for m in "JF"}
        tracker.log_metrics({k: v for k, v in metrics.items() if not math.isnan(v)}, step=0)
        atomic_write_text(out / "report.json", json.dumps(report, indent=1) + "\n")
        (out / "report.partial.json").unlink(missing_ok=True)
        tracker.log_artifact(out / "report.json")
        tracker.end("FINISHED")
    except BaseException:
        tracker.end("FAILED")
        raise
    print(json.dumps(report, indent=1) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
