"""The training phases of the recipe, one entry each: the one place that says which phases exist,
their classes, the command that runs each and its configs.

    spec = by_command("pretrain_tcb")        # stcnn-train pretrain_tcb, launch/pretrain_tcb.py
    spec.name, spec.phase_class, spec.config_class, spec.config, spec.tiny_config

``stcnn-train``, the launchers, the runner, the preflight, the demo and the tests read this
registry. A new phase is its module (a :class:`pipeline.train.phases.base.PhaseBase` subclass
and its config dataclass), its configs, ``launch/<command>.py`` and one entry in
:data:`PHASES`. The classes are imported when first asked for, so reading the registry (help
texts, argument choices) imports no model code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from pipeline.core.config import ConfigError


@dataclass(frozen=True)
class PhaseSpec:
    name: str           # the phase: run and progress names, the ``phase`` tag, ``weights.pt``
    command: str        # ``stcnn-train <command>``, ``launch/<command>.py``
    module: str         # the module defining the two classes below
    phase_type: str     # the phase class (a PhaseBase subclass)
    config_type: str    # its config dataclass (a TrainConfig subclass)
    description: str    # what it trains (help texts)
    config: str = ""       # default config; "" means configs/<command>.yaml
    tiny_config: str = ""  # the tiny model's config (CPU runs, tests); "" means configs/tiny/...

    def __post_init__(self) -> None:
        if not self.config:
            object.__setattr__(self, "config", f"configs/{self.command}.yaml")
        if not self.tiny_config:
            object.__setattr__(self, "tiny_config", f"configs/tiny/{self.command}.yaml")

    @property
    def launcher(self) -> str:
        """The script torchrun and deepspeed start, relative to the repository root."""
        return f"launch/{self.command}.py"

    @property
    def phase_class(self) -> type:
        return getattr(importlib.import_module(self.module), self.phase_type)

    @property
    def config_class(self) -> type:
        return getattr(importlib.import_module(self.module), self.config_type)


_PHASES = "pipeline.train.phases"

PHASES: dict[str, PhaseSpec] = {s.name: s for s in (
    PhaseSpec("gan", "pretrain_tcb", f"{_PHASES}.gan", "GanPhase", "GanTrainConfig",
              "Adversarial pretraining of the temporal coherence branch (G and D)"),
    PhaseSpec("segmentation", "pretrain_ssb", f"{_PHASES}.segmentation", "SegmentationPhase",
              "SegmentationTrainConfig", "Pretraining of the spatial segmentation branch"),
    PhaseSpec("alternating", "train_offline", f"{_PHASES}.alternating", "AlternatingPhase",
              "AlternatingTrainConfig", "Alternating offline training of both branches"),
)}


def by_name(name: str) -> PhaseSpec:
    """The phase called ``name`` (``gan``, ``segmentation``, ``alternating``)."""
    try:
        return PHASES[name]
    except KeyError:
        raise ConfigError(f"no training phase {name!r}; the phases are {list(PHASES)}") from None


def by_command(command: str) -> PhaseSpec:
    """The phase that ``stcnn-train <command>`` / ``launch/<command>.py`` runs."""
    for spec in PHASES.values():
        if spec.command == command:
            return spec
    raise ConfigError(f"no training command {command!r}; the commands are {commands()}")


def commands() -> list[str]:
    """The ``stcnn-train`` phase commands, in the recipe's order."""
    return [s.command for s in PHASES.values()]
