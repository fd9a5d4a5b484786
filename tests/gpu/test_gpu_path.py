"""The GPU path, on a CUDA device: nvJPEG batch decode against the CPU decoder, corrupt clips
dropped on the device, each training phase in bf16 with channels_last, SyncBatchNorm under
torchrun (two GPUs or more), ``dist.compile=true``, and ``launch/preflight.py --device cuda``.

Marked ``gpu``: deselected unless ``--gpu`` or ``STCNN_GPU=1`` (``tests/conftest.py``);
``bash scripts/gpu_check.sh`` runs them and writes one JSON. Asked for on a machine without
CUDA, every test fails saying so (never a skip). Each test appends its figures (decode
differences, steps/s, the preflight JSON) to ``$STCNN_GPU_CHECK_FIGURES`` (JSON lines) when set,
before it asserts, so a failed check still reports what it measured.

``STCNN_GPU_TEST_DEVICE=cpu`` runs the same code on the CPU (a dry run of the tests' own logic:
the "device" decoder is then the CPU decoder; leave out ``compile``, which takes minutes there).
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin

from support import child_env
from support.logs import logs_warning
from support.training import failure, summary, torchrun

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEVICE = os.environ.get("STCNN_GPU_TEST_DEVICE", "cuda")
GPUS = torch.cuda.device_count() if DEVICE == "cuda" else 0

# -- tolerances of nvJPEG against libjpeg-turbo (uint8 levels, of 255) ----------------------------
# Both are baseline JPEG decoders, but their IDCTs differ (libjpeg-turbo's accurate integer IDCT;
# nvJPEG's GPU IDCT, on the H100's hardware decoder or CUDA kernels) and so does the rounding of
# the YCbCr->RGB conversion: +-1-2 levels per channel where no chroma is upsampled (4:4:4,
# greyscale). With subsampled chroma (4:2:0 as in DAVIS / ILSVRC VID, 4:2:2) the chroma
# upsampling filters may differ too (libjpeg-turbo's "fancy" triangular filter): up to a quarter
# of the chroma step on the pixels along sharp colour edges, a small share of a frame. So:
MAX_FULL_CHROMA = 4       # 4:4:4 and greyscale: per pixel and channel (4/255)
MEAN_FULL_CHROMA = 0.5    # and on average (0.5/255)
MEAN_SUBSAMPLED = 1.0     # 4:2:0 / 4:2:2: on average (1/255; torchvision's own nvJPEG test: < 2)
P999_SUBSAMPLED = 8       # 99.9% of values within 8/255 (edges only beyond)
MAX_SUBSAMPLED = 64       # anything beyond is a wrong colour matrix, channel order or block
# Initial bounds, from the decoders' designs; the measured figures are in the check's JSON.

SAMPLING = {-1: "grey", 0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}


@pytest.fixture(scope="module", autouse=True)
def device_present():
    """Fail (never skip) when the tests were asked for without a CUDA device."""
    if DEVICE == "cuda" and not torch.cuda.is_available():
        pytest.fail("no CUDA device visible (torch.cuda.is_available() is False): the gpu tests "
                    "run on a GPU machine (bash scripts/gpu_check.sh)", pytrace=False)


def record(check: str, **figures) -> None:
    """Append ``{"check": ..., figures}`` to ``$STCNN_GPU_CHECK_FIGURES`` (JSON lines), if set."""
    path = os.environ.get("STCNN_GPU_CHECK_FIGURES")
    if path:  # the test's name as the junit report gives it: test_x[param]
        test = os.environ.get("PYTEST_CURRENT_TEST", "").split("::")[-1].rsplit(" ", 1)[0]
        with open(path, "a") as f:
            f.write(json.dumps({"check": check, "test": test, **figures}, default=str) + "\n")


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


# -- (a) nvJPEG against the CPU decoder ------------------------------------------------------------

def _jpeg_members(folder: Path) -> list[tuple[str, bytes]]:
    out = []
    for tar in sorted(folder.rglob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".jpg"):
                    out.append((f"{tar.parent.name}/{tar.name}:{m.name}",
                                tf.extractfile(m).read()))
    return out


def _sampling(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as im:
        return "grey" if im.mode == "L" else SAMPLING.get(JpegImagePlugin.get_sampling(im), "?")


@pytest.fixture(scope="module")
def decode_lake(tmp_path_factory) -> Path:
    """A davis2016 shard set of 854x480 frames (the real layout: JPEG 4:2:0 as the datasets ship
    them), written by the real preprocessing job from the synthetic dataset."""
    from pipeline.lake.preprocess import PreprocessConfig, run_preprocess
    from pipeline.synthetic import SyntheticSpec, write_dataset

    root = tmp_path_factory.mktemp("decode_lake")
    spec = SyntheticSpec(size=(854, 480), n_sequences=2, n_frames=6, seed=3)
    src = write_dataset("davis2016", root / "sources" / "davis2016", spec)
    lake = root / "shards"
    list(run_preprocess(PreprocessConfig(dataset="davis2016", src=src, out=lake, delta=4,
                                         shard_max_count=4, workers=1, progress=False)))
    return lake


def _layout_variants(members: list[tuple[str, bytes]], n: int = 4) -> list[tuple[str, bytes]]:
    """The first ``n`` frames again at an odd size (853x479: partial MCUs) in every chroma
    layout: 4:4:4, 4:2:2, 4:2:0 and greyscale."""
    out = []
    for name, data in members[:n]:
        with Image.open(io.BytesIO(data)) as im:
            rgb = im.convert("RGB").crop((0, 0, 853, 479))
        for sub in (0, 1, 2):
            bio = io.BytesIO()
            rgb.save(bio, format="JPEG", quality=90, subsampling=sub)
            out.append((f"{name}@{SAMPLING[sub]}", bio.getvalue()))
        bio = io.BytesIO()
        rgb.convert("L").save(bio, format="JPEG", quality=90)
        out.append((f"{name}@grey", bio.getvalue()))
    return out


def _timed_decode(tensors, device: str, repeats: int = 3):
    from torchvision.io import ImageReadMode, decode_jpeg

    decode_jpeg(tensors[:2], mode=ImageReadMode.RGB, device=device)  # warm-up (nvJPEG handles)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
    sync()
    return out, (time.perf_counter() - t0) / repeats


def _diff_figures(members, cpu, dev) -> dict:
    """Per-value histogram of |cpu - device| over a batch: max, mean, 99.9th percentile."""
    hist = torch.zeros(256, dtype=torch.long)
    worst = (-1, "")
    for (name, _), a, b in zip(members, cpu, dev):
        assert b.device.type == torch.device(DEVICE).type
        assert a.shape == b.shape, (name, a.shape, b.shape)
        d = (a.int() - b.cpu().int()).abs().flatten()
        hist += torch.bincount(d, minlength=256)
        if int(d.max()) > worst[0]:
            worst = (int(d.max()), name)
    n = int(hist.sum())
    cum = torch.cumsum(hist, 0)
    return {"images": len(members), "values": n, "max": int(torch.nonzero(hist).max()),
            "mean": float((hist.double() * torch.arange(256, dtype=torch.float64)).sum() / n),
            "p999": int(torch.searchsorted(cum, math.ceil(0.999 * n))),
            "over_4": float(hist[5:].sum() / n), "worst_image": worst[1]}


def test_nvjpeg_batch_decode_matches_the_cpu_decoder(decode_lake):
    members = _jpeg_members(decode_lake)
    assert len(members) >= 12, members
    # one batch of the shard set's frames, then one batch per layout at the odd size
    batches = {"shards": members}
    for name, data in _layout_variants(members):
        batches.setdefault(f"853x479 {name.rsplit('@', 1)[1]}", []).append((name, data))
    figures, timings = {}, {}
    for batch, items in batches.items():
        tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for _, b in items]
        layouts = sorted({_sampling(b) for _, b in items})
        try:
            cpu, cpu_s = _timed_decode(tensors, "cpu", repeats=3 if batch == "shards" else 1)
            dev, dev_s = _timed_decode(tensors, DEVICE, repeats=3 if batch == "shards" else 1)
        except RuntimeError as exn:  # reported, then failed below
            figures[batch] = {"layouts": layouts, "error": str(exn).splitlines()[0][:300]}
            continue
        figures[batch] = {"layouts": layouts, **_diff_figures(items, cpu, dev)}
        if batch == "shards":
            pixels = sum(t.numel() // 3 for t in cpu)
            timings = {"cpu_batch_s": round(cpu_s, 4), "device_batch_s": round(dev_s, 4),
                       "cpu_mpix_per_s": round(pixels / cpu_s / 1e6, 1),
                       "device_mpix_per_s": round(pixels / dev_s / 1e6, 1)}
    record("decode", layouts=figures, **timings,
           bounds={"max_full_chroma": MAX_FULL_CHROMA, "mean_full_chroma": MEAN_FULL_CHROMA,
                   "mean_subsampled": MEAN_SUBSAMPLED, "p999_subsampled": P999_SUBSAMPLED,
                   "max_subsampled": MAX_SUBSAMPLED})
    assert figures["shards"].get("layouts") == ["4:2:0"], figures["shards"]  # the real layout
    for batch, f in figures.items():
        assert "error" not in f, (batch, f)
        if set(f["layouts"]) <= {"4:4:4", "grey"}:
            assert f["max"] <= MAX_FULL_CHROMA and f["mean"] <= MEAN_FULL_CHROMA, (batch, f)
        else:
            assert f["mean"] <= MEAN_SUBSAMPLED and f["p999"] <= P999_SUBSAMPLED \
                and f["max"] <= MAX_SUBSAMPLED, (batch, f)


@pytest.mark.parametrize("size", [None, (240, 427)], ids=["native", "resized"])
def test_device_decode_loader_matches_the_worker_path(decode_lake, size):
    """The loader with ``decode_device`` on the device against the CPU workers' batches: same
    clips, same flips, same masks, frames within the decoders' tolerance."""
    from pipeline.loading import loader as L
    from pipeline.loading.augment import AugmentConfig

    d = decode_lake / "davis2016" / "train"
    kw = dict(batch_size=2, num_workers=2, epoch_batches=4, rank=0, world_size=1,
              augment=AugmentConfig(hflip=0.5, size=size), seed=7)
    cpu = list(L.make_loader(d, **kw))
    t0 = time.perf_counter()
    dev = list(L.make_loader(d, decode_device=DEVICE, **kw))
    dev_s = time.perf_counter() - t0
    maxes, means, flips = [], [], set()
    for a, b in zip(cpu, dev):
        assert a["key"] == b["key"]
        assert b["frames"].device.type == torch.device(DEVICE).type
        assert a["frames"].shape == b["frames"].shape
        diff = (a["frames"].int() - b["frames"].cpu().int()).abs()
        maxes.append(int(diff.max()))
        means.append(float(diff.double().mean()))
        assert torch.equal(a["mask"], b["mask"].cpu())
        fa = [m["augment"]["hflip"] for m in a["meta"]]
        assert fa == [m["augment"]["hflip"] for m in b["meta"]]
        flips.update(fa)
    record(f"loader_{'native' if size is None else 'resized'}", batches=len(dev),
           max=max(maxes), mean=sum(means) / len(means), device_loader_s=round(dev_s, 3))
    assert len(cpu) == len(dev) == 4
    assert flips == {True, False}
    assert max(maxes) <= MAX_SUBSAMPLED and sum(means) / len(means) <= MEAN_SUBSAMPLED


