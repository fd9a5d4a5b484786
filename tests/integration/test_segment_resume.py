"""Resuming ``launch/segment.py``: a run killed with SIGKILL and re-run with the same command skips
the sequences it had finished and ends with the same PNG bytes and evaluation as an
uninterrupted run; the completion rule (``pipeline/jobs/segment/resume.py``) in process; the
progress bar only where asked for."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.config import load_config, to_dict
from pipeline.model.config import ModelConfig

REPO = Path(__file__).resolve().parents[2]
ONLINE = ["online.iterations=12", "online.dreams=3", "online.optim.name=adam",
          "online.optim.lr=1e-3"]
# tqdm's rate and the bar's stage: "12.3step/s, tuning]", or "1.23s/step, tuning]" on a slow machine
BAR = re.compile(r"(step/s|s/step), tuning\]")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from pipeline.train.weights import save_random_weights

    cfg = to_dict(load_config(ModelConfig, REPO / "configs" / "model" / "tiny.yaml"))
    return save_random_weights(tmp_path_factory.mktemp("ckpt") / "weights.pt", cfg, seed=0)


@pytest.fixture(scope="module")
def davis16(tmp_path_factory) -> Path:
    from pipeline.synthetic import SyntheticSpec, write_dataset

    spec = SyntheticSpec(size=(64, 48), n_sequences=3, n_frames=6, n_images=2, seed=3)
    return write_dataset("davis2016", tmp_path_factory.mktemp("d16") / "DAVIS", spec)


def _command(checkpoint: Path, davis: Path, out: Path, *extra: str) -> list[str]:
    import sys

    return [sys.executable, str(REPO / "launch" / "segment.py"), "--checkpoint", str(checkpoint),
            "--davis-root", str(davis), "--year", "2016", "--split", "val", "--out", str(out),
            "overlays=0", "tracking.enabled=false", *ONLINE, *extra]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    from support import child_env, run

    proc = run(cmd, env=child_env(), timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _pngs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("*/*.png"))
            if p.parent.name not in ("eval", "overlays")}


def _kill_after_first_sequence(cmd: list[str], log: Path) -> str:
    """Start ``cmd``; SIGKILL it as soon as it reports its first finished sequence (whose PNGs
    must then all exist); return that sequence's name."""
    from support import child_env

    lines: queue.Queue = queue.Queue()
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=err, text=True)
        threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)],
                         daemon=True).start()
        try:
            while True:
                line = lines.get(timeout=300)
                assert line is not None, f"the run ended before it could be killed:\n{log.read_text()}"
                if line.startswith("[segment] rank 0: "):
                    proc.kill()                                  # SIGKILL
                    proc.wait(timeout=60)
                    return line.split()[3]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)


@pytest.mark.slow  # > 5 s: three runs of the segmentation job
def test_killed_run_resumes_to_the_uninterrupted_results(checkpoint, davis16, tmp_path):
    full = tmp_path / "full"
    first = _run(_command(checkpoint, davis16, full, "progress=true"))
    assert BAR.search(first.stderr) and "segmenting]" in first.stderr   # the bar, when asked for
    expected = json.loads((full / "summary.json").read_text())
    assert expected["skipped"] == [] and expected["segmented"] == 3

    out = tmp_path / "resumed"
    cmd = _command(checkpoint, davis16, out)
    done = _kill_after_first_sequence(cmd, tmp_path / "killed.log")
    frames = sorted(p.stem for p in (davis16 / "JPEGImages" / "480p" / done).glob("*.jpg"))
    assert sorted(p.stem for p in (out / done).glob("*.png")) == frames
    assert not (out / "summary.json").exists()                   # killed mid-run
    assert not BAR.search((tmp_path / "killed.log").read_text())       # no bar: stderr is no terminal

    again = _run(cmd)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] == [done] and summary["segmented"] == 2, summary
    assert "1 of 3 sequences already complete" in again.stdout
    assert not BAR.search(again.stderr)
    assert _pngs(out) == _pngs(full) and len(_pngs(full)) > 3
    assert json.dumps(summary["evaluation"]["metrics"]) == json.dumps(expected["evaluation"]["metrics"])
    for csv in ("global_results-val.csv", "per-sequence_results-val.csv"):
        assert (out / "eval" / csv).read_bytes() == (full / "eval" / csv).read_bytes()
    timing = json.loads((out / "timing.json").read_text())
    assert set(timing["sequences"]) == set(json.loads((full / "timing.json").read_text())["sequences"])

    redo = _run(cmd + ["redo=true"])
    assert json.loads((out / "summary.json").read_text())["skipped"] == []
    assert "already complete" not in redo.stdout
    assert _pngs(out) == _pngs(full)


