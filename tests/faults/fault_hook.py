"""A training hook that kills a rank on purpose, for the fault tests (``tests/faults``).

Not part of the package: a run loads it through the config's extension point,
``hooks=[fault_hook:from_env]``, with this folder on ``PYTHONPATH`` (:func:`faultlib.fault_env`).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from pipeline.train.loop import HookBase

FAULT_ENV = "STCNN_FAULT"


class FaultHook(HookBase):
    """Fault injection for ``tests/faults`` (registered through ``hooks=[fault_hook:from_env]``; does
    nothing unless ``$STCNN_FAULT`` is set).

    ``STCNN_FAULT=kill:rank=R:step=S[:once=MARKER]``: after step ``S`` (all other hooks of that
    step done) global rank ``R`` kills its own process with SIGKILL, like an OOM killer or a lost
    node. With ``once=MARKER`` the marker file is created first and no kill happens while it
    exists, so the attempt an elastic launcher (``torchrun --max-restarts``) restarts goes on.
    ``once=`` comes last: the marker path may contain ``:``.
    """

    def __init__(self, rank: int, *, kill_rank: int, step: int, once: str | None = None):
        self.rank, self.kill_rank, self.step = int(rank), int(kill_rank), int(step)
        self.once = Path(once) if once else None

    @classmethod
    def parse(cls, spec: str, rank: int) -> "FaultHook":
        action, _, rest = spec.partition(":")
        fields: dict[str, str] = {}
        while rest:
            if rest.startswith("once="):
                fields["once"] = rest[len("once="):]
                break
            part, _, rest = rest.partition(":")
            key, eq, value = part.partition("=")
            if not eq:
                fields["?"] = part
                break
            fields[key] = value
        if action != "kill" or set(fields) - {"rank", "step", "once"} or "step" not in fields:
            raise ValueError(f"${FAULT_ENV}={spec!r}: expected kill:rank=R:step=S[:once=MARKER]")
        try:
            return cls(rank, kill_rank=int(fields.get("rank", "0")), step=int(fields["step"]),
                       once=fields.get("once"))
        except ValueError:
            raise ValueError(f"${FAULT_ENV}={spec!r}: rank and step must be integers") from None

    @classmethod
    def from_env(cls, rank: int, env: dict | None = None) -> "FaultHook | None":
        spec = (os.environ if env is None else env).get(FAULT_ENV)
        return cls.parse(spec, rank) if spec else None

    def after_step(self) -> None:
        if self.rank != self.kill_rank or self.loop.step != self.step:
            return
        if self.once is not None:
            if self.once.exists():
                return
            self.once.parent.mkdir(parents=True, exist_ok=True)
            with open(self.once, "w") as f:
                f.write(f"killed rank {self.rank} after step {self.step}\n")
                f.flush()
                os.fsync(f.fileno())
        print(f"{FAULT_ENV}: killing rank {self.rank} (pid {os.getpid()}) after step "
              f"{self.step}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


class HoldHook(HookBase):
    """``STCNN_FAULT=hold:step=S:dir=DIR``: after step ``S`` every rank writes its pid to
    ``DIR/rank_<R>.pid`` and waits (at most ``timeout`` s) until ``DIR/go`` exists. A test sends
    its signals meanwhile and then creates ``go``: the signal lands at a known point of a real
    run (after step S's stop check, so the run stops after step S+1). ``dir=`` comes last."""

    def __init__(self, rank: int, *, step: int, folder: str, timeout: float = 120.0):
        self.rank, self.step, self.folder, self.timeout = int(rank), int(step), Path(folder), timeout

    def after_step(self) -> None:
        if self.loop.step != self.step:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".rank_{self.rank}.pid"
        tmp.write_text(str(os.getpid()))
        tmp.rename(self.folder / f"rank_{self.rank}.pid")
        deadline = time.monotonic() + self.timeout
        while not (self.folder / "go").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.folder / 'go'} never appeared")
            time.sleep(0.05)


def parse_hold(spec: str, rank: int) -> HoldHook:
    head, sep, folder = spec.partition(":dir=")
    fields = dict(part.partition("=")[::2] for part in head.split(":")[1:])
    if not sep or not folder or set(fields) != {"step"}:
        raise ValueError(f"${FAULT_ENV}={spec!r}: expected hold:step=S:dir=DIR")
    return HoldHook(rank, step=int(fields["step"]), folder=folder)


class PerturbHook(HookBase):
    """``STCNN_FAULT=perturb:rank=R:step=S``: just before step ``S``, rank ``R`` adds 1e-3 to
    the first parameter of its first engine, silently: the replicas differ, as after a bit flip
    or a rank that skipped an update. What :class:`ReplicaCheckHook` must catch."""

    def __init__(self, rank: int, *, bad_rank: int, step: int):
        self.rank, self.bad_rank, self.step = int(rank), int(bad_rank), int(step)
        self.perturbed: str | None = None

    def before_step(self) -> None:
        if self.rank != self.bad_rank or self.loop.step != self.step - 1:
            return
        import torch

        name, engine = next(iter(self.loop.phase.engines.items()))
        pname, p = next(iter(engine.module.named_parameters()))
        with torch.no_grad():
            p.add_(1e-3)
        self.perturbed = f"{name}.{pname}"
        print(f"{FAULT_ENV}: rank {self.rank} perturbed {self.perturbed} before step {self.step}",
              file=sys.stderr, flush=True)


def parse_perturb(spec: str, rank: int) -> PerturbHook:
    fields = dict(part.partition("=")[::2] for part in spec.split(":")[1:])
    if set(fields) != {"rank", "step"}:
        raise ValueError(f"${FAULT_ENV}={spec!r}: expected perturb:rank=R:step=S")
    return PerturbHook(rank, bad_rank=int(fields["rank"]), step=int(fields["step"]))


def from_env(ctx) -> HookBase | None:
    """The hook factory named in the training config: ``hooks=[fault_hook:from_env]``."""
    spec = os.environ.get(FAULT_ENV)
    if spec and spec.startswith("hold:"):
        return parse_hold(spec, ctx.rank)
    if spec and spec.startswith("perturb:"):
        return parse_perturb(spec, ctx.rank)
    return FaultHook.from_env(ctx.rank)
