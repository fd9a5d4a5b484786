"""``scripts/gpu_check.sh`` where no CUDA device is visible: it stops at once with a clear message,
exit status 2 and a JSON whose status is "no-cuda"; and the ``gpu`` tests it runs are collected
only when asked for (``--gpu``), whatever ``-m`` expression is given."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import child_env

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
GPU_TESTS = REPO / "tests" / "gpu" / "test_gpu_path.py"
# a GPU that exists nowhere: torch sees no device, on any machine
NO_SUCH_GPU = "GPU-00000000-0000-0000-0000-000000000000"


def _run_script(tmp_path: Path, *args: str, env_extra: dict[str, str] | None = None,
                timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    env = child_env(**(env_extra or {}))
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(SCRIPT), *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - t0


def _assert_no_cuda(proc: subprocess.CompletedProcess, out: Path, why: str) -> dict:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "gpu_check: no CUDA device visible" in proc.stderr, proc.stderr
    assert re.search(why, proc.stderr), proc.stderr
    doc = json.loads(out.read_text())
    assert doc["status"] == "no-cuda" and re.search(why, doc["message"]), doc
    assert doc["checks"] == [] and doc["device"] is None
    assert not out.with_suffix(".log").exists()  # nothing ran
    return doc


def test_script_parses():
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_no_cuda_default_output(tmp_path):
    """Run from another folder, no argument: the JSON goes to the repository's
    runs/gpu_check.json; every GPU hidden, so on any machine nothing runs."""
    out = REPO / "runs" / "gpu_check.json"
    before = out.read_bytes() if out.exists() else None
    try:
        proc, took = _run_script(tmp_path, env_extra={"CUDA_VISIBLE_DEVICES": ""})
        assert proc.returncode == 2, proc.stderr
        doc = json.loads(out.read_text())
        assert doc["status"] == "no-cuda" and "CUDA_VISIBLE_DEVICES" in doc["message"], doc
        assert took < 30, took
    finally:
        if before is None:
            out.unlink(missing_ok=True)
        else:
            out.write_bytes(before)


def test_no_cuda_on_this_machine(tmp_path):
    """As it stands here; a GPU named that exists nowhere keeps a GPU host on this path too."""
    out = tmp_path / "reports" / "check.json"
    proc, took = _run_script(tmp_path, str(out),
                             env_extra={"CUDA_VISIBLE_DEVICES": NO_SUCH_GPU})
    _assert_no_cuda(proc, out, r"no NVIDIA driver|nvidia-smi|is_available\(\) is False")
    assert took < 60, took


@pytest.mark.slow
def test_no_cuda_when_only_torch_can_tell(tmp_path):
    """A driver that answers (a stand-in nvidia-smi listing a GPU) while torch sees no device:
    the script asks torch, which says no."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: stand-in (UUID: GPU-x)'\n")
    (fake / "nvidia-smi").chmod(0o755)
    out = tmp_path / "check.json"
    proc, _ = _run_script(tmp_path, str(out), timeout=300,
                          env_extra={"CUDA_VISIBLE_DEVICES": NO_SUCH_GPU,
                                     "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"})
    _assert_no_cuda(proc, out, r"torch\.cuda\.is_available\(\) is False")


def _collect(*args: str, gpu_env: str | None = None) -> str:
    env = child_env()
    env.pop("STCNN_GPU", None)
    if gpu_env is not None:
        env["STCNN_GPU"] = gpu_env
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "-p", "no:cacheprovider", str(GPU_TESTS), *args],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 5), proc.stdout + proc.stderr  # 5: nothing collected
    return proc.stdout


def _counts(text: str) -> tuple[int, int]:
    """(collected, deselected) from pytest's last line."""
    sel = re.search(r"(\d+)/(\d+) tests? collected \((\d+) deselected\)", text)
    if sel:
        return int(sel.group(1)), int(sel.group(3))
    m = re.search(r"(\d+) tests? collected", text)
    d = re.search(r"(\d+) deselected", text)
    return (int(m.group(1)) if m else 0), (int(d.group(1)) if d else 0)


@pytest.mark.slow
def test_gpu_tests_are_deselected_unless_asked_for():
    """Default: every gpu test deselected (counted), also under -m "not slow" (a command-line
    -m replaces one in addopts: the deselection is a hook, not a marker expression). With --gpu
    or STCNN_GPU=1 the module imports and all its tests are collected."""
    opted = _collect("--gpu")
    n, deselected = _counts(opted)
    assert n >= 10 and deselected == 0, opted  # 10 on 0-1 GPU (+2 sync_bn with 2 GPUs)
    assert "test_nvjpeg_batch_decode_matches_the_cpu_decoder" in opted
    assert "test_preflight_quick" in opted
    assert _counts(_collect(gpu_env="1")) == (n, 0)
    for args in ((), ("-m", "not slow")):
        out = _collect(*args)
        assert _counts(out) == (0, n), out
        assert "test_gpu_path.py::" not in out


@pytest.mark.slow
def test_dry_run_on_the_cpu_writes_the_report(tmp_path):
    """``STCNN_GPU_TEST_DEVICE=cpu`` runs the checks' own code on the CPU: the report the script
    assembles from pytest's results and the checks' figures (one check here, passed; and one
    whose test name matches nothing: no check, so the run failed)."""
    out = tmp_path / "dry.json"
    proc, _ = _run_script(tmp_path, str(out), "-k", "truncated", timeout=600,
                          env_extra={"STCNN_GPU_TEST_DEVICE": "cpu"})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["status"] == "passed" and doc["device"]["dry_run"] == "cpu", doc
    [check] = doc["checks"]
    assert check["test"] == "test_a_truncated_jpeg_is_dropped_and_counted_as_on_the_cpu"
    assert check["status"] == "passed" and check["seconds"] > 0
    assert check["corrupt"]["device"]["corrupt_samples"] == 1
    assert doc["summary"]["sync_bn"] == "0 GPU: sync_bn not run"
    assert Path(doc["log"]).is_file()

    proc, _ = _run_script(tmp_path, str(out), "-k", "no_such_check", timeout=600,
                          env_extra={"STCNN_GPU_TEST_DEVICE": "cpu"})
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["status"] == "failed" and doc["checks"] == [], doc
