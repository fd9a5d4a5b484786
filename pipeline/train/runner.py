"""Run one training phase from its config: what every launcher in ``launch/`` calls.

    python launch/pretrain_tcb.py --config configs/pretrain_tcb.yaml steps=100 run_dir=runs/tcb
    torchrun --nproc_per_node=8 launch/pretrain_tcb.py ...          # DDP
    deepspeed --num_gpus 8 launch/pretrain_tcb.py ... dist.engine=deepspeed dist.zero_stage=2

Order: process group -> seeds -> batch plan -> model config -> ``init_from`` weights -> engines
-> loader -> resume (engines, phase, RNG, data position) -> the loop with its hooks -> weights.pt
(and MLflow model + registry) -> summary. A run directory holds one run: started again, it
resumes from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

from pipeline.core.atomic import atomic_write_text
from pipeline.core.logs import report_events
from pipeline.train.checkpoint import CheckpointManager, restore_rng_state
from pipeline.core.config import ConfigError, config_text, dump_yaml, to_dict
from pipeline.core.dist import autocast, destroy, init_distributed
from pipeline.tracking import Tracker, environment_info, git_info, ui_hint
from pipeline.train.config import TrainConfig, load_train_config
from pipeline.train.data import DataStream, build_loader, set_dirs
from pipeline.train.hooks import (CheckpointHook, EvalHook, ExportHook,
                                  LossHistoryHook, ProgressHook, ReduceHook, ReplicaCheckHook,
                                  StopHook, TimeoutHook, TimerHook, TrackingHook, load_hooks,
                                  ordered)
from pipeline.train.loop import TrainLoop
from pipeline.train.weights import save_weights
from pipeline.train.checkpoint import WorldSizeMismatch
from pipeline.core.dist import any_rank
from pipeline.train.build import build_phase
from pipeline.train.registry import by_name

log = logging.getLogger(__name__)


def parse_args(argv: list[str] | None, default_config: str, description: str,
               parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """A phase's options, added to ``parser`` (the command's; default a plain one)."""
    p = parser if parser is not None else argparse.ArgumentParser(description=description)
    p.add_argument("--config", default=default_config, help="the phase's YAML config")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (YAML) and its valid keys, write nothing")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="override any config key (--print-config lists them), e.g. steps=100 "
                        "run_dir=runs/x batch.size=16 data.sets=[msra10k/train] "
                        "dist.engine=deepspeed")
    # the deepspeed launcher appends --local_rank=N; LOCAL_RANK is read from the environment
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_intermixed_args(argv)


def build_eval_batches(cfg: Any, phase: Any, ctx) -> Any:
    ecfg = getattr(cfg, "eval", None)
    if ecfg is None or ecfg.every <= 0:
        return None
    if not ecfg.sets:
        raise ConfigError("eval.every > 0 needs eval.sets (shard sets under data.lake)")
    from dataclasses import replace

    dcfg = replace(cfg.data, sets=list(ecfg.sets), augment=ecfg.augment, weights=None,
                   backend="webdataset", num_workers=0, epoch_batches=ecfg.batches)
    loader = build_loader(dcfg, phase.plan.micro_size, kind=phase.kind, masks=True,
                          seed=cfg.seed + 7919, rank=ctx.rank, world_size=ctx.world_size)

    def evaluate() -> dict[str, float]:
        loader.set_epoch(0)  # the same validation batches every time
        return phase.evaluate(loader)

    return evaluate


def resume(manager: CheckpointManager, phase: Any, cfg: TrainConfig, ctx) -> Any:
    """Load the newest readable checkpoint into the engines and the phase (all ranks agree on
    which); an unreadable one (truncated file, missing rank file, a damaged DeepSpeed partition,
    any error on any rank) is reported and the previous one tried, on every rank together. A
    world-size mismatch is not skipped over: it is an error with its fix."""
    own = {n: e for n, e in phase.engines.items() if e.saves_itself}
    for path in reversed(manager.list()):
        error = None
        try:
            loaded = manager.load(path, engines=own or None,
                                  allow_world_size_change=cfg.checkpoint.allow_world_size_change)
            for name, engine in phase.engines.items():
                engine.load_state_dict(loaded.shared["engines"][name])
            phase.load_state_dict(loaded.shared.get("phase", {}))
        except WorldSizeMismatch:
            raise
        except Exception as exc:  # agreed on below: no rank goes on alone
            error = exc
        if not any_rank(error is not None, ctx):
            return loaded
        if ctx.is_main or error is not None:
            log.warning("checkpoint %s cannot be resumed from (%s); trying the previous one",
                        path, error or "another rank could not read it")
    if manager.list():
        raise ConfigError(f"no checkpoint in {manager.directory} can be resumed from (see the "
                          "warnings); move the folder away to start over, or fix the files")
    return None


def run_phase(phase_name: str, config_path: str | Path | None, overrides: list[str],
              *, tracker_factory=None) -> dict:
    """Train one phase; returns a summary (also written to ``run_dir/summary.json`` by rank 0)."""
    cfg: TrainConfig = load_train_config(by_name(phase_name).config_class, config_path, overrides)
    return run_config(phase_name, cfg, tracker_factory=tracker_factory)


def run_config(phase_name: str, cfg: TrainConfig, *, tracker_factory=None) -> dict:
    """Train one phase from its loaded config (e.g. :func:`load_train_config` then
    :func:`pipeline.train.config.override_train_config`); returns its summary."""
    check_inputs(cfg)
    ctx = init_distributed(cfg.dist)
    try:
        return _run(phase_name, by_name(phase_name).phase_class, cfg, ctx, tracker_factory)
    finally:
        destroy()


def check_inputs(cfg: TrainConfig) -> None:
    """The shard sets the run reads exist (local lakes; an s3:// set is checked when listed):
    checked before anything is written."""
    from dataclasses import replace

    if cfg.data.backend != "ffcv":
        set_dirs(cfg.data)
    ecfg = getattr(cfg, "eval", None)
    if ecfg is not None and ecfg.every > 0 and ecfg.sets:
        set_dirs(replace(cfg.data, sets=list(ecfg.sets)))


def _run(phase_name: str, phase_cls: type, cfg: TrainConfig, ctx, tracker_factory) -> dict:
    run_dir = Path(cfg.run_dir)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
    phase, plan, model_cfg, init_sources = build_phase(phase_cls, cfg, ctx)
    loader = build_loader(cfg.data, plan.micro_size, kind=phase.kind, masks=phase.masks,
                          seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size,
                          pin_memory=ctx.device.type == "cuda")
    stream = DataStream(loader)

    manager = CheckpointManager(run_dir / "checkpoints", cfg.checkpoint.keep_last, ctx=ctx)
    start_step = 0
    resumed_from = None
    loaded = resume(manager, phase, cfg, ctx) if cfg.checkpoint.resume else None
    if loaded is not None:
        latest = loaded.path
        start_step = int(loaded.step)
        if loaded.rank_state is not None:
            stream.seek(loaded.rank_state["data"])
            restore_rng_state(loaded.rank_state["rng"])   # after the seek: it draws worker seeds
        else:  # world size changed (allowed): same weights, fresh data order from this step
            stream.epoch = start_step * plan.accum // cfg.data.epoch_batches + 1
        resumed_from = str(latest)
        if ctx.is_main:
            print(f"[{phase_name}] resumed from {latest} at step {start_step}", flush=True)

    tracker = (tracker_factory or Tracker)(cfg.tracking, phase=phase_name, run_dir=run_dir,
                                           rank=ctx.rank, default_store=run_dir.parent)
    params = to_dict(cfg)
    params["model_config"] = to_dict(model_cfg)
    params["batch_plan"] = {"micro_size": plan.micro_size, "accum": plan.accum,
                            "world_size": plan.world_size}
    tags = {"phase": phase_name, **environment_info(ctx.world_size, ctx.device), **git_info()}
    if init_sources:
        tags["init_from"] = "; ".join(init_sources)[:4000]

    def write_weights() -> Path:
        return save_weights(run_dir / "weights.pt", phase.modules(), phase=phase_name,
                            step=loop.state.step, model_config=to_dict(model_cfg))

    timer = TimerHook(ctx.world_size)
    history = LossHistoryHook(cfg.steps)
    export = ExportHook(ctx, write_weights)
    tracking = TrackingHook(tracker, params=params, tags=tags, export=export,
                            log_checkpoints=cfg.checkpoint.log_to_mlflow)
    ckpt = CheckpointHook(manager, cfg.checkpoint.every, stream=stream,
                          on_saved=tracking.checkpoint_saved)
    hooks = [timer, history, TimeoutHook(cfg.dist, ctx), ReduceHook(ctx, cfg.log.every),
             ReplicaCheckHook(ctx, cfg.dist.check_replicas_every),
             ProgressHook(ctx, phase_name), StopHook(ctx, cfg.checkpoint.stop_after), ckpt,
             export, tracking]
    evaluate = build_eval_batches(cfg, phase, ctx)
    if evaluate is not None:
        hooks.append(EvalHook(evaluate, cfg.eval.every))
    hooks = ordered(hooks) + load_hooks(cfg.hooks, ctx)   # then the config's ("module:callable")

    loop = TrainLoop(phase, stream, cfg.steps, accum=plan.accum, start_step=start_step,
                     hooks=hooks, autocast=lambda: autocast(cfg.dist, ctx.device))
    try:
        loop.run()
    finally:
        stream.close()          # the loader's workers end with the run

    times = timer.step_times[1:] or timer.step_times
    job = phase_name if ctx.world_size == 1 else f"{phase_name} rank {ctx.rank}"
    events = report_events(log, job, stream.data_events())   # this rank's loader
    summary = {
        "phase": phase_name, "steps": loop.state.step, "completed": loop.completed,
        "start_step": start_step,
        "resumed_from": resumed_from, "world_size": ctx.world_size,
        "micro_size": plan.micro_size, "accum": plan.accum, "global_batch": plan.global_size,
        "weights": str(export.path) if export.path else str(run_dir / "weights.pt"),
        "checkpoint": str(ckpt.last_saved[0]) if ckpt.last_saved else None,
        "mlflow_run_id": getattr(tracker, "run_id", None),
        "mlflow_tracking_uri": getattr(tracker, "tracking_uri", None),
        "registered": getattr(tracker, "registered_version", None),
        "mean_step_s": sum(times) / len(times) if times else None,
        "samples_per_s": (plan.global_size * len(times) / sum(times)) if times and sum(times) else None,
        "last_metrics": loop.state.reduced or loop.state.metrics,
        "loss_history": history.as_dict(),
        "data_events": events,
    }
    if ctx.is_main:
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    return summary


def main(phase_name: str, default_config: str, description: str,
         argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Parse ``argv`` and train (or ``--print-config``). Bad input and a diverged run
    (``PipelineError``s) are raised for the command to report (pipeline/cli/train.py)."""
    args = parse_args(argv, default_config, description, parser)
    if args.print_config:
        cfg = load_train_config(by_name(phase_name).config_class, args.config, args.overrides)
        print(config_text(cfg, f"--config {args.config}"), end="")
        return 0
    summary = run_phase(phase_name, args.config, args.overrides)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: summary[k] for k in ("phase", "steps", "completed", "weights",
                                                  "mlflow_run_id", "samples_per_s")}, default=str))
        uri = summary.get("mlflow_tracking_uri")
        if summary.get("mlflow_run_id") and uri:
            print(ui_hint(uri, summary["mlflow_run_id"]))
    return 0
