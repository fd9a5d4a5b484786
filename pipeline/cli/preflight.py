"""Check, in minutes, that a machine or cluster runs the pipeline, and how fast: environment and
rendezvous, an all-reduce's bandwidth, every training phase at the paper configuration (step
time, peak memory, FLOP/s, MFU; once compiled), bf16 against fp32, online tuning + inference
s/frame against the paper's 3.90, and the loader's decode throughput. Prints a table and writes
``preflight.json``; exits 1 when a check failed, 3 when the ranks could not meet.

    python launch/preflight.py                                 # one GPU, the paper's sizes
    torchrun --nproc_per_node=8 launch/preflight.py            # a node: NCCL, SyncBatchNorm
    srun --ntasks-per-node=8 python launch/preflight.py        # SLURM (ranks from srun's env)
    python launch/preflight.py --device cpu --quick            # tiny model, CPU, gloo: seconds

How to read the table: README "Before a long run".
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path

import torch

from pipeline.cli import common
from pipeline.core.dist import DistConfig, barrier, destroy, init_distributed
from pipeline.train.registry import PHASES
CHECKS = ["allreduce", "phases", "numerics", "online", "loader"]
NAME = "stcnn-preflight"


def _slurm_env(env=None) -> None:
    """Ranks from ``srun`` (one task per GPU) when no launcher set them (in ``env``, default
    ``os.environ``)."""
    env = os.environ if env is None else env
    if "RANK" in env or "SLURM_PROCID" not in env or "SLURM_NTASKS" not in env:
        return
    env.setdefault("RANK", env["SLURM_PROCID"])
    env.setdefault("WORLD_SIZE", env["SLURM_NTASKS"])
    env.setdefault("LOCAL_RANK", env.get("SLURM_LOCALID", "0"))
    env.setdefault("MASTER_PORT", "29512")
    if "MASTER_ADDR" not in env:
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "")
        env["MASTER_ADDR"] = first_host(nodes) or "127.0.0.1"


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``gpu[07-09,12],cpu3`` -> ``gpu07``), as
    ``scontrol show hostnames`` would name it first."""
    head, depth = "", 0
    for ch in nodelist:          # the first entry: up to a comma outside brackets
        if ch == "," and depth == 0:
            break
        depth += {"[": 1, "]": -1}.get(ch, 0)
        head += ch
    prefix, _, ranges = head.partition("[")
    if not ranges:
        return prefix
    first = ranges.rstrip("]").split(",")[0].split("-")[0]
    return prefix + first


def parse_args(argv=None) -> argparse.Namespace:
    p = common.parser(NAME, __doc__)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the checks run (auto: CUDA when available)")
    p.add_argument("--quick", action="store_true",
                   help="tiny model configs (configs/tiny/), small inputs, few steps")
    p.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES), metavar="PHASE",
                   help=f"training phases to time: any of {' '.join(PHASES)} (default: all)")
    p.add_argument("--steps", type=int, help="timed steps per phase (default 5; --quick 3)")
    p.add_argument("--warmup", type=int, help="untimed first steps (default 2; --quick 1)")
    p.add_argument("--precision", choices=["fp32", "bf16"],
                   help="training precision (default: bf16 on CUDA, fp32 on the CPU)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC convolutions (default: on CUDA)")
    p.add_argument("--compile-phases", nargs="*", choices=PHASES, default=None, metavar="PHASE",
                   help="phases also run with dist.compile=true; none if given alone "
                        "(default: gan on CUDA; none "
                        "on the CPU, where compiling the tiny model takes minutes)")
    p.add_argument("--numerics", action=argparse.BooleanOptionalAction, default=True,
                   help="bf16 vs fp32 losses (one more run per phase)")
    p.add_argument("--bf16-rtol", type=float, default=0.02,
                   help="first-step tolerance of bf16 vs fp32 for G's and the SSB's losses, "
                        "relative (default 0.02)")
    p.add_argument("--bf16-rtol-d", type=float, default=0.2,
                   help="the same for D's loss (BCE through batch-statistics BatchNorm: on "
                        "the CPU's bf16 the tiny D moves 6-11%%; default 0.2)")
    p.add_argument("--allreduce-mb", type=float, help="all-reduce size (default 256; CPU 16)")
    p.add_argument("--allreduce-iters", type=int, default=10, help="timed all-reduces")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds the rendezvous and any collective may take (default 300)")
    p.add_argument("--davis-root", help="DAVIS-2016 root for the online and loader checks "
                   "(default: none, synthetic data)")
    p.add_argument("--sequence", help="the DAVIS sequence to tune on (default: the first)")
    p.add_argument("--online-frames", type=int, help="frames of it (default all; --quick 6)")
    p.add_argument("--online-iterations", type=int, help="default 400 (paper); --quick 10")
    p.add_argument("--online-dreams", type=int, help="default 100; --quick 2")
    p.add_argument("--loader-workers", type=int, default=None, help="default 4; --quick 2")
    p.add_argument("--skip", nargs="+", choices=CHECKS, default=[], metavar="CHECK",
                   help=f"checks to leave out: any of {' '.join(CHECKS)} (default: none)")
    p.add_argument("--out", default="preflight.json", help="the JSON written by rank 0")
    p.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    a = p.parse_args(argv)
    a.phases = list(dict.fromkeys(a.phases))
    a.skip = set(a.skip)
    return a


