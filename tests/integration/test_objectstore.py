"""Shard sets and MLflow artifacts on an S3-compatible store: a local ``moto`` server with fake
credentials (never real ones), on 127.0.0.1 and a free port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from support.mlflow_server import start_server  # noqa: E402
from support.s3 import BUCKET, SECRET, threaded_store  # noqa: E402
from support.s3 import client as _client, keys as _keys  # noqa: E402
from support.logs import logs_warning  # noqa: E402

from pipeline.lake import store as OS  # noqa: E402
from pipeline.loading.loader import iter_samples, make_loader  # noqa: E402
from pipeline.lake.preprocess import PreprocessConfig, run_preprocess  # noqa: E402
from pipeline.lake.listing import shard_sets  # noqa: E402
from pipeline.synthetic import SyntheticSpec, write_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server; AWS_* env vars point at it (fake credentials); bucket ``lake``."""
    with threaded_store(tmp_path_factory.mktemp("aws")) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def local_lake(tmp_path_factory) -> Path:
    """davis2016, synthetic, tiny: 2 sequences -> train/val sets of several 4-sample shards."""
    root = tmp_path_factory.mktemp("lake")
    src = write_dataset("davis2016", root / "src",
                        SyntheticSpec(size=(64, 48), n_sequences=2, n_frames=8, seed=0))
    run_preprocess(PreprocessConfig(dataset="davis2016", src=src, out=root / "shards",
                                    shard_max_count=4, progress=False))
    return root


def _set_dir(lake: Path) -> Path:
    return lake / "shards" / "davis2016" / "train"


def _ident(sample: dict) -> tuple:
    m = sample["meta"]
    return m["shard"].rsplit("/", 1)[1], m["sequence"], m["frame_index"]


def _same_samples(a: list[dict], b: list[dict]) -> None:
    assert [_ident(x) for x in a] == [_ident(x) for x in b]
    for x, y in zip(a, b):
        for name in ("frames", "image", "mask"):
            assert (name in x) == (name in y)
            if name in x:
                assert torch.equal(x[name], y[name]), (_ident(x), name)


# -- URLs -----------------------------------------------------------------------------------------

def test_urls():
    assert OS.is_s3("s3://b/p") and OS.is_s3(Path("s3://b/p")) and not OS.is_s3("shards/x")
    assert OS.normalize(Path("s3://b/p/q")) == "s3://b/p/q"
    assert OS.split_url("s3://b/p/q/") == ("b", "p/q")
    assert OS.split_url("s3://b") == ("b", "")
    with pytest.raises(ValueError, match="no bucket"):
        OS.split_url("s3:///x")


# -- upload, list, read ---------------------------------------------------------------------------

def test_upload_set_follows_the_contract_and_skips_what_is_there(s3, local_lake):
    set_dir = _set_dir(local_lake)
    url = f"s3://{BUCKET}/up/davis2016/train"
    n = len(list(set_dir.glob("*_stats.json")))
    assert n >= 2
    res = OS.upload_set(set_dir, url)
    assert res["shards_uploaded"] == n and res["shards_skipped"] == 0
    keys = _keys(_client(), "up/davis2016/train/")
    local = sorted(p.name for p in set_dir.iterdir() if not p.name.startswith("."))
    assert [k.rsplit("/", 1)[1] for k in keys] == local
    assert OS.list_finished(url) == [f"{url}/{p.name}" for p in sorted(set_dir.glob("0*.tar"))]
    again = OS.upload_set(set_dir, url)
    assert again["shards_skipped"] == n and again["shards_uploaded"] == 0
    assert again["files_uploaded"] == 2  # manifest.json and catalog.parquet


def test_upload_order_stats_last(s3, local_lake, monkeypatch):
    calls: list[str] = []
    fs = OS.filesystem()
    real = fs.put_file

    def spy(lpath, rpath, **kw):
        calls.append(rpath.rsplit("/", 1)[1])
        return real(lpath, rpath, **kw)

    monkeypatch.setattr(fs, "put_file", spy)
    OS.upload_set(_set_dir(local_lake), f"s3://{BUCKET}/order/davis2016/train")
    assert calls[:3] == ["00000.tar", "00000.parquet", "00000_stats.json"]
    assert calls[-2:] == ["manifest.json", "catalog.parquet"]


