"""A few training steps of each phase at its configuration, on synthetic batches of the
configured size, through the training loop itself: step time, samples/s, peak memory, FLOPs
counted by torch's FLOP counter, achieved FLOP/s and MFU.

The phase, its engines (DDP or DeepSpeed, precision, memory format, SyncBatchNorm, compile) and
the loop are the ones ``launch/pretrain_tcb.py`` etc. build; only the data differs (random
frames and masks, made before timing, so that the loader is measured on its own:
:mod:`pipeline.preflight.loader_speed`). The per-rank batch is the config's global batch (the
paper trains on one GPU), i.e. ``batch.size`` is multiplied by the world size. Once per phase,
rank 0 also writes the phase's checkpoint (its bytes and write seconds) and counts each model's
parameters: the inputs of ``scripts/capacity_plan.py``.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.core.config import find_config
from pipeline.core.dist import DistContext, autocast, seed_everything
from pipeline.preflight.peaks import peak_flops
from pipeline.train.build import build_phase
from pipeline.train.checkpoint.files import save_torch
from pipeline.train.checkpoint.layout import FORMAT, SHARED
from pipeline.train.config import load_train_config, override_train_config
from pipeline.train.hooks import LossHistoryHook, TimerHook
from pipeline.train.loop import TrainLoop
from pipeline.train.optim import OptimConfig
from pipeline.train.registry import by_name

DEFAULT_SIZE = (480, 854)
# The paper configs start here from random weights, on which full-depth ResNets diverge within a
# step at the paper's rates (the SSB's first loss is ~1e5, its second NaN); neither step time nor
# FLOPs depend on the rate, so every optimizer gets this one.
RANDOM_WEIGHTS_LR = 1e-12


def config_path(phase: str, quick: bool) -> str:
    """The phase's config: its default one, or its tiny one with ``quick``."""
    spec = by_name(phase)
    return str(find_config(spec.tiny_config if quick else spec.config))


def optimizer_keys(cfg, prefix: str = "") -> list[str]:
    """Dotted keys of every optimizer config in ``cfg`` (e.g. ``gan.optim_g``)."""
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, OptimConfig):
            keys.append(prefix + f.name)
        elif dataclasses.is_dataclass(value):
            keys += optimizer_keys(value, f"{prefix}{f.name}.")
    return keys


def phase_config(phase: str, quick: bool, world_size: int,
                 overrides: dict[str, Any] | None = None):
    """The phase's config for the preflight: the config's global batch on every rank, random
    initial weights (with the paper configs, learning rates :data:`RANDOM_WEIGHTS_LR`), no
    tracking; then ``overrides`` (dotted keys -> typed values)."""
    base = load_train_config(by_name(phase).config_class, config_path(phase, quick), [])
    values: dict[str, Any] = {"batch.size": base.batch.size * world_size,
                              "batch.micro_size": None, "init_from": [],
                              "init_missing": "random", "tracking.enabled": False}
    if not quick:
        values |= {f"{k}.lr": RANDOM_WEIGHTS_LR for k in optimizer_keys(base)}
    if phase == "alternating":  # both kinds of step within a few steps
        values |= {"alternating.tcb_steps": 1, "alternating.ssb_steps": 1}
    return override_train_config(base, values | dict(overrides or {}))