def _defaults(a: argparse.Namespace, cuda: bool) -> None:
    q = a.quick
    a.steps = a.steps or (3 if q else 5)
    a.warmup = a.warmup if a.warmup is not None else (1 if q else 2)
    a.precision = a.precision or ("bf16" if cuda else "fp32")
    a.channels_last = cuda if a.channels_last is None else a.channels_last
    if a.compile_phases is None:
        a.compile_phases = ["gan"] if cuda and not q else []
    a.allreduce_mb = a.allreduce_mb or (256.0 if cuda and not q else 16.0)
    a.online_frames = a.online_frames or (6 if q else None)
    a.online_iterations = a.online_iterations or (10 if q else 400)
    a.online_dreams = a.online_dreams or (2 if q else 100)
    a.loader_workers = a.loader_workers or (2 if q else 4)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def run(a: argparse.Namespace) -> tuple[dict, int]:
    from pipeline.preflight.environment import (allreduce_bandwidth, check_devices, diagnose,
                                                gather_info)
    from pipeline.preflight.numerics import compare_losses
    from pipeline.preflight.phase_steps import measure_phase

    t0 = time.perf_counter()
    host = socket.gethostname()
    rank = int(os.environ.get("RANK", "0"))
    dcfg = DistConfig(device=a.device, first_step_timeout_s=a.timeout, timeout_s=a.timeout)
    try:
        ctx = init_distributed(dcfg)
    except Exception as exc:  # noqa: BLE001 - any failure to meet is reported, named
        print(f"preflight: rendezvous failed: {diagnose(exc, rank, host, None)}",
              file=sys.stderr, flush=True)
        return {"ok": False, "rendezvous": {"ok": False, "error": _error(exc)}}, 3
    cuda = ctx.device.type == "cuda"
    _defaults(a, cuda)
    result: dict = {"quick": a.quick, "device": ctx.device.type, "world_size": ctx.world_size,
                    "backend": ctx.backend, "rendezvous": {"ok": True}, "args": {
                        k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(a).items()}}
    infos = gather_info(ctx)
    result["ranks"] = infos
    result["problems"] = check_devices(infos)
    device_name = infos[ctx.rank].get("device_name") or ""
    failed = bool(result["problems"])

    if "allreduce" in a.skip:
        result["allreduce"] = {"skipped": "--skip allreduce"}
    else:
        try:
            result["allreduce"] = allreduce_bandwidth(ctx, a.allreduce_mb, a.allreduce_iters)
            failed |= result["allreduce"].get("correct") is False
        except Exception as exc:  # noqa: BLE001
            result["allreduce"] = {"error": diagnose(exc, ctx.rank, host, ctx.backend)}
            failed = True

    base = {"dist.precision": a.precision, "dist.channels_last": a.channels_last,
            "dist.device": ctx.device.type, "dist.timeout_s": a.timeout,
            "dist.first_step_timeout_s": a.timeout}
    if cuda and ctx.world_size > 1:
        base["dist.sync_bn"] = True
    result["phases"] = []
    for name in ([] if "phases" in a.skip else a.phases):
        entry: dict = {"phase": name}
        try:
            entry.update(measure_phase(name, ctx, quick=a.quick, steps=a.steps,
                                       warmup=a.warmup, overrides=base,
                                       device_name=device_name))
        except Exception as exc:  # noqa: BLE001
            entry["error"] = _error(exc)
            entry["traceback"] = traceback.format_exc(limit=8)
            failed = True
            result["phases"].append(entry)
            continue
        if name in a.compile_phases:
            try:
                entry["compiled"] = measure_phase(
                    name, ctx, quick=a.quick, steps=a.steps, warmup=a.warmup,
                    overrides=base | {"dist.compile": True}, device_name=device_name,
                    flops_per_step=entry["flops_per_step"])
            except Exception as exc:  # noqa: BLE001
                entry["compiled"] = {"error": _error(exc)}
                failed = True
        if a.numerics and "numerics" not in a.skip:
            try:   # both precisions without dropout: its masks depend on the dtype
                runs = {p: measure_phase(name, ctx, quick=a.quick, steps=a.steps,
                                         warmup=a.warmup, overrides=base | {"dist.precision": p},
                                         device_name=device_name, dropout_off=True)
                        for p in ("fp32", "bf16")}
                entry["numerics"] = compare_losses(runs["fp32"]["losses"],
                                                   runs["bf16"]["losses"], a.bf16_rtol,
                                                   a.bf16_rtol_d)
                entry["numerics"].update(fp32_step_s=runs["fp32"]["step_s"],
                                         bf16_step_s=runs["bf16"]["step_s"],
                                         dropout_layers_off=runs["fp32"]["dropout_layers"])
                failed |= not entry["numerics"]["ok"]
            except Exception as exc:  # noqa: BLE001
                entry["numerics"] = {"error": _error(exc)}
                failed = True
        result["phases"].append(entry)
    measured = [p for p in result["phases"] if "error" not in p]
    if ctx.world_size == 1:
        status = "off: one rank (nothing to synchronise)"
    elif not cuda:
        status = "n/a: SyncBatchNorm needs CUDA devices (CPU ranks keep per-rank statistics)"
    else:
        on = all(p["sync_bn"] for p in measured if p["phase"] != "segmentation")
        status = "on in G and D" if on else "OFF although world size > 1 (check dist.sync_bn)"
        failed |= not on
    result["sync_bn"] = {"status": status}

    if ctx.is_main:   # per-device measures: rank 0's device stands for all
        if "online" not in a.skip:
            from pipeline.preflight.online_speed import measure_online

            model = "configs/model/tiny.yaml" if a.quick else "configs/model/stcnn.yaml"
            try:
                result["online"] = measure_online(
                    ctx.device, model=str(Path(__file__).resolve().parents[2] / model),
                    iterations=a.online_iterations, dreams=a.online_dreams,
                    size=[64, 112] if a.quick else None, frames=a.online_frames,
                    davis_root=a.davis_root, sequence=a.sequence, precision=a.precision)
            except Exception as exc:  # noqa: BLE001
                result["online"] = {"error": _error(exc)}
                failed = True
        if "loader" not in a.skip:
            from pipeline.preflight.loader_speed import measure_loader

            try:
                result["loader"] = measure_loader(ctx.device, davis_root=a.davis_root,
                                                  quick=a.quick, workers=a.loader_workers,
                                                  batch=3, batches=6 if a.quick else 20)
            except Exception as exc:  # noqa: BLE001
                result["loader"] = {"error": _error(exc)}
                failed = True
    try:
        barrier(ctx)
    finally:
        destroy()
    result["ok"] = not failed
    result["seconds"] = time.perf_counter() - t0
    result["json"] = str(Path(a.out).resolve())
    return result, (0 if not failed else 1)


@common.command(NAME)
def main(argv=None) -> int:
    a = parse_args(argv)
    _slurm_env()
    torch.set_flush_denormal(True)
    result, code = run(a)
    if int(os.environ.get("RANK", "0")) != 0 or "ranks" not in result:
        return code
    from pipeline.core.atomic import atomic_write_text
    from pipeline.preflight.report import table

    atomic_write_text(a.out, json.dumps(result, indent=1, default=str) + "\n")
    print(json.dumps(result, indent=1, default=str) if a.json else table(result), flush=True)
    return code
