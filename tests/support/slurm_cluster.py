"""A real, private SLURM cluster on this machine for tests (``test_slurm_cluster.py``).

It runs its own ``munged`` (own key, socket, pid and log files), one ``slurmctld`` and one
``slurmd`` per virtual node, all configured from files in a temporary folder and all on free
ports, so it neither needs nor touches a system SLURM or munge setup. The virtual nodes (``n1``,
``n2``, ...) all run on this host: ``NodeAddr=127.0.0.1`` plus one ``slurmd -N <node>`` per node
on its own port (SLURM's "multiple slurmd" mode), each node owning a share of the CPUs. That
gives real multi-node jobs (``sbatch --nodes=2``) on one machine. No cgroups are used
(``proctrack/linuxproc``, ``task/none``) so it runs in a container; the daemons run as the
current user (``SlurmUser`` = that user), which for the job launch has to be root.

Client commands (``sbatch``, ``srun``, ``sinfo``...) find the cluster through ``SLURM_CONF``:
run them with :attr:`SlurmCluster.env`.

Needs Debian's/Ubuntu's ``slurm-wlm`` and ``munge`` (``apt-get install -y slurm-wlm munge``);
:func:`missing_tools` names what is absent so a fixture can skip with the fix.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator


INSTALL_HINT = "apt-get install -y slurm-wlm munge"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "sinfo", "scontrol", "scancel", "squeue")
# the daemons live in sbin, which is not on every user's PATH
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin",
                                "/usr/local/sbin"])


class ClusterStartError(RuntimeError):
    """The cluster did not come up; the message holds the daemons' log tails."""


def which(name: str) -> str | None:
    return shutil.which(name, path=_SEARCH_PATH)


