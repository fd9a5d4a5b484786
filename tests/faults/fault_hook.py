"""A training hook that kills a rank on purpose, for the fault tests (``tests/faults``).

Not part of the package: a run loads it through the config's extension point,
``hooks=[fault_hook:from_env]``, with this folder on ``PYTHONPATH`` (:func:`faultlib.fault_env`).
"""

from __future__ import annotations

import os
import signal
import sys
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


def from_env(ctx) -> FaultHook | None:
    """The hook factory named in the training config: ``hooks=[fault_hook:from_env]``."""
    return FaultHook.from_env(ctx.rank)
