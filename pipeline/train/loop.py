"""The one training loop: forward, backward, step. Everything else is a hook.

    loop = TrainLoop(phase, stream, total_steps, hooks=[TimerHook(), CheckpointHook(...), ...])
    loop.run()

A *phase* (``pipeline/train/phases/gan.py``, ``segmentation.py``, ``alternating.py``) owns the models
(as :class:`pipeline.train.engine.Engine` objects) and says what one step is: a list of :class:`Update` s,
each a loss on one engine. The loop runs every update over the step's micro-batches (gradient
accumulation, DDP synchronising only on the last one), then steps that engine::

    for update in phase.updates(step):           # e.g. D then G (GAN); SSB; ...
        engine.zero_grad()
        for micro in micro_batches:               # accum of them, from the data stream
            loss = update.loss(micro)             # forward (under autocast)
            engine.backward(loss)                 # backward
        engine.step()                             # step

Hooks (``pipeline/train/hooks.py``) see the loop before/after training and each step: timing,
progress, checkpoints, MLflow, evaluation, collective timeouts. Like detectron2's ``HookBase``.
What the loop and its hooks share is :class:`LoopState` (``loop.state``), declared once, like
detectron2's ``EventStorage``: hooks read and write its fields, and no others.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import torch

from pipeline.core.errors import PipelineError
from pipeline.train.engine import Engine


@dataclass
class Update:
    """One optimizer update: ``loss(micro) -> {"loss": tensor, other terms...}`` on ``engine``."""

    engine: str
    loss: Callable[[Any], dict[str, torch.Tensor]]
    name: str | None = None  # metric prefix (default: the engine's name)


class Phase(Protocol):
    name: str
    engines: dict[str, Engine]

    def prepare(self, batch: dict) -> Any: ...            # a loader batch -> a micro-batch
    def updates(self, step: int) -> list[Update]: ...     # what this step updates, in order
    def end_step(self, step: int, metrics: dict[str, float]) -> None: ...
    def state_dict(self) -> dict: ...                     # phase state beyond the engines
    def load_state_dict(self, state: dict) -> None: ...
    def samples(self, batch: dict) -> int: ...            # samples in a loader batch


class HookBase:
    """Override any of these; ``self.loop`` is set when the hook is registered."""

    loop: "TrainLoop"

    def before_train(self) -> None: ...
    def after_train(self) -> None: ...
    def before_step(self) -> None: ...
    def after_step(self) -> None: ...
    def on_exception(self, exc: BaseException) -> None: ...


class NonFiniteLossError(PipelineError, FloatingPointError):
    """The training diverged (a loss or metric is not finite): reported in one line, exit
    status 1 (the run failed; its input may be fine)."""

    exit_status = 1

    def __init__(self, problem: str, fix: str = "lower optim.lr and start the run again"):
        super().__init__(problem, fix)


@dataclass(slots=True)
class LoopState:
    """The state the loop and its hooks share (``loop.state``). Slotted: a hook cannot create a
    field that is not declared here. The loop sets ``metrics``, ``reduced`` (to None),
    ``samples_in_step`` and ``data_seconds`` each step before the ``after_step`` hooks run."""

    step: int = 0                    # completed optimizer steps
    metrics: dict[str, float] = field(default_factory=dict)
    # ^ this rank's scalars of the last step: the loop's losses and learning rates, then what
    #   hooks add (time/, throughput/, dist/replica_mismatch, eval/) before the logging hooks
    reduced: dict[str, float] | None = None
    # ^ at logging steps, the rank means of ``metrics`` (ReduceHook) with the replica check and
    #   the validation results merged in (ReplicaCheckHook, EvalHook); None at other steps
    samples_in_step: int = 0         # this rank's samples in the last step
    data_seconds: float = 0.0        # time spent waiting for the last step's batches
    stop_requested: bool = False     # set by a hook: stop after this step


class TrainLoop:
    """Iteration-based: ``total_steps`` optimizer steps, ``accum`` micro-batches each.

    ``stream`` yields loader batches (one micro-batch each); ``autocast`` is a context factory
    (bf16 on GPUs). ``state`` (:class:`LoopState`) is what the hooks see of each step.
    """

    def __init__(self, phase: Phase, stream: Iterable[dict], total_steps: int, *,
                 accum: int = 1, start_step: int = 0, hooks: list[HookBase] | None = None,
                 autocast: Callable[[], Any] = contextlib.nullcontext):
        self.phase = phase
        self.stream = stream
        self._iter = iter(stream)
        self.total_steps = int(total_steps)
        self.accum = int(accum)
        self.autocast = autocast
        self.state = LoopState(step=int(start_step))
        self.hooks: list[HookBase] = []
        for h in hooks or []:
            self.register(h)

    def register(self, hook: HookBase) -> None:
        hook.loop = self
        self.hooks.append(hook)

    def _call(self, what: str) -> None:
        for h in self.hooks:
            getattr(h, what)()

    def run(self) -> None:
        self._call("before_train")
        try:
            while self.state.step < self.total_steps and not self.state.stop_requested:
                self._call("before_step")
                self.state.metrics = self.run_step()
                self.state.reduced = None
                self.state.step += 1
                self._call("after_step")
        except BaseException as exc:
            for h in self.hooks:
                h.on_exception(exc)
            raise
        self._call("after_train")

    @property
    def completed(self) -> bool:
        """All ``total_steps`` done (not stopped early by a hook)."""
        return self.state.step >= self.total_steps

    def next_micro_batches(self) -> list[Any]:
        t0 = time.perf_counter()
        batches = [next(self._iter) for _ in range(self.accum)]
        self.state.data_seconds = time.perf_counter() - t0
        self.state.samples_in_step = sum(self.phase.samples(b) for b in batches)
        return [self.phase.prepare(b) for b in batches]

    def run_step(self) -> dict[str, float]:
        micros = self.next_micro_batches()
        metrics: dict[str, float] = {}
        for update in self.phase.updates(self.state.step):
            engine = self.phase.engines[update.engine]
            prefix = update.name or update.engine
            engine.zero_grad()
            sums: dict[str, float] = {}
            for i, micro in enumerate(micros):
                with engine.no_sync(skip=i < len(micros) - 1):
                    with self.autocast():
                        terms = update.loss(micro)                      # forward
                    loss = terms["loss"]
                    if not torch.isfinite(loss.detach()).all():
                        raise NonFiniteLossError(
                            f"{prefix} loss is {loss.item()} at step {self.state.step + 1} "
                            f"(phase {self.phase.name}); lower the learning rate, or check "
                            "the inputs and the initial weights (random full-depth ResNets "
                            "overflow); the last checkpoint is intact")
                    engine.backward(loss)                               # backward
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
            engine.step()                                               # step
            for k, v in sums.items():
                metrics[f"{prefix}/{k}"] = v / len(micros)
            metrics[f"{prefix}/lr"] = engine.lr()
        for engine in self.phase.engines.values():
            engine.sync_buffers()        # BatchNorm statistics: rank 0's everywhere
        self.phase.end_step(self.state.step, metrics)
        if any(isinstance(v, float) and math.isnan(v) for v in metrics.values()):
            raise NonFiniteLossError(f"NaN metric at step {self.state.step + 1}: {metrics}")
        return metrics
