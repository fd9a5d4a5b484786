"""Where a config is found (pipeline.core.config.find_config): the path as given if it exists,
else the packaged config of that name (with or without ``configs/``); a config's ``model`` also
next to the config file. Run from a folder outside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.config import ConfigError, find_config, load_config, packaged_configs
from pipeline.model.config import ModelConfig
from pipeline.train.config import load_train_config, resolve_path
from pipeline.train.registry import by_name


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_packaged_names_with_and_without_configs_prefix(elsewhere):
    root = packaged_configs()
    assert find_config("configs/tiny/pretrain_tcb.yaml") == root / "tiny" / "pretrain_tcb.yaml"
    assert find_config("tiny/pretrain_tcb.yaml") == root / "tiny" / "pretrain_tcb.yaml"
    assert find_config("demo.yaml") == root / "demo.yaml"


def test_a_file_in_the_working_directory_wins_over_the_packaged_one(elsewhere):
    (elsewhere / "configs").mkdir()
    (elsewhere / "configs" / "demo.yaml").write_text("out: mine\n")
    assert find_config("configs/demo.yaml") == Path("configs/demo.yaml")


def test_a_missing_config_names_the_name_and_where_it_looked(elsewhere):
    with pytest.raises(ConfigError) as e:
        find_config("configs/tiny/nope.yaml")
    msg = str(e.value)
    assert msg.startswith("configs/tiny/nope.yaml: config file not found")
    assert str(elsewhere) in msg and str(packaged_configs()) in msg and "\n" not in msg


def test_packaged_training_config_reads_its_defaults_and_model(elsewhere):
    cfg = load_train_config(by_name("gan").config_class, "configs/tiny/pretrain_tcb.yaml", [])
    assert Path(cfg.config_path) == packaged_configs() / "tiny" / "pretrain_tcb.yaml"
    assert cfg.tracking.register_as == "stcnn-tcb"   # from its defaults: ../pretrain_tcb.yaml
    assert resolve_path(cfg.model, cfg.config_path) == packaged_configs() / "model" / "tiny.yaml"
    assert load_config(ModelConfig, "configs/model/tiny.yaml").temporal.backbone.width_div == 16


def test_a_model_config_beside_the_training_config_comes_first(elsewhere):
    (elsewhere / "model").mkdir()
    (elsewhere / "model" / "tiny.yaml").write_text("defaults: []\n")
    mine = elsewhere / "sub" / "train.yaml"
    (mine.parent / "model").mkdir(parents=True)
    (mine.parent / "model" / "tiny.yaml").write_text("{}\n")
    assert resolve_path("model/tiny.yaml", str(mine)) == mine.parent / "model" / "tiny.yaml"
    with pytest.raises(ConfigError, match=r"model/nope.yaml: config file not found.*\(named by "):
        resolve_path("model/nope.yaml", str(mine))
