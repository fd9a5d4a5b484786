"""The SLURM training script under a fake SLURM: fake ``scontrol``, ``srun`` and ``torchrun`` on
PATH record what they are given, so the test checks the command line every node would run (the
rendezvous on the first node, nnodes, the launcher and its arguments unchanged), the environment
the ranks get, and how the batch shell passes on a signal (to srun as SIGUSR1, never SIGTERM,
which srun would turn into SIGKILL of every task). ``launch/slurm/node_task.sh``, each node's
task, is checked on its own: what it does with SIGUSR1 and SIGTERM. The whole signal path on a
real SLURM cluster is tests/faults/test_slurm_preemption.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "launch" / "slurm" / "train.sbatch"
HOSTS = ("gpu-node-01", "gpu-node-02")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="bash scripts")

FAKES = {
    # `scontrol show hostnames LIST` -> one host per line; `scontrol requeue ID` is logged
    "scontrol": f"""#!/bin/bash
if [ "$1 $2" = "show hostnames" ]; then printf '%s\\n' {' '.join(HOSTS)}; exit 0; fi
echo "$*" >> "$FAKE_LOG/scontrol.log"
""",
    # logs its arguments, then runs the command after its options once (as one node's task);
    # with FAKE_WAIT it runs nothing and waits for a signal, which it logs (real srun would
    # forward USR1 to the step's processes, and answer TERM with SIGKILL to them)
    "srun": """#!/bin/bash
printf '%s\\n' "$@" > "$FAKE_LOG/srun.args"
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done
if [ -n "${FAKE_WAIT:-}" ]; then
    STOP=
    trap 'echo USR1 >> "$FAKE_LOG/srun.signals"; STOP=1' USR1
    trap 'echo TERM >> "$FAKE_LOG/srun.signals"; STOP=1' TERM
    touch "$FAKE_LOG/srun.started"
    while [ -z "$STOP" ]; do sleep 0.05; done
    sleep 1        # the step takes a moment to stop: signals meanwhile are logged too
    exit 0
fi
exec "$@"
""",
    # logs its arguments and the environment it got
    "torchrun": """#!/bin/bash
printf '%s\\n' "$@" > "$FAKE_LOG/torchrun.args"
env > "$FAKE_LOG/torchrun.env"
""",
}

LAUNCH = ["launch/pretrain_tcb.py", "--config", "configs/pretrain_tcb.yaml",
          "data.lake=/lake/shards", "run_dir=runs/tcb run 1", "dist.engine=deepspeed"]


@pytest.fixture
def fake_slurm(tmp_path):
    """(environment of a 2-node job with fake SLURM tools, folder of their logs)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    bin_dir.mkdir()
    log.mkdir()
    for name, text in FAKES.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SRUN_", "OMP_", "MLFLOW_", "STCNN_"))}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", FAKE_LOG=str(log),
               SLURM_JOB_ID="4242", SLURM_NNODES="2", SLURM_JOB_NODELIST="gpu-node-[01-02]",
               SLURM_GPUS_PER_NODE="h100:4", SLURM_CPUS_PER_TASK="32",
               STCNN_TORCHRUN=str(bin_dir / "torchrun"),
               MLFLOW_TRACKING_URI="http://mlflow.example:5000")
    return env, log


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in _lines(path) if "=" in line)


