"""Collective timeouts: telling one apart from other timeouts, and saying which ranks did not
arrive (the training loop's TimeoutHook calls these when a step's collective times out)."""

from __future__ import annotations

import re
import sys
import time
from typing import Any

import torch.distributed as dist

from pipeline.core.dist import DistContext

_TIMEOUT_RE = re.compile(r"timed? ?out", re.IGNORECASE)
_TIMEOUT_KEY = "stcnn_collective_timeout"
# words of gloo's and nccl's timeout errors ("Application timeout caused pair closure",
# ".../third_party/gloo/.../unbound_buffer.cc: Timed out waiting 300000ms for recv operation")
_COLLECTIVE_HINTS = ("gloo", "pair closure", "nccl", "c10d", "collective", "watchdog")


def is_collective_timeout(exc: BaseException) -> bool:
    """True for the error a collective raises when the process group's timeout ran out (gloo:
    ``RuntimeError: ... Timed out waiting 300000ms for recv operation to complete``; nccl with
    ``TORCH_NCCL_BLOCKING_WAIT``: a ``DistBackendError`` saying ``timed out``). Other timeouts
    (a DataLoader's, a file system's) are not."""
    if not isinstance(exc, (RuntimeError, dist.DistError)):
        return False
    msg = str(exc)
    return bool(_TIMEOUT_RE.search(msg)) and (
        isinstance(exc, dist.DistError) or any(h in msg.lower() for h in _COLLECTIVE_HINTS))


def report_timeout(exc: BaseException, ctx: DistContext, step: int, timeout_s: float,
                   setting: str = "dist.timeout_s", wait_s: float = 10.0,
                   stream: Any = None) -> list[int] | None:
    """After a collective timed out on this rank during ``step`` (1-based): print which step and
    timeout, and which ranks did not arrive. Every rank whose collective timed out announces it in
    the process group's store; this rank waits up to ``wait_s`` for the others' announcements.
    Ranks that announce nothing are the ones the collective waited for: hung (stuck in I/O, a
    deadlock, a dead GPU) or dead. Returns those ranks (None when the store cannot tell)."""
    stream = stream or sys.stderr
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    print(f"rank {ctx.rank}: a collective timed out in step {step} after {timeout_s:g} s "
          f"({setting}): {first}", file=stream, flush=True)
    missing: list[int] | None = None
    try:
        store = dist.distributed_c10d._get_default_store()
        store.set(f"{_TIMEOUT_KEY}/{ctx.rank}", str(step))
        deadline = time.monotonic() + wait_s
        others = [r for r in range(ctx.world_size) if r != ctx.rank]
        while True:
            missing = [r for r in others if not store.check([f"{_TIMEOUT_KEY}/{r}"])]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    except Exception as e:  # the store's host may be gone too: the message above stands alone
        print(f"rank {ctx.rank}: cannot tell which ranks did not arrive ({e})", file=stream,
              flush=True)
        return None
    if missing:
        print(f"rank {ctx.rank}: rank(s) {missing} did not arrive at the collective of step "
              f"{step} (hung or dead; see their logs); the last checkpoint is intact, run the "
              f"same command again to resume", file=stream, flush=True)
    return missing
