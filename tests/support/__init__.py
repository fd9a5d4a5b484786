"""What the tests share: for child processes one clean environment, one way to start a command
alone or under ``torchrun``, free ports; and the one hand-made shard writer (tars written
independently of the pipeline's writer, in the shard contract's layout). The MLflow server
starter is ``mlflow_server.py``, the SLURM cluster ``slurm_cluster.py``, the training lake (made
by the real preprocessing job) ``conftest.build_train_lake``, the fault helpers
``faults/faultlib.py`` (built on this module)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
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


def write_shard(folder: Path, index: int, samples: list[dict], *, finished: bool = True,
                extra_members: dict[str, bytes] | None = None) -> Path:
    """``NNNNN.tar`` of ``samples`` (dicts with ``key`` and ``members``: extension -> bytes), with
    ``NNNNN_stats.json`` when ``finished`` (no parquet: the loader does not need it).
    ``extra_members``: raw member name -> bytes, appended after the samples."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{index:05d}.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        def add(name: str, data: bytes):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tf.addfile(info, io.BytesIO(data))
        for s in samples:
            for ext, data in s["members"].items():
                add(f"{s['key']}.{ext}", data)
        for name, data in (extra_members or {}).items():
            add(name, data)
    if finished:
        stats = {"count": len(samples), "bytes": path.stat().st_size, "failures": 0,
                 "seconds": 0.0}
        (folder / f"{index:05d}_stats.json").write_text(json.dumps(stats))
    return path
