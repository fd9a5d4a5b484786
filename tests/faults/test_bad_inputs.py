"""Bad inputs, one suite: every kind ends in a clear error (naming the file and the fix) or a
counted skip, never in silent damage or code execution.

====================================  ==================================  =======================
kind                                  where                               outcome
====================================  ==================================  =======================
truncated JPEG frame                  preprocessing                       error / counted skip
truncated PNG mask                    preprocessing                       error / counted skip
missing mask (DAVIS-2016)             source listing                      error / counted skip
mask of another size than its frame   preprocessing                       error / counted skip
mask PNG in the wrong mode (RGB)      preprocessing                       error naming the file
empty split list                      preprocessing                       error naming the list
unknown dataset name                  preprocessing API and CLI           error with the choices
malformed config (YAML, typo'd key)   training config                     error naming file/key
truncated shard tar                   loader / catalog validation         counted skip / error
corrupt member (bad json) in a shard  loader                              counted skip
member named ``../...`` in a shard    catalog validation / loader    error / counted skip
pickle members in a shard             loader                              ignored, counted
checkpoint holding pickled code       CheckpointManager.load              error naming the file
weights file holding pickled code     init_from (load_weights)            error naming the file
====================================  ==================================  =======================

Finer-grained cases of each live in test_sources.py, test_loader.py, test_tario.py,
test_preprocess.py, test_checkpoint.py and test_config.py; this suite calls the same APIs.
"""

from __future__ import annotations

import json

import io
import pickle
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import torch

from pipeline.train.checkpoint import CheckpointError, CheckpointManager
from pipeline.core.config import ConfigError
from pipeline.lake.catalog import validate_set
from pipeline.loading.loader import iter_samples
from pipeline.lake.preprocess import PreprocessConfig, run_preprocess
from pipeline.loading.readstats import ReadStats
from pipeline.sources import get_source
from pipeline.sources.types import SourceError
from pipeline.synthetic import SyntheticSpec, write_dataset

from faultlib import REPO, clean_env
from support.logs import logs_warning

SPEC = SyntheticSpec(size=(32, 24), n_sequences=1, n_frames=6, seed=3)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_inputs_src")
    return {name: write_dataset(name, root / name, SPEC) for name in ("davis2017", "davis2016")}


@pytest.fixture
def davis(pristine, tmp_path) -> Path:
    """A private copy of a small DAVIS-2017 layout (train and val, one sequence each)."""
    return Path(shutil.copytree(pristine["davis2017"], tmp_path / "davis2017"))


def train_frames(root: Path) -> list[Path]:
    seq = (root / "ImageSets" / "2017" / "train.txt").read_text().split()[0]
    return sorted((root / "JPEGImages" / "480p" / seq).glob("*.jpg"))


def mask_of(frame: Path) -> Path:
    return frame.parents[3] / "Annotations" / "480p" / frame.parent.name / f"{frame.stem}.png"


def preprocess(src: Path, out: Path, dataset: str = "davis2017", **kw) -> list[dict]:
    return run_preprocess(PreprocessConfig(dataset, src, out, splits=["train"], progress=False,
                                           **kw))


def assert_error_then_counted_skip(src: Path, tmp_path: Path, bad: Path, reason: str) -> None:
    """on_error=raise: a SourceError naming ``bad`` with a fix; on_error=skip: the lake is
    written without it, the skip counted (stats, summary) and named."""
    with pytest.raises(SourceError) as ei:
        preprocess(src, tmp_path / "raise")
    assert bad.name in str(ei.value) and "Fix:" in str(ei.value), str(ei.value)
    assert ei.value.reason == reason
    (s,) = preprocess(src, tmp_path / "skip", on_error="skip")
    assert s["failures"].get(reason, 0) >= 1, s["failures"]
    assert any(bad.name in msg for _, msg in s["skipped_files"])
    assert s["samples_this_task"] == s["samples_planned"] - sum(s["failures"].values())
    assert s["catalog"] and validate_set(Path(s["dir"])).ok


# -- sources ---------------------------------------------------------------------------------------

def test_truncated_jpeg(davis, tmp_path):
    bad = train_frames(davis)[2]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    assert_error_then_counted_skip(davis, tmp_path, bad, "bad_image")


def test_truncated_png_mask(davis, tmp_path):
    bad = mask_of(train_frames(davis)[3])
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size - 20])
    assert_error_then_counted_skip(davis, tmp_path, bad, "bad_mask")