def test_list_finished_ignores_tars_without_stats(s3, local_lake, caplog):
    set_dir = _set_dir(local_lake)
    url = f"s3://{BUCKET}/partial/davis2016/train"
    client = _client()
    client.upload_file(str(set_dir / "00000.tar"), BUCKET, "partial/davis2016/train/00000.tar")
    client.upload_file(str(set_dir / "00001.tar"), BUCKET, "partial/davis2016/train/00001.tar")
    client.upload_file(str(set_dir / "00001_stats.json"), BUCKET,
                       "partial/davis2016/train/00001_stats.json")
    assert OS.list_finished(url) == [f"{url}/00001.tar"]
    [s] = shard_sets(url)
    assert s.shards == (f"{url}/00001.tar",)
    with logs_warning(caplog, match="unfinished"):
        [loose] = shard_sets([f"{url}/00000.tar", f"{url}/00001.tar"])
    assert loose.shards == (f"{url}/00001.tar",)
    assert OS.list_finished(f"s3://{BUCKET}/nothing/here") == []
    with pytest.raises(FileNotFoundError, match="no finished shard"):
        shard_sets(f"s3://{BUCKET}/nothing/here")


def test_reading_from_s3_equals_reading_the_local_set(s3, local_lake):
    set_dir = _set_dir(local_lake)
    url = f"s3://{BUCKET}/read/davis2016/train"
    OS.upload_set(set_dir, url)
    local = list(iter_samples(set_dir))
    remote = list(iter_samples(url))
    assert len(local) > 0
    _same_samples(local, remote)
    # the DDP loader: same shard split by rank, same draws -> same batches
    kw = dict(batch_size=2, num_workers=0, epoch_batches=3, rank=0, world_size=2, seed=3,
              augment="offline")
    for a, b in zip(make_loader(set_dir, **kw), make_loader(url, **kw)):
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["mask"], b["mask"])


def test_loader_workers_read_s3(s3, local_lake):
    set_dir = _set_dir(local_lake)
    url = f"s3://{BUCKET}/workers/davis2016/train"
    OS.upload_set(set_dir, url)
    loader = make_loader(url, batch_size=2, num_workers=2, epoch_batches=4, rank=0,
                         world_size=1, multiprocessing_context="fork")
    batches = list(loader)
    assert len(batches) == 4 and batches[0]["frames"].shape[0] == 2


def test_a_missing_shard_object_is_counted_not_fatal(s3, local_lake, caplog):
    from pipeline.loading.readstats import ReadStats
    from pipeline.loading.tarsamples import read_tar

    stats = ReadStats()
    with logs_warning(caplog):
        assert list(read_tar(f"s3://{BUCKET}/no/such/00000.tar", stats)) == []
    assert stats.as_dict()["truncated_shards"] == 1


def _read(url: str):
    from pipeline.loading.readstats import ReadStats
    from pipeline.loading.tarsamples import read_tar

    stats = ReadStats()
    samples = [{k: v for k, v in raw.items() if k != "__url__"} for raw in read_tar(url, stats)]
    counts = {k: v for k, v in stats.as_dict().items() if isinstance(v, int)}
    return samples, counts


