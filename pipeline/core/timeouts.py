"""Collective timeouts: telling one apart from other timeouts, and saying which ranks did not
arrive (the training loop's TimeoutHook calls these when a step's collective times out)."""

from __future__ import annotations

import logging
import re
import time

import torch.distributed as dist

from pipeline.core.dist import DistContext

log = logging.getLogger(__name__)

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
                   setting: str = "dist.timeout_s", wait_s: float = 10.0) -> list[int] | None:
    """After a collective timed out on this rank during ``step`` (1-based): log (as errors) which
    step and timeout, and which ranks did not arrive. Every rank whose collective timed out announces it in
    the process group's store; this rank waits up to ``wait_s`` for the others' announcements.
    Ranks that announce nothing are the ones the collective waited for: hung (stuck in I/O, a
    deadlock, a dead GPU) or dead. Returns those ranks (None when the store cannot tell)."""
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    log.error("rank %d: a collective timed out in step %d after %g s (%s): %s", ctx.rank, step,
              timeout_s, setting, first)
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
        log.error("rank %d: cannot tell which ranks did not arrive (%s)", ctx.rank, e)
        return None
    if missing:
        log.error("rank %d: rank(s) %s did not arrive at the collective of step %d (hung or "
                  "dead; see their logs); the last checkpoint is intact, run the same command "
                  "again to resume", ctx.rank, missing, step)
    return missing
