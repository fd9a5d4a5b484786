"""Where a run happens, as MLflow tags: the git commit and state, torch/CUDA/device, host."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import mlflow


def git_info(repo: str | Path | None = None) -> dict[str, str]:
    """``git.commit`` (``git rev-parse HEAD``) and ``git.dirty`` (tracked files modified) of
    ``repo`` (default: the checkout this package runs from); ``"unknown"`` outside git."""
    repo = Path(repo) if repo else Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                               timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = "unknown" if status is None else str(bool(status)).lower()
    return {"git.commit": commit, "git.dirty": dirty, "mlflow.source.git.commit": commit}


def environment_info(world_size: int = 1, device: Any = None) -> dict[str, str]:
    """Tags describing where a phase runs: torch/CUDA/cuDNN versions, device type, count and
    name, world size, Python, MLflow, host. ``device``: a ``torch.device``, a string such as
    ``"cuda"``/``"cpu"``, or None (CUDA when available)."""
    import torch

    dtype = getattr(device, "type", None) or (str(device).split(":")[0] if device else None)
    if dtype is None:
        dtype = "cuda" if torch.cuda.is_available() else "cpu"
    info = {
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda or "none",
        "cudnn_version": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available()
        else "none",
        "device_type": dtype,
        "device_count": "1",
        "device_name": platform.processor() or platform.machine(),
        "world_size": str(world_size),
        "python_version": platform.python_version(),
        "mlflow_version": mlflow.__version__,
        "hostname": socket.gethostname(),
    }
    if dtype == "cuda" and torch.cuda.is_available():
        info["device_count"] = str(torch.cuda.device_count())
        info["device_name"] = torch.cuda.get_device_name(0)
    elif dtype == "cpu":
        info["device_count"] = str(os.cpu_count() or 1)
    return info