def synthetic_batches(kind: str, masks: bool, micro: int, delta: int, size: tuple[int, int],
                      n: int, seed: int) -> list[dict]:
    """``n`` loader-like batches: uint8 frames (clips) or images, 0/1 masks with a box of
    foreground, keys and metas."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    out = []
    for i in range(n):
        shape = (micro, delta + 1, 3, h, w) if kind == "clip" else (micro, 3, h, w)
        batch = {"frames" if kind == "clip" else "image":
                 torch.randint(0, 256, shape, dtype=torch.uint8, generator=g),
                 "key": [f"preflight/{i}/{j}" for j in range(micro)],
                 "meta": [{} for _ in range(micro)]}
        if masks:
            m = torch.zeros(micro, h, w, dtype=torch.uint8)
            m[:, h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
            batch["mask"] = m
        out.append(batch)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30,
                "memory_what": "torch.cuda.max_memory_allocated"}
    return {"peak_memory_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "memory_what": "process peak RSS (CPU)"}


def measure_phase(phase_name: str, ctx: DistContext, *, quick: bool, steps: int, warmup: int,
                  overrides: dict[str, Any] | None = None, flops_per_step: float | None = None,
                  device_name: str = "", dropout_off: bool = False) -> dict:
    """``warmup`` + ``steps`` steps of ``phase_name``; the timed steps are the last ``steps``.
    FLOPs are counted on extra steps after them (the counter slows a step down) unless given
    (``flops_per_step``, e.g. from the eager run for a compiled one). ``dropout_off``: dropout
    layers set to p=0 (numerics: a bf16 tensor draws other dropout masks than an fp32 one)."""
    cfg = phase_config(phase_name, quick, ctx.world_size, overrides)
    size = cfg.data.augment.size or DEFAULT_SIZE
    phase, plan, model_cfg, _ = build_phase(by_name(phase_name).phase_class, cfg, ctx)
    dropouts = [m for e in phase.engines.values() for m in e.module.modules()
                if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
    if dropout_off:
        for m in dropouts:
            m.p = 0.0
    delta = model_cfg.temporal.delta
    flop_steps = 2 if phase_name == "alternating" else 1   # a TCB and an SSB step
    batches = synthetic_batches(phase.kind, phase.masks, plan.micro_size, delta, tuple(size),
                                warmup + steps + flop_steps, seed=cfg.seed + ctx.rank)
    total = warmup + steps
    timer, history = TimerHook(ctx.world_size), LossHistoryHook(total + flop_steps)
    loop = TrainLoop(phase, itertools.cycle(batches), total, accum=plan.accum,
                     hooks=[timer, history], autocast=lambda: autocast(cfg.dist, ctx.device))
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    seed_everything(cfg.seed, ctx.rank)  # dropout draws: the same in every run (numerics)
    start = time.perf_counter()
    loop.run()
    _sync(ctx.device)
    wall = time.perf_counter() - start
    times = timer.step_times[warmup:]
    mean_step = sum(times) / len(times)
    memory = _peak_memory(ctx.device)
    counted = flops_per_step is None
    if counted:
        with FlopCounterMode(display=False) as counter:
            for _ in range(flop_steps):
                loop.state.metrics = loop.run_step()
                loop.state.step += 1
        flops_per_step = counter.get_total_flops() / flop_steps
    # once per phase: the eager run (not the compiled one, nor the numerics runs without dropout)
    checkpoint = (measure_checkpoint(phase, loop.state.step)
                  if ctx.is_main and counted and not dropout_off else {})
    achieved = flops_per_step / mean_step
    peak, peak_what = peak_flops(device_name, cfg.dist.precision,
                                 tf32=torch.backends.cudnn.allow_tf32)
    if ctx.device.type != "cuda":
        peak, peak_what = None, "CPU: no peak table for CPUs (MFU not computed)"
    sync_bn = any(isinstance(m, torch.nn.SyncBatchNorm)
                  for e in phase.engines.values() for m in e.module.modules())
    channels_last = [n for n, e in phase.engines.items() if _is_channels_last(e.module)]
    result = {
        "phase": phase_name, "config": config_path(phase_name, quick),
        "model": cfg.model, "input_hw": list(size), "per_rank_batch": plan.micro_size * plan.accum,
        "global_batch": plan.global_size, "precision": cfg.dist.precision,
        "channels_last": cfg.dist.channels_last, "channels_last_engines": channels_last,
        "compile": cfg.dist.compile, "engine": cfg.dist.engine, "sync_bn": sync_bn,
        "dropout_layers": len(dropouts), "dropout_off": dropout_off,
        "warmup_steps": warmup, "timed_steps": steps, "first_step_s": timer.step_times[0],
        "step_s": mean_step, "step_s_all": timer.step_times,
        "samples_per_s": plan.global_size / mean_step, "wall_s": wall,
        "flops_per_step": flops_per_step, "flops_counted": counted,
        "achieved_tflops": achieved / 1e12,
        "mfu": achieved / peak if peak else None, "peak": peak_what,
        "losses": {k: v[:total] for k, v in history.as_dict().items() if k != "steps"},
        "engine_parameters": engine_parameters(phase),
        **memory, **checkpoint,
    }
    del loop, phase, batches
    gc.collect()
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def engine_parameters(phase) -> dict[str, int]:
    """Parameters of each engine's model (what its gradient all-reduce and its weights carry)."""
    return {name: sum(p.numel() for p in e.module.parameters())
            for name, e in phase.engines.items()}


def measure_checkpoint(phase, step: int) -> dict:
    """Bytes and write seconds of the ``shared.pt`` a checkpoint of ``phase`` holds (every
    engine's model, optimizer and scheduler state, the phase's state: what the checkpoint hook
    saves; after optimizer steps, so that the optimizers' state exists), written once by the
    checkpoint's own writer (temporary name, fsync, rename) into a temporary folder."""
    own = sorted(n for n, e in phase.engines.items() if e.saves_itself)
    if own:
        return {"checkpoint_bytes": None, "checkpoint_write_s": None,
                "checkpoint_what": f"engines {own} save their own partitioned state "
                                   "(DeepSpeed): not measured"}
    shared = {"step": step, "phase": phase.state_dict(),
              "engines": {n: e.state_dict() for n, e in phase.engines.items()}}
    with tempfile.TemporaryDirectory(prefix="stcnn-preflight-ckpt-") as tmp:
        path = Path(tmp) / SHARED
        start = time.perf_counter()
        save_torch(path, {"format": FORMAT, "step": step, "world_size": 1, "shared": shared})
        seconds = time.perf_counter() - start
        size = path.stat().st_size
    return {"checkpoint_bytes": size, "checkpoint_write_s": seconds,
            "checkpoint_what": f"{SHARED} (models, optimizers, schedulers, phase state) "
                               "written and fsynced to the system's temporary folder"}


def _is_channels_last(module: torch.nn.Module) -> bool:
    """Whether the module's 4-d weights (its convolutions) are in channels_last layout."""
    conv = [p for p in module.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    return bool(conv) and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv)
