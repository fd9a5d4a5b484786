"""The phase registry (``pipeline/train/registry.py``): every entry has its launcher and configs,
and a new phase is its module, its config and one registry entry: ``stcnn-train`` runs it and
prints its config, the preflight times it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.core.config import ConfigError
from pipeline.train import registry
from pipeline.train.config import TrainConfig
from pipeline.train.registry import PHASES, PhaseSpec, by_command, by_name

REPO = Path(__file__).resolve().parents[2]

TOY_MODULE = '''
from dataclasses import dataclass, field

import torch

from pipeline.train.config import TrainConfig
from pipeline.train.data import frames_to_input
from pipeline.train.loop import Update
from pipeline.train.optim import OptimConfig
from pipeline.train.phases.base import PhaseBase


@dataclass
class ToySection:
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="sgd", lr=0.1))


@dataclass
class ToyTrainConfig(TrainConfig):
    toy: ToySection = field(default_factory=ToySection)


class ToyPhase(PhaseBase):
    name = "toy"
    kind = "image"
    masks = True

    def __init__(self, cfg, model_cfg, ctx, plan, init=None):
        super().__init__(cfg, model_cfg, ctx, plan)
        self.make_engine("TOY", torch.nn.Conv2d(3, 2, 1), cfg.toy.optim, cfg.steps)

    def prepare(self, batch):
        return {"image": frames_to_input(batch["image"], self.device),
                "mask": batch["mask"].to(self.device).long()}

    def updates(self, step):
        def loss(m):
            logits = self.engines["TOY"](m["image"])
            return {"loss": torch.nn.functional.cross_entropy(logits, m["mask"],
                                                              ignore_index=255)}
        return [Update("TOY", loss)]
'''

TOY_CONFIG = {
    "run_dir": "runs/toy", "steps": 2, "model": "model/tiny.yaml",
    "batch": {"size": 2},
    "data": {"sets": ["msra10k/train"], "augment": {"size": [16, 16]}, "num_workers": 0,
             "epoch_batches": 2},
    "checkpoint": {"every": 1}, "tracking": {"enabled": False}, "log": {"every": 1},
    "toy": {"optim": {"name": "sgd", "lr": 0.05}},
}


@pytest.fixture
def toy(tmp_path, monkeypatch) -> PhaseSpec:
    """The toy phase registered: its module on sys.path, its config, one registry entry."""
    (tmp_path / "toy_phase.py").write_text(TOY_MODULE)
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(TOY_CONFIG))
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = PhaseSpec("toy", "train_toy", "toy_phase", "ToyPhase", "ToyTrainConfig",
                     "Training of the toy phase", config=str(config), tiny_config=str(config))
    monkeypatch.setitem(registry.PHASES, spec.name, spec)
    return spec


@pytest.mark.parametrize("name", list(PHASES))
def test_every_phase_has_its_launcher_configs_and_classes(name):
    spec = PHASES[name]
    assert by_command(spec.command) is by_name(name) is spec
    launcher = REPO / spec.launcher
    assert launcher.is_file(), launcher
    assert f'main(["{spec.command}", *sys.argv[1:]])' in launcher.read_text()
    assert (REPO / spec.config).is_file() and (REPO / spec.tiny_config).is_file()
    assert spec.phase_class.name == name
    assert issubclass(spec.config_class, TrainConfig)


def test_unknown_names_are_errors_listing_the_phases():
    with pytest.raises(ConfigError, match="gan"):
        by_name("nope")
    with pytest.raises(ConfigError, match="pretrain_tcb"):
        by_command("nope")


def test_a_registered_phase_is_listed_printed_and_trained(toy, train_lake, tmp_path, capsys):
    from pipeline.cli.train import main

    assert main(["--help"]) == 0
    assert "train_toy" in capsys.readouterr().out

    assert main(["train_toy", "--print-config", "steps=3"]) == 0
    printed = capsys.readouterr().out
    assert yaml.safe_load(printed)["toy"]["optim"]["lr"] == 0.05
    assert "#   toy.optim.lr" in printed

    run_dir = tmp_path / "run"
    assert main(["train_toy", f"data.lake={train_lake}", f"run_dir={run_dir}"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (line["phase"], line["steps"], line["completed"]) == ("toy", 2, True)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(summary["loss_history"]["steps"]) == 2
    assert (run_dir / "weights.pt").is_file()


def test_the_preflight_times_a_registered_phase(toy):
    from pipeline.cli.preflight import parse_args
    from pipeline.core.dist import DistConfig, init_distributed
    from pipeline.preflight.phase_steps import measure_phase, phase_config

    assert parse_args(["--phases", "toy"]).phases == ["toy"]
    cfg = phase_config("toy", quick=True, world_size=2)
    assert (cfg.batch.size, cfg.tracking.enabled, cfg.init_missing) == (4, False, "random")
    ctx = init_distributed(DistConfig(device="cpu"))
    r = measure_phase("toy", ctx, quick=True, steps=1, warmup=1,
                      overrides={"toy.optim.lr": 0.01})
    assert (r["phase"], r["input_hw"], r["timed_steps"]) == ("toy", [16, 16], 1)
    assert r["flops_per_step"] > 0


def test_typed_overrides_are_checked_like_key_value_ones():
    from pipeline.train.config import load_train_config, override_train_config

    spec = by_name("segmentation")
    cfg = load_train_config(spec.config_class, spec.tiny_config, [])
    typed = override_train_config(cfg, {"steps": 7, "data.lake": "/lake", "init_from": "w.pt"})
    strings = load_train_config(spec.config_class, spec.tiny_config,
                                ["steps=7", "data.lake=/lake", "init_from=w.pt"])
    assert typed == strings and cfg.steps != 7          # the loaded config is left as it was
    with pytest.raises(ConfigError, match="no_such_key"):
        override_train_config(cfg, {"data.no_such_key": 1})
    with pytest.raises(ConfigError, match="steps"):
        override_train_config(cfg, {"steps": "many"})
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        override_train_config(cfg, {"steps": 0})
