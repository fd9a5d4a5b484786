#!/usr/bin/env python
"""The fault table: faults injected into the pipeline and what survived them.

Runs reduced forms of the fault-injection suite (``tests/faults``) on tiny synthetic data built in
a temporary folder, and prints a markdown table (``--json``: one JSON object):

  preprocess-kill       ``launch/preprocess.py`` SIGKILLed ``--kills`` times at seeded random
                        points, then run to the end: lake byte-identical to an uninterrupted one?
  disk-full             ENOSPC while a shard's tar is written: error naming the file and the fix,
                        only finished shards visible to readers, re-run byte-identical?
  checkpoint-truncated  the newest checkpoint's ``shared.pt`` truncated: resume falls back to the
                        previous one and ends bit-identical to an uninterrupted run? (1 rank)
  elastic-kill          rank 1 of a 2-rank torchrun job SIGKILLed after step 3
                        (``$STCNN_FAULT``, :class:`pipeline.train.hooks.FaultHook`), torchrun
                        ``--max-restarts=2``: completes, bit-identical to an uninterrupted run?
  mlflow-restart        the MLflow server killed mid-run and started again on the same port and
                        database: every per-step metric in the server exactly once?

    python benchmarks/fault_figures.py                      # all of them (~2-3 min on 2 cores)
    python benchmarks/fault_figures.py --only preprocess-kill --kills 2 --json
    STCNN_FAULT_REPORT=out/ pytest tests/faults
    python benchmarks/fault_figures.py --from-report out/  # the rows the tests wrote

``--from-report DIR`` prints the rows the full test suite wrote instead of running anything.
The exit status is 1 when a scenario did not survive its fault.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import errno
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path

from _common import REPO  # the repo is put on sys.path there

SCENARIOS = ("preprocess-kill", "disk-full", "checkpoint-truncated", "elastic-kill",
             "mlflow-restart")
QUICK = ("preprocess-kill", "disk-full", "checkpoint-truncated")
PREPROCESS = [sys.executable, str(REPO / "launch" / "preprocess.py")]
TCB = REPO / "launch" / "pretrain_tcb.py"
TCB_TINY = REPO / "configs" / "tiny" / "pretrain_tcb.yaml"
_SCRUB = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "MLFLOW_TRACKING_URI",
          "STCNN_PARENT_RUN_ID", "STCNN_FAULT", "TORCHELASTIC_RESTART_COUNT")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def row(fault: str, where: str, times: int, survived: str, ok: bool, seconds: float,
        **details) -> dict:
    return {"fault": fault, "where": where, "times": times, "survived": survived, "ok": ok,
            "seconds": round(seconds, 1), "details": details}


# ----------------------------------------------------------------------------------------------
# data


def davis_source(root: Path) -> Path:
    """DAVIS-2017 layout, 2 sequences x 10 frames per split (42 clips: 15 shards of <= 3)."""
    from pipeline.data.synthetic import SyntheticSpec, write_dataset

    return write_dataset("davis2017", root / "davis_src",
                         SyntheticSpec(n_sequences=2, n_frames=10, seed=1))


def preprocess(src: Path, out: Path) -> None:
    from pipeline.data.preprocess import PreprocessConfig, run_preprocess

    run_preprocess(PreprocessConfig("davis2017", src, out, shard_max_count=3, progress=False))


def lake_files(root: Path) -> dict[str, bytes]:
    """Every file of a lake, the stats files without their timings."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name.endswith("_stats.json"):
                doc = json.loads(data)
                doc.pop("seconds")
                data = json.dumps(doc, sort_keys=True).encode()
            out[p.relative_to(root).as_posix()] = data
    return out


# a killed write of these leaves its temp file for good (known gap, see tests/faults/test_faults.py)
UNCLEANED = (".manifest.json.", ".catalog.parquet.")