def test_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_one_torchrun_per_node_with_the_rendezvous_on_the_first_node(fake_slurm):
    env, log = fake_slurm
    proc = subprocess.run(["bash", str(SCRIPT), *LAUNCH], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    srun = _lines(log / "srun.args")
    assert srun[:4] == ["--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    assert srun[4:7] == ["bash", "launch/slurm/node_task.sh", env["STCNN_TORCHRUN"]]
    assert _lines(log / "torchrun.args") == [
        "--nnodes=2", "--nproc_per_node=4", "--rdzv-backend=c10d",
        f"--rdzv-endpoint={HOSTS[0]}:29500", "--rdzv-id=4242", "--max-restarts=0", *LAUNCH]
    got = _env(log / "torchrun.env")
    assert got["OMP_NUM_THREADS"] == "8"                      # 32 CPUs / 4 ranks
    assert got["SRUN_CPUS_PER_TASK"] == "32"
    assert got["MLFLOW_TRACKING_URI"] == "http://mlflow.example:5000"
    assert got["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
    assert f"rendezvous {HOSTS[0]}:29500" in proc.stdout
    assert not (log / "scontrol.log").exists()                # finished: no requeue


def test_settings_from_the_environment(fake_slurm):
    env, log = fake_slurm
    env.update(GPUS_PER_NODE="2", STCNN_RDZV_PORT="29600", STCNN_MAX_RESTARTS="3",
               OMP_NUM_THREADS="5")
    proc = subprocess.run(["bash", str(SCRIPT), "launch/train_offline.py", "steps=10"], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    args = _lines(log / "torchrun.args")
    assert "--nproc_per_node=2" in args and f"--rdzv-endpoint={HOSTS[0]}:29600" in args
    assert "--max-restarts=3" in args and args[-2:] == ["launch/train_offline.py", "steps=10"]
    assert _env(log / "torchrun.env")["OMP_NUM_THREADS"] == "5"


def test_no_launcher_is_a_usage_error(fake_slurm):
    env, _ = fake_slurm
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "usage" in proc.stderr


@pytest.mark.parametrize("sig, requeued", [(signal.SIGUSR1, True), (signal.SIGTERM, False)],
                         ids=["SIGUSR1", "SIGTERM"])
def test_signals_reach_srun_as_sigusr1_once(fake_slurm, sig, requeued):
    """SIGUSR1 before the time limit (--signal=B:USR1@120) and SIGTERM to the batch shell both
    reach srun as one SIGUSR1 (which srun forwards to the training step); after SIGUSR1 the job
    requeues itself, after SIGTERM it leaves that to SLURM."""
    env, log = fake_slurm
    env["FAKE_WAIT"] = "1"
    proc = subprocess.Popen(["bash", str(SCRIPT), *LAUNCH], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (log / "srun.started").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "fake srun did not start"
            time.sleep(0.02)
        proc.send_signal(sig)
        time.sleep(0.3)
        proc.send_signal(sig)                      # a second signal is not passed on again
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    assert _lines(log / "srun.signals") == ["USR1"]
    assert f"got SIG{sig.name[3:]}" in err
    if requeued:
        assert _lines(log / "scontrol.log") == ["requeue 4242"]
    else:
        assert not (log / "scontrol.log").exists()


NODE_TASK = REPO / "launch" / "slurm" / "node_task.sh"
# what the node task runs in place of torchrun: says whether it ignores SIGUSR1, then waits for
# a file (60 s at most) and exits with code 7
CHILD = """
import os, signal, sys, time
print("USR1 ignored" if signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN else "USR1 live",
      flush=True)
open(sys.argv[1] + ".started", "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
    time.sleep(0.02)
sys.exit(7)
"""


def _node_task(tmp_path: Path, *signals: signal.Signals) -> tuple[subprocess.Popen, str, str]:
    go = tmp_path / "go"
    proc = subprocess.Popen(["bash", str(NODE_TASK), sys.executable, "-c", CHILD, str(go)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not Path(f"{go}.started").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the node task's command did not start"
            time.sleep(0.02)
        for sig in signals:
            proc.send_signal(sig)
            time.sleep(0.2)
        assert proc.poll() is None, f"the node task ended on {signals}: {proc.communicate()}"
        go.touch()
        out, err = proc.communicate(timeout=30)
    finally:
        go.touch()                                 # the command ends even if the task died
        try:
            os.killpg(proc.pid, signal.SIGKILL)    # and nothing of the group is left behind
        except ProcessLookupError:
            pass
    return proc, out, err


def test_node_task_runs_torchrun_with_usr1_ignored_and_outlives_signals(tmp_path):
    """Under node_task.sh torchrun starts with SIGUSR1 ignored (its workers' StopHook installs
    its own handler); the task itself neither dies of SIGUSR1 nor of SIGTERM (it waits for
    torchrun, which stops its workers), and exits with torchrun's status."""
    proc, out, err = _node_task(tmp_path, signal.SIGUSR1, signal.SIGTERM)
    assert proc.returncode == 7, out + err
    assert out.strip() == "USR1 ignored"
    assert "got SIGTERM; torchrun stops the workers with a checkpoint" in err


def test_node_task_without_a_command_is_a_usage_error():
    proc = subprocess.run(["bash", str(NODE_TASK)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "usage" in proc.stderr
