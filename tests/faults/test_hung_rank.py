"""A rank that hangs (sleeps forever before its step's collectives) fails a 2-rank gloo job
within a stated bound, and the output names the step and the rank that did not arrive.

The bound: the other rank's collective times out ``dist.timeout_s`` after it entered it (gloo
honours the process group's timeout, which ``shorten_timeout`` lowers after the first step);
that rank reports the timeout (waiting up to 10 s for other ranks to report theirs) and fails;
torchrun then sends SIGTERM to the hung rank, which a hung rank does not act on, and SIGKILL 30 s
later. So the job ends at most ``timeout_s + 10 + 30`` s after the hang, plus process teardown
(with ``timeout_s=12`` on two heavily loaded CPU cores: rank 0 timed out 12 s after the hang and
the job ended 72 s after it).
"""

from __future__ import annotations

import subprocess
import time

import pytest

from faultlib import FAULT_HOOK, Timer, fault_env, record
from support.training import torchrun_cmd

TIMEOUT_S = 12         # dist.timeout_s: collectives after the first step
FIRST_STALL_S = 25     # the hung rank's slow first step: over TIMEOUT_S, under the first-step one
TORCHRUN_KILL_S = 30   # torchrun's SIGTERM -> SIGKILL grace for ranks that do not exit
REPORT_WAIT_S = 10     # report_timeout's wait for other ranks' timeout reports
TEARDOWN_S = 45        # rank 0's exit, torchrun's own shutdown (about 20 s on 2 loaded cores)
BOUND_S = TIMEOUT_S + REPORT_WAIT_S + TORCHRUN_KILL_S + TEARDOWN_S


def test_collective_timeouts_are_told_apart_from_other_timeouts():
    import torch.distributed as dist

    from pipeline.core.timeouts import is_collective_timeout

    assert is_collective_timeout(RuntimeError("Application timeout caused pair closure"))
    assert is_collective_timeout(RuntimeError(
        "[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:129] Timed out waiting "
        "15000ms for send operation to complete"))
    assert is_collective_timeout(dist.DistBackendError("Watchdog caught collective operation "
                                                       "timeout: WorkNCCL(SeqNum=7)"))
    assert not is_collective_timeout(RuntimeError("DataLoader timed out after 30 seconds"))
    assert not is_collective_timeout(TimeoutError("read timed out"))
    assert not is_collective_timeout(RuntimeError("CUDA out of memory"))


@pytest.mark.slow
def test_hung_rank_fails_the_job_within_the_timeout_and_is_named(train_lake, tmp_path):
    run_dir = tmp_path / "hung"
    cmd = torchrun_cmd("gan", train_lake, run_dir, "steps=6", "checkpoint.every=100",
                       "log.every=1", f"dist.timeout_s={TIMEOUT_S}",
                       "dist.first_step_timeout_s=60", FAULT_HOOK)
    env = fault_env(f"hang:rank=1:step=3:first={FIRST_STALL_S}")
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with Timer() as t, open(out, "w") as fo, open(err, "w") as fe:
        p = subprocess.Popen(cmd, env=env, stdout=fo, stderr=fe, cwd=str(tmp_path))
        hung_at = reported_at = None
        deadline = time.monotonic() + 600
        while p.poll() is None:
            text = err.read_text()
            if hung_at is None and "hangs before step 3" in text:
                hung_at = time.monotonic()
            if reported_at is None and "rank 0: a collective timed out" in text:
                reported_at = time.monotonic()
            if time.monotonic() > deadline:
                p.kill()
                p.wait()
                pytest.fail(f"the job did not end within 600 s:\n{err.read_text()[-4000:]}")
            time.sleep(0.2)
        ended = time.monotonic()
    log = out.read_text() + err.read_text()
    assert hung_at is not None, f"rank 1 never hung:\n{log[-6000:]}"
    assert p.returncode != 0, log[-6000:]
    # the first step survived rank 1's stall of more than dist.timeout_s: it had the long timeout
    assert f"rank 1 stalls {FIRST_STALL_S} s before step 1" in log
    assert "step 2/6" in log, f"steps 1-2 did not complete:\n{log[-6000:]}"
    # step 3's collective timed out after dist.timeout_s, not the first step's timeout
    assert reported_at is not None, log[-6000:]
    waited = reported_at - hung_at
    assert TIMEOUT_S * 0.75 <= waited <= TIMEOUT_S + 30, f"timed out {waited:.1f} s after the hang"
    assert (f"rank 0: a collective timed out in step 3 after {TIMEOUT_S} s (dist.timeout_s)"
            in log), log[-6000:]
    assert "rank 0: rank(s) [1] did not arrive at the collective of step 3" in log, log[-6000:]
    seconds = ended - hung_at
    assert seconds <= BOUND_S, f"the job took {seconds:.0f} s after the hang (bound {BOUND_S})"
    record("hung-rank", fault=f"rank 1 sleeps forever before step 3 (after a {FIRST_STALL_S} s "
           "stall before step 1)", where=f"2-rank gloo GAN run, dist.timeout_s={TIMEOUT_S}",
           times=1, survived=f"rank 0 timed out {waited:.0f} s after the hang, the job failed "
                             f"{seconds:.0f} s after it (bound {BOUND_S} s); "
                             "rank 0 named step 3 and rank 1", ok=True, seconds=t.seconds)
