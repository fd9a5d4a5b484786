"""Training hooks that inject faults on purpose, for the fault tests (``tests/faults``): a killed
rank, ranks held until a stop signal reached them, perturbed weights or BatchNorm buffers,
a skipped buffer sync, a hung rank.

Not part of the package: a run loads it through the config's extension point,
``hooks=[fault_hook:from_env]``, with this folder on ``PYTHONPATH`` (:func:`faultlib.fault_env`).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from pipeline.train.hooks import StopHook
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
        if self.rank != self.kill_rank or self.loop.state.step != self.step:
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
    ``DIR/rank_<R>.pid`` and waits (at most ``timeout`` s) until its :class:`StopHook` has
    recorded a stop signal, then writes ``DIR/rank_<R>.signalled`` and goes on. A test sends its
    signals meanwhile: the signal lands at a known point of a real run (after step S's stop
    check, so the run stops after step S+1), however long it takes to reach the rank.
    ``dir=`` comes last."""

    def __init__(self, rank: int, *, step: int, folder: str, timeout: float = 300.0):
        self.rank, self.step, self.folder, self.timeout = int(rank), int(step), Path(folder), timeout

    def _stop_hook(self) -> StopHook:
        for hook in self.loop.hooks:
            if isinstance(hook, StopHook):
                return hook
        raise RuntimeError("hold: the run has no StopHook to observe")

    def after_step(self) -> None:
        if self.loop.state.step != self.step:
            return
        stop = self._stop_hook()
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".rank_{self.rank}.pid"
        tmp.write_text(str(os.getpid()))
        tmp.rename(self.folder / f"rank_{self.rank}.pid")
        deadline = time.monotonic() + self.timeout
        while stop.signalled is None:     # set by StopHook's handler, between these sleeps
            if time.monotonic() > deadline:
                raise TimeoutError(f"rank {self.rank}: no stop signal within {self.timeout} s "
                                   f"after step {self.step}")
            time.sleep(0.05)
        (self.folder / f"rank_{self.rank}.signalled").write_text(f"{stop.signalled}\n")


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
        if self.rank != self.bad_rank or self.loop.state.step != self.step - 1:
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


class HangHook(HookBase):
    """``STCNN_FAULT=hang:rank=R:step=S[:first=T]``: just before step ``S`` (before any of its
    collectives) rank ``R`` says so on stderr and sleeps forever, like a rank stuck in I/O or on a
    dead GPU: the other ranks wait in step ``S``'s first collective until the process group's
    timeout (``dist.timeout_s`` after the first step) fails them. Signals do not end the sleep
    (the training's SIGTERM handler only sets a flag); the launcher's SIGKILL does. With
    ``first=T`` the rank also stalls ``T`` seconds before step 1 and then goes on: a slow first
    step, which ``dist.first_step_timeout_s`` must tolerate."""

    def __init__(self, rank: int, *, hang_rank: int, step: int, first: float = 0.0):
        self.rank, self.hang_rank, self.step = int(rank), int(hang_rank), int(step)
        self.first = float(first)

    def before_step(self) -> None:
        if self.rank != self.hang_rank:
            return
        if self.loop.state.step == 0 and self.first > 0:
            print(f"{FAULT_ENV}: rank {self.rank} stalls {self.first:g} s before step 1",
                  file=sys.stderr, flush=True)
            time.sleep(self.first)
        if self.loop.state.step == self.step - 1:
            print(f"{FAULT_ENV}: rank {self.rank} (pid {os.getpid()}) hangs before step "
                  f"{self.step}", file=sys.stderr, flush=True)
            while True:
                time.sleep(3600)


def parse_hang(spec: str, rank: int) -> HangHook:
    fields = dict(part.partition("=")[::2] for part in spec.split(":")[1:])
    if not {"rank", "step"} <= set(fields) <= {"rank", "step", "first"}:
        raise ValueError(f"${FAULT_ENV}={spec!r}: expected hang:rank=R:step=S[:first=SECONDS]")
    return HangHook(rank, hang_rank=int(fields["rank"]), step=int(fields["step"]),
                    first=float(fields.get("first", 0)))