def lake_verdict(lake: Path, reference: Path) -> tuple[bool, str, int, list[str]]:
    """(ok, problems, samples, stray manifest/catalog temp files)."""
    from pipeline.data.catalog import read_catalog, validate_set

    problems = []
    temps = sorted(p.relative_to(lake).as_posix() for p in lake.rglob(".*.tmp"))
    stray = [t for t in temps if Path(t).name.startswith(UNCLEANED)]
    if len(stray) != len(temps):
        problems.append(f"temp files left: {sorted(set(temps) - set(stray))}")
    if {k: v for k, v in lake_files(lake).items() if k not in temps} != lake_files(reference):
        problems.append("differs from the uninterrupted lake")
    keys = read_catalog(lake).column("key").to_pylist()
    if len(keys) != len(set(keys)) or len(keys) != len(read_catalog(reference)):
        problems.append("samples lost or doubled")
    for set_dir in sorted(p.parent for p in lake.rglob("manifest.json")):
        v = validate_set(set_dir)
        if not v.ok:
            problems.append(f"validation: {v.errors[:2]}")
    return not problems, "; ".join(problems), len(keys), stray


def train_lake(root: Path) -> Path:
    """ILSVRC-VID clips at 64x48 in 4 shards (what configs/tiny/pretrain_tcb.yaml reads)."""
    from pipeline.data.preprocess import PreprocessConfig, run_preprocess
    from pipeline.data.synthetic import SyntheticSpec, write_dataset

    lake = root / "train_lake" / "shards"
    if not lake.is_dir():
        spec = SyntheticSpec(size=(64, 48), n_sequences=2, n_frames=8, n_images=8, seed=0)
        src = write_dataset("ilsvrc_vid", root / "train_lake" / "src", spec)
        run_preprocess(PreprocessConfig(dataset="ilsvrc_vid", src=src, out=lake, delta=4,
                                        shard_max_count=4, workers=1, progress=False))
    return lake


def same_tensors(a, b) -> bool:
    import torch

    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_tensors(a[k], b[k])
                                                                    for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_tensors(x, y) for x, y in zip(a, b))
    return a == b


def run_state(run_dir: Path) -> tuple[dict, dict]:
    """(exported weights, the last checkpoint's engine states) of a run."""
    import torch

    weights = torch.load(run_dir / "weights.pt", weights_only=True)["models"]
    last = sorted((run_dir / "checkpoints").glob("step_*"))[-1]
    return weights, torch.load(last / "shared.pt", weights_only=True)["shared"]["engines"]


def training(run_dir: Path, lake: Path, *extra: str, nproc: int = 1, launcher=(),
             tracking: bool = False) -> list[str]:
    """The command line of a tiny GAN-phase run (torchrun when ``nproc`` > 1)."""
    head = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
             f"--nproc_per_node={nproc}", *launcher] if nproc > 1 else [sys.executable])
    return [*head, str(TCB), "--config", str(TCB_TINY), f"data.lake={lake}",
            f"run_dir={run_dir}", *([] if tracking else ["tracking.enabled=false"]), *extra]


def run_training(cmd: list[str], cwd: Path, env=None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env or clean_env(), cwd=str(cwd), capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"training failed (exit {proc.returncode}): {proc.stderr[-1500:]}")
    return proc


# ----------------------------------------------------------------------------------------------
# scenarios


def preprocess_kill(tmp: Path, args) -> dict:
    src = davis_source(tmp)
    ref, out = tmp / "pk_ref", tmp / "pk_killed"
    preprocess(src, ref)
    n_shards = len(list(ref.rglob("*_stats.json")))
    rng = random.Random(args.seed)
    cmd = [*PREPROCESS, "davis2017", "--src", str(src), "--out", str(out), "--shard-max-count",
           "3", "--no-progress"]
    env = clean_env(STCNN_PREPROCESS_THROTTLE="0.02")

    def finished() -> int:
        return len(list(out.rglob("*_stats.json")))

    t0 = time.perf_counter()
    mid_file, landed = 0, 0
    for _ in range(args.kills):
        target = min(finished() + rng.choice([0, 1, 2]), n_shards - 3)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        own = f".*.{proc.pid}.tmp"
        deadline = time.monotonic() + 60
        while (finished() < target or not list(out.rglob(own))) and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            landed += 1
            mid_file += bool(list(out.rglob(own)))
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, timeout=300)
    ok, problems, n, stray = lake_verdict(out, ref) if final.returncode == 0 else (
        False, f"final run failed: {final.stderr[-300:]}", 0, [])
    ok = ok and landed == args.kills
    survived = (f"byte-identical lake, {n} samples, none lost or doubled" if ok
                else f"NO: {problems or f'only {landed} kills landed'}")
    if ok and stray:
        survived += f" ({len(stray)} stray manifest/catalog temp file(s) left: known gap)"
    return row(f"{args.kills} SIGKILLs of preprocessing (seeded random points)",
               f"launch/preprocess.py, {n_shards} shards", args.kills, survived, ok,
               time.perf_counter() - t0, kills_mid_file=mid_file, stray_temps=stray)


