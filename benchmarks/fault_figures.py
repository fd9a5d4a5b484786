#!/usr/bin/env python
"""The fault table: faults injected into the pipeline and what survived them.

Runs the fault-injection scenarios of ``tests/faults`` (the very tests CI asserts, on tiny
synthetic data in a temporary folder) with ``$STCNN_FAULT_REPORT`` set, so that each scenario
writes its row, then prints the rows as a markdown table (``--json``: one JSON object):

  preprocess-kill       ``launch/preprocess.py`` SIGKILLed ``--kills`` times at seeded random
                        points, then run to the end: lake byte-identical to an uninterrupted one,
                        no sample lost or doubled, no temp file left?
  disk-full             ENOSPC while a shard's tar, parquet or stats file is written: error
                        naming the file and the fix, only finished shards visible to readers,
                        re-run byte-identical?
  checkpoint-truncated  rank 1's file of the newest checkpoint truncated (2 ranks): resume falls
                        back to the previous checkpoint, says so, ends bit-identical?
  elastic-kill          rank 1 of a 2-rank torchrun job SIGKILLed after step 3 (``$STCNN_FAULT``,
                        :class:`tests/faults/fault_hook.py` FaultHook), ``--max-restarts=2``:
                        completes, bit-identical to an uninterrupted run?
  mlflow-restart        the MLflow server killed mid-run and started again on the same port and
                        database: every per-step metric in the server exactly once?

    python benchmarks/fault_figures.py                    # every scenario (~3 min on 2 cores)
    python benchmarks/fault_figures.py --quick            # preprocessing faults only (~1 min)
    python benchmarks/fault_figures.py --only elastic-kill --json
    STCNN_FAULT_REPORT=out/ bash scripts/test.sh          # the whole suite writes the rows too
    python benchmarks/fault_figures.py --from-report out/ # ... and this prints them

The exit status is 1 when a scenario did not survive its fault (its test failed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO  # the repo is put on sys.path there

# scenario -> (the test that injects it, the report rows it writes start with the scenario name)
SCENARIOS = {
    "preprocess-kill": "tests/faults/test_faults.py::"
                       "test_preprocessing_killed_at_ten_random_points_then_completed",
    "disk-full": "tests/faults/test_faults.py::test_disk_full_while_writing_a_shard",
    "checkpoint-truncated": "tests/faults/test_faults.py::"
                            "test_two_rank_resume_falls_back_past_a_truncated_rank_file",
    "elastic-kill": "tests/faults/test_elastic.py::"
                    "test_torchrun_restarts_a_killed_rank_and_the_run_is_bit_identical",
    "mlflow-restart": "tests/faults/test_faults.py::test_mlflow_server_killed_and_restarted_mid_run",
}
QUICK = ("preprocess-kill", "disk-full")
REPORT_ENV = "STCNN_FAULT_REPORT"
KILLS_ENV = "STCNN_FAULT_KILLS"
_SCRUB = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "MLFLOW_TRACKING_URI",
          "STCNN_PARENT_RUN_ID", "STCNN_FAULT", "TORCHELASTIC_RESTART_COUNT", REPORT_ENV)


def row(fault: str, where: str, times: int, survived: str, ok: bool, seconds: float | None,
        **details) -> dict:
    return {"fault": fault, "where": where, "times": times, "survived": survived, "ok": bool(ok),
            "seconds": round(seconds or 0.0, 1), "details": details}


def from_report(folder: Path) -> dict:
    rows = {}
    for p in sorted(folder.glob("*.json")):
        doc = json.loads(p.read_text())
        rows[doc["scenario"]] = row(doc["fault"], doc["where"], doc["times"], doc["survived"],
                                    doc["ok"], doc.get("seconds"), **doc.get("details", {}))
    if not rows:
        raise SystemExit(f"no scenario records (*.json) in {folder}: run the fault tests with "
                         f"{REPORT_ENV}={folder} first")
    return {"source": str(folder), "scenarios": rows}


def run_scenarios(names: list[str], kills: int, tmp: Path) -> dict:
    """Run the tests of ``names`` under pytest (its output on stderr); their rows, plus a failed
    row for each scenario whose test wrote none."""
    report = tmp / "report"
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env.update({REPORT_ENV: str(report), KILLS_ENV: str(kills)})
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           f"--basetemp={tmp / 'pytest'}", *(SCENARIOS[n] for n in names)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=sys.stderr, stderr=sys.stderr)
    rows = from_report(report)["scenarios"] if report.is_dir() and any(report.glob("*.json")) \
        else {}
    for name in names:
        if not any(r == name or r.startswith(f"{name}-") for r in rows):
            rows[name] = row(name, SCENARIOS[name], 0,
                             f"NO: its test failed (pytest exit {proc.returncode}; output above)",
                             False, None)
    order = list(SCENARIOS)
    rows = dict(sorted(rows.items(), key=lambda kv: (
        next((i for i, n in enumerate(order) if kv[0] == n or kv[0].startswith(f"{n}-")),
             len(order)), kv[0])))
    return {"source": "tests/faults via benchmarks/fault_figures.py", "scenarios": rows}


def table(result: dict) -> str:
    lines = ["| fault injected | where | how many times | what survived | ok | s |",
             "|---|---|---|---|---|---|"]
    for r in result["scenarios"].values():
        lines.append(f"| {r['fault']} | {r['where']} | {r['times']} | {r['survived']} | "
                     f"{'yes' if r['ok'] else 'NO'} | {r['seconds']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--only", action="append", choices=list(SCENARIOS),
                   help="run this scenario (repeatable; default: all)")
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}, 3 kills")
    p.add_argument("--kills", type=int, default=None, help="SIGKILLs of preprocessing (10)")
    p.add_argument("--from-report", type=Path, default=None,
                   help=f"print the rows tests/faults wrote to this folder (${REPORT_ENV})")
    p.add_argument("--tmp-dir", type=Path, default=None, help="where the temporary data goes")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    if args.from_report is not None:
        result = from_report(args.from_report)
    else:
        names = args.only or (list(QUICK) if args.quick else list(SCENARIOS))
        kills = args.kills if args.kills is not None else (3 if args.quick else 10)
        if kills < 1:
            p.error("--kills must be >= 1")
        with tempfile.TemporaryDirectory(prefix="fault_figures_", dir=args.tmp_dir) as tmp:
            result = run_scenarios(names, kills, Path(tmp))
    print(json.dumps(result, sort_keys=True) if args.json else table(result))
    return 0 if all(r["ok"] for r in result["scenarios"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