def test_the_fingerprint_counts_lucid_settings_that_differ_from_the_defaults():
    """Default dreams, spelled out or not, give the fingerprint of ``lucid: {}`` (the results a
    run with the default dreams wrote keep counting as complete); any other setting changes it.
    The ablation switches (``augment``, ``plain_augment``, ``segment_at``) count only when used,
    so results written before they existed keep counting as complete too."""
    import hashlib

    from pipeline.jobs.segment import SegmentConfig
    from pipeline.jobs.segment.resume import job_fingerprint

    cfg = load_config(SegmentConfig)
    before = {k: v for k, v in to_dict(cfg.online).items()
              if k not in ("augment", "plain_augment", "segment_at")}
    settings = {"online": before | {"lucid": {}}, "model_overrides": [],
                "year": 2016, "precision": cfg.dist.precision,
                "channels_last": cfg.dist.channels_last}
    empty = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    assert job_fingerprint(cfg, {}) == empty
    spelled = load_config(SegmentConfig, None, ["online.lucid.max_shift=0.1",
                                                "online.lucid.scale=[0.9,1.1]"])
    assert job_fingerprint(spelled, {}) == empty
    for other in ("online.lucid.max_shift=0.2", "online.lucid.scale=[0.9,1.2]",
                  "online.augment=plain", "online.segment_at=[0]"):
        assert job_fingerprint(load_config(SegmentConfig, None, [other]), {}) != empty
    plain = ["online.augment=plain"]
    assert job_fingerprint(load_config(SegmentConfig, None, plain + ["online.lucid.max_shift=0.2"]),
                           {}) == job_fingerprint(load_config(SegmentConfig, None, plain), {})
    assert job_fingerprint(load_config(SegmentConfig, None, plain + [
        "online.plain_augment.rotate_deg=5"]), {}) != job_fingerprint(
            load_config(SegmentConfig, None, plain), {})


def test_a_sequence_counts_as_complete_only_with_its_marker_and_every_png(tmp_path):
    from pipeline.inference.video import write_sequence_masks
    from pipeline.jobs.segment import resume

    ids = ["00000", "00001", "00002"]
    write_sequence_masks(tmp_path / "seq", ids, [np.zeros((4, 4), np.uint8)] * 3)
    assert not resume.is_complete(tmp_path, "seq", ids, "fp")     # every PNG, no marker
    resume.finish_sequence(tmp_path, "seq", ids, "fp", {"frames": 3})
    assert resume.is_complete(tmp_path, "seq", ids, "fp")
    assert not resume.is_complete(tmp_path, "seq", ids, "other")  # other settings or weights
    assert not resume.is_complete(tmp_path, "seq", ids + ["00003"], "fp")
    (tmp_path / "seq" / "00001.png").unlink()
    assert not resume.is_complete(tmp_path, "seq", ids, "fp")
    (tmp_path / "seq" / ".00002.png.host-1.tmp").write_bytes(b"half")   # a killed writer's
    resume.start_sequence(tmp_path, "seq")                                # redoing it
    assert resume.read_marker(tmp_path, "seq") is None
    assert not list((tmp_path / "seq").glob(".*.tmp"))