class _FullDisk:
    def __init__(self, f, budget: int):
        self._f, self._left = f, budget

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self._left:
            if self._left:
                self._f.write(data[: self._left])
            self._left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._left -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)


@contextlib.contextmanager
def full_disk_on(target: str, budget: int):
    """Writes of ``target`` through ``pipeline.atomic`` fail with ENOSPC after ``budget`` bytes."""
    import pipeline.atomic as atomic

    def fake_open(path, mode="r", *a, **kw):
        f = builtins.open(path, mode, *a, **kw)
        if "w" in mode and Path(path).name.startswith(f".{target}."):
            return _FullDisk(f, budget)
        return f

    atomic.open = fake_open
    try:
        yield
    finally:
        del atomic.open


def disk_full(tmp: Path, args) -> dict:
    from pipeline.data.catalog import validate_set
    from pipeline.data.loader import iter_samples
    from pipeline.data.shardlist import finished_shards

    src = davis_source(tmp) if not (tmp / "davis_src").is_dir() else tmp / "davis_src"
    ref, out = tmp / "df_ref", tmp / "df_lake"
    preprocess(src, ref)
    set_dir, target = out / "davis2017" / "train", "00001.tar"
    t0 = time.perf_counter()
    problems, error = [], None
    with full_disk_on(target, 20_000):
        try:
            preprocess(src, out)
            problems.append("no error raised")
        except OSError as e:
            error = str(e)
    if error is not None and not (str(set_dir / target) in error and "Fix:" in error):
        problems.append(f"error does not name the file and the fix: {error[:200]}")
    if list(out.rglob("*.tmp")):
        problems.append("temp file left")
    visible = [p.name for p in finished_shards(set_dir)]
    if visible != ["00000.tar"]:
        problems.append(f"readers see {visible}")
    v = validate_set(set_dir)
    if [e for e in v.errors if "unfinished shard" not in e]:
        problems.append(f"validation: {v.errors[:2]}")
    n_read = sum(1 for _ in iter_samples(set_dir))
    stats = json.loads((set_dir / "00000_stats.json").read_text())
    if n_read != stats["count"]:
        problems.append(f"loader read {n_read} samples, finished shards hold {stats['count']}")
    preprocess(src, out)
    ok, lake_problems, n, _ = lake_verdict(out, ref)
    if not ok:
        problems.append(lake_problems)
    survived = ("error names the file + fix; readers saw only finished shards; re-run "
                f"byte-identical ({n} samples)") if not problems else "NO: " + "; ".join(problems)
    return row(f"disk full (ENOSPC) writing shard {target}", "preprocessing writer", 1, survived,
               not problems, time.perf_counter() - t0)


def checkpoint_truncated(tmp: Path, args) -> dict:
    lake = train_lake(tmp)
    ref, run_dir = tmp / "ct_ref", tmp / "ct_run"
    t0 = time.perf_counter()
    run_training(training(ref, lake, "steps=5"), tmp)
    run_training(training(run_dir, lake, "steps=4"), tmp)
    shared = run_dir / "checkpoints" / "step_00000004" / "shared.pt"
    shared.write_bytes(shared.read_bytes()[:100])
    proc = run_training(training(run_dir, lake, "steps=5"), tmp)
    problems = []
    if "step_00000004 cannot be resumed from" not in proc.stderr:
        problems.append("no warning about the truncated checkpoint")
    s = json.loads((run_dir / "summary.json").read_text())
    if s["start_step"] != 2 or not s["completed"]:
        problems.append(f"resumed at step {s['start_step']}, completed {s['completed']}")
    (wa, ea), (wb, eb) = run_state(ref), run_state(run_dir)
    if not (same_tensors(wa, wb) and same_tensors(ea, eb)):
        problems.append("weights differ from the uninterrupted run")
    survived = ("fell back to the previous checkpoint (warned); weights + optimizer state "
                "bit-identical") if not problems else "NO: " + "; ".join(problems)
    return row("newest checkpoint's shared.pt truncated to 100 bytes", "resume, 1 rank (GAN)", 1,
               survived, not problems, time.perf_counter() - t0)


