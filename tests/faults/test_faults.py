"""Fault injection: the pipeline survives the faults a cluster throws at it.

* preprocessing SIGKILLed at 10 random points, then run to the end: the lake is byte-identical to
  an uninterrupted one, no sample lost or doubled, no temp file left (those of a shared
  manifest/catalog too, when their writer is gone);
* the disk fills up while a shard (its tar, parquet or stats file) is written: the error names the
  file and the fix, readers (catalog validation, the loader) see only finished shards, and a
  re-run completes the lake byte-identically;
* the MLflow server is killed mid-run and started again on the same port and database: training
  completes and every per-step metric reaches the server exactly once (spooled, then replayed),
  counted at an HTTP proxy in front of the server;
* the server commits a metrics batch but its answer is lost: the batch is spooled and sent again
  with its original timestamps, and the store keeps one row per (key, step);
* a rank's checkpoint file is truncated: a 2-rank run resumes from the previous checkpoint, says
  so, and ends bit-identical to an uninterrupted run.

Elastic restarts of a killed rank are in test_elastic.py. With ``$STCNN_FAULT_REPORT`` set, each
scenario writes a row of the fault table: ``benchmarks/fault_figures.py`` runs these tests and
prints the rows.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from faultlib import REPO, Timer, clean_env, record
from support.lakes import PREPROCESS, lake_files
from support.mlflow_proxy import MlflowProxy, assert_each_step_answered_once
from support.training import (assert_same_tensors, failure, last_checkpoint_state, load_state,
                              summary, torchrun, torchrun_cmd)

import pipeline.core.atomic
from pipeline.core.atomic import temp_path
from pipeline.lake.catalog import read_catalog, validate_set
from pipeline.lake.preprocess import PreprocessConfig, run_preprocess
from pipeline.lake.listing import finished_shards
from pipeline.tracking import read_spool
from pipeline.synthetic import SyntheticSpec, write_dataset

PP_ARGS = ["--shard-max-count", "3", "--no-progress"]


@pytest.fixture(scope="module")
def small_davis(tmp_path_factory) -> Path:
    """DAVIS-2017 layout, 2 sequences x 10 frames per split: 42 clips, 15 shards of <= 3."""
    return write_dataset("davis2017", tmp_path_factory.mktemp("faults_src"),
                         SyntheticSpec(n_sequences=2, n_frames=10, seed=1))


@pytest.fixture(scope="module")
def reference_lake(small_davis, tmp_path_factory) -> Path:
    """The uninterrupted lake of ``small_davis`` (same settings as every scenario below)."""
    out = tmp_path_factory.mktemp("faults_ref")
    run_preprocess(PreprocessConfig("davis2017", small_davis, out, shard_max_count=3,
                                    progress=False))
    return out


def stray_temps(lake: Path) -> list[str]:
    return sorted(p.relative_to(lake).as_posix() for p in lake.rglob(".*.tmp"))


def assert_complete_and_exact(lake: Path, reference: Path) -> int:
    """Byte-identical to ``reference``, every set valid, every planned sample there once, no
    temp file of a killed writer left."""
    assert stray_temps(lake) == []
    assert lake_files(lake) == lake_files(reference)
    keys = read_catalog(lake).column("key").to_pylist()
    assert len(keys) == len(set(keys)) == len(read_catalog(reference)), "samples lost or doubled"
    for set_dir in sorted(p.parent for p in lake.rglob("manifest.json")):
        v = validate_set(set_dir)
        assert v.ok, v.errors
    return len(keys)


# -- preprocessing killed 10 times ---------------------------------------------------------------

@pytest.mark.slow
def test_preprocessing_killed_at_ten_random_points_then_completed(small_davis, reference_lake,
                                                                  tmp_path):
    kills = int(os.environ.get("STCNN_FAULT_KILLS", "10"))   # benchmarks/fault_figures.py --kills
    rng = random.Random(20240607)
    out = tmp_path / "killed"
    env = clean_env(STCNN_PREPROCESS_THROTTLE="0.02")  # seconds per tar member: ~6 s of writing
    cmd = [*PREPROCESS, "davis2017", "--src", str(small_davis), "--out", str(out), *PP_ARGS]
    n_ref = len(list(reference_lake.rglob("*_stats.json")))
    mid_file, finished_at_kill = 0, []

    def finished() -> int:
        return len(list(out.rglob("*_stats.json")))

    with Timer() as t:
        for k in range(kills):
            # kill points spread over the run: after 0-2 more finished shards (leaving some for
            # the final run) and once this attempt writes (a temp file of its pid), a random delay
            target = min(finished() + rng.choice([0, 1, 2]), n_ref - 3)
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            own = f".*-{proc.pid}.tmp"              # .<name>.<host>-<pid>.tmp
            deadline = time.monotonic() + 60
            while (finished() < target or not list(out.rglob(own))) and proc.poll() is None:
                assert time.monotonic() < deadline, "preprocessing never started writing"
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.3))
            assert proc.poll() is None, (f"attempt {k + 1} finished before its kill: more "
                                         "data or a larger throttle needed")
            mid_file += bool(list(out.rglob(own)))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            finished_at_kill.append(finished())
        assert len(list(out.rglob("*_stats.json"))) < n_ref, "the kills came too late"
        before_final = finished()
        r = subprocess.run([*cmd, "--json"], env=clean_env(), capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
    n = assert_complete_and_exact(out, reference_lake)
    # the final run resumed: it skipped exactly the shards finished by the killed attempts
    summaries = [json.loads(line) for line in r.stdout.splitlines()]
    assert sum(s["shards_already_finished"] for s in summaries) == before_final
    assert sum(s["shards_written"] for s in summaries) == n_ref - before_final
    assert mid_file >= 1, "no kill landed while a file was being written"
    record("preprocess-kill", fault=f"{kills} SIGKILLs of preprocessing at seeded random points",
           where=f"launch/preprocess.py writing shards (davis2017, {n_ref} shards)", times=kills,
           survived=f"lake byte-identical to an uninterrupted run; {n} samples, none lost or "
                    "doubled; no temp file left",
           ok=True, seconds=t.seconds, kills_mid_file=mid_file,
           shards_finished_at_each_kill=finished_at_kill, shards=n_ref)


def test_temps_of_dead_manifest_and_catalog_writers_are_removed_live_ones_kept(small_davis,
                                                                               tmp_path):
    """manifest.json and catalog.parquet are shared by the tasks of an array job: the next run
    removes the temps of writers that are gone, never those of a task still writing."""
    out = tmp_path / "lake"
    cfg = PreprocessConfig("davis2017", small_davis, out, shard_max_count=3, progress=False)
    run_preprocess(cfg)
    set_dir = out / "davis2017" / "train"
    writer = subprocess.Popen(["sleep", "120"])     # stands for another task, still writing
    dead, live, other_old, other_new = [], [], [], []
    for name in ("manifest.json", "catalog.parquet"):   # what a SIGKILL mid-write leaves ...
        mine = temp_path(set_dir / name)                              # .<name>.<host>-<pid>.tmp
        dead.append(mine.with_name(mine.name.replace(f"-{os.getpid()}.", "-999999999.")))
        other_old.append(set_dir / f".{name}.node17-4242.tmp")       # another node, long dead
        live.append(mine.with_name(mine.name.replace(f"-{os.getpid()}.", f"-{writer.pid}.")))
        other_new.append(set_dir / f".{name}.node18-4242.tmp")       # another node, just now
    for p in dead + other_old + live + other_new:
        p.write_bytes(b"partial")
    hour_ago = time.time() - 3600
    for p in other_old:
        os.utime(p, (hour_ago, hour_ago))
    (set_dir / "catalog.parquet").unlink()          # killed before the catalog was renamed
    try:
        run_preprocess(cfg)
    finally:
        writer.kill()
        writer.wait()
    assert (set_dir / "catalog.parquet").is_file() and validate_set(set_dir).ok
    assert sorted(p.name for p in set_dir.glob(".*.tmp")) == sorted(p.name for p in live + other_new)


# -- disk full -----------------------------------------------------------------------------------

class _FullDisk:
    """A file whose writes fail with ENOSPC once ``budget`` bytes are written (the bytes that
    fit are written first, as a real full disk does)."""

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


def fill_disk_on(monkeypatch, target: str, budget: int) -> list[str]:
    """Writes of ``target`` (a file name, e.g. ``00001.tar``) through ``pipeline.core.atomic`` fail
    with ENOSPC after ``budget`` bytes; returns the temp names that hit it."""
    hits: list[str] = []

    def fake_open(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        if "w" in mode and Path(path).name.startswith(f".{target}."):
            hits.append(Path(path).name)
            return _FullDisk(f, budget)
        return f

    monkeypatch.setattr(pipeline.core.atomic, "open", fake_open, raising=False)
    return hits


@pytest.mark.parametrize("target, budget", [("00001.tar", 20_000), ("00001.parquet", 100),
                                            ("00001_stats.json", 10)])
def test_disk_full_while_writing_a_shard(target, budget, small_davis, reference_lake, tmp_path,
                                         monkeypatch):
    from pipeline.loading.loader import iter_samples

    out = tmp_path / "lake"
    set_dir = out / "davis2017" / "train"
    hits = fill_disk_on(monkeypatch, target, budget)
    t = Timer().__enter__()
    with pytest.raises(OSError) as ei:
        run_preprocess(PreprocessConfig("davis2017", small_davis, out, shard_max_count=3,
                                        progress=False))
    assert hits, f"{target} was never written"
    err = ei.value
    # the error is the disk's, names the file being written and says what to do
    assert err.errno == errno.ENOSPC
    assert str(set_dir / target) in str(err) and "Fix: free space" in str(err), str(err)
    # nothing half-written: no temp file, the failed shard is not finished, readers skip it
    assert not list(out.rglob("*.tmp"))
    assert [p.name for p in finished_shards(set_dir)] == ["00000.tar"]
    v = validate_set(set_dir)
    assert v.shards_checked == 1 and "00001.tar" in v.unfinished
    assert [e for e in v.errors if "unfinished shard" not in e] == [], v.errors
    stats = json.loads((set_dir / "00000_stats.json").read_text())
    samples = list(iter_samples(set_dir))
    assert len(samples) == stats["count"] == 3
    assert {Path(s["shard"]).name for s in samples} == {"00000.tar"}
    assert {s["key"] for s in samples} == set(
        read_catalog_rows(set_dir / "00000.parquet"))
    # space freed: the same command finishes the lake, identical to an uninterrupted run
    monkeypatch.undo()
    run_preprocess(PreprocessConfig("davis2017", small_davis, out, shard_max_count=3,
                                    progress=False))
    n = assert_complete_and_exact(out, reference_lake)
    t.__exit__()
    record(f"disk-full-{target[len('00001'):].strip('._').replace('.json', '')}",
           fault=f"ENOSPC while writing shard file {target} (after {budget} bytes)",
           where="preprocessing (pipeline.core.atomic writer)", times=1,
           survived=f"error names {target} and the fix; readers saw only finished shards; "
                    f"re-run byte-identical ({n} samples)", ok=True, seconds=t.seconds)


def read_catalog_rows(parquet: Path) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(parquet, columns=["key"]).column("key").to_pylist()


def test_preprocess_cli_reports_a_full_disk_without_a_traceback(small_davis, tmp_path):
    """The CLI's answer to a full disk (simulated in a child through sitecustomize)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import builtins, errno, os, pathlib\n"
        "import pipeline.core.atomic as a\n"
        "class Full:\n"
        "    def __init__(self, f): self.f = f\n"
        "    def write(self, b): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
        "    def __getattr__(self, n): return getattr(self.f, n)\n"
        "def _open(path, mode='r', *args, **kw):\n"
        "    f = builtins.open(path, mode, *args, **kw)\n"
        "    full = 'w' in mode and pathlib.Path(path).name.startswith('.00002.tar.')\n"
        "    return Full(f) if full else f\n"
        "a.open = _open\n")
    env = clean_env(PYTHONPATH=os.pathsep.join([str(hook), str(REPO)]))
    r = subprocess.run([*PREPROCESS, "davis2017", "--src", str(small_davis), "--out",
                        str(tmp_path / "lake"), *PP_ARGS], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "stcnn-preprocess: error:" in r.stderr and "No space left on device" in r.stderr
    assert "00002.tar" in r.stderr and "Fix: free space" in r.stderr


# -- MLflow server killed and restarted ----------------------------------------------------------

class MlflowServer:
    """``mlflow server`` on a fixed port and sqlite database that can be stopped and started."""

    def __init__(self, root: Path):
        from support import free_port

        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 120) -> None:
        from support import address_in_use, free_port
        from support.mlflow_server import answers

        self.root.mkdir(parents=True, exist_ok=True)
        log_path = self.root / f"server{self.starts}.log"
        log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
             f"sqlite:///{self.root / 'db.sqlite'}", "--artifacts-destination",
             str(self.root / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
            start_new_session=True)            # its own process group: stop() ends all of it
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while not answers(f"{self.uri}/health"):
            taken = address_in_use(log_path.read_text(errors="replace"))
            if taken or self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                if taken and self.starts == 1:   # taken before the first start: another port
                    self.port = free_port()
                    self.uri = f"http://127.0.0.1:{self.port}"
                    self.starts = 0
                    return self.start(timeout)
                pytest.fail(f"mlflow server did not start on port {self.port}")
            time.sleep(0.25)

    def stop(self) -> None:
        from support.mlflow_server import answers

        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
        deadline = time.monotonic() + 20
        while answers(f"{self.uri}/health", timeout=0.5) and time.monotonic() < deadline:
            time.sleep(0.1)