def missing_tools() -> list[str]:
    """The SLURM/munge programs this module needs that are not installed."""
    return [n for n in (*DAEMONS, *CLIENTS) if which(n) is None]


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports (held open together while picking, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def host_resources() -> tuple[int, int]:
    """(CPUs, RealMemory in MB) of this host as ``slurmd -C`` reports them."""
    out = subprocess.run([which("slurmd") or "slurmd", "-C"], capture_output=True, text=True,
                         timeout=30).stdout
    cpus = re.search(r"\bCPUs=(\d+)", out)
    mem = re.search(r"\bRealMemory=(\d+)", out)
    return (int(cpus.group(1)) if cpus else os.cpu_count() or 1,
            int(mem.group(1)) if mem else 1024)


def clean_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: os.environ) without the variables of an enclosing SLURM job."""
    base = dict(os.environ if base is None else base)
    return {k: v for k, v in base.items()
            if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "SQUEUE_", "SINFO_"))}


def tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError as e:
        return f"<{e}>"


@dataclass
class SlurmCluster:
    root: Path
    nodes: tuple[str, ...]
    conf: Path
    env: dict[str, str]
    munge_dir: Path | None = None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def logs(self, n: int = 1500) -> str:
        """The tail of every daemon log, for failure messages."""
        parts = []
        for p in sorted((self.root / "log").glob("*.log")):
            own = p.with_name(p.name.replace(".stdout.log", ".log"))
            if p != own and own.exists() and own.stat().st_size:
                continue  # a daemon's stderr repeats its log file: only the early errors count
            parts.append(f"--- {p.name}:\n{tail(p, n)}")
        return "\n".join(parts)

    def run(self, *args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster."""
        kw.setdefault("env", self.env)
        return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kw)

    def node_states(self) -> dict[str, str]:
        r = self.run("sinfo", "-h", "-N", "-o", "%N %T", timeout=20)
        if r.returncode != 0:
            return {}
        return dict(line.split()[:2] for line in r.stdout.splitlines() if len(line.split()) >= 2)

    def stop(self) -> None:
        """Cancel what still runs, stop the slurmds, slurmctld and munged (in that order)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            try:
                self.run("scancel", f"--user={getpass.getuser()}", timeout=20)
            except (OSError, subprocess.SubprocessError):
                pass
        order = [k for k in self.procs if k.startswith("slurmd")] + ["slurmctld", "munged"]
        for name in order:
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self.munge_dir is not None:
            shutil.rmtree(self.munge_dir, ignore_errors=True)


def _write_munge_key(path: Path) -> None:
    mungekey = which("mungekey")
    if mungekey:
        subprocess.run([mungekey, "--create", f"--keyfile={path}"], check=True,
                       capture_output=True, timeout=30)
    else:  # munge < 0.5.14 has no mungekey: 1 KiB of random bytes is a valid key
        path.write_bytes(os.urandom(1024))
    path.chmod(0o400)


def write_config(root: Path, nodes: tuple[str, ...], *, cpus_per_node: int, mem_per_node: int,
                 munge_socket: Path, user: str) -> Path:
    """slurm.conf for a cluster of ``nodes`` on 127.0.0.1, every path under ``root``."""
    ctld_port, *node_ports = free_ports(1 + len(nodes))
    log = root / "log"
    node_lines = [f"NodeName={n} NodeAddr=127.0.0.1 NodeHostname=localhost Port={p} "
                  f"CPUs={cpus_per_node} RealMemory={mem_per_node} State=UNKNOWN"
                  for n, p in zip(nodes, node_ports)]
    text = "\n".join([
        "ClusterName=stcnntest",
        "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        f"SlurmUser={user}",
        f"SlurmdUser={user}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        # cred_expire: also how long a requeued job waits before it starts again (default 120 s)
        f"AuthInfo=socket={munge_socket},cred_expire=15",
        "MpiDefault=none",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "SchedulerType=sched/builtin",
        "ReturnToService=2",
        # take the node sizes above as given (two virtual nodes share this host's CPUs)
        "SlurmdParameters=config_overrides",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool' / '%n'}",
        f"SlurmctldPidFile={root / 'run' / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'run' / 'slurmd-%n.pid'}",
        f"SlurmctldLogFile={log / 'slurmctld.log'}",
        f"SlurmdLogFile={log / 'slurmd-%n.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        "InactiveLimit=0",
        # sbatch --wait polls every 2 s, growing x4 (to 32 s) only while below MinJobAge/2: keep
        # finished jobs 5 s (>= 2 polls) so a --wait returns within 2 s of the end of a job
        "MinJobAge=5",
        "KillWait=5",
        "Waittime=0",
        *node_lines,
        f"PartitionName=debug Nodes={','.join(nodes)} Default=YES MaxTime=INFINITE "
        "State=UP OverSubscribe=NO",
        "",
    ])
    conf = root / "slurm.conf"
    conf.write_text(text)
    return conf


def start_cluster(root: Path, nodes: tuple[str, ...] = ("n1", "n2"),
                  timeout: float = 60) -> SlurmCluster:
    """Start munged, slurmctld and one slurmd per node; returns once every node is idle.
    Raises ClusterStartError (with the log tails) when that does not happen in ``timeout`` s;
    on any failure what was started is stopped again."""
    if os.name != "posix" or os.geteuid() != 0:
        # slurmd launches job steps as the submitting user: only root may (setuid) do that
        raise ClusterStartError("slurmd must run as root to launch jobs; run the tests as root")
    root = Path(root)
    for sub in ("log", "state", "run", "spool"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for n in nodes:
        (root / "spool" / n).mkdir(exist_ok=True)
    # munged wants its socket's folder and every folder above it searchable by all (pytest's
    # temporary folders are 0700), and AF_UNIX paths are short: a folder of its own in /tmp
    munge_dir = Path(tempfile.mkdtemp(prefix="stcnn-munge-"))
    key, sock = munge_dir / "munge.key", munge_dir / "munge.socket.2"
    try:
        munge_dir.chmod(0o755)
        _write_munge_key(key)
        cpus, mem = host_resources()
        conf = write_config(root, nodes, cpus_per_node=max(1, cpus // len(nodes)),
                            mem_per_node=max(64, mem // len(nodes)), munge_socket=sock,
                            user=getpass.getuser())
    except BaseException:
        shutil.rmtree(munge_dir, ignore_errors=True)
        raise
    env = clean_env()
    env["SLURM_CONF"] = str(conf)
    env["PATH"] = _SEARCH_PATH
    cluster = SlurmCluster(root=root, nodes=tuple(nodes), conf=conf, env=env,
                           munge_dir=munge_dir)

    def launch(name: str, cmd: list[str]) -> None:
        out = open(root / "log" / f"{name}.stdout.log", "wb")
        with out:
            cluster.procs[name] = subprocess.Popen(cmd, env=env, stdout=out,
                                                   stderr=subprocess.STDOUT,
                                                   stdin=subprocess.DEVNULL,
                                                   start_new_session=True)

    try:
        launch("munged", [which("munged"), "-F", f"--socket={sock}", f"--key-file={key}",
                          f"--pid-file={munge_dir / 'munged.pid'}",
                          f"--log-file={root / 'log' / 'munged.log'}",
                          f"--seed-file={munge_dir / 'munged.seed'}", "--num-threads=2"])
        _wait(lambda: sock.exists(), cluster, "munged did not create its socket", 20)
        launch("slurmctld", [which("slurmctld"), "-D", "-f", str(conf)])
        for n in nodes:
            launch(f"slurmd-{n}", [which("slurmd"), "-D", "-N", n, "-f", str(conf)])

        def all_idle() -> bool:
            states = cluster.node_states()
            return all(states.get(n, "").rstrip("*") == "idle" for n in nodes)

        _wait(all_idle, cluster, f"the nodes {', '.join(nodes)} did not become idle", timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait(ready, cluster: SlurmCluster, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        dead = [f"{k} (exit {p.returncode})" for k, p in cluster.procs.items()
                if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            states = cluster.node_states() if not dead else {}
            raise ClusterStartError(
                f"{what} within {timeout:.0f} s"
                + (f"; exited: {', '.join(dead)}" if dead else "")
                + (f"; sinfo: {states}" if states else "") + "\n" + cluster.logs())
        time.sleep(0.5)


# ---------------------------------------------------------------------------------------------
# Jobs on the cluster, as the tests submit them

REPO = Path(__file__).resolve().parents[2]


def sbatch(cluster: SlurmCluster, *args: str, env: dict[str, str], timeout: float,
           wait: bool = True) -> subprocess.CompletedProcess:
    """``sbatch [--wait] --parsable`` from the repository root. With ``wait``, a job that
    outlives ``timeout`` is cancelled and the test fails with the queue and the daemons' logs."""
    cmd = ["sbatch", *(["--wait"] if wait else []), "--parsable", f"--chdir={REPO}", *args]
    try:
        return cluster.run(*cmd, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        queue = cluster.run("squeue", "-o", "%i %T %R").stdout
        cluster.run("scancel", f"--user={getpass.getuser()}")
        raise AssertionError(f"{' '.join(cmd)} still running after {timeout} s:\n{queue}\n"
                             f"{cluster.logs()}") from None


def job_env(cluster: SlurmCluster, python: str, **extra: str) -> dict[str, str]:
    """The environment of a submitted job: the cluster's, without launcher, tracking, thread and
    project variables of the calling process, the scripts' interpreter ``python``; then
    ``extra``."""
    env = clean_env(cluster.env)
    env["SLURM_CONF"] = cluster.env["SLURM_CONF"]
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
              "MLFLOW_TRACKING_URI", "OMP_NUM_THREADS"):
        env.pop(k, None)
    env = {k: v for k, v in env.items() if not k.startswith("STCNN_")}
    env["STCNN_PYTHON"] = python
    env.update(extra)
    return env


