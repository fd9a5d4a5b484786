"""Training runs for tests: the tiny configs of each phase, the one runner of a phase's launch
script (``launch/<phase>.py``) under ``torchrun`` or plain ``python``, and what tests compare
afterwards (exported weights, the last checkpoint, tensors nested in dicts and lists, the files
DeepSpeed saved).

Every test that starts a training phase as a child process builds on :func:`torchrun_cmd` (the
command) and :func:`torchrun` (the command, run to its end); in-process runs call
``pipeline.train.runner.run_phase`` with :func:`tiny` configs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import torch

from pipeline.train.registry import by_name
from support import child_env, torchrun_head

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


def tiny(phase: str) -> Path:
    """The tiny config of a phase (``gan``, ``segmentation``, ``alternating``)."""
    return REPO / by_name(phase).tiny_config


# -- the one runner of a training phase in child processes ---------------------------------------

def torchrun_cmd(phase: str, lake: Path, run_dir: Path, *extra: str, nproc: int = 2,
                 launcher_args: tuple[str, ...] = (), tracking: bool = False,
                 python_if_one: bool = False) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node=N [launcher_args]
    launch/<phase>.py --config configs/tiny/... data.lake=... run_dir=...
    [tracking.enabled=false] [extra]``; creates ``run_dir``'s parent.

    ``tracking``: leave tracking on (the config's or ``$MLFLOW_TRACKING_URI``); off by default.
    ``python_if_one``: with ``nproc=1`` run the script with plain ``python`` instead of a
    one-rank torchrun (``launcher_args`` then unused)."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    head = ([sys.executable] if python_if_one and nproc == 1
            else torchrun_head(nproc, *launcher_args))
    return [*head, str(REPO / by_name(phase).launcher), "--config", str(tiny(phase)),
            f"data.lake={lake}", f"run_dir={run_dir}",
            *([] if tracking else ["tracking.enabled=false"]), *extra]


def torchrun(phase: str, lake: Path, run_dir: Path, *extra: str, nproc: int = 2,
             launcher_args: tuple[str, ...] = (), env: dict[str, str] | None = None,
             env_extra: dict[str, str] | None = None, tracking: bool = False,
             python_if_one: bool = False, cwd: Path | str | None = None, timeout: float = 600,
             check: bool = False) -> subprocess.CompletedProcess:
    """:func:`torchrun_cmd`, run to its end with output captured.

    ``env``: the whole environment (default :func:`support.child_env`); ``env_extra``: variables
    set on top of it. ``cwd``: default ``run_dir``'s parent. ``check``: assert exit 0, the
    message being :func:`failure`; else not checked."""
    cmd = torchrun_cmd(phase, lake, run_dir, *extra, nproc=nproc, launcher_args=launcher_args,
                       tracking=tracking, python_if_one=python_if_one)
    full_env = dict(env) if env is not None else child_env()
    full_env.update(env_extra or {})
    proc = subprocess.run(cmd, env=full_env, cwd=str(cwd if cwd is not None else run_dir.parent),
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, failure(proc)
    return proc


def failure(proc: subprocess.CompletedProcess) -> str:
    """A finished child's command line, exit status and the ends of its output."""
    args = proc.args if isinstance(proc.args, str) else " ".join(map(str, proc.args))
    return f"{args}\nexit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


# -- what a run leaves -----------------------------------------------------------------------------

def summary(run_dir: Path) -> dict:
    """The run's ``summary.json``."""
    return json.loads((run_dir / "summary.json").read_text())


def load_state(run_dir: Path) -> dict:
    """The run's exported ``weights.pt``."""
    return torch.load(run_dir / "weights.pt", weights_only=True)


def last_checkpoint_state(run_dir: Path) -> dict:
    """The shared state (models, optimizers, schedulers, phase, step) of the newest checkpoint."""
    ckpt = sorted((run_dir / "checkpoints").glob("step_*"))[-1]
    return torch.load(ckpt / "shared.pt", weights_only=True)["shared"]


def assert_same_tensors(a, b, where=""):
    """``a`` and ``b`` (tensors, numbers, nested dicts/lists/tuples) equal bit for bit; NaN
    equals NaN. The message names the first path that differs."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), where


def assert_runs_bit_identical(reference: Path, run_dir: Path, *, step: int, ranks: int) -> None:
    """Two finished runs equal bit for bit: the exported weights, and in the last checkpoint
    (``step``) the engines (models, optimizers, schedulers), the phase state, and each of the
    ``ranks`` ranks' own state (RNG states, data position)."""
    assert_same_tensors(load_state(reference)["models"], load_state(run_dir)["models"], "weights")
    a, b = last_checkpoint_state(reference), last_checkpoint_state(run_dir)
    assert a["step"] == b["step"] == step
    assert_same_tensors(a["engines"], b["engines"], "engines")
    assert_same_tensors(a["phase"], b["phase"], "phase")
    for r in range(ranks):
        name = f"checkpoints/step_{step:08d}/rank_{r:05d}.pt"
        assert_same_tensors(torch.load(reference / name, weights_only=True)["state"],
                            torch.load(run_dir / name, weights_only=True)["state"], name)


def deepspeed_tensors(ckpt: Path) -> dict[str, dict]:
    """Every tensor and number DeepSpeed saved for its engines in a checkpoint folder (module
    states, and per rank the ZeRO partitions of the fp32 weights and of Adam's moments), by
    file and path inside it; wall-clock entries left out."""
    def walk(obj, prefix=""):
        if isinstance(obj, torch.Tensor):
            yield prefix, obj
        elif isinstance(obj, dict):
            for k in sorted(obj, key=str):
                yield from walk(obj[k], f"{prefix}/{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                yield from walk(v, f"{prefix}/{i}")
        elif isinstance(obj, (int, float)) and not isinstance(obj, bool) and "time" not in prefix:
            yield prefix, obj

    return {str(f.relative_to(ckpt)): dict(walk(torch.load(f, map_location="cpu",
                                                           weights_only=False)))
            for f in sorted((ckpt / "engines").rglob("*.pt"))}