def test_missing_mask(pristine, tmp_path):
    """DAVIS-2016 annotates every frame: a missing mask is an error, or a counted skip (the
    frame stays, unannotated). (DAVIS-2017 frames without a PNG are unannotated by design.)"""
    src = Path(shutil.copytree(pristine["davis2016"], tmp_path / "davis2016"))
    seq = sorted((src / "Annotations" / "480p").iterdir())[0]
    gone = sorted(seq.glob("*.png"))[2]
    gone.unlink()
    split = next(s for s in ("train", "val")
                 if seq.name in (src / "ImageSets" / "480p" / f"{s}.txt").read_text())
    with pytest.raises(SourceError, match=rf"{gone.name}.*does not exist") as ei:
        get_source("davis2016", src).sequences(split)
    assert "Fix:" in str(ei.value)
    skipping = get_source("davis2016", src, on_error="skip")
    skipping.sequences(split)
    assert skipping.skips.counts == {"missing_mask": 1}
    assert skipping.skips.as_dict()["files"][0].endswith(gone.name)


def test_mask_of_another_size(davis, tmp_path):
    from PIL import Image

    bad = mask_of(train_frames(davis)[2])
    im = Image.open(bad)
    im.resize((im.width // 2, im.height // 2), Image.NEAREST).save(bad)
    assert_error_then_counted_skip(davis, tmp_path, bad, "size_mismatch")


def test_mask_png_in_the_wrong_mode(davis, tmp_path):
    from PIL import Image

    bad = mask_of(train_frames(davis)[1])
    Image.open(bad).convert("RGB").save(bad)
    with pytest.raises(SourceError, match=rf"{bad.name}: mask is a mode-RGB PNG") as ei:
        preprocess(davis, tmp_path / "out")
    assert "Fix:" in str(ei.value)


def test_empty_split_list(davis, tmp_path):
    listing = davis / "ImageSets" / "2017" / "train.txt"
    listing.write_text("\n  \n")
    with pytest.raises(SourceError, match=r"train\.txt: split list for 'train' is empty"):
        preprocess(davis, tmp_path / "out")
    assert not (tmp_path / "out" / "davis2017" / "train" / "manifest.json").exists()


def test_unknown_dataset_name(davis, tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset 'davis2019'; choose one of \[.*"
                                         r"'davis2016'"):
        run_preprocess(PreprocessConfig("davis2019", davis, tmp_path / "out", progress=False))
    with pytest.raises((KeyError, ValueError), match="davis2019"):
        get_source("davis2019", davis)
    r = subprocess.run([*_cli("preprocess.py"), "davis2019", "--src", str(davis), "--out",
                        str(tmp_path / "o")], capture_output=True, text=True, env=clean_env(),
                       timeout=120)
    assert r.returncode == 2 and "invalid choice: 'davis2019'" in r.stderr


def _cli(script: str) -> list[str]:
    import sys

    return [sys.executable, str(REPO / "launch" / script)]


def test_malformed_config(tmp_path):
    from pipeline.train.registry import by_name
    from pipeline.train.config import load_train_config

    cfg_cls = by_name("gan").config_class
    broken = tmp_path / "broken.yaml"
    broken.write_text("steps: [1,\nbatch: {size: 4\n")
    with pytest.raises(ConfigError, match=r"(?s)broken\.yaml: not valid YAML.*fix the syntax"):
        load_train_config(cfg_cls, broken, [])
    typo = tmp_path / "typo.yaml"
    typo.write_text("defaults: [" + str(REPO / "configs" / "tiny" / "pretrain_tcb.yaml")
                    + "]\ncheckpoint: {evry: 2}\n")
    with pytest.raises(ConfigError, match=r"evry"):
        load_train_config(cfg_cls, typo, [])
    with pytest.raises(ConfigError, match=r"steps"):
        load_train_config(cfg_cls, REPO / "configs" / "tiny" / "pretrain_tcb.yaml",
                          ["steps=many"])


# -- shards ----------------------------------------------------------------------------------------

@pytest.fixture
def lake_set(pristine, tmp_path) -> Path:
    """A finished one-shard set (train split of the small DAVIS-2017 layout)."""
    (s,) = preprocess(pristine["davis2017"], tmp_path / "lake", shard_max_count=100)
    return Path(s["dir"])


def rewrite_tar(tar: Path, rename=None, extra: dict[str, bytes] | None = None,
                replace: dict[str, bytes] | None = None) -> None:
    with tarfile.open(tar) as t:
        members = [(m, t.extractfile(m).read()) for m in t]
    with tarfile.open(tar, "w", format=tarfile.GNU_FORMAT) as t:
        for m, data in members:
            data = (replace or {}).get(m.name, data)
            m.size = len(data)
            if rename is not None:
                m.name = rename(m.name)
            t.addfile(m, io.BytesIO(data))
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def first_key(tar: Path) -> str:
    with tarfile.open(tar) as t:
        return t.getmembers()[0].name.split(".", 1)[0]


def test_truncated_shard_tar(lake_set, caplog):
    tar = lake_set / "00000.tar"
    with tarfile.open(tar) as t:
        fourth = [m for m in t.getmembers() if m.name.endswith(".json")][3]
    tar.write_bytes(tar.read_bytes()[: fourth.offset_data - 700])   # inside sample 4
    stats = ReadStats()
    with logs_warning(caplog, match=r"00000\.tar"):
        got = list(iter_samples(lake_set, stats=stats))
    assert len(got) == 3 and stats.truncated_shards == 1 and stats.corrupt == 1
    v = validate_set(lake_set)
    assert not v.ok and any(str(tar) in e and "truncated" in e for e in v.errors), v.errors


def test_corrupt_json_member_is_a_counted_skip(lake_set, caplog):
    tar = lake_set / "00000.tar"
    key = first_key(tar)
    rewrite_tar(tar, replace={f"{key}.json": b"{not json"})
    stats = ReadStats()
    with logs_warning(caplog, match=key):
        got = [s["key"] for s in iter_samples(lake_set, stats=stats)]
    assert key not in got and stats.corrupt_samples == 1 and stats.samples == len(got)


def _escape(tar: Path) -> str:
    key = first_key(tar)
    rewrite_tar(tar, rename=lambda n: f"../../escape/{n}" if n.startswith(f"{key}.") else n)
    return key


def test_member_named_dot_dot_is_refused_by_validation(lake_set, tmp_path):
    tar = lake_set / "00000.tar"
    _escape(tar)
    v = validate_set(lake_set)
    assert not v.ok and any("escapes the shard" in e and str(tar) in e for e in v.errors), v.errors
    # the loader never extracts members to disk: reading the shard writes nothing anywhere
    before = sorted(p for p in tmp_path.rglob("*"))
    list(iter_samples(lake_set))
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert not (tmp_path / "escape").exists() and not (lake_set.parents[1] / "escape").exists()


def test_member_named_dot_dot_is_a_counted_skip_in_the_loader(lake_set):
    key = _escape(lake_set / "00000.tar")
    stats = ReadStats()
    got = [s["key"] for s in iter_samples(lake_set, stats=stats)]
    assert not any(".." in k for k in got) and f"../../escape/{key}" not in got
    assert stats.corrupt >= 1


class _Boom:
    """Unpickling this writes a flag file: what a malicious pickle would do."""

    def __init__(self, flag: Path):
        self.flag = str(flag)

    def __reduce__(self):
        return (Path.write_text, (Path(self.flag), "unpickled!"))


def test_pickle_members_in_a_shard_are_never_unpickled(lake_set, tmp_path, caplog):
    flag = tmp_path / "flag.txt"
    payload = pickle.dumps(_Boom(flag))
    tar = lake_set / "00000.tar"
    key = first_key(tar)
    rewrite_tar(tar, extra={f"{key}.pyd": payload, f"{key}.pickle": payload})
    stats = ReadStats()
    with logs_warning(caplog, match=r"never decoded"):
        got = list(iter_samples(lake_set, stats=stats))
    assert key in [s["key"] for s in got] and stats.ignored_members == 2 and stats.corrupt == 0
    assert all("pyd" not in s and "pickle" not in s for s in got)
    assert not flag.exists()


# -- checkpoints and weights -----------------------------------------------------------------------

def test_checkpoint_holding_pickled_code(tmp_path):
    flag = tmp_path / "flag.txt"
    manager = CheckpointManager(tmp_path / "ckpt", keep_last=3)
    manager.save(1, {"w": torch.zeros(2)})
    last = manager.save(2, {"w": torch.ones(2)})
    shared = last / "shared.pt"
    torch.save({"format": 1, "step": 2, "world_size": 1, "shared": {"w": _Boom(flag)}}, shared)
    with pytest.raises(CheckpointError, match="damaged files"):   # its size no longer matches
        manager.load()
    # whoever replaced the file also rewrote the recorded sizes: the loader still unpickles nothing
    meta_path = last / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["sizes"]["shared.pt"] = shared.stat().st_size
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as ei:
        manager.load()
    msg = str(ei.value)
    assert str(shared) in msg and "weights_only" in msg and "step_00000001" in msg, msg
    assert not flag.exists()


def test_weights_file_holding_pickled_code(tmp_path):
    from pipeline.train.weights import WeightsError, load_weights

    flag = tmp_path / "flag.txt"
    bad = tmp_path / "weights.pt"
    torch.save({"format": 1, "models": {"G": _Boom(flag)}}, bad)
    with pytest.raises(WeightsError, match=rf"cannot read weights file {bad}"):
        load_weights(bad)
    assert not flag.exists()