@pytest.fixture
def mlflow_server(tmp_path):
    s = MlflowServer(tmp_path / "mlflow")
    s.start()
    yield s
    s.stop()


def _read_until(proc: subprocess.Popen, pattern: str, lines: list[str]) -> None:
    for line in proc.stdout:  # type: ignore[union-attr]
        lines.append(line)
        if pattern in line:
            return
    raise AssertionError(f"training ended before {pattern!r}:\n{''.join(lines)[-3000:]}")


@pytest.mark.slow
def test_mlflow_server_killed_and_restarted_mid_run(mlflow_server, train_lake, tmp_path):
    steps = 12
    run_dir = tmp_path / "tracked"
    # the dead server is seen at once (the proxy closes the connection unanswered); a timeout
    # only has to outlast a loaded machine, else an answered call could be sent again
    cmd = torchrun_cmd("gan", train_lake, run_dir, f"steps={steps}",
                       "tracking.experiment=stcnn-faults", "tracking.retry_interval_s=0.5",
                       "tracking.request_timeout_s=30", "tracking.system_metrics=false",
                       nproc=1, python_if_one=True, tracking=True)
    proxy = MlflowProxy(mlflow_server.uri)             # counts what reaches the server
    env = clean_env(MLFLOW_TRACKING_URI=proxy.uri, PYTHONUNBUFFERED="1")
    stderr_path = tmp_path / "train.stderr"
    lines: list[str] = []
    with Timer() as t, proxy, open(stderr_path, "w") as err:
        proc = subprocess.Popen(cmd, env=env, cwd=str(tmp_path), stdout=subprocess.PIPE,
                                stderr=err, text=True)
        try:
            _read_until(proc, f"step 3/{steps}", lines)
            mlflow_server.stop()                      # the server dies after step 3
            _read_until(proc, f"step 5/{steps}", lines)   # steps 4, 5 meet the outage
            os.kill(proc.pid, signal.SIGSTOP)         # hold training while the server restarts
            try:
                mlflow_server.start()                 # same port, same database
            finally:
                os.kill(proc.pid, signal.SIGCONT)
            out, _ = proc.communicate(timeout=600)
            lines.append(out)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    log = "".join(lines) + stderr_path.read_text()
    assert proc.returncode == 0, log[-5000:]
    assert "unreachable" in log and "reachable again" in log, log[-5000:]
    # everything the outage spooled was replayed by the training itself
    assert not (run_dir / "tracking_spool.jsonl").exists()
    assert not (run_dir / "tracking_rejected.jsonl").exists()
    s = summary(run_dir)
    assert s["completed"] and s["mlflow_run_id"]
    c = mlflow_server_client(mlflow_server.uri)
    run = c.get_run(s["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    for key in ("G/loss", "D/loss", "time/step_s"):
        got = sorted(m.step for m in c.get_metric_history(run.info.run_id, key))
        assert got == list(range(1, steps + 1)), (key, got)   # each step once: none lost/doubled
    # at the wire: each step sent until one send was answered, never after; a send the server
    # may have committed without answering (killed mid-call) is repeated with the same
    # timestamp and value, which the store keeps as one row
    assert_each_step_answered_once(proxy, run.info.run_id, ("G/loss", "D/loss", "time/step_s"),
                                   range(1, steps + 1))
    mv = c.get_model_version_by_alias("stcnn-tcb", "candidate")
    assert mv.run_id == run.info.run_id
    record("mlflow-restart", fault="MLflow server killed after step 3, restarted on the same "
           "port/db (training paused during the restart)", where="tracking of a 1-rank GAN run",
           times=1, survived=f"run FINISHED; all {steps} steps of every metric in the server "
                             "exactly once (spool replayed live)", ok=True, seconds=t.seconds)


def mlflow_server_client(uri: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.mark.slow
@pytest.mark.parametrize("async_metrics", [False, True], ids=["sync", "async"])
def test_metrics_batch_committed_but_answer_lost_is_resent_identically(server, tmp_path,
                                                                     async_metrics):
    """The server commits a ``log-batch`` call and its answer is lost (the proxy drops it): the
    tracker cannot tell this from an outage, spools the batch and sends it again when the store
    answers, with the entries' original timestamps. That second send is the only duplicate that
    reaches the server, and MLflow's SQL store collapses it (identical key, timestamp, step,
    value): the history holds each step once."""
    from pipeline.tracking import Tracker, TrackingConfig

    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_TIMEOUT",
                                            "MLFLOW_HTTP_REQUEST_MAX_RETRIES")}
    run_dir = tmp_path / "run"
    try:
        with MlflowProxy(server.uri) as proxy:
            # timeouts for a loaded machine: the dropped answer costs none (the proxy closes
            # the connection at once)
            cfg = TrackingConfig(tracking_uri=proxy.uri, system_metrics=False,
                                 request_timeout_s=60, retry_interval_s=0.2,
                                 async_metrics=async_metrics)
            with Tracker(cfg, phase="gan", run_dir=run_dir) as tr:
                tr.start({"seed": 0})
                for step in range(3):
                    tr.log_metrics({"loss": 1.0 / (step + 1), "lr": 0.1}, step)
                tr.flush()
                proxy.drop_answers(1)                  # step 3's batch: committed, unanswered
                tr.log_metrics({"loss": 0.25, "lr": 0.1}, 3)
                tr.flush()
                assert tr.offline and [e["step"] for e in read_spool(run_dir)] == [3]
                time.sleep(0.4)                        # past retry_interval_s
                tr.log_metrics({"loss": 0.2, "lr": 0.1}, 4)   # probe, replay step 3, then live
                tr.flush()
                deadline = time.monotonic() + 120      # a probe (1 s) may time out when loaded
                while tr.offline and time.monotonic() < deadline:
                    time.sleep(0.3)
                    tr.set_tags({"retry": "1"})        # any call probes and replays
                assert not tr.offline and not (run_dir / "tracking_spool.jsonl").exists()
                run_id = tr.run_id
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    dropped = [r for r in proxy.calls("/runs/log-batch") if r.dropped]
    assert len(dropped) == 1 and dropped[0].status == 200     # the server did commit it
    sends = assert_each_step_answered_once(proxy, run_id, ("loss", "lr"), range(5))
    assert sends == {(k, s): 2 if s == 3 else 1 for k in ("loss", "lr") for s in range(5)}
    c = server.client()
    assert c.get_run(run_id).info.status == "FINISHED"
    for key in ("loss", "lr"):
        hist = c.get_metric_history(run_id, key)
        assert sorted(m.step for m in hist) == list(range(5)), (key, [(m.step, m.timestamp)
                                                                      for m in hist])
    wire = {m.timestamp for m in proxy.sent_metrics(run_id) if m.step == 3 and m.key == "loss"}
    assert {m.timestamp for m in c.get_metric_history(run_id, "loss") if m.step == 3} == wire


# -- truncated checkpoint, 2 ranks --------------------------------------------------------------

@pytest.mark.slow
def test_two_rank_resume_falls_back_past_a_truncated_rank_file(train_lake, tmp_path):
    ref, run_dir = tmp_path / "uninterrupted", tmp_path / "truncated"
    proc = torchrun("gan", train_lake, ref, "steps=5")
    assert proc.returncode == 0, failure(proc)
    proc = torchrun("gan", train_lake, run_dir, "steps=4")
    assert proc.returncode == 0, failure(proc)
    bad = run_dir / "checkpoints" / "step_00000004" / "rank_00001.pt"
    bad.write_bytes(bad.read_bytes()[:100])          # e.g. a node lost mid-write, a full disk
    with Timer() as t:
        proc = torchrun("gan", train_lake, run_dir, "steps=5")
    assert proc.returncode == 0, failure(proc)
    assert "step_00000004 cannot be resumed from" in proc.stderr, proc.stderr[-3000:]
    assert "rank_00001.pt" in proc.stderr and "trying the previous one" in proc.stderr
    assert "resumed from" in proc.stdout and "at step 2" in proc.stdout
    s = summary(run_dir)
    assert s["start_step"] == 2 and s["completed"] and s["resumed_from"].endswith("step_00000002")
    assert_same_tensors(load_state(ref)["models"], load_state(run_dir)["models"], "weights")
    assert_same_tensors(last_checkpoint_state(ref)["engines"],
                        last_checkpoint_state(run_dir)["engines"], "engines")
    for r in (0, 1):
        name = f"checkpoints/step_00000005/rank_{r:05d}.pt"
        assert_same_tensors(torch.load(ref / name, weights_only=True)["state"],
                            torch.load(run_dir / name, weights_only=True)["state"], name)
    record("checkpoint-truncated", fault="rank 1's file of the newest checkpoint truncated to "
           "100 bytes", where="resume of a 2-rank DDP run", times=1,
           survived="both ranks fell back to the previous checkpoint (warned); final weights "
                    "bit-identical to an uninterrupted run", ok=True, seconds=t.seconds)


@pytest.mark.slow
def test_fallback_past_a_truncated_rank_file_logs_the_rerun_steps_again_in_the_same_run(
        server, train_lake, tmp_path):
    """Tracking on: the resume reopens the phase's MLflow run (``tracking.json``) and logs the
    steps it re-runs (3 and 4, after falling back to step 2's checkpoint) again, so MLflow's
    history holds two values at those steps, the resumed attempt's with the later timestamps."""
    run_dir = tmp_path / "truncated"
    tracked = ("tracking.experiment=stcnn-fallback", "tracking.system_metrics=false",
               "tracking.request_timeout_s=60")
    env_extra = {"MLFLOW_TRACKING_URI": server.uri}
    proc = torchrun("gan", train_lake, run_dir, "steps=4", *tracked, tracking=True,
                    env_extra=env_extra)
    assert proc.returncode == 0, failure(proc)
    run_id = json.loads((run_dir / "tracking.json").read_text())["run_id"]
    bad = run_dir / "checkpoints" / "step_00000004" / "rank_00001.pt"
    bad.write_bytes(bad.read_bytes()[:100])
    proc = torchrun("gan", train_lake, run_dir, "steps=5", *tracked, tracking=True,
                    env_extra=env_extra)
    assert proc.returncode == 0, failure(proc)
    assert "resumed from" in proc.stdout and "at step 2" in proc.stdout
    assert summary(run_dir)["mlflow_run_id"] == run_id
    c = mlflow_server_client(server.uri)
    exp = c.get_experiment_by_name("stcnn-fallback")
    assert [r.info.run_id for r in c.search_runs([exp.experiment_id])] == [run_id]   # one run
    assert c.get_run(run_id).info.status == "FINISHED"
    for key in ("G/loss", "D/loss", "time/step_s"):
        hist = c.get_metric_history(run_id, key)
        assert sorted(m.step for m in hist) == [1, 2, 3, 3, 4, 4, 5], key
        # in the order logged: the first attempt's 1-4, then the resumed one's 3-5
        by_time = [m.step for m in sorted(hist, key=lambda m: (m.timestamp, m.step))]
        assert by_time == [1, 2, 3, 4, 3, 4, 5], (key, by_time)
