"""What the tests share, in one package (``tests/README.md`` lists it): here, for child processes
one clean environment, one way to start a command alone or under ``torchrun``, free ports.

The other modules: ``training.py`` (the tiny phase configs, the one runner of a training phase
under torchrun, checkpoint and weight comparisons), ``lakes.py`` (the one hand-made shard
builder, the training lake made by the real preprocessing job, lake byte comparisons),
``mlflow_server.py`` (the one MLflow server starter), ``slurm_cluster.py`` (a private SLURM
cluster and its job helpers), ``require_all.py`` (the ``STCNN_REQUIRE_ALL=1`` pytest plugin).
The fault helpers of ``tests/faults`` (``faults/faultlib.py``) build on these."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# what a parent test process (or a user's shell) may hold that would change a child run
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
               "MLFLOW_TRACKING_URI", "STCNN_PARENT_RUN_ID", "STCNN_FAULT",
               "TORCHELASTIC_RESTART_COUNT")


def child_env(*, keep: tuple[str, ...] = (), **extra: str) -> dict[str, str]:
    """This process's environment without launcher/tracking variables (except ``keep``), one
    intra-op thread per process, the repository on PYTHONPATH; then ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS or k in keep}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def torchrun_head(nproc: int, *launcher_args: str) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node=N [launcher_args]``."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", *launcher_args]


def launcher(nproc: int) -> list[str]:
    """The command head: plain ``python`` for one process, :func:`torchrun_head` for more."""
    return [sys.executable] if nproc <= 1 else torchrun_head(nproc)


def run(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | str | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess:
    """Run to the end, output captured; not checked."""
    return subprocess.run(cmd, env=env if env is not None else child_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
