#!/usr/bin/env python
"""Training step time and samples/s of each phase's tiny config, at 1 and more ranks.

Every case is a real run of the phase's launcher in a subprocess (``torchrun`` for more than one
rank, gloo on the CPU), with ``configs/tiny/<phase>.yaml`` on a synthetic data lake:

  gan           launch/pretrain_tcb.py   configs/tiny/pretrain_tcb.yaml   (ilsvrc_vid/train)
  segmentation  launch/pretrain_ssb.py   configs/tiny/pretrain_ssb.yaml   (msra10k + voc2012)
  alternating   launch/train_offline.py  configs/tiny/train_offline.yaml  (davis2016/train)

The global batch (``--batch``, default 4) is the same at every rank count, so the comparison is
strong scaling: with R ranks each rank takes batch / R samples per step. Threads are explicit:
each case gets ``--threads`` intra-op threads in all (default: the CPUs available), split evenly
over its ranks (``OMP_NUM_THREADS`` = threads / R), so 1 rank x 2 threads is compared with
2 ranks x 1 thread on a 2-core machine.

What is measured: wall time of the optimizer steps ``--warmup``+1 .. ``--steps`` (default 3..10;
for the alternating phase, whose rounds are 2 TCB then 2 SSB steps, that is 2 whole rounds),
each step being what ``TimerHook`` times: fetching the batch, forward, backward with DDP's
gradient all-reduce, the optimizer, the BatchNorm buffer broadcast. Outside it: process start-up,
model construction, the hooks between steps (the metric all-reduce of logging steps - every step
here, ``log.every=1`` - and the stop-flag all-reduce) and the checkpoint after the last step; so
samples/s is the rate of the steps themselves, slightly above the end-to-end rate of a long run.
The run's ``summary.json``
holds rank 0's exact mean over steps 2..N; the logged times of steps 2..warmup (rank mean, 1 ms
resolution, from the progress lines) are taken out of it. samples/s = global batch / mean step
time; the scaling ratio is samples/s(R ranks) / samples/s(1 rank), ideal = R.

    python benchmarks/train_step.py                          # all phases, 1 and 2 ranks
    python benchmarks/train_step.py --phase gan --steps 12 --repeats 3
    python benchmarks/train_step.py --phase segmentation --ranks 1 --steps 3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

from _common import REPO, run_and_report  # the repo is put on sys.path there

# phase (pipeline/train/registry.py) -> the datasets of its lake (its tiny config's data.sets)
PHASES = {
    "gan": ("ilsvrc_vid",),
    "segmentation": ("msra10k", "voc2012"),
    "alternating": ("davis2016",),
}
SOURCE_SIZE = (64, 48)  # (W, H) of the synthetic sources; the tiny configs crop 48x64 or 48x48

# "[gan] step 3/8 | G/loss 0.63 | ... | 7.73 samples/s | 0.517 s/step" (ProgressHook, rank 0)
PROGRESS = re.compile(r"^\[(?P<phase>\w+)\] step (?P<step>\d+)/\d+ \|.*\| "
                      r"(?P<rate>[\d.]+) samples/s \| (?P<step_s>[\d.]+) s/step$")


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# ----------------------------------------------------------------------------------------------
# the data lake


def build_lake(root: Path, datasets: list[str], max_ranks: int) -> Path:
    """Synthetic sources of ``datasets`` preprocessed into ``root/shards``, the way
    ``pipeline.jobs.main.run_main`` does it; every set gets >= ``max_ranks`` shards (4 samples per
    shard), since each rank reads its own."""
    from pipeline.lake.preprocess import PreprocessConfig, run_preprocess
    from pipeline.synthetic import SyntheticSpec, write_dataset

    n = max(2, max_ranks)
    spec = SyntheticSpec(size=SOURCE_SIZE, n_sequences=n, n_frames=8, n_images=4 * n, seed=0)
    lake = root / "shards"
    for name in datasets:
        src = write_dataset(name, root / "sources" / name, spec)
        for _ in run_preprocess(PreprocessConfig(dataset=name, src=src, out=lake, delta=4,
                                                 shard_max_count=4, workers=1, progress=False)):
            pass
    return lake


# ----------------------------------------------------------------------------------------------
# one case: a training run in a subprocess


def command(phase: str, ranks: int, overrides: list[str]) -> list[str]:
    from pipeline.train.registry import by_name

    spec = by_name(phase)
    script = [str(REPO / spec.launcher), "--config", str(REPO / spec.tiny_config), *overrides]
    if ranks == 1:
        return [sys.executable, *script]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={ranks}", *script]


def timed_mean(summary: dict, logged: dict[int, float], warmup: int) -> float:
    """Mean step time over steps warmup+1..N: summary.json's mean over steps 2..N (rank 0,
    exact) with the logged times of steps 2..warmup taken out."""
    n = int(summary["steps"])
    total = summary["mean_step_s"] * (n - 1)
    missing = [k for k in range(2, warmup + 1) if k not in logged]
    if missing:
        raise RuntimeError(f"no progress line for warm-up step(s) {missing}")
    return (total - sum(logged[k] for k in range(2, warmup + 1))) / (n - warmup)


def run_case(phase: str, ranks: int, args, lake: Path, run_dir: Path) -> dict:
    threads = max(1, args.threads // ranks)
    overrides = [f"run_dir={run_dir}", f"data.lake={lake}", f"steps={args.steps}",
                 f"batch.size={args.batch}", "tracking.enabled=false", "log.every=1",
                 f"checkpoint.every={args.steps + 1000}"]  # one checkpoint only, after the last
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    for attempt in range(args.retries + 1):
        shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, never a resumed one
        start = time.perf_counter()
        proc = subprocess.run(command(phase, ranks, overrides), cwd=REPO, env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode == 0:
            break
        failure = (f"{phase} at {ranks} rank(s) failed (exit {proc.returncode}):\n"
                   f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        if attempt == args.retries:
            raise RuntimeError(failure)
        print(f"retrying ({attempt + 1} of {args.retries}) after: {failure}", file=sys.stderr,
              flush=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    logged = {}
    for line in proc.stdout.splitlines():
        m = PROGRESS.match(line.strip())
        if m and m["phase"] == phase:
            logged[int(m["step"])] = float(m["step_s"])
    mean_step = timed_mean(summary, logged, args.warmup)
    return {
        "phase": phase, "ranks": ranks, "world_size": summary["world_size"],
        "threads_per_rank": threads, "global_batch": summary["global_batch"],
        "per_rank_batch": summary["micro_size"] * summary["accum"],
        "micro_size": summary["micro_size"], "accum": summary["accum"],
        "steps": summary["steps"], "completed": summary["completed"],
        "mean_step_s": mean_step, "samples_per_s": summary["global_batch"] / mean_step,
        "summary_mean_step_s": summary["mean_step_s"],  # steps 2..N, for information
        "logged_step_s": [logged[k] for k in sorted(logged)],
        "attempts": attempt + 1,
        "wall_s": wall,  # the whole subprocess: start-up, model, data, steps, checkpoint
    }


# ----------------------------------------------------------------------------------------------
# the run


def run(args, tmp: Path) -> dict:
    phases = list(PHASES) if args.phase == "all" else [args.phase]
    if args.lake:
        lake, data = Path(args.lake), f"data lake {args.lake}"
    else:
        datasets = [d for p in phases for d in PHASES[p]]
        t = time.perf_counter()
        lake = build_lake(tmp, datasets, max(args.ranks))
        data = (f"synthetic {SOURCE_SIZE[0]}x{SOURCE_SIZE[1]} lake ({', '.join(datasets)}), "
                f"built in {time.perf_counter() - t:.1f} s")
    cases = [(p, r) for p in phases for r in args.ranks]
    runs: dict[tuple[str, int], list[dict]] = {c: [] for c in cases}
    for i in range(args.repeats):  # round-robin, so that load changes hit every case alike
        for phase, ranks in cases:
            run_dir = tmp / "runs" / f"{phase}-r{ranks}-{i}"
            runs[(phase, ranks)].append(run_case(phase, ranks, args, lake, run_dir))
    results = []
    for (phase, ranks), rs in runs.items():
        best = min(rs, key=lambda r: r["mean_step_s"])
        results.append(dict(best, samples_per_s_median=statistics.median(
            r["samples_per_s"] for r in rs), runs=[r["mean_step_s"] for r in rs]))
    by_case = {(r["phase"], r["ranks"]): r for r in results}

    def ratios(key: str) -> dict[str, dict[str, float]]:
        return {p: {str(r): by_case[(p, r)][key] / by_case[(p, 1)][key]
                    for r in args.ranks if r != 1}
                for p in phases if (p, 1) in by_case}

    return {
        "benchmark": "train_step", "data": data, "steps": args.steps,
        "warmup_steps": args.warmup, "timed_steps": args.steps - args.warmup,
        "repeats": args.repeats, "retries": args.retries, "global_batch": args.batch,
        "threads_total": args.threads,
        "cpu_count": cpu_count(), "torch": version("torch"), "results": results,
        "scaling": ratios("samples_per_s"), "scaling_median": ratios("samples_per_s_median"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def print_table(r: dict) -> None:
    print(f"data: {r['data']}")
    print(f"steps {r['steps']} ({r['warmup_steps']} warm-up, {r['timed_steps']} timed), "
          f"global batch {r['global_batch']}, {r['threads_total']} threads per case split over "
          f"its ranks, {r['cpu_count']} CPUs, best of {r['repeats']} (samples/s median), "
          f"torch {r['torch']}")
    head = (f"{'phase':13s}{'ranks':>6s}{'thr/rank':>9s}{'global':>7s}{'/rank':>6s}"
            f"{'step s':>9s}{'samples/s':>11s}{'(median)':>10s}{'scaling':>9s}{'(median)':>9s}"
            f"{'wall s':>8s}")
    print(head)
    for x in r["results"]:
        ratio = r["scaling"].get(x["phase"], {}).get(str(x["ranks"]))
        ratio_median = r["scaling_median"].get(x["phase"], {}).get(str(x["ranks"]))
        print(f"{x['phase']:13s}{x['ranks']:6d}{x['threads_per_rank']:9d}{x['global_batch']:7d}"
              f"{x['per_rank_batch']:6d}{x['mean_step_s']:9.4f}{x['samples_per_s']:11.2f}"
              f"{x['samples_per_s_median']:10.2f}"
              f"{(f'{ratio:.2f}x' if ratio is not None else ''):>9s}"
              f"{(f'({ratio_median:.2f}x)' if ratio_median is not None else ''):>9s}"
              f"{x['wall_s']:8.1f}")
    print("scaling = samples/s(R ranks) / samples/s(1 rank) at the same global batch (ideal R), "
          "best runs (medians)")
    print(f"load average at the end: {r['load_average']}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phase", choices=[*PHASES, "all"], default="all")
    p.add_argument("--ranks", default="1,2",
                   help="comma-separated rank counts (default 1,2); each divides --batch")
    p.add_argument("--steps", type=int, default=10,
                   help="optimizer steps per run (default 10: 2 warm-up + 8 timed)")
    p.add_argument("--warmup", type=int, default=2,
                   help="first steps left out of the timing (default 2, at least 1)")
    p.add_argument("--batch", type=int, default=4,
                   help="global batch, the same at every rank count (default 4)")
    p.add_argument("--threads", type=int, default=cpu_count(),
                   help="intra-op threads per case, split over its ranks (default: the CPUs)")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs per case, round-robin; the fastest is reported (default 1)")
    p.add_argument("--retries", type=int, default=0,
                   help="run a case that fails again, up to this many times, printing the "
                        "failure on stderr (default 0: a failure ends the benchmark)")
    p.add_argument("--lake", help="an existing data lake with the phases' shard sets "
                                  "(default: a synthetic one in the temporary folder)")
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    p.add_argument("--tmp-dir", help="where the lake and the runs go (default: system temp)")
    args = p.parse_args(argv)
    args.ranks = sorted({int(x) for x in args.ranks.split(",") if x.strip()})
    if not args.ranks or min(args.ranks) < 1:
        p.error("--ranks: positive integers, e.g. 1,2")
    if any(args.batch % r for r in args.ranks):
        p.error(f"--batch {args.batch} must be divisible by every rank count {args.ranks}")
    if not 1 <= args.warmup < args.steps:
        p.error("need 1 <= --warmup < --steps")
    if args.threads < 1 or args.repeats < 1 or args.retries < 0:
        p.error("--threads and --repeats must be >= 1, --retries >= 0")
    return args


def main(argv=None) -> int:
    return run_and_report(parse_args(argv), run, print_table, "train_step_bench_")


if __name__ == "__main__":
    sys.exit(main())
