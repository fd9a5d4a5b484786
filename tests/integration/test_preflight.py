"""The cluster preflight in its CPU mode (`launch/preflight.py --device cpu --quick`), alone and
under a 2-rank torchrun with gloo: it passes, prints its table and writes the JSON fields users
and our GPU runs read; and its parts report what they measure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.preflight.environment import check_devices, diagnose
from pipeline.preflight.numerics import compare_losses
from pipeline.preflight.peaks import peak_flops
from support import child_env, launcher, run

REPO = Path(__file__).resolve().parents[2]
PREFLIGHT = REPO / "launch" / "preflight.py"
PHASE_FIELDS = {"phase", "config", "input_hw", "per_rank_batch", "global_batch", "precision",
                "channels_last", "compile", "sync_bn", "step_s", "samples_per_s",
                "peak_memory_gib", "flops_per_step", "achieved_tflops", "mfu", "peak", "losses",
                "numerics"}


def _env(**extra) -> dict:
    return child_env(PYTHONUNBUFFERED="1", **extra)


def _check_result(r: dict, world_size: int) -> None:
    assert r["ok"] is True, json.dumps(r, indent=1, default=str)[:4000]
    assert r["world_size"] == world_size and r["device"] == "cpu" and r["quick"] is True
    assert [i["rank"] for i in r["ranks"]] == list(range(world_size))
    assert all({"host", "device", "torch", "cpus", "interfaces"} <= set(i) for i in r["ranks"])
    assert r["problems"] == []
    if world_size == 1:
        assert "skipped" in r["allreduce"]
    else:
        a = r["allreduce"]
        assert a["correct"] is True and a["backend"] == "gloo" and a["busbw_gbps"] > 0
    assert [p["phase"] for p in r["phases"]] == ["gan", "segmentation", "alternating"]
    for p in r["phases"]:
        assert PHASE_FIELDS <= set(p), sorted(PHASE_FIELDS - set(p))
        assert p["step_s"] > 0 and p["samples_per_s"] > 0 and p["flops_per_step"] > 0
        assert p["global_batch"] == p["per_rank_batch"] * world_size
        assert p["mfu"] is None and "CPU" in p["peak"]  # no peak table for CPUs
        assert p["numerics"]["ok"] is True
        assert all(v["ok"] for v in p["numerics"]["losses"].values())
    # the GAN phases count the FLOPs of G and D, the segmentation one those of the SSB
    assert {"G/loss", "D/loss"} <= set(r["phases"][0]["losses"])
    assert set(r["phases"][1]["losses"]) == {"SSB/loss"}
    assert {"G/loss", "D/loss", "SSB/loss"} <= set(r["phases"][2]["losses"])
    o = r["online"]
    assert o["frames"] >= 2 and o["tune_s_per_frame"] > 0 and o["infer_s_per_frame"] > 0
    assert o["paper_s_per_frame"] == 3.90
    ld = r["loader"]
    assert ld["cpu_workers_clips_per_s"] > 0 and ld["device_decode_clips_per_s"] > 0
    assert "SyncBatchNorm" in r["sync_bn"]["status"] or "one rank" in r["sync_bn"]["status"]


@pytest.mark.slow  # ~20 s: keeps `-m "not slow"` under 3 min
def test_preflight_cpu_quick_passes_prints_the_table_and_writes_the_json(tmp_path):
    out = tmp_path / "preflight.json"
    proc = subprocess.run([sys.executable, str(PREFLIGHT), "--device", "cpu", "--quick",
                           "--out", str(out)], cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for section in ("== environment", "== training phases", "== numerics",
                    "== online tuning + inference", "== loader", "PASS"):
        assert section in proc.stdout, proc.stdout
    _check_result(json.loads(out.read_text()), 1)


@pytest.mark.slow
def test_preflight_under_torchrun_with_two_gloo_ranks(tmp_path):
    out = tmp_path / "preflight.json"
    proc = run(launcher(2) + [str(PREFLIGHT), "--device", "cpu", "--quick", "--out", str(out)],
               cwd=tmp_path, env=_env(), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("STCNN preflight") == 1, "only rank 0 prints the table"
    assert "all-reduce 16.0 MB" in proc.stdout
    _check_result(json.loads(out.read_text()), 2)


@pytest.mark.slow  # > 5 s: keeps `-m "not slow"` under 3 min
def test_preflight_fails_and_says_so_when_bf16_disagrees(tmp_path):
    """A tolerance no arithmetic meets: the numerics check fails, the exit code says so."""
    out = tmp_path / "preflight.json"
    proc = subprocess.run([sys.executable, str(PREFLIGHT), "--device", "cpu", "--quick",
                           "--phases", "segmentation", "--skip", "online", "loader",
                           "--bf16-rtol", "0", "--out", str(out)], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert r["ok"] is False and r["phases"][0]["numerics"]["ok"] is False
    assert "FAIL" in proc.stdout


@pytest.mark.slow  # > 5 s: keeps `-m "not slow"` under 3 min
def test_unreachable_rendezvous_is_an_error_naming_rank_host_and_fix(tmp_path):
    """Rank 1 of 2 with nobody at MASTER_ADDR: a bounded wait, then exit 3 and a one-line
    diagnosis."""
    env = _env(RANK="1", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
               MASTER_PORT="9")  # port 9 (discard): nothing listens there
    proc = subprocess.run([sys.executable, str(PREFLIGHT), "--device", "cpu", "--quick",
                           "--timeout", "5", "--out", str(tmp_path / "p.json")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "rendezvous failed: rank 1 on" in proc.stderr
    assert "MASTER_ADDR" in proc.stderr and "SOCKET_IFNAME" in proc.stderr, proc.stderr


def test_peak_table_finds_common_gpus_and_says_when_it_cannot():
    peak, what = peak_flops("NVIDIA H200", "bf16")
    assert peak == pytest.approx(989.4e12) and "h200" in what
    assert peak_flops("NVIDIA A100-SXM4-80GB", "fp32")[0] == pytest.approx(156e12)  # TF32
    assert peak_flops("NVIDIA A100-SXM4-80GB", "fp32", tf32=False)[0] == pytest.approx(19.5e12)
    assert peak_flops("Tesla V100-SXM2-32GB", "bf16")[0] is None
    peak, what = peak_flops("Some Future GPU", "bf16")
    assert peak is None and "not in the peak table" in what


def test_device_check_names_shared_gpus_mixed_devices_and_versions():
    base = {"torch": "2.14.1", "cuda": "13.0", "nccl": "2.27"}
    infos = [dict(base, rank=0, host="n1", device="cuda:0"),
             dict(base, rank=1, host="n1", device="cuda:0"),
             dict(base, rank=2, host="n2", device="cpu", cuda=None)]
    problems = " | ".join(check_devices(infos))
    assert "ranks [0, 1] share cuda:0 on n1" in problems
    assert "ranks [2] have no GPU" in problems
    assert "different cuda versions" in problems
    assert check_devices([dict(base, rank=0, host="n1", device="cuda:0")]) == []


def test_diagnosis_names_rank_host_and_the_fix():
    msg = diagnose(RuntimeError("Timed out waiting for clients"), 3, "gpu07", "nccl")
    assert msg.startswith("rank 3 on gpu07 (backend nccl)") and "NCCL_SOCKET_IFNAME" in msg
    msg = diagnose(RuntimeError("NCCL error: unhandled system error"), 0, "gpu01", "nccl")
    assert "NCCL_DEBUG=INFO" in msg and "NCCL_IB_DISABLE" in msg


def test_numerics_comparison_uses_the_first_step_and_ds_own_tolerance():
    fp32 = {"G/loss": [1.0, 0.9], "D/loss": [1.0, 1.0]}
    close = {"G/loss": [1.01, 0.5], "D/loss": [1.15, 2.0]}
    r = compare_losses(fp32, close, rtol=0.02, rtol_d=0.2)
    assert r["ok"] and r["losses"]["G/loss"]["rel_max_all_steps"] > 0.4  # reported, not judged
    far = {"G/loss": [1.05, 0.9], "D/loss": [1.0, 1.0]}
    assert not compare_losses(fp32, far, rtol=0.02, rtol_d=0.2)["ok"]
    assert not compare_losses(fp32, {"G/loss": [1.0]}, rtol=0.02, rtol_d=0.2)["ok"]


@pytest.mark.slow
def test_preflight_compiled_row_on_the_cpu(tmp_path):
    """``--compile-phases``: the phase again with dist.compile=true (the SSB phase: the one the
    CPU compiles in under a minute); the FLOPs of the eager run are reused."""
    out = tmp_path / "preflight.json"
    proc = subprocess.run([sys.executable, str(PREFLIGHT), "--device", "cpu", "--quick",
                           "--phases", "segmentation", "--compile-phases", "segmentation",
                           "--no-numerics", "--skip", "online", "loader", "--out", str(out)],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    p = json.loads(out.read_text())["phases"][0]
    c = p["compiled"]
    assert c["compile"] is True and p["compile"] is False
    assert c["flops_per_step"] == p["flops_per_step"] and c["flops_counted"] is False
    assert c["step_s"] > 0 and c["first_step_s"] > c["step_s"]  # compilation is in step 1
    assert "compiled" in proc.stdout


def test_full_mode_uses_the_paper_configs_with_their_per_gpu_batch():
    """Without --quick each phase is built from its paper config (ResNet-101 branches,
    Inception-v3 D), the paper's input size, and the paper's batch on every rank."""
    from pipeline.loading.augment import resolve_augment
    from pipeline.preflight.phase_steps import phase_config
    from pipeline.train.config import load_model_config, plan_batch

    expected = {"gan": ((480, 854), 3), "segmentation": ((300, 300), 8),
                "alternating": ((400, 710), 1)}
    for phase, (size, per_gpu) in expected.items():
        for world in (1, 8):
            cfg = phase_config(phase, quick=False, world_size=world, overrides={})
            assert cfg.model == "model/stcnn.yaml"
            assert tuple(resolve_augment(cfg.data.augment).size) == size
            plan = plan_batch(cfg.batch, world)
            assert (plan.micro_size, plan.accum) == (per_gpu, 1)
        m = load_model_config(cfg)
        resnet101 = [3, 4, 23, 3]
        assert m.spatial.backbone.blocks == resnet101 and m.temporal.backbone.blocks == resnet101
        assert m.spatial.backbone.width_div == m.temporal.backbone.width_div == 1


def test_ranks_from_srun_environment():
    """Under ``srun`` without a launcher: rank, world size, local rank and the rendezvous host
    (the node list's first host) come from SLURM's variables."""
    from pipeline.cli.preflight import _slurm_env, first_host

    assert first_host("gpu[07-09,12],cpu3") == "gpu07"
    assert first_host("n1,n2[3-4]") == "n1"
    assert first_host("node17") == "node17" and first_host("") == ""
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
           "SLURM_JOB_NODELIST": "a[3-4]"}
    _slurm_env(env)   # a dict, not os.environ: nothing leaks into later tests
    assert [env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")] == \
        ["5", "8", "1", "a3"]
    assert "RANK" not in os.environ
