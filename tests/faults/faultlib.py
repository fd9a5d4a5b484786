"""Helpers of the fault-injection suite (``tests/faults``): the fault hook's environment
(:func:`fault_env`, :data:`FAULT_HOOK`), what a resumed log says (:func:`resumed_steps`), and
recording what each fault scenario showed (:func:`record`, :class:`Timer`), the run the
pre-emption tests interrupt (:data:`PREEMPT_RUN`). Training runs start through the one runner,
``support/training.py``'s :func:`~support.training.torchrun`.

When ``$STCNN_FAULT_REPORT`` names a folder, every scenario writes one JSON record there
(:func:`record`); ``python benchmarks/fault_figures.py --from-report DIR`` prints them as the
fault table.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from support import child_env

REPO = Path(__file__).resolve().parents[2]
REPORT_ENV = "STCNN_FAULT_REPORT"

FAULTS = Path(__file__).resolve().parent
# the run the pre-emption tests interrupt: 6 steps, no periodic checkpoint before the end
PREEMPT_RUN = ("steps=6", "checkpoint.every=100", "log.every=1")
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