def elastic_kill(tmp: Path, args) -> dict:
    lake = train_lake(tmp)
    ref, run_dir, marker = tmp / "ek_ref", tmp / "ek_run", tmp / "ek.marker"
    common = ("steps=6", "checkpoint.every=2")
    t0 = time.perf_counter()
    run_training(training(ref, lake, *common, nproc=2), tmp)
    env = clean_env(STCNN_FAULT=f"kill:rank=1:step=3:once={marker}")
    proc = run_training(training(run_dir, lake, *common, nproc=2,
                                 launcher=("--max-restarts=2", "--monitor-interval=0.5")),
                        tmp, env=env)
    problems = []
    if not marker.is_file():
        problems.append("the fault did not fire")
    if proc.stderr.count("exitcode: -9") != 1:
        problems.append("torchrun did not see exactly one SIGKILLed worker")
    if "resumed from" not in proc.stdout:
        problems.append("the restarted workers did not resume")
    s = json.loads((run_dir / "summary.json").read_text())
    if s["start_step"] != 2 or not s["completed"]:
        problems.append(f"resumed at step {s['start_step']}, completed {s['completed']}")
    (wa, ea), (wb, eb) = run_state(ref), run_state(run_dir)
    if not (same_tensors(wa, wb) and same_tensors(ea, eb)):
        problems.append("weights differ from the uninterrupted run")
    survived = ("torchrun restarted the group once, resumed at step 2; weights + optimizer state "
                "bit-identical") if not problems else "NO: " + "; ".join(problems)
    return row("SIGKILL of rank 1 of 2 after step 3 (torchrun --max-restarts=2)",
               "2-rank DDP training (GAN, gloo)", 1, survived, not problems,
               time.perf_counter() - t0)


