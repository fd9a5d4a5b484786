"""Helpers of the fault-injection suite (``tests/faults``): launching training under torchrun
with extra launcher options and environment, and recording what each fault scenario showed.

When ``$STCNN_FAULT_REPORT`` names a folder, every scenario writes one JSON record there
(:func:`record`); ``python benchmarks/fault_figures.py --from-report DIR`` prints them as the
fault table.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

from support import child_env, torchrun_head
from test_train import LAUNCHERS, tiny

REPO = Path(__file__).resolve().parents[2]
REPORT_ENV = "STCNN_FAULT_REPORT"

FAULTS = Path(__file__).resolve().parent
FAULT_HOOK = "hooks=[fault_hook:from_env]"   # the training config's extra hook (fault_hook.py)


def fault_env(spec: str, **extra: str) -> dict[str, str]:
    """:func:`clean_env` with ``$STCNN_FAULT=spec`` and this folder on PYTHONPATH, so that a run
    started with :data:`FAULT_HOOK` among its overrides loads the fault hook."""
    path = os.pathsep.join(p for p in (str(FAULTS), os.environ.get("PYTHONPATH", "")) if p)
    return clean_env(STCNN_FAULT=spec, PYTHONPATH=path, **extra)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without launcher/tracking variables, one thread per rank."""
    env = child_env()
    env.update(extra)
    return env


def torchrun_cmd(phase: str, lake: Path, run_dir: Path, *extra: str, nproc: int = 2,
                 launcher_args: tuple[str, ...] = (), tracking: bool = False) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node=N [launcher_args]
    launch/<phase>.py --config configs/tiny/... data.lake=... run_dir=... [extra]``."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    return [*torchrun_head(nproc, *launcher_args),
            str(REPO / "launch" / f"{LAUNCHERS[phase]}.py"), "--config", str(tiny(phase)),
            f"data.lake={lake}", f"run_dir={run_dir}",
            *([] if tracking else ["tracking.enabled=false"]), *extra]


def torchrun(phase: str, lake: Path, run_dir: Path, *extra: str, nproc: int = 2,
             launcher_args: tuple[str, ...] = (), env: dict[str, str] | None = None,
             tracking: bool = False, timeout: int = 600) -> subprocess.CompletedProcess:
    """:func:`torchrun_cmd`, run to its end; not checked."""
    cmd = torchrun_cmd(phase, lake, run_dir, *extra, nproc=nproc, launcher_args=launcher_args,
                       tracking=tracking)
    return subprocess.run(cmd, env=env or clean_env(), cwd=str(run_dir.parent),
                          capture_output=True, text=True, timeout=timeout)


def failure(proc: subprocess.CompletedProcess) -> str:
    args = proc.args if isinstance(proc.args, str) else " ".join(map(str, proc.args))
    return f"{args}\nexit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def resumed_steps(log: str) -> list[int]:
    """The steps ``[<phase>] resumed from ... at step N`` lines of a training log name."""
    return [int(m) for m in re.findall(r"resumed from \S+ at step (\d+)", log)]


def record(name: str, *, fault: str, where: str, times: int, survived: str, ok: bool,
           seconds: float | None = None, **details) -> None:
    """One row of the fault table, written to ``$STCNN_FAULT_REPORT/<name>.json`` when set."""
    folder = os.environ.get(REPORT_ENV)
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    doc = {"scenario": name, "fault": fault, "where": where, "times": times,
           "survived": survived, "ok": bool(ok), "seconds": seconds, "details": details,
           "source": "tests/faults"}
    (Path(folder) / f"{name}.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")


class Timer:
    def __enter__(self) -> "Timer":
        self.t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = round(time.perf_counter() - self.t0, 2)
