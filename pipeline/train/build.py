"""A phase built from its config, the same way for a training run (``pipeline/train/runner.py``)
and for the preflight's timed steps (``pipeline/preflight/phase_steps.py``).

Order: seeds -> batch plan -> model config -> ``init_from`` weights -> the phase, constructed
under the config's seed (the same initial weights on every rank).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from pipeline.core.dist import DistContext, seed_everything, seed_model_init
from pipeline.model.config import ModelConfig
from pipeline.tracking import store_for
from pipeline.train.config import BatchPlan, TrainConfig, load_model_config, plan_batch
from pipeline.train.weights import gather_init


class BuiltPhase(NamedTuple):
    phase: Any
    plan: BatchPlan
    model_cfg: ModelConfig
    init_sources: list[str]    # what each ``init_from`` entry gave (for the run's tags)


def build_phase(phase_cls: type, cfg: TrainConfig, ctx: DistContext) -> BuiltPhase:
    """Seed this rank, plan the batch over the ranks, load the model config and the
    ``init_from`` weights (``models:/`` and ``runs:/`` URIs resolved in the run's store) and
    construct ``phase_cls``."""
    seed_everything(cfg.seed, ctx.rank)
    plan = plan_batch(cfg.batch, ctx.world_size)
    model_cfg = load_model_config(cfg)
    init_states, init_sources = gather_init(cfg.init_from,
                                            store_for(Path(cfg.run_dir), cfg.tracking.tracking_uri))
    with seed_model_init(cfg.seed):
        phase = phase_cls(cfg, model_cfg, ctx, plan, init=init_states)
    return BuiltPhase(phase, plan, model_cfg, init_sources)
