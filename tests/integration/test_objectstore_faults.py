"""The object store's failure paths on local ``moto`` servers (fake credentials only): a changed
shard re-uploaded, multipart objects compared by their ETag, an unreachable endpoint, refused
credentials, and the server killed while a shard is being streamed."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from support import closed_port
from support.s3 import BUCKET, FAKE_ENV, SECRET, client, keys, start_moto_process, threaded_store

from pipeline.lake import store as OS
from pipeline.lake.preprocess import PreprocessConfig, run_preprocess
from pipeline.synthetic import SyntheticSpec, write_dataset

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with threaded_store(tmp_path_factory.mktemp("aws")) as endpoint:
        yield endpoint


def _lake(root: Path, seed: int) -> Path:
    """A staged davis2016/train set of several 4-sample shards, its pixels drawn from ``seed``."""
    src = write_dataset("davis2016", root / "src", SyntheticSpec(size=(64, 48), n_sequences=2,
                                                                 n_frames=8, seed=seed))
    run_preprocess(PreprocessConfig(dataset="davis2016", src=src, out=root / "shards",
                                    shard_max_count=4, splits=["train"], progress=False))
    return root / "shards" / "davis2016" / "train"


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory) -> tuple[Path, Path]:
    """The same set built twice from sources of other pixels: same shard names, other bytes."""
    return (_lake(tmp_path_factory.mktemp("build_a"), 0),
            _lake(tmp_path_factory.mktemp("build_b"), 1))


# -- a changed shard re-uploaded ------------------------------------------------------------------

def test_changed_shard_reupload_removes_stats_first_then_tar_parquet_stats(s3, two_builds,
                                                                           monkeypatch):
    old, new = two_builds
    assert (old / "00000.tar").read_bytes() != (new / "00000.tar").read_bytes()
    url = f"s3://{BUCKET}/changed/davis2016/train"
    prefix = "changed/davis2016/train/"
    OS.upload_set(old, url)
    c = client()
    fs = OS.filesystem()
    calls: list[tuple[str, str]] = []
    seen_while_sending: list[tuple[str, bool]] = []
    real_put, real_rm = fs.put_file, fs.rm_file

    def put(lpath, rpath, **kw):
        name = rpath.rsplit("/", 1)[1]
        calls.append(("put", name))
        if name.endswith(".tar"):  # what a reader sees while the new tar is on its way
            stats = name[:-4] + "_stats.json"
            seen_while_sending.append((name, prefix + stats in keys(c, prefix)))
        return real_put(lpath, rpath, **kw)

    def rm(path, **kw):
        calls.append(("rm", path.rsplit("/", 1)[1]))
        return real_rm(path, **kw)

    monkeypatch.setattr(fs, "put_file", put)
    monkeypatch.setattr(fs, "rm_file", rm)
    res = OS.upload_set(new, url)
    monkeypatch.undo()

    shards = sorted(p.name[:-4] for p in new.glob("0*.tar"))
    assert res["shards_uploaded"] == len(shards) >= 2 and res["shards_skipped"] == 0
    expected = [step for s in shards for step in (
        ("rm", f"{s}_stats.json"), ("put", f"{s}.tar"), ("put", f"{s}.parquet"),
        ("put", f"{s}_stats.json"))] + [("put", "manifest.json"), ("put", "catalog.parquet")]
    assert calls == expected
    # no reader could see a finished shard while its tar was being replaced
    assert seen_while_sending == [(f"{s}.tar", False) for s in shards]
    # the store holds the new build's bytes, object for object
    local = sorted(p.name for p in new.iterdir() if p.is_file() and not p.name.startswith("."))
    assert [k[len(prefix):] for k in keys(c, prefix)] == local
    for name in local:
        body = c.get_object(Bucket=BUCKET, Key=prefix + name)["Body"].read()
        assert body == (new / name).read_bytes(), name
    assert OS.list_finished(url) == [f"{url}/{s}.tar" for s in shards]


# -- multipart objects compared by their ETag -----------------------------------------------------

def _big_set(root: Path, seed: int) -> Path:
    """A set folder of one shard tar of 3 members of 4 MiB (12 MiB + headers) and its stats."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    with tarfile.open(root / "00000.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(3):
            blob = rng.integers(0, 256, 4 * MIB, dtype=np.uint8).tobytes()
            info = tarfile.TarInfo(f"seq/{i:05d}.00.jpg")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    (root / "00000_stats.json").write_text(json.dumps({"samples": 3}))
    return root


