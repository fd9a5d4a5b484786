"""A real MLflow tracking server for tests: sqlite backend, proxied artifacts, 127.0.0.1 on a
free port (``conftest.py`` shares one per test session as the ``server`` fixture)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import mlflow
import pytest

from support import PortTaken, address_in_use, start_on_free_port


def answers(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


@dataclass
class Server:
    uri: str
    root: Path

    def client(self) -> mlflow.MlflowClient:
        return mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)


def _launch(root: Path, port: int, artifacts: str | None, env: dict | None) -> subprocess.Popen:
    """``mlflow server`` on ``port``, once it answers; :class:`PortTaken` if the port was in
    use by then (another process bound it first)."""
    exe = Path(sys.executable).parent / "mlflow"
    log_path = root / "server.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [str(exe), "server", "--backend-store-uri", f"sqlite:///{root / 'db.sqlite'}",
             "--artifacts-destination", artifacts or str(root / "artifacts"), "--host",
             "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=log_file, stderr=subprocess.STDOUT, cwd=root, env=env,
            start_new_session=True)          # its own process group: a failed start ends all
    deadline = time.monotonic() + 240        # its imports alone take minutes on a loaded machine
    while not answers(f"http://127.0.0.1:{port}/health"):
        log = log_path.read_text(errors="replace")
        taken = address_in_use(log)          # its server process ends; mlflow itself may not
        if taken or proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if taken:
                raise PortTaken(port)
            pytest.fail(f"mlflow server did not start:\n{log[-3000:]}")
        time.sleep(0.25)
    return proc


def stop_group(proc: subprocess.Popen, grace_s: float = 20) -> None:
    """End a server started in its own session and every process it started: mlflow's uvicorn
    workers, job runner and huey consumers outlive their parent otherwise."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):      # whatever outlived the parent
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def start_server(root: Path, artifacts: str | None = None,
                 env: dict | None = None) -> "Iterator[Server]":
    """A real MLflow tracking server (sqlite backend, proxied artifacts in ``artifacts``, default
    ``root/artifacts``; ``env`` for the server process) on a free port (another one if that was
    taken before the server bound it)."""
    proc, port = start_on_free_port(lambda port: (_launch(root, port, artifacts, env), port))
    uri = f"http://127.0.0.1:{port}"
    try:
        yield Server(uri, root)
    finally:            # also when the generator is closed (``servers.close()``)
        stop_group(proc)