def outputs(folder: Path, tail: int = 3000) -> str:
    """The last ``tail`` characters of each job output file (``*.out``) in ``folder``."""
    return "\n".join(f"--- {p.name}:\n{p.read_text(errors='replace')[-tail:]}"
                     for p in sorted(folder.glob("*.out")))


def wait_until_ended(cluster: SlurmCluster, job: str, timeout: float) -> None:
    """Returns once no task of ``job`` (submitted without ``--wait``) is pending, running or
    completing; after ``timeout`` s cancels it and fails with the queue and the daemons' logs."""
    deadline = time.monotonic() + timeout
    while True:
        queue = cluster.run("squeue", "-h", "-j", job, "-o", "%i %T", timeout=20).stdout
        if not queue.strip():
            return
        if time.monotonic() > deadline:
            cluster.run("scancel", job)
            raise AssertionError(f"job {job} still queued after {timeout} s:\n{queue}\n"
                                 f"{cluster.logs()}")
        time.sleep(0.2)


@contextlib.contextmanager
def oversubscribed(cluster: SlurmCluster, jobs_per_cpu: int) -> Iterator[None]:
    """Inside the block up to ``jobs_per_cpu`` jobs share each CPU of the partition
    (``OverSubscribe=FORCE:N``, set with ``scontrol``): more tasks run at once than there are
    cores. The partition is back to ``OverSubscribe=NO`` afterwards."""
    def partition(value: str) -> None:
        r = cluster.run("scontrol", "update", "PartitionName=debug", f"OverSubscribe={value}",
                        timeout=20)
        assert r.returncode == 0, f"scontrol update OverSubscribe={value}: {r.stdout}{r.stderr}"

    partition(f"FORCE:{jobs_per_cpu}")
    try:
        yield
    finally:
        partition("NO")