class _Server:
    def __init__(self, root: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.root, self.uri, self.proc = root, f"http://127.0.0.1:{self.port}", None
        root.mkdir(parents=True, exist_ok=True)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=0.5) as r:
                return r.status == 200
        except OSError:
            return False

    def start(self) -> None:
        with open(self.root / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
                 f"sqlite:///{self.root / 'db.sqlite'}", "--artifacts-destination",
                 str(self.root / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                start_new_session=True)
        deadline = time.monotonic() + 120
        while not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("mlflow server did not start")
            time.sleep(0.25)

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
        deadline = time.monotonic() + 20
        while self.healthy() and time.monotonic() < deadline:
            time.sleep(0.1)


def mlflow_restart(tmp: Path, args) -> dict:
    import mlflow

    lake = train_lake(tmp)
    steps, run_dir = 12, tmp / "mr_run"
    server = _Server(tmp / "mlflow")
    server.start()
    t0 = time.perf_counter()
    cmd = training(run_dir, lake, f"steps={steps}", "tracking.experiment=stcnn-faults",
                   "tracking.retry_interval_s=0.5", "tracking.request_timeout_s=2",
                   "tracking.system_metrics=false", tracking=True)
    env = clean_env(MLFLOW_TRACKING_URI=server.uri, PYTHONUNBUFFERED="1")
    problems = []
    try:
        with open(tmp / "mr_stderr.txt", "w") as err:
            proc = subprocess.Popen(cmd, env=env, cwd=str(tmp), stdout=subprocess.PIPE,
                                    stderr=err, text=True)
            try:
                for want, action in ((f"step 3/{steps}", "stop"), (f"step 5/{steps}", "restart")):
                    for line in proc.stdout:  # type: ignore[union-attr]
                        if want in line:
                            break
                    if action == "stop":
                        server.stop()
                    else:
                        os.kill(proc.pid, signal.SIGSTOP)   # hold training during the restart
                        try:
                            server.start()
                        finally:
                            os.kill(proc.pid, signal.SIGCONT)
                proc.communicate(timeout=600)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        log = (tmp / "mr_stderr.txt").read_text()
        if proc.returncode != 0:
            problems.append(f"training failed: {log[-300:]}")
        elif "reachable again" not in log:
            problems.append("the tracker never reconnected during the run")
        if (run_dir / "tracking_spool.jsonl").exists():
            problems.append("entries left in the spool")
        if not problems:
            run_id = json.loads((run_dir / "summary.json").read_text())["mlflow_run_id"]
            c = mlflow.MlflowClient(tracking_uri=server.uri)
            if c.get_run(run_id).info.status != "FINISHED":
                problems.append("run not FINISHED")
            for key in ("G/loss", "D/loss"):
                got = sorted(m.step for m in c.get_metric_history(run_id, key))
                if got != list(range(1, steps + 1)):
                    problems.append(f"{key} steps in the server: {got}")
    finally:
        server.stop()
    survived = (f"run FINISHED; all {steps} steps of G/loss, D/loss in the server exactly once "
                "(spool replayed live)") if not problems else "NO: " + "; ".join(problems)
    return row("MLflow server killed after step 3, restarted on the same port/db",
               "tracking of a 1-rank GAN run", 1, survived, not problems,
               time.perf_counter() - t0)


RUNNERS = {"preprocess-kill": preprocess_kill, "disk-full": disk_full,
           "checkpoint-truncated": checkpoint_truncated, "elastic-kill": elastic_kill,
           "mlflow-restart": mlflow_restart}


# ----------------------------------------------------------------------------------------------
# report


def from_report(folder: Path) -> dict:
    rows = {}
    for p in sorted(folder.glob("*.json")):
        doc = json.loads(p.read_text())
        rows[doc["scenario"]] = row(doc["fault"], doc["where"], doc["times"], doc["survived"],
                                    doc["ok"], doc.get("seconds") or 0.0, **doc.get("details", {}))
    if not rows:
        raise SystemExit(f"no scenario records (*.json) in {folder}: run the fault tests with "
                         f"STCNN_FAULT_REPORT={folder} first")
    return {"source": str(folder), "scenarios": rows}


def table(result: dict) -> str:
    lines = ["| fault injected | where | how many times | what survived | ok | s |",
             "|---|---|---|---|---|---|"]
    for name, r in result["scenarios"].items():
        lines.append(f"| {r['fault']} | {r['where']} | {r['times']} | {r['survived']} | "
                     f"{'yes' if r['ok'] else 'NO'} | {r['seconds']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--only", action="append", choices=SCENARIOS,
                   help="run this scenario (repeatable; default: all)")
    p.add_argument("--quick", action="store_true",
                   help=f"only {', '.join(QUICK)}, with 3 kills")
    p.add_argument("--kills", type=int, default=None, help="SIGKILLs of preprocessing (10)")
    p.add_argument("--seed", type=int, default=20240607, help="seed of the kill points")
    p.add_argument("--from-report", type=Path, default=None,
                   help="print the rows tests/faults wrote to this folder ($STCNN_FAULT_REPORT)")
    p.add_argument("--tmp-dir", type=Path, default=None, help="where the temporary data goes")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    if args.from_report is not None:
        result = from_report(args.from_report)
    else:
        names = args.only or (list(QUICK) if args.quick else list(SCENARIOS))
        if args.kills is None:
            args.kills = 3 if args.quick else 10
        if args.kills < 1:
            p.error("--kills must be >= 1")
        result = {"source": "benchmarks/fault_figures.py", "scenarios": {}}
        with tempfile.TemporaryDirectory(prefix="fault_figures_", dir=args.tmp_dir) as tmp:
            for name in names:
                t0 = time.perf_counter()
                try:
                    result["scenarios"][name] = RUNNERS[name](Path(tmp), args)
                except Exception as e:  # noqa: BLE001 - a scenario that broke is a row too
                    traceback.print_exc()
                    result["scenarios"][name] = row(name, "-", 0, f"NO: {type(e).__name__}: {e}",
                                                    False, time.perf_counter() - t0)
    print(json.dumps(result, sort_keys=True) if args.json else table(result))
    return 0 if all(r["ok"] for r in result["scenarios"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