def test_s3_shards_are_streamed_without_a_temporary_file(s3, local_lake, monkeypatch):
    import tempfile

    set_dir = _set_dir(local_lake)
    url = f"s3://{BUCKET}/stream/davis2016/train"
    OS.upload_set(set_dir, url)

    def refuse(*a, **k):
        raise AssertionError("a temporary file was made while reading a shard from S3")

    for name in ("TemporaryFile", "NamedTemporaryFile", "SpooledTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    _same_samples(list(iter_samples(set_dir)), list(iter_samples(url)))


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damaged_s3_objects_are_counted_skips_like_local_files(s3, local_lake, tmp_path, damage,
                                                               caplog):
    """A shard object cut mid-member, or with a garbled member header: the samples before the
    damage come through, the rest of the shard is one counted skip, exactly as from a local
    file holding the same bytes."""
    data = (_set_dir(local_lake) / "00000.tar").read_bytes()
    if damage == "truncated":
        bad = data[: len(data) // 2]
    else:  # the third member's header: its name bytes garbled, the checksum no longer matches
        bad = bytearray(data)
        offset = 0
        for _ in range(2):
            size = int(bytes(bad[offset + 124:offset + 136]).rstrip(b"\0 ") or b"0", 8)
            offset += 512 + (size + 511) // 512 * 512
        bad[offset:offset + 8] = b"XXXXXXXX"
        bad = bytes(bad)
    local = tmp_path / "00000.tar"
    local.write_bytes(bad)
    key = f"damaged-{damage}/00000.tar"
    _client().put_object(Bucket=BUCKET, Key=key, Body=bad)
    with logs_warning(caplog):
        remote_samples, remote_counts = _read(f"s3://{BUCKET}/{key}")
    with logs_warning(caplog):
        local_samples, local_counts = _read(str(local))
    assert remote_samples == local_samples and remote_counts == local_counts
    assert remote_counts["truncated_shards"] == 1
    whole, _ = _read(str(_set_dir(local_lake) / "00000.tar"))
    assert 0 < len(remote_samples) < len(whole) or damage == "corrupt"


def _streaming_peak(tmp_path: Path, members: int) -> int:
    """Peak Python allocation while streaming an ``s3://`` shard of ``members`` 4 MiB members."""
    import io
    import tarfile

    tar_path = tmp_path / f"big{members}.tar"
    rng = np.random.default_rng(0)
    with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(members):
            blob = rng.integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()
            info = tarfile.TarInfo(f"seq/{i:05d}.00.jpg")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    key = f"big/{members}/00000.tar"
    _client().upload_file(str(tar_path), BUCKET, key)
    # read in a child process: the moto server runs in this one, and its own copies of the
    # object would count here
    # (botocore's service model, loaded by the first call, is set-up, not streaming)
    code = ("import tracemalloc; from pipeline.loading.tarsamples import read_tar; "
            "from pipeline.lake.store import filesystem; "
            f"filesystem().info('{BUCKET}/{key}'); tracemalloc.start(); "
            f"n = sum(1 for _ in read_tar('s3://{BUCKET}/{key}')); "
            "print(n, tracemalloc.get_traced_memory()[1])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    n, peak = map(int, r.stdout.split())
    assert n == members
    return peak


def test_streaming_memory_does_not_grow_with_the_object(s3, tmp_path):
    """Objects of 16 and 96 MiB (4 MiB members) streamed: the reader's peak Python allocation
    is the same (a few members and the read-ahead block), far below the larger object."""
    small, large = _streaming_peak(tmp_path, 4), _streaming_peak(tmp_path, 24)
    print(f"streaming peak: {small / 2**20:.1f} MiB (16 MiB object), {large / 2**20:.1f} MiB (96 MiB)")
    assert large < 1.25 * small + (1 << 20), (small, large)
    assert large < 48 << 20, f"peak {large / 2**20:.0f} MiB while streaming a 96 MiB object"


# -- writing through launch/preprocess.py ---------------------------------------------------------

def test_preprocess_cli_to_s3_then_read_back(s3, local_lake, tmp_path):
    src = local_lake / "src"
    out = f"s3://{BUCKET}/cli"
    staging = tmp_path / "staging"
    cmd = [sys.executable, str(REPO / "launch" / "preprocess.py"), "davis2016", "--src", str(src),
           "--out", out, "--staging", str(staging), "--shard-max-count", "4", "--split", "train",
           "val", "--no-progress",
           "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert r.returncode == 0, r.stderr + r.stdout
    summaries = [json.loads(line) for line in r.stdout.splitlines()]
    assert {s["split"] for s in summaries} == {"train", "val"}
    for s in summaries:
        assert s["dir"] == f"{out}/davis2016/{s['split']}"
        assert s["upload"]["shards_uploaded"] == s["shards_total"]
        assert s["catalog"] == f"{out}/davis2016/{s['split']}/catalog.parquet"
    # no secret in what the job prints, nor in what it wrote
    assert SECRET not in r.stdout + r.stderr
    for f in staging.rglob("*"):
        assert not f.is_file() or SECRET.encode() not in f.read_bytes(), f
    keys = _keys(_client(), "cli/davis2016/train/")
    assert "cli/davis2016/train/manifest.json" in keys
    _same_samples(list(iter_samples(_set_dir(local_lake))),
                  list(iter_samples(f"{out}/davis2016/train")))
    # a re-run with the same staging folder: nothing rebuilt, nothing re-uploaded
    r2 = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert r2.returncode == 0, r2.stderr
    for s in map(json.loads, r2.stdout.splitlines()):
        assert s["shards_written"] == 0
        assert s["upload"]["shards_uploaded"] == 0
        assert s["upload"]["shards_skipped"] == s["shards_total"]


@pytest.mark.slow  # > 5 s on 2 cores: keeps -m "not slow" under 3 min
def test_catalog_cli_summarises_and_validates_an_s3_lake(s3, local_lake):
    url = f"s3://{BUCKET}/catalog-cli"
    OS.upload_set(_set_dir(local_lake), f"{url}/davis2016/train")
    cli = [sys.executable, str(REPO / "launch" / "catalog.py")]
    local = subprocess.run([*cli, str(_set_dir(local_lake)), "--json"], capture_output=True,
                           text=True, timeout=120)
    remote = subprocess.run([*cli, url, "--json"], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ))
    assert remote.returncode == 0, remote.stderr
    assert json.loads(remote.stdout) == json.loads(local.stdout)      # same summary rows
    ok = subprocess.run([*cli, url, "--validate"], capture_output=True, text=True, timeout=120,
                        env=dict(os.environ))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"OK {url}/davis2016/train:" in ok.stdout
    # a shard object replaced by garbage: the validation fails, naming the object's URL
    client = _client()
    client.put_object(Bucket=BUCKET, Key="catalog-cli/davis2016/train/00000.tar", Body=b"junk")
    bad = subprocess.run([*cli, url, "--validate"], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ))
    assert bad.returncode == 1 and f"FAILED {url}/davis2016/train" in bad.stdout
    assert f"{url}/davis2016/train/00000.tar" in bad.stdout, bad.stdout
    assert "stcnn-catalog-" not in bad.stdout                          # no temporary paths
    empty = subprocess.run([*cli, f"s3://{BUCKET}/nothing-here"], capture_output=True, text=True,
                           timeout=120, env=dict(os.environ))
    assert empty.returncode == 2 and "no objects there" in empty.stderr
    rebuild = subprocess.run([*cli, url, "--rebuild"], capture_output=True, text=True,
                             timeout=120, env=dict(os.environ))
    assert rebuild.returncode == 2 and "works on a local lake" in rebuild.stderr


@pytest.mark.slow  # > 5 s: keeps `-m "not slow"` under 3 min
@pytest.mark.ffcv
def test_ffcv_store_from_an_s3_lake_equals_one_from_the_local_lake(s3, tmp_path):
    pytest.importorskip("ffcv")
    from pipeline.loading.ffcv.format import load_sidecar

    src = write_dataset("msra10k", tmp_path / "src", SyntheticSpec(size=(64, 48), n_images=6,
                                                                  seed=3))
    lake = tmp_path / "lake"
    run_preprocess(PreprocessConfig(dataset="msra10k", src=src, out=lake, shard_max_count=4,
                                    progress=False))
    url = f"s3://{BUCKET}/ffcv-lake"
    OS.upload_set(lake / "msra10k" / "train", f"{url}/msra10k/train")
    cli = [sys.executable, str(REPO / "launch" / "ffcv_store.py"), "--sets", "msra10k/train"]
    local = subprocess.run([*cli, "--lake", str(lake), "--out", str(tmp_path / "local.beton")],
                           capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert local.returncode == 0, local.stderr[-3000:]
    remote = subprocess.run([*cli, "--lake", url, "--out", str(tmp_path / "s3.beton"),
                             "--staging", str(tmp_path / "staging")],
                            capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert remote.returncode == 0, remote.stderr[-3000:]
    assert json.loads(remote.stdout)["samples"] == json.loads(local.stdout)["samples"] == 6
    assert (tmp_path / "s3.beton").read_bytes() == (tmp_path / "local.beton").read_bytes()
    assert load_sidecar(tmp_path / "s3.beton")["summary"]["samples"] == 6
    missing = subprocess.run([*cli, "--lake", f"s3://{BUCKET}/nope", "--out",
                              str(tmp_path / "x.beton")], capture_output=True, text=True,
                             timeout=300, env=dict(os.environ))
    assert missing.returncode == 2 and "no objects there" in missing.stderr


def test_run_preprocess_with_a_temporary_staging_folder(s3, local_lake):
    out = f"s3://{BUCKET}/api"
    [train, val] = sorted(run_preprocess(PreprocessConfig(
        dataset="davis2016", src=local_lake / "src", out=Path(out), shard_max_count=4,
        splits=["train", "val"], progress=False)), key=lambda s: s["split"])
    assert train["staging_dir"] is None and train["dir"] == f"{out}/davis2016/train"
    assert len(OS.list_finished(train["dir"])) == train["shards_total"]


# -- errors ---------------------------------------------------------------------------------------

def test_missing_bucket_is_named_with_the_fix(s3, local_lake):
    with pytest.raises(OS.ObjectStoreError, match=r"s3://no-such-bucket/x.*does not exist.*mb"):
        OS.list_finished("s3://no-such-bucket/x")
    with pytest.raises(OS.ObjectStoreError, match="no-such-bucket"):
        OS.upload_set(_set_dir(local_lake), "s3://no-such-bucket/x")
    with pytest.raises(OS.ObjectStoreError, match="no-such-bucket"):
        run_preprocess(PreprocessConfig(dataset="davis2016", src=local_lake / "src",
                                        out="s3://no-such-bucket/x", progress=False))


def test_missing_credentials_are_named_with_the_fix(s3, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    fix = r"s3://lake/x.*AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY.*AWS_ENDPOINT_URL"
    with pytest.raises(OS.ObjectStoreError, match=fix):
        OS.list_finished(f"s3://{BUCKET}/x")
    with pytest.raises(OS.ObjectStoreError, match="AWS_ACCESS_KEY_ID"):
        make_loader(f"s3://{BUCKET}/x", batch_size=1, num_workers=0)


def test_cli_error_for_a_missing_bucket(s3, local_lake):
    r = subprocess.run([sys.executable, str(REPO / "launch" / "preprocess.py"), "davis2016",
                        "--src", str(local_lake / "src"), "--out", "s3://no-such-bucket/p"],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert r.returncode == 2
    assert "no-such-bucket" in r.stderr and "does not exist" in r.stderr
    assert SECRET not in r.stdout + r.stderr  # the (fake) secret is never printed


def test_stcnn_endpoint_variable(s3, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv(OS.ENDPOINT_ENV, s3)
    assert OS.endpoint_url() == s3
    _client().put_object(Bucket=BUCKET, Key="endpoint/probe.txt", Body=b"via STCNN_S3_ENDPOINT_URL")
    assert OS.read_bytes(f"s3://{BUCKET}/endpoint/probe.txt") == b"via STCNN_S3_ENDPOINT_URL"


# -- MLflow artifacts on the same store -----------------------------------------------------------

@pytest.fixture(scope="module")
def mlflow_s3(s3, tmp_path_factory):
    """``mlflow server`` whose artifact destination is s3://mlflow-artifacts/ on the moto store."""
    _client().create_bucket(Bucket="mlflow-artifacts")
    root = tmp_path_factory.mktemp("mlflow_s3")
    env = dict(os.environ, MLFLOW_S3_ENDPOINT_URL=s3)
    for server in start_server(root, "s3://mlflow-artifacts/", env):
        yield server.uri


@pytest.mark.slow  # an mlflow server start + stop: ~30 s
def test_mlflow_artifacts_and_models_land_on_s3(mlflow_s3, tmp_path):
    from pipeline.tracking import Tracker, TrackingConfig, resolve_init

    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "state.txt").write_text("step 4\n")
    state = {"w": torch.arange(6, dtype=torch.float32)}
    torch.save(state, tmp_path / "final.pt")
    cfg = TrackingConfig(tracking_uri=mlflow_s3, system_metrics=False)
    with Tracker(cfg, phase="pretrain_tcb", run_dir=tmp_path / "run") as tr:
        tr.start({"seed": 0})
        tr.log_artifact(tmp_path / "ckpt", "extra")
        model_uri = tr.log_model(tmp_path / "final.pt")
        run_id = tr.run_id
    assert model_uri and model_uri.startswith("models:/")
    keys = _keys(_client(), "", bucket="mlflow-artifacts")
    assert any(k.endswith(f"{run_id}/artifacts/extra/state.txt") for k in keys), keys
    assert any(k.endswith("weights.pt") for k in keys), keys
    got = resolve_init(f"runs:/{run_id}/extra/state.txt", tmp_path / "dl",
                       tracking_uri=mlflow_s3)
    assert got.read_text() == "step 4\n"
    weights = resolve_init(model_uri, tmp_path / "dl2", tracking_uri=mlflow_s3)
    assert torch.equal(torch.load(weights, weights_only=True)["w"], state["w"])
    # neither the run's params and tags nor any of its artifacts hold the secret
    client = __import__("mlflow").MlflowClient(mlflow_s3)
    data = client.get_run(run_id).data
    assert SECRET not in json.dumps(data.params) + json.dumps(data.tags)
    local = Path(client.download_artifacts(run_id, "", str(tmp_path / "all_artifacts")))
    files = [f for f in local.rglob("*") if f.is_file()]
    assert files and not [f for f in files if SECRET.encode() in f.read_bytes()]


def test_training_data_config_takes_an_s3_lake(s3, local_lake):
    from pipeline.train.config import DataConfig
    from pipeline.train.data import set_dirs

    OS.upload_set(_set_dir(local_lake), f"s3://{BUCKET}/cfg/davis2016/train")
    cfg = DataConfig(lake=f"s3://{BUCKET}/cfg", sets=["davis2016/train"])
    assert set_dirs(cfg) == [f"s3://{BUCKET}/cfg/davis2016/train"]
    assert len(shard_sets(set_dirs(cfg))[0].shards) == len(list(_set_dir(local_lake).glob("*.tar")))
