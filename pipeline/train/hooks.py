"""Side concerns of training, plugged into :class:`pipeline.train.loop.TrainLoop`.

Registered in this order (:data:`HOOK_ORDER`; :func:`ordered` puts the runner's hooks in it),
each reading what the earlier ones added to the loop's declared state
(:class:`~pipeline.train.loop.LoopState`: ``metrics``, ``reduced``, ``stop_requested``):

* :class:`TimerHook`       step and data time, samples/s over all ranks
* :class:`LossHistoryHook` this rank's losses after each step (the run's loss curve)
* :class:`TimeoutHook`     shortens the collective timeout once the first step is done
* :class:`ReduceHook`      every ``log.every`` steps: metrics averaged over ranks (collective)
* :class:`ReplicaCheckHook` optional: weights, gradients and buffers identical on every rank
* :class:`EvalHook`        periodic validation (phases with an ``evaluate``)
* :class:`ProgressHook`    a line per ``log.every`` steps on rank 0
* :class:`StopHook`        SIGTERM / SIGUSR1 / ``checkpoint.stop_after``: stop at an agreed step
* :class:`CheckpointHook`  every ``checkpoint.every`` steps and at the end (all ranks)
* :class:`ExportHook`      ``run_dir/weights.pt`` at the end (rank 0)
* :class:`TrackingHook`    MLflow: run, params, metrics, checkpoints, model, registry (rank 0)

Callbacks between hooks are given at construction: the checkpoint hook is built with the
tracking hook's :meth:`TrackingHook.checkpoint_saved` as its ``on_saved``. More hooks come from
the config (``hooks: ["module:callable"]``, :func:`load_hooks`), e.g. the
fault injection of ``tests/faults``.

Collective hooks (Reduce, Eval, Checkpoint) decide by step number only, so every rank enters
the same collectives.
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from pipeline.train.checkpoint import CheckpointManager, capture_rng_state
from pipeline.core.config import ConfigError
from pipeline.core.dist import (DistConfig, DistContext, all_reduce_mean, any_rank,
                               shorten_timeout)
from pipeline.core.timeouts import is_collective_timeout, report_timeout
from pipeline.train.loop import HookBase

log = logging.getLogger(__name__)


class TimerHook(HookBase):
    """``time/step_s``, ``time/data_s`` and ``throughput/samples_per_s`` (all ranks' samples)."""

    def __init__(self, world_size: int):
        self.world_size = world_size
        self._t0 = 0.0
        self.step_times: list[float] = []

    def before_step(self) -> None:
        self._t0 = time.perf_counter()

    def after_step(self) -> None:
        dt = time.perf_counter() - self._t0
        self.step_times.append(dt)
        state = self.loop.state
        state.metrics["time/step_s"] = dt
        state.metrics["time/data_s"] = state.data_seconds
        state.metrics["throughput/samples_per_s"] = (state.samples_in_step * self.world_size
                                                     / max(dt, 1e-9))


class LossHistoryHook(HookBase):
    """This rank's losses (every metric whose name ends in ``loss``) after each step, kept every
    ``stride``-th step (at most about ``max_points`` per metric): the run's loss curve, in its
    ``summary.json`` (golden-curve tests, "did the loss fall?")."""

    def __init__(self, total_steps: int, max_points: int = 2000):
        self.stride = max(1, -(-int(total_steps) // max_points))
        self.steps: list[int] = []
        self.values: dict[str, list[float]] = {}

    def after_step(self) -> None:
        step = self.loop.state.step
        if step % self.stride and step != self.loop.total_steps:
            return
        self.steps.append(step)
        for k, v in self.loop.state.metrics.items():
            if k.endswith("loss"):
                self.values.setdefault(k, []).append(float(v))

    def as_dict(self) -> dict:
        return {"steps": self.steps, **self.values}


class TimeoutHook(HookBase):
    """Collectives wait ``dist.first_step_timeout_s`` until this invocation's first step is done,
    then ``dist.timeout_s``. When a collective times out, this rank prints the step, the timeout
    and the ranks that did not arrive (:func:`~pipeline.core.timeouts.report_timeout`), and the
    error goes on (the run fails; the launcher stops the other ranks)."""

    def __init__(self, cfg: DistConfig, ctx: DistContext):
        self.cfg, self.ctx, self.done = cfg, ctx, False
        self.current: int | None = None       # the step in progress (its after_step hooks too)

    def before_step(self) -> None:
        self.current = self.loop.state.step + 1

    def after_step(self) -> None:
        if not self.done:
            shorten_timeout(self.cfg, self.ctx)
            self.done = True

    def on_exception(self, exc: BaseException) -> None:
        if self.ctx.distributed and is_collective_timeout(exc):
            setting = "dist.timeout_s" if self.done else "dist.first_step_timeout_s"
            report_timeout(exc, self.ctx, self.current or self.loop.state.step + 1,
                           getattr(self.cfg, setting.split(".")[1]), setting)


class ReduceHook(HookBase):
    """``state.reduced``: rank means of ``state.metrics`` at logging steps (else the loop's
    ``None`` stays)."""

    def __init__(self, ctx: DistContext, every: int):
        self.ctx, self.every = ctx, max(1, int(every))

    def is_log_step(self) -> bool:
        step = self.loop.state.step
        return step % self.every == 0 or step == self.loop.total_steps

    def after_step(self) -> None:
        if self.is_log_step():
            self.loop.state.reduced = all_reduce_mean(self.loop.state.metrics, self.ctx)


class ReplicaCheckHook(HookBase):
    """Every ``every`` steps: are the weights, gradients and buffers (BatchNorm running
    statistics and ``num_batches_tracked``, which :meth:`Engine.sync_buffers` broadcasts from
    rank 0 each step) of all ranks bit-identical (as DDP promises)? Element-wise max and min over
    ranks must agree. Adds ``dist/replica_mismatch`` (number of differing tensors) to the logged
    metrics; raises when ``strict``, naming each tensor and its kind (weight, grad, buffer)."""

    def __init__(self, ctx: DistContext, every: int, strict: bool = True):
        self.ctx, self.every, self.strict = ctx, int(every), strict
        self.checks = 0

    @staticmethod
    def _tensors(module) -> Any:
        for pname, p in module.named_parameters():
            yield pname, "weight", p.detach()
            yield pname, "grad", p.grad
        for bname, b in module.named_buffers():
            yield bname, "buffer", b

    def mismatches(self) -> list[str]:
        import torch
        import torch.distributed as tdist

        bad = []
        for name, engine in self.loop.phase.engines.items():
            for tname, kind, t in self._tensors(engine.module):
                if t is None or not t.numel():
                    continue
                hi, lo = t.detach().clone(), t.detach().clone()
                tdist.all_reduce(hi, op=tdist.ReduceOp.MAX)
                tdist.all_reduce(lo, op=tdist.ReduceOp.MIN)
                if not torch.equal(hi, lo):
                    bad.append(f"{name}.{tname} ({kind})")
        return bad

    def after_step(self) -> None:
        state = self.loop.state
        if not self.ctx.distributed or self.every <= 0 or state.step % self.every:
            return
        bad = self.mismatches()
        self.checks += 1
        state.metrics["dist/replica_mismatch"] = float(len(bad))
        if state.reduced is not None:
            state.reduced["dist/replica_mismatch"] = float(len(bad))
        if bad and self.strict:
            raise RuntimeError(f"ranks diverged after step {state.step}: {bad[:10]} "
                               f"({len(bad)} tensors differ)")


class EvalHook(HookBase):
    """Every ``every`` steps (and at the end): ``evaluate()`` (a collective returning rank-mean
    metrics such as ``eval/J``), merged into ``state.reduced`` for logging."""

    def __init__(self, evaluate: Callable[[], dict[str, float]], every: int):
        self.evaluate, self.every = evaluate, int(every)

    def after_step(self) -> None:
        state = self.loop.state
        if self.every > 0 and (state.step % self.every == 0 or state.step == self.loop.total_steps):
            results = self.evaluate()
            state.metrics.update(results)
            if state.reduced is None:
                state.reduced = dict(results)
            else:
                state.reduced.update(results)


class ProgressHook(HookBase):
    def __init__(self, ctx: DistContext, phase: str, stream=None):
        self.ctx, self.phase = ctx, phase
        self.stream = stream or sys.stdout

    def after_step(self) -> None:
        m = self.loop.state.reduced
        if not self.ctx.is_main or m is None:
            return
        shown = [f"{k} {v:.4g}" for k, v in m.items()
                 if k.endswith("/loss") or k.startswith("eval/") or k.endswith("/mse")]
        rate = m.get("throughput/samples_per_s")
        line = (f"[{self.phase}] step {self.loop.state.step}/{self.loop.total_steps} | "
                + " | ".join(shown))
        if rate is not None:
            line += f" | {rate:.2f} samples/s | {m.get('time/step_s', 0.0):.3f} s/step"
        print(line, file=self.stream, flush=True)


class StopHook(HookBase):
    """Stops cleanly (checkpoint, no export) on SIGTERM/SIGUSR1 - SLURM's signal before a time
    limit or preemption - or after ``stop_after`` steps of this invocation. Ranks agree on the
    step to stop at (one all-reduce of a flag per step), so their collectives stay matched."""

    def __init__(self, ctx: DistContext, stop_after: int | None = None,
                 signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGUSR1)):
        self.ctx, self.stop_after, self.signals = ctx, stop_after, signals
        self.signalled: int | None = None
        self._previous: dict[int, Any] = {}
        self._start = 0

    def _handler(self, signum, frame) -> None:
        self.signalled = signum

    def before_train(self) -> None:
        self._start = self.loop.state.step
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handler)

    def after_step(self) -> None:
        local = self.signalled is not None or (
            self.stop_after is not None and self.loop.state.step - self._start >= self.stop_after)
        flag = any_rank(local, self.ctx)
        if flag and not self.loop.completed:
            self.loop.state.stop_requested = True
            if self.ctx.is_main:
                why = (f"signal {self.signalled}" if self.signalled is not None
                       else f"stop_after={self.stop_after}")
                print(f"stopping after step {self.loop.state.step} ({why}); run the same command "
                      "again to resume", flush=True)

    def after_train(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)


class CheckpointHook(HookBase):
    """Saves all training state every ``every`` steps and after the last step: engines (model,
    optimizer, scheduler; DeepSpeed engines their own partitioned state), the phase's state,
    the step, and per rank the RNG states and the data position."""

    def __init__(self, manager: CheckpointManager, every: int, *, stream: Any,
                 extra: Callable[[], dict] | None = None, on_saved: Callable[[Path, int], None] | None = None):
        self.manager, self.every, self.stream = manager, int(every), stream
        self.extra = extra
        self.on_saved = on_saved
        self.last_saved: tuple[Path, int] | None = None

    def save(self) -> Path:
        loop, step = self.loop, self.loop.state.step
        engines = loop.phase.engines
        shared = {"step": step, "phase": loop.phase.state_dict(),
                  "engines": {n: e.state_dict() for n, e in engines.items()}}
        if self.extra is not None:
            shared.update(self.extra())
        rank_state = {"rng": capture_rng_state(), "data": self.stream.position()}
        own = {n: e for n, e in engines.items() if e.saves_itself}
        path = self.manager.save(step, shared, rank_state, engines=own or None)
        self.last_saved = (path, step)
        if self.on_saved is not None:
            self.on_saved(path, step)
        return path

    def after_step(self) -> None:
        state = self.loop.state
        if state.step % self.every == 0 or state.step == self.loop.total_steps or \
                state.stop_requested:
            self.save()


class ExportHook(HookBase):
    """``run_dir/weights.pt`` after the last step (rank 0): the next phase's ``init_from``."""

    def __init__(self, ctx: DistContext, write: Callable[[], Path]):
        self.ctx, self.write = ctx, write
        self.path: Path | None = None

    def after_train(self) -> None:
        if self.ctx.is_main and self.loop.completed:
            self.path = self.write()
            log.info("weights for the next phase: %s", self.path)


class TrackingHook(HookBase):
    """MLflow on rank 0 (the tracker is a no-op elsewhere): the run with the resolved config and
    environment, reduced metrics at logging steps, checkpoints, then the weights as a logged
    model, registered under the phase's name with the configured alias. Checkpoints arrive
    through :meth:`checkpoint_saved` (the checkpoint hook's ``on_saved``): each is logged
    (``log_checkpoints: all``) or the last one at the end (``last``)."""

    def __init__(self, tracker: Any, *, params: dict, tags: dict, export: ExportHook | None,
                 log_checkpoints: str):
        self.tracker, self.params, self.tags = tracker, params, tags
        self.export = export
        self.log_checkpoints = log_checkpoints
        self.last_checkpoint: tuple[Path, int] | None = None
        self.ended = False

    def before_train(self) -> None:
        self.tracker.start(self.params, self.tags)

    def checkpoint_saved(self, path: Path, step: int) -> None:
        self.last_checkpoint = (path, step)
        if self.log_checkpoints == "all":
            self.tracker.log_checkpoint(path, step)

    def after_step(self) -> None:
        m = self.loop.state.reduced
        if m is not None:
            self.tracker.log_metrics(m, self.loop.state.step)

    def after_train(self) -> None:
        if self.last_checkpoint is not None and self.log_checkpoints == "last":
            self.tracker.log_checkpoint(*self.last_checkpoint)
        if self.export is not None and self.export.path is not None:
            uri = self.tracker.log_model(self.export.path, name="model",
                                         model_config=self.params.get("model_config"))
            self.tracker.register(uri)  # during an outage: queued in the spool with the model
        self.tracker.end("FINISHED" if self.loop.completed else "KILLED")
        self.ended = True

    def on_exception(self, exc: BaseException) -> None:
        if not self.ended:
            self.tracker.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            self.ended = True


HOOK_ORDER: tuple[type[HookBase], ...] = (
    TimerHook, LossHistoryHook, TimeoutHook, ReduceHook, ReplicaCheckHook, EvalHook, ProgressHook,
    StopHook, CheckpointHook, ExportHook, TrackingHook)
"""The order the training hooks run in (the module docstring's list): timings and losses are in
``state.metrics`` before the reduction; the reduction before the hooks that merge into it or log
it; the stop decision before the checkpoint it triggers; the checkpoint and the export before
tracking logs them."""


def ordered(hooks: list[HookBase]) -> list[HookBase]:
    """``hooks`` (at most one of each kind in :data:`HOOK_ORDER`) in :data:`HOOK_ORDER`'s order."""
    rank = {cls: i for i, cls in enumerate(HOOK_ORDER)}
    kinds = [type(h) for h in hooks]
    unknown = [k.__name__ for k in kinds if k not in rank]
    if unknown or len(set(kinds)) != len(kinds):
        raise ValueError(f"ordered() takes one hook of each kind in HOOK_ORDER; got "
                         f"{[k.__name__ for k in kinds]} (extra hooks go after it)")
    return sorted(hooks, key=lambda h: rank[type(h)])


def load_hooks(specs: list[str], ctx: DistContext) -> list[HookBase]:
    """The hooks named by ``hooks:`` in the config: ``"module:callable"`` import paths, each
    called with ``ctx``; a callable may return None (nothing to add on this rank)."""
    out = []
    for spec in specs:
        module, sep, name = spec.partition(":")
        if not sep or not module or not name:
            raise ConfigError(f"hooks: {spec!r} is not 'module:callable'")
        try:
            factory = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"hooks: cannot import {spec!r} ({e}); is its module on "
                              "PYTHONPATH?") from e
        hook = factory(ctx)
        if hook is not None:
            out.append(hook)
    return out