def test_multipart_shard_identical_rerun_skips_changed_one_reuploads(s3, tmp_path, monkeypatch):
    from boto3.s3.transfer import TransferConfig

    monkeypatch.setattr(OS, "UPLOAD_PART_SIZE", 5 * MIB)  # S3's smallest part
    a = _big_set(tmp_path / "a", 0)
    tar = a / "00000.tar"
    size = tar.stat().st_size
    assert 10 * MIB < size < 15 * MIB  # 3 parts of 5 MiB at most
    c = client()

    url = f"s3://{BUCKET}/multipart/ours"
    first = OS.upload_set(a, url)
    assert first["shards_uploaded"] == 1
    assert c.head_object(Bucket=BUCKET, Key="multipart/ours/00000.tar")["ETag"].endswith('-3"')
    again = OS.upload_set(a, url)
    assert again["shards_uploaded"] == 0 and again["shards_skipped"] == 1

    # the same bytes put in parts by another client (boto3, 5 and 8 MiB parts), without the
    # md5 metadata of ours: the multipart ETag alone shows they are the same
    for part in (5, 8):
        key = f"multipart/boto3-{part}/00000.tar"
        c.upload_file(str(tar), BUCKET, key, Config=TransferConfig(
            multipart_threshold=5 * MIB, multipart_chunksize=part * MIB))
        c.upload_file(str(a / "00000_stats.json"), BUCKET, key[:-4] + "_stats.json")
        head = c.head_object(Bucket=BUCKET, Key=key)
        assert head["ETag"].endswith(f'-{-(-size // (part * MIB))}"') and not head["Metadata"]
        res = OS.upload_set(a, f"s3://{BUCKET}/multipart/boto3-{part}")
        assert res["shards_skipped"] == 1 and res["shards_uploaded"] == 0, part

    # one byte changed, same size: re-uploaded, and the store holds the new bytes
    b = tmp_path / "b"
    shutil.copytree(a, b)
    data = bytearray((b / "00000.tar").read_bytes())
    data[9 * MIB] ^= 0xFF
    (b / "00000.tar").write_bytes(bytes(data))
    for where in ("ours", "boto3-5", "boto3-8"):
        res = OS.upload_set(b, f"s3://{BUCKET}/multipart/{where}")
        assert res["shards_uploaded"] == 1 and res["shards_skipped"] == 0, where
        body = c.get_object(Bucket=BUCKET, Key=f"multipart/{where}/00000.tar")["Body"].read()
        assert body == bytes(data), where


# -- unreachable endpoint, refused credentials: the CLIs' one-line errors -------------------------

CLI_BOUND_S = 45  # botocore's 5 attempts back off up to 15 s in all; the rest is start-up


@pytest.fixture(scope="module")
def src_dataset(tmp_path_factory) -> Path:
    return write_dataset("davis2016", tmp_path_factory.mktemp("src") / "src",
                         SyntheticSpec(size=(64, 48), n_sequences=1, n_frames=6, seed=0))


@pytest.fixture(scope="module")
def refusing_store(tmp_path_factory):
    """A moto server that checks credentials (``INITIAL_NO_AUTH_ACTION_COUNT=0``): ours, unknown
    to it, are refused."""
    proc, endpoint = start_moto_process(tmp_path_factory.mktemp("moto") / "moto.log",
                                        INITIAL_NO_AUTH_ACTION_COUNT="0")
    try:
        yield endpoint
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _store_env(endpoint: str, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STCNN_S3_"))}
    return {**env, **FAKE_ENV, "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(tmp / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "none")}


@pytest.mark.slow  # a CLI start and botocore's retries: 5 to 20 s each
@pytest.mark.parametrize("cli", ["preprocess", "catalog"])
@pytest.mark.parametrize("fault", ["unreachable", "refused"])
def test_cli_one_line_error_for_an_unreachable_or_refusing_store(fault, cli, request, tmp_path,
                                                                 src_dataset):
    if fault == "unreachable":
        endpoint = f"http://127.0.0.1:{closed_port()}"  # nothing listens there
        expect = [f"cannot reach the S3 endpoint {endpoint}", "Fix: start the store or correct "
                  "AWS_ENDPOINT_URL"]
    else:
        endpoint = request.getfixturevalue("refusing_store")
        expect = [f"access refused at endpoint {endpoint} (InvalidAccessKeyId)",
                  f"Fix: check the credentials and their rights on bucket '{BUCKET}'"]
    out = f"s3://{BUCKET}/faulty"
    staging = tmp_path / "staging"
    args = (["preprocess.py", "davis2016", "--src", str(src_dataset), "--out", out,
             "--staging", str(staging), "--no-progress"] if cli == "preprocess"
            else ["catalog.py", out])
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, str(REPO / "launch" / args[0]), *args[1:]],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env=_store_env(endpoint, tmp_path))
    took = time.monotonic() - t0
    print(f"{fault} {cli}: exit {r.returncode} after {took:.1f} s")
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"stcnn-{cli}: error: "), r.stderr
    assert out in lines[0] and all(e in lines[0] for e in expect), lines[0]
    assert "Traceback" not in r.stderr and SECRET not in r.stdout + r.stderr
    assert took < CLI_BOUND_S, f"{took:.0f} s to report an {fault} store"
    assert not list(staging.glob("**/*.tar"))  # the store is checked before any shard is built


