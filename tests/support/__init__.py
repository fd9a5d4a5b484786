"""What the tests share, in one package (``tests/README.md`` lists it): here, for child processes
one clean environment, one way to start a command alone or under ``torchrun``, ports no other
process takes (``free_port``, ``closed_port``, ``start_on_free_port``).

The other modules: ``training.py`` (the tiny phase configs, the one runner of a training phase
under torchrun, checkpoint and weight comparisons), ``lakes.py`` (the one hand-made shard
builder, the training lake made by the real preprocessing job, lake byte comparisons),
``mlflow_server.py`` (the one MLflow server starter), ``slurm_cluster.py`` (a private SLURM
cluster and its job helpers), ``rank_usage.py`` (a training hook recording each rank's batches,
memory and wall time), ``require_all.py`` (the ``STCNN_REQUIRE_ALL=1`` pytest plugin).
The fault helpers of ``tests/faults`` (``faults/faultlib.py``) build on these."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

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


# -- ports ---------------------------------------------------------------------------------------
# A port found free and then closed can be taken by another process before the server meant for
# it binds it. Hence: a port where nothing must listen stays bound by this process
# (closed_port); a port for a server is parked in TIME_WAIT, which keeps the kernel from handing
# it to anyone else's bind(0) or outgoing connection while a server binding it by number
# (SO_REUSEADDR: uvicorn, gunicorn, werkzeug, torch's TCPStore) still can (free_port); and a
# server that still finds it taken is started again on another one (start_on_free_port).

_HELD: list[socket.socket] = []     # closed_port's sockets, held until this process ends


def free_port() -> int:
    """A port on 127.0.0.1 for a server to bind by number: bound, connected to and closed from
    the server side, so that it sits in TIME_WAIT (about a minute), out of the kernel's reach
    for other processes' ephemeral ports. A process naming the same number itself can still
    take it: start servers on it with :func:`start_on_free_port` where they can be restarted."""
    with socket.socket() as lst:
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        addr = lst.getsockname()
        with socket.create_connection(addr) as client:
            conn, _ = lst.accept()
            conn.close()                     # the server side closes first: its TIME_WAIT
        return addr[1]


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens and nothing can start listening until this
    process ends: bound here, never listened on, so connecting is refused at once."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _HELD.append(s)
    return s.getsockname()[1]


class PortTaken(Exception):
    """Raised by a server start passed to :func:`start_on_free_port`: the port was in use."""


def address_in_use(text: str) -> bool:
    """Does a server's output say its port was taken?"""
    text = text.lower()
    return "address already in use" in text or "errno 98" in text


def start_on_free_port(start: Callable[[int], T], attempts: int = 5) -> T:
    """``start(port)`` on a :func:`free_port`, again on a new one while it raises
    :class:`PortTaken` (another process took the port first), at most ``attempts`` times."""
    for _ in range(attempts - 1):
        try:
            return start(free_port())
        except PortTaken:
            continue
    return start(free_port())
