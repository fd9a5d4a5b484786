"""Preprocessing: source layout -> shards, byte-exact, resumable, splittable across tasks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.lake.catalog import read_catalog, summarize, validate_set
from pipeline.lake.plan import clip_indices
from pipeline.lake.preprocess import PreprocessConfig, resolve_task, run_preprocess
from pipeline.lake.writer import ShardPlanMismatch
from pipeline.sources.types import SourceError
from pipeline.synthetic import SyntheticSpec, write_dataset
from support.lakes import PREPROCESS, lake_files

REPO = Path(__file__).resolve().parents[2]


def tar_members(tar_path: Path) -> dict[str, bytes]:
    with tarfile.open(tar_path) as t:
        return {m.name: t.extractfile(m).read() for m in t}


@pytest.fixture(scope="module")
def synth_davis(tmp_path_factory) -> Path:
    return write_dataset("davis2017", tmp_path_factory.mktemp("src"),
                         SyntheticSpec(n_sequences=2, n_frames=10, seed=1))


def run(dataset, src, out, *args, env=None, check=True):
    r = subprocess.run([*PREPROCESS, dataset, "--src", str(src), "--out", str(out), *args],
                       capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr + r.stdout
    return r


# -- the real DAVIS sequences ---------------------------------------------------------------------

def test_real_davis_shards_are_byte_identical_to_the_sources(real_davis, tmp_path):
    run("davis2016", real_davis, tmp_path, "--shard-max-count", "20", "--workers", "2",
        "--split", "train", "val")
    for split, seq, n_frames in [("train", "surf", 55), ("val", "blackswan", 50)]:
        set_dir = tmp_path / "davis2016" / split
        members = {}
        for t in sorted(set_dir.glob("*.tar")):
            members.update(tar_members(t))
        keys = sorted({n.split(".")[0] for n in members})
        assert keys == [f"{seq}/{t:05d}" for t in range(n_frames)]  # one clip per frame
        frames = sorted((real_davis / "JPEGImages/480p" / seq).glob("*.jpg"))
        masks = sorted((real_davis / "Annotations/480p" / seq).glob("*.png"))
        for t in range(n_frames):
            key = f"{seq}/{t:05d}"
            meta = json.loads(members[f"{key}.json"])
            ids = clip_indices(t, 4)
            assert meta["frame_ids"] == [f"{i:05d}" for i in ids]
            assert meta["frame_index"] == t and meta["mask_format"] == "binary"
            for j, i in enumerate(ids):
                assert members[f"{key}.{j:02d}.jpg"] == frames[i].read_bytes()
            assert members[f"{key}.mask.png"] == masks[t].read_bytes()
        cat = pq.read_table(set_dir / "catalog.parquet").to_pylist()
        assert len(cat) == n_frames
        assert {"key", "shard", "dataset", "split", "sequence", "frame_ids", "height", "width",
                "n_objects", "bytes"} <= set(cat[0])
        assert (cat[0]["width"], cat[0]["height"]) == (854, 480)
    surf = {r["key"]: r for r in read_catalog(tmp_path / "davis2016" / "train").to_pylist()}
    assert surf["surf/00054"]["empty_mask"] and surf["surf/00054"]["n_objects"] == 0


def test_shards_read_by_plain_webdataset_and_tar(synth_davis, tmp_path):
    import webdataset as wds

    run("davis2017", synth_davis, tmp_path, "--shard-max-count", "7")
    set_dir = tmp_path / "davis2017" / "train"
    urls = [str(p) for p in sorted(set_dir.glob("*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False, nodesplitter=wds.split_by_node))
    assert len(samples) == pq.read_metadata(set_dir / "catalog.parquet").num_rows
    s = samples[0]
    assert {"00.jpg", "01.jpg", "02.jpg", "03.jpg", "04.jpg", "mask.png", "json"} <= set(s)
    assert json.loads(s["json"])["sequence"] == s["__key__"].rsplit("/", 1)[0]
    listing = subprocess.run(["tar", "tf", urls[0]], capture_output=True, text=True, check=True)
    assert listing.stdout.splitlines()[0].endswith(".00.jpg")


def test_rerun_skips_finished_shards_and_is_byte_identical(synth_davis, tmp_path):
    run("davis2017", synth_davis, tmp_path / "a", "--shard-max-count", "5")
    before = lake_files(tmp_path / "a")
    r = run("davis2017", synth_davis, tmp_path / "a", "--shard-max-count", "5", "--json")
    summaries = [json.loads(line) for line in r.stdout.splitlines()]
    assert all(s["shards_written"] == 0 and s["shards_already_finished"] == s["shards_total"]
               for s in summaries)
    assert lake_files(tmp_path / "a") == before
    run("davis2017", synth_davis, tmp_path / "b", "--shard-max-count", "5", "--workers", "2")
    assert lake_files(tmp_path / "b") == before


def test_other_settings_on_a_finished_lake_are_refused(synth_davis, tmp_path):
    run_preprocess(PreprocessConfig("davis2017", synth_davis, tmp_path, shard_max_count=5, progress=False))
    with pytest.raises(ShardPlanMismatch, match="new --out folder"):
        run_preprocess(PreprocessConfig("davis2017", synth_davis, tmp_path, shard_max_count=5,
                                        delta=2, progress=False))


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_uninterrupted_result(synth_davis, tmp_path):
    args = ["--shard-max-count", "3", "--no-progress"]
    run("davis2017", synth_davis, tmp_path / "ref", *args)
    env = dict(os.environ, STCNN_PREPROCESS_THROTTLE="0.01")
    out = tmp_path / "killed"
    proc = subprocess.Popen([*PREPROCESS, "davis2017", "--src", str(synth_davis), "--out", str(out),
                             *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (len(list(out.rglob("*_stats.json"))) >= 2
                                          and list(out.rglob(".*.tar.*.tmp"))):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_ref = len(list((tmp_path / "ref").rglob("*_stats.json")))
    assert 2 <= len(list(out.rglob("*_stats.json"))) < n_ref, "the kill came too late to test resume"
    assert list(out.rglob("*.tmp")), "expected the killed run to leave a temp file mid-shard"
    done_at_kill = {p.relative_to(out) for p in out.rglob("*_stats.json")}
    r = run("davis2017", synth_davis, out, *args, "--json")
    assert not list(out.rglob("*.tmp"))
    assert lake_files(out) == lake_files(tmp_path / "ref")
    # the re-run resumed: it skipped exactly the shards finished at the kill, wrote the rest
    summaries = [json.loads(line) for line in r.stdout.splitlines()]
    assert sum(s["shards_already_finished"] for s in summaries) == len(done_at_kill)
    assert sum(s["shards_written"] for s in summaries) == n_ref - len(done_at_kill)


def array_env(task_id: int, *ids: int) -> dict[str, str]:
    """The variables SLURM sets in task ``task_id`` of an array job of the task ids ``ids``."""
    return {"SLURM_ARRAY_TASK_ID": str(task_id), "SLURM_ARRAY_TASK_COUNT": str(len(ids)),
            "SLURM_ARRAY_TASK_MIN": str(min(ids)), "SLURM_ARRAY_TASK_MAX": str(max(ids))}


def test_two_array_tasks_produce_the_samples_of_one(synth_davis, tmp_path):
    args = ["--shard-max-count", "4"]
    r0 = run("davis2017", synth_davis, tmp_path / "split", *args, "--task-index", "0",
             "--num-tasks", "2", "--json")
    first = [json.loads(line) for line in r0.stdout.splitlines()]
    assert all(s["catalog"] is None and s["shards_unfinished"] > 0 for s in first)
    env = dict(os.environ, **array_env(1, 0, 1))
    r1 = run("davis2017", synth_davis, tmp_path / "split", *args, "--json", env=env)
    assert all(json.loads(line)["catalog"] for line in r1.stdout.splitlines())
    run("davis2017", synth_davis, tmp_path / "one", *args)
    assert lake_files(tmp_path / "split") == lake_files(tmp_path / "one")


def test_task_outside_slurm_is_0_of_1_unless_given():
    assert resolve_task(None, None, {}) == (0, 1)
    assert resolve_task(1, 3, {}) == (1, 3)
    with pytest.raises(ValueError, match=r"--task-index 2 is not in \[0, 2\).*--task-index 0\.\.1"):
        resolve_task(2, 2, {})
    with pytest.raises(ValueError, match="--num-tasks must be >= 1"):
        resolve_task(0, 0, {})


def test_task_of_a_whole_array_is_its_id_of_the_array_size():
    assert resolve_task(None, None, array_env(5, *range(8))) == (5, 8)
    assert resolve_task(None, None, array_env(0, 0)) == (0, 1)


def test_task_of_a_partial_array_is_its_own_id_of_num_tasks():
    """A re-run of some ids of an array (``--array=17,42`` after ``--array=0-63``) with
    ``--num-tasks 64``: each task is the task of the same id in the whole array."""
    assert resolve_task(None, 64, array_env(17, 17, 42)) == (17, 64)
    assert resolve_task(None, 64, array_env(42, 17, 42)) == (42, 64)
    assert resolve_task(None, 8, array_env(3, *range(3, 8))) == (3, 8)


def test_partial_array_without_num_tasks_is_an_error_naming_the_fix():
    for env in (array_env(17, 17, 42), array_env(3, *range(1, 5)), array_env(0, 0, 2)):
        with pytest.raises(ValueError, match=r"pass --num-tasks N, the size of the array") as e:
            resolve_task(None, None, env)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="SLURM_ARRAY_TASK_MIN"):
        resolve_task(None, None, {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "8"})


def test_array_id_outside_num_tasks_is_an_error_naming_the_fix():
    with pytest.raises(ValueError, match=r"SLURM_ARRAY_TASK_ID 42 is not in \[0, 8\).*--num-tasks"):
        resolve_task(None, 8, array_env(42, 17, 42))


def test_partial_array_without_num_tasks_writes_nothing(synth_davis, tmp_path):
    env = dict(os.environ, **array_env(1, 1, 3))
    r = run("davis2017", synth_davis, tmp_path / "lake", "--shard-max-count", "4", env=env,
            check=False)
    assert r.returncode == 2, r.stderr + r.stdout
    assert "pass --num-tasks N" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "lake").exists()


def test_clip_stride_and_byte_rotation(synth_davis, tmp_path):
    full = run_preprocess(PreprocessConfig("davis2017", synth_davis, tmp_path / "s1", progress=False))
    half = run_preprocess(PreprocessConfig("davis2017", synth_davis, tmp_path / "s2", clip_stride=2,
                                           progress=False))
    for f, h in zip(full, half):
        assert h["samples_planned"] == sum(
            (n + 1) // 2 for n in _frames_per_sequence(tmp_path / "s1", f["split"]))
        assert h["amplification"] < f["amplification"] * 0.7
    assert summarize(tmp_path / "s2")[0]["clip_stride"] == 2
    budget = 60_000
    run_preprocess(PreprocessConfig("davis2017", synth_davis, tmp_path / "b", shard_max_bytes=budget,
                                    progress=False))
    set_dir = tmp_path / "b" / "davis2017" / "train"
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert manifest["n_shards"] > 1
    for stats in set_dir.glob("*_stats.json"):
        doc = json.loads(stats.read_text())
        assert doc["payload_bytes"] <= budget or doc["count"] == 1


def _frames_per_sequence(root: Path, split: str) -> list[int]:
    rows = read_catalog(root / "davis2017" / split).to_pylist()
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["sequence"]] = counts.get(r["sequence"], 0) + 1
    return list(counts.values())


# -- bad input -----------------------------------------------------------------------------------

@pytest.fixture
def broken_davis(synth_davis, tmp_path) -> Path:
    root = tmp_path / "broken"
    shutil.copytree(synth_davis, root)
    return root


def _first_frame(root: Path, n: int = 3) -> Path:
    seq = sorted((root / "JPEGImages" / "480p").iterdir())[0]
    return sorted(seq.glob("*.jpg"))[n]


def test_truncated_jpeg_is_named_or_counted(broken_davis, tmp_path):
    bad = _first_frame(broken_davis)
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    r = run("davis2017", broken_davis, tmp_path / "x", check=False)
    assert r.returncode == 2 and bad.name in r.stderr and "Fix:" in r.stderr
    r = run("davis2017", broken_davis, tmp_path / "y", "--on-error", "skip", "--json")
    summary = [json.loads(line) for line in r.stdout.splitlines()]
    assert sum(sum(s["failures"].values()) for s in summary) >= 1
    assert any(bad.name in msg for s in summary for _, msg in s["skipped_files"])
    stats = [json.loads(p.read_text()) for p in (tmp_path / "y").rglob("*_stats.json")]
    assert sum(sum(s["failures"].values()) for s in stats) >= 1
    for s in summarize(tmp_path / "y"):
        assert s["samples"] == s["samples_planned"] - s["failures"]


def test_mask_of_wrong_size_is_named(broken_davis, tmp_path):
    from PIL import Image

    frame = _first_frame(broken_davis, 2)
    mask = broken_davis / "Annotations" / "480p" / frame.parent.name / f"{frame.stem}.png"
    im = Image.open(mask)
    im.resize((im.width // 2, im.height // 2), Image.NEAREST).save(mask)
    with pytest.raises(SourceError, match=mask.name):
        run_preprocess(PreprocessConfig("davis2017", broken_davis, tmp_path, progress=False))


def test_unknown_dataset_and_missing_root(tmp_path):
    r = run("davis2019", tmp_path, tmp_path / "o", check=False)
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = run("davis2016", tmp_path / "nope", tmp_path / "o", check=False)
    assert r.returncode == 2 and "nope" in r.stderr


# -- catalog validation --------------------------------------------------------------------------

def test_validate_accepts_the_checksums_of_lakes_written_before_member_digests(synth_davis,
                                                                              tmp_path):
    """Lakes written before 2026-12-03 hold sha256 over the members' bytes; they still validate,
    and a checksum that is neither definition is still a mismatch."""
    import pyarrow as pa

    from pipeline.lake.catalog import _read_tar
    from pipeline.lake.writer import legacy_sample_digest

    run("davis2017", synth_davis, tmp_path, "--shard-max-count", "4")
    set_dir = tmp_path / "davis2017" / "train"
    pq_path = sorted(set_dir.glob("*.parquet"))[0]
    if pq_path.name == "catalog.parquet":
        pq_path = sorted(set_dir.glob("0*.parquet"))[0]
    samples = _read_tar(pq_path.with_suffix(".tar"))
    table = pq.read_table(pq_path)
    legacy = [legacy_sample_digest(samples[k]) for k in table.column("key").to_pylist()]
    assert legacy != table.column("sha256").to_pylist()
    i = table.schema.get_field_index("sha256")
    pq.write_table(table.set_column(i, "sha256", pa.array(legacy)), pq_path)
    assert validate_set(set_dir).ok, validate_set(set_dir).errors
    pq.write_table(table.set_column(i, "sha256", pa.array(["0" * 64] * len(legacy))), pq_path)
    v = validate_set(set_dir)
    assert not v.ok and "checksum mismatch" in "\n".join(v.errors)


def test_validate_finds_truncation_corruption_and_unfinished_shards(synth_davis, tmp_path):
    run("davis2017", synth_davis, tmp_path, "--shard-max-count", "4")
    set_dir = tmp_path / "davis2017" / "train"
    assert validate_set(set_dir).ok
    tars = sorted(set_dir.glob("*.tar"))
    data = bytearray(tars[0].read_bytes())
    data[700] ^= 0xFF  # inside the first member's payload: same size, other bytes
    tars[0].write_bytes(bytes(data))
    with open(tars[1], "r+b") as f:
        f.truncate(tars[1].stat().st_size // 2)
    (set_dir / f"{tars[2].stem}_stats.json").unlink()
    v = validate_set(set_dir)
    text = "\n".join(v.errors)
    assert not v.ok
    assert f"{tars[0]}: sample" in text and "checksum mismatch" in text
    assert f"{tars[1]}" in text and "truncated" in text
    assert v.unfinished == [tars[2].name]
    r = subprocess.run([sys.executable, str(REPO / "launch" / "catalog.py"), str(tmp_path), "--validate"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "FAILED" in r.stdout and "unfinished" in r.stdout