# -- (b) a corrupt clip on the device -------------------------------------------------------------

def test_a_truncated_jpeg_is_dropped_and_counted_as_on_the_cpu(tmp_path, caplog):
    from pipeline.loading import loader as L
    from pipeline.loading.augment import AugmentConfig
    from support.lakes import clip_sample, write_shard

    d = tmp_path / "davis2017" / "train"
    h, w = 240, 320  # big enough that the header survives the cut (the worker checks it)
    good = [clip_sample("a", t, h=h, w=w) for t in range(3)]
    bad = clip_sample("b", 0, h=h, w=w)
    data = bad["members"]["01.jpg"]
    bad["members"]["01.jpg"] = data[: len(data) // 2]  # the scan cut in half, no EOI marker
    write_shard(d, 0, good + [bad])
    results = {}
    for device in ("cpu", DEVICE):
        loader = L.make_loader(d, batch_size=4, num_workers=0, epoch_batches=1, rank=0,
                               world_size=1, augment=AugmentConfig(hflip=0.0), shuffle_buffer=0,
                               decode_device=device)
        with logs_warning(caplog, match="corrupt_samples"):
            [batch] = list(loader)
        results[device] = {"keys": batch["key"], "corrupt_samples": loader.stats.corrupt_samples,
                           "frames_device": str(batch["frames"].device),
                           "frames_shape": list(batch["frames"].shape)}
    record("corrupt", cpu=results["cpu"], device=results[DEVICE])
    for r in results.values():
        assert "b/00000" not in r["keys"] and r["corrupt_samples"] == 1, results
    assert results[DEVICE]["keys"] == results["cpu"]["keys"]
    assert results[DEVICE]["frames_device"].startswith(DEVICE)
    assert results[DEVICE]["frames_shape"] == [len(results[DEVICE]["keys"]), 3, 3, h, w]


# -- (c, d) training phases on the device ----------------------------------------------------------

GPU_OPTS = (f"dist.device={DEVICE}", "dist.precision=bf16", "dist.channels_last=true")


def _run_phase(phase: str, lake: Path, run_dir: Path, *extra: str, nproc: int = 1,
               timeout: float = 300) -> dict:
    """A tiny phase for 6 steps with the GPU options and the probe hook; its figures."""
    probe = run_dir.parent / f"{run_dir.name}_probe.json"
    env = child_env(PYTHONPATH=os.pathsep.join([str(REPO), str(HERE)]),
                    STCNN_GPU_PROBE=str(probe))
    t0 = time.perf_counter()
    proc = torchrun(phase, lake, run_dir, *GPU_OPTS, "steps=6", "checkpoint.every=100",
                    "hooks=[gpu_probe_hook:probe]", *extra, nproc=nproc, python_if_one=True,
                    env=env, timeout=timeout)
    wall = time.perf_counter() - t0
    out = {"exit": proc.returncode, "wall_s": round(wall, 1), "nproc": nproc}
    if proc.returncode != 0:
        out["error"] = failure(proc)[-4000:]
        return out
    s = summary(run_dir)
    hist = s["loss_history"]
    losses = {k: v for k, v in hist.items() if k != "steps"}
    out.update(steps=s["steps"], mean_step_s=s["mean_step_s"],
               steps_per_s=1.0 / s["mean_step_s"] if s["mean_step_s"] else None,
               samples_per_s=s["samples_per_s"],
               last_losses={k: v[-1] for k, v in losses.items()},
               losses_finite=all(math.isfinite(x) for v in losses.values() for x in v),
               models=json.loads(probe.read_text()) if probe.exists() else None)
    return out


def _check_models(out: dict, *, compiled: bool = False, sync_bn: tuple[str, ...] = ()) -> None:
    assert out["exit"] == 0, out.get("error")
    assert out["steps"] == 6 and out["losses_finite"], out
    assert out["models"], "the probe hook wrote nothing"
    for name, m in out["models"].items():
        assert m["devices"] and all(dv.startswith(DEVICE) for dv in m["devices"]), (name, m)
        assert m["finite"], (name, m)
        assert m["convs_channels_last"] == m["convs_spatial"], (name, m)  # channels_last
        assert m["compiled"] == compiled, (name, m)
        if name in sync_bn:  # the models the phase converts (G and D in the GAN phase)
            assert m["sync_bn"] > 0, (name, m)


PHASES = {"gan": (), "segmentation": (), "alternating": (),
          # the TCB pretraining preset is flip + resize: its JPEGs can decode on the device
          "gan-device-decode": (f"data.decode_device={DEVICE}",)}


@pytest.mark.parametrize("variant", list(PHASES))
def test_phase_bf16_channels_last(train_lake, tmp_path, variant):
    phase = variant.split("-")[0]
    out = _run_phase(phase, train_lake, tmp_path / variant, *PHASES[variant])
    record(f"phase_{variant}", **out)
    _check_models(out)


if GPUS >= 2:  # one GPU: absent (gpu_check.sh's JSON says "1 GPU: sync_bn not run")
    @pytest.mark.parametrize("phase", ["gan", "alternating"])
    def test_sync_bn_under_torchrun(train_lake, tmp_path, phase):
        out = _run_phase(phase, train_lake, tmp_path / phase, "dist.sync_bn=true", nproc=2)
        record(f"sync_bn_{phase}", **out)
        _check_models(out, sync_bn={"gan": ("G", "D"), "alternating": ("G",)}[phase])


def test_compile_ssb_phase(train_lake, tmp_path):
    out = _run_phase("segmentation", train_lake, tmp_path / "compiled", "dist.compile=true",
                     timeout=420)
    record("compile_segmentation", **out)
    _check_models(out, compiled=True)


# -- (e) preflight ---------------------------------------------------------------------------------

def test_preflight_quick(tmp_path):
    out_json = tmp_path / "preflight.json"
    cmd = [sys.executable, str(REPO / "launch" / "preflight.py"), "--device", DEVICE, "--quick",
           "--out", str(out_json)]
    t0 = time.perf_counter()
    import subprocess

    proc = subprocess.run(cmd, env=child_env(), cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=360)
    wall = time.perf_counter() - t0
    doc = json.loads(out_json.read_text()) if out_json.exists() else None
    record("preflight", exit=proc.returncode, wall_s=round(wall, 1), command=" ".join(cmd[1:]),
           preflight=doc, **({} if proc.returncode == 0 else {"error": failure(proc)[-4000:]}))
    assert proc.returncode == 0, failure(proc)
    assert doc is not None and doc.get("device") == torch.device(DEVICE).type