# -- the server killed while a shard is streamed --------------------------------------------------

READER = r"""
import json, sys
from pipeline.lake.store import ObjectStoreError, list_finished
from pipeline.loading.readstats import ReadStats
from pipeline.loading.tarsamples import read_tar

stats, n, error = ReadStats(), 0, None
try:
    for shard in list_finished(sys.argv[1]):
        for raw in read_tar(shard, stats):
            n += 1
            if n == 1:  # the first sample is in: the parent kills the server, then says go
                print("first", flush=True)
                sys.stdin.readline()
except ObjectStoreError as e:
    error = str(e)
print(json.dumps({"samples": n, "error": error,
                  "counts": {k: v for k, v in stats.as_dict().items() if isinstance(v, int)}}))
"""
KILL_BOUND_S = 90   # the reader must be done this long after the kill (botocore's retries)
KILL_TIMEOUT_S = 240


@pytest.mark.slow  # a moto process, 3 shards of 24 MiB, botocore's retries: ~30 s
def test_server_killed_mid_shard_reader_counts_the_shard_and_ends(tmp_path):
    proc, endpoint = start_moto_process(tmp_path / "moto.log")
    try:
        c = client(endpoint)
        c.create_bucket(Bucket=BUCKET)
        rng = np.random.default_rng(0)
        for s in range(3):  # 24 MiB each: read in 8 MiB blocks, so 3 ranged GETs per shard
            tar_path = tmp_path / f"{s:05d}.tar"
            with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tar:
                for i in range(6):
                    blob = rng.integers(0, 256, 4 * MIB, dtype=np.uint8).tobytes()
                    info = tarfile.TarInfo(f"seq{s}/{i:05d}.00.jpg")
                    info.size = len(blob)
                    tar.addfile(info, io.BytesIO(blob))
            c.upload_file(str(tar_path), BUCKET, f"killed/{s:05d}.tar")
            c.put_object(Bucket=BUCKET, Key=f"killed/{s:05d}_stats.json", Body=b"{}")
        reader = subprocess.Popen([sys.executable, "-c", READER, f"s3://{BUCKET}/killed"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  env=_store_env(endpoint, tmp_path))
        try:
            assert reader.stdout.readline().strip() == "first", reader.stderr.read()
            proc.kill()
            proc.wait(timeout=30)
            t0 = time.monotonic()
            reader.stdin.write("go\n")
            reader.stdin.flush()
            out, err = reader.communicate(timeout=KILL_TIMEOUT_S)
            took = time.monotonic() - t0
        finally:
            if reader.poll() is None:
                reader.kill()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    print(f"reader ended {took:.1f} s after the kill: {out.strip()}")
    assert reader.returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert took < KILL_BOUND_S, f"the reader took {took:.0f} s to end after the server died"
    # the shard being read when the server died: its first sample came through, the rest of it
    # is one counted skip
    assert result["counts"]["truncated_shards"] >= 1, result
    assert 1 <= result["samples"] < 6, result
    # the next shard cannot be opened: a clean error naming the endpoint and the fix, or
    # counted as well; never more samples than were read before the kill
    if result["error"] is not None:
        assert f"cannot reach the S3 endpoint {endpoint}" in result["error"], result
        assert "Fix:" in result["error"]
    else:
        assert result["counts"]["truncated_shards"] == 3, result