class BufferHook(HookBase):
    """What happens to the engines' buffers (BatchNorm statistics) of a run:

    * ``STCNN_FAULT=perturb_buffer:rank=R:step=S``: right after step ``S``'s buffer sync
      (``Engine.sync_buffers``), rank ``R`` adds 1e-3 to the first ``running_mean`` of its
      engines, silently; what ``ReplicaCheckHook`` must catch at that step's check.
    * ``STCNN_FAULT=skip_buffer_sync[:dir=DIR]``: every engine's ``sync_buffers`` does nothing,
      so each rank keeps the statistics of its own batches.
    * ``STCNN_FAULT=dump_buffers:dir=DIR``: nothing changes.

    With ``dir=`` (last), each rank saves its engines' buffers to ``DIR/rank_<R>.pt`` after
    training."""

    def __init__(self, rank: int, *, perturb: tuple[int, int] | None = None,
                 skip_sync: bool = False, folder: str | None = None):
        self.rank, self.perturb, self.skip_sync = int(rank), perturb, skip_sync
        self.folder = Path(folder) if folder else None

    def before_train(self) -> None:
        for name, engine in self.loop.phase.engines.items():
            original = engine.sync_buffers

            def sync(name=name, engine=engine, original=original) -> None:
                if not self.skip_sync:
                    original()
                self._maybe_perturb(name, engine)

            engine.sync_buffers = sync

    def _maybe_perturb(self, name: str, engine) -> None:
        # called inside step state.step + 1, after that step's optimizer updates
        if self.perturb is None or (self.rank, self.loop.state.step + 1) != self.perturb:
            return
        for bname, b in engine.module.named_buffers():
            if bname.endswith("running_mean"):
                import torch

                with torch.no_grad():
                    b.add_(1e-3)
                self.perturb = None
                print(f"{FAULT_ENV}: rank {self.rank} perturbed {name}.{bname} after step "
                      f"{self.loop.state.step + 1}'s buffer sync", file=sys.stderr,
                      flush=True)
                return

    def after_train(self) -> None:
        if self.folder is None:
            return
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        state = {name: {k: b.detach().clone() for k, b in e.module.named_buffers()}
                 for name, e in self.loop.phase.engines.items()}
        torch.save(state, self.folder / f"rank_{self.rank}.pt")


def parse_buffers(spec: str, rank: int) -> BufferHook:
    head, _, folder = spec.partition(":dir=")
    action, *parts = head.split(":")
    fields = dict(part.partition("=")[::2] for part in parts)
    if action == "perturb_buffer" and set(fields) == {"rank", "step"}:
        return BufferHook(rank, perturb=(int(fields["rank"]), int(fields["step"])),
                          folder=folder or None)
    if action == "skip_buffer_sync" and not fields:
        return BufferHook(rank, skip_sync=True, folder=folder or None)
    if action == "dump_buffers" and not fields and folder:
        return BufferHook(rank, folder=folder)
    raise ValueError(f"${FAULT_ENV}={spec!r}: expected perturb_buffer:rank=R:step=S, "
                     "skip_buffer_sync[:dir=DIR] or dump_buffers:dir=DIR")


def from_env(ctx) -> HookBase | None:
    """The hook factory named in the training config: ``hooks=[fault_hook:from_env]``."""
    spec = os.environ.get(FAULT_ENV)
    if spec and spec.startswith("hang:"):
        return parse_hang(spec, ctx.rank)
    if spec and spec.startswith("hold:"):
        return parse_hold(spec, ctx.rank)
    if spec and spec.startswith("perturb:"):
        return parse_perturb(spec, ctx.rank)
    if spec and spec.split(":")[0] in ("perturb_buffer", "skip_buffer_sync", "dump_buffers"):
        return parse_buffers(spec, ctx.rank)
    return FaultHook.from_env(ctx.rank)
