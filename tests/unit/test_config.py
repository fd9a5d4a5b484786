"""Typed configs: YAML + defaults files + key=value overrides, with errors that name the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import pytest

from pipeline.core.config import ConfigError, load_config, to_dict


@dataclasses.dataclass
class Lake:
    shard_max_count: int = 256
    workers: int = 1
    datasets: list[str] = dataclasses.field(default_factory=lambda: ["davis2016"])
    size: tuple[int, int] = (128, 72)


@dataclasses.dataclass
class Job:
    name: str = "demo"
    seed: int = 0
    lr: float = 1e-3
    verbose: bool = False
    mode: Literal["raise", "skip"] = "raise"
    out: Path = Path("runs")
    limit: int | None = None
    lake: Lake = dataclasses.field(default_factory=Lake)


def test_defaults_yaml_and_overrides(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("seed: 3\nlake:\n  workers: 2\n")
    top = tmp_path / "top.yaml"
    top.write_text("defaults: [base.yaml]\nname: run1\nlake:\n  datasets: [msra10k, voc2012]\n")
    cfg = load_config(Job, top, ["lake.shard_max_count=64", "lr=1e-4", "verbose=true",
                                 "lake.size=[854,480]", "limit=5", "mode=skip"])
    assert (cfg.name, cfg.seed, cfg.lr, cfg.verbose, cfg.mode, cfg.limit) == ("run1", 3, 1e-4, True, "skip", 5)
    assert cfg.lake == Lake(shard_max_count=64, workers=2, datasets=["msra10k", "voc2012"], size=(854, 480))
    assert to_dict(cfg)["out"] == "runs" and to_dict(cfg)["lake"]["size"] == [854, 480]
    assert load_config(Job).lake.workers == 1


@pytest.mark.parametrize("override, message", [
    ("lake.shard_max_cnt=3", "unknown key(s) ['shard_max_cnt']"),
    ("seed=abc", "seed: expected an integer"),
    ("mode=ignore", "mode: 'ignore' is not one of"),
    ("lake.size=[1,2,3]", "lake.size: expected 2 items"),
    ("verbose=maybe", "verbose: expected true/false"),
    ("lake=5", "lake: expected a mapping"),
    ("seed", "expected key=value"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(Job, None, [override])
    assert message in str(e.value)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_config(Job, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(Job, bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("sed: 1\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['sed'\].*typo.yaml"):
        load_config(Job, typo)
