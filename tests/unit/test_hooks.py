"""The training hooks (:mod:`pipeline.train.hooks`) around the loop: the order they run in, stated
once (``HOOK_ORDER``, the module docstring's list, the runner's registration), the loop state
they share (declared fields of ``LoopState`` only), and the checkpoint -> tracking callback given
at construction."""

from __future__ import annotations

import io
import re

import pytest
import torch
from torch import nn

import pipeline.train.hooks as hooks_module
from pipeline.core.dist import DistConfig, DistContext
from pipeline.train.checkpoint import CheckpointManager
from pipeline.train.engine import DDPEngine
from pipeline.train.hooks import (HOOK_ORDER, CheckpointHook, EvalHook, ProgressHook, ReduceHook,
                                  StopHook, TimerHook, TrackingHook, ordered)
from pipeline.train.loop import HookBase, LoopState, TrainLoop, Update
from pipeline.train.phases.base import PhaseDefaults
from pipeline.train.runner import run_phase

from support.training import tiny

ONE = DistContext(0, 1, 0, torch.device("cpu"), None)
REGISTERED: list[list[str]] = []     # what Recorder saw of the runner's hooks, per run


# -- the order, stated once ------------------------------------------------------------------

def test_the_docstring_lists_the_hooks_in_hook_order():
    listed = re.findall(r"^\* :class:`(\w+)`", hooks_module.__doc__, flags=re.M)
    assert listed == [cls.__name__ for cls in HOOK_ORDER]
    assert "LossHistoryHook" in listed


class Recorder(HookBase):
    def before_train(self) -> None:
        REGISTERED.append([type(h).__name__ for h in self.loop.hooks])


def record(ctx) -> HookBase:
    """A config hook (``hooks=[test_hooks:record]``): records the runner's hooks."""
    return Recorder()


def test_the_runner_registers_its_hooks_in_hook_order(train_lake, tmp_path):
    REGISTERED.clear()
    run_phase("segmentation", tiny("segmentation"),
              [f"data.lake={train_lake}", f"run_dir={tmp_path / 'run'}", "tracking.enabled=false",
               "steps=1", "eval.every=1", "eval.batches=1", "eval.sets=[voc2012/val]",
               "hooks=[test_hooks:record]"])
    assert REGISTERED == [[cls.__name__ for cls in HOOK_ORDER] + ["Recorder"]]


def test_ordered_sorts_by_hook_order_and_refuses_strangers():
    timer, reduce, stop = TimerHook(1), ReduceHook(ONE, 1), StopHook(ONE)
    assert ordered([stop, reduce, timer]) == [timer, reduce, stop]
    with pytest.raises(ValueError, match="extra hooks go after"):
        ordered([timer, Recorder()])
    with pytest.raises(ValueError):
        ordered([timer, TimerHook(1)])


# -- declared state, callbacks at construction ----------------------------------------------

class _Phase(PhaseDefaults):
    name = "toy"

    def __init__(self):
        torch.manual_seed(0)
        m = nn.Linear(2, 1)
        self.engines = {"M": DDPEngine("M", m, torch.optim.SGD(m.parameters(), lr=0.1), None,
                                       ONE, DistConfig())}

    def prepare(self, batch: dict) -> dict:
        return batch

    def updates(self, step: int) -> list[Update]:
        return [Update("M", lambda b: {"loss": self.engines["M"](b["x"]).square().mean()})]


class _Stream:
    def __init__(self):
        self.n = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        self.n += 1
        return {"key": ["a", "b"], "x": torch.full((2, 2), float(self.n))}

    def position(self) -> dict:
        return {"batches": self.n}


class _Tracker:
    def __init__(self):
        self.metrics: list[tuple[int, dict]] = []
        self.checkpoints: list[tuple] = []
        self.status = None

    def start(self, params, tags) -> None: ...

    def log_metrics(self, metrics, step) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_checkpoint(self, path, step) -> None:
        self.checkpoints.append((path, step))

    def end(self, status) -> None:
        self.status = status


class _Reduced(HookBase):
    """Sees ``state.reduced`` where the logging hooks see it."""

    def __init__(self):
        self.seen: list[tuple[int, bool]] = []

    def after_step(self) -> None:
        self.seen.append((self.loop.state.step, self.loop.state.reduced is not None))


@pytest.mark.parametrize("log_checkpoints", ["last", "all"])
def test_hooks_share_the_declared_loop_state_only(tmp_path, log_checkpoints):
    stream, tracker, probe = _Stream(), _Tracker(), _Reduced()
    tracking = TrackingHook(tracker, params={}, tags={}, export=None,
                            log_checkpoints=log_checkpoints)
    ckpt = CheckpointHook(CheckpointManager(tmp_path, keep_last=0, ctx=ONE), 2, stream=stream,
                          on_saved=tracking.checkpoint_saved)
    hooks = ordered([tracking, ckpt, StopHook(ONE), EvalHook(lambda: {"eval/J": 0.5}, 3),
                     ProgressHook(ONE, "toy", stream=io.StringIO()), ReduceHook(ONE, 2),
                     TimerHook(1)])
    loop = TrainLoop(_Phase(), stream, 3, hooks=hooks + [probe])
    fields = set(vars(loop))
    loop.run()
    assert set(vars(loop)) == fields                       # no hook added to the loop
    assert loop.state.step == 3 and loop.completed and tracker.status == "FINISHED"
    assert probe.seen == [(1, False), (2, True), (3, True)]   # reduced at logging steps only
    assert [s for s, _ in tracker.metrics] == [2, 3]
    assert "eval/J" in tracker.metrics[1][1] and "eval/J" not in tracker.metrics[0][1]
    assert "time/step_s" in loop.state.reduced and loop.state.metrics["eval/J"] == 0.5
    saved = [(tmp_path / "step_00000002", 2), (tmp_path / "step_00000003", 3)]
    assert tracker.checkpoints == (saved if log_checkpoints == "all" else saved[-1:])
    assert ckpt.last_saved == saved[-1]


def test_a_hook_cannot_add_undeclared_loop_state():
    class Smoother(HookBase):
        def after_step(self) -> None:
            self.loop.state.smoothed_loss = 1.0

    with pytest.raises(AttributeError, match="smoothed_loss"):
        TrainLoop(_Phase(), _Stream(), 2, hooks=[Smoother()]).run()
    assert "smoothed_loss" not in LoopState.__slots__
