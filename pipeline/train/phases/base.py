"""What every phase shares: engines built from modules and optimizer configs, the weights it
exports, the margin gate of the authors' GAN updates, and a validation pass.

A phase subclass sets ``name``, ``register_as``, ``kind``/``masks`` (what its loader yields),
builds its engines in ``__init__`` and defines ``prepare`` and ``updates`` (see
``pipeline/train/loop.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from pipeline.core.config import to_dict
from pipeline.core.dist import DistContext, all_reduce_mean, prepare_module
from pipeline.loading.augment import AugmentConfig, get_preset
from pipeline.model.config import ModelConfig
from pipeline.train.config import BatchPlan, TrainConfig
from pipeline.train.engine import DDPEngine, DeepSpeedEngine, Engine
from pipeline.train.optim import OptimConfig, build_optimizer, build_scheduler


@dataclass
class EvalConfig:
    every: int = 0                          # steps between validations (0: never)
    sets: list[str] = field(default_factory=list)   # shard sets under data.lake
    batches: int = 4                        # per rank
    augment: AugmentConfig = field(default_factory=lambda: get_preset("eval"))


class MarginGate:
    """The authors' margin rule (``margin``; ``None`` = the paper: update both every step).
    Our reading of it: D is not updated while its last loss is below ``margin`` (it is too far
    ahead); G's update is skipped while its last adversarial loss is below ``margin``."""

    def __init__(self, margin: float | None):
        self.margin = margin
        self.last: dict[str, float] = {}

    def allows(self, key: str) -> bool:
        if self.margin is None or key not in self.last:
            return True
        return self.last[key] >= self.margin

    def record(self, metrics: dict[str, float], keys: dict[str, str]) -> None:
        for gate_key, metric in keys.items():
            if metric in metrics:
                self.last[gate_key] = metrics[metric]


class PhaseDefaults:
    """What a phase need not say: no state beyond its engines, nothing to do after a step."""

    def samples(self, batch: dict) -> int:
        return len(batch["key"]) if "key" in batch else int(batch["image"].shape[0])

    def end_step(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class PhaseBase(PhaseDefaults):
    name = "phase"
    register_as: str | None = None
    kind = "clip"
    masks = True

    def __init__(self, cfg: TrainConfig, model_cfg: ModelConfig, ctx: DistContext, plan: BatchPlan):
        self.cfg, self.model_cfg, self.ctx, self.plan = cfg, model_cfg, ctx, plan
        self.device = ctx.device
        self.engines: dict[str, Engine] = {}

    # -- engines ---------------------------------------------------------------------------
    def make_engine(self, name: str, module: nn.Module, optim: OptimConfig, total_updates: int,
                    *, sync_bn: bool = False) -> Engine:
        dcfg = self.cfg.dist
        module = prepare_module(module, dcfg, self.ctx, sync_bn=sync_bn)
        optimizer = build_optimizer(module, optim)
        scheduler = build_scheduler(optimizer, optim, total_updates)
        if dcfg.engine == "deepspeed":
            engine: Engine = DeepSpeedEngine(name, module, optimizer, scheduler, self.ctx, dcfg,
                                             self.plan.micro_size, self.plan.accum)
        else:
            engine = DDPEngine(name, module, optimizer, scheduler, self.ctx, dcfg, self.plan.accum)
        self.engines[name] = engine
        return engine

    def modules(self) -> dict[str, nn.Module]:
        """The plain modules by branch name (G, D, SSB): exported and initialised from."""
        return {n: e.module for n, e in self.engines.items()}

    def model_config_dict(self) -> dict:
        return to_dict(self.model_cfg)

    # -- validation ------------------------------------------------------------------------------
    def predict_foreground(self, micro: dict) -> torch.Tensor:
        """[N, H, W] bool foreground of the final prediction (phases with an SSB)."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, batches) -> dict[str, float]:
        """Mean IoU (J) of the final prediction against the masks (255 ignored), rank-averaged."""
        modules = self.modules()
        modes = {n: m.training for n, m in modules.items()}
        for m in modules.values():
            m.eval()
        inter = union = 0.0
        ious = []
        try:
            for batch in batches:
                micro = self.prepare(batch)
                fg = self.predict_foreground(micro)
                gt = micro["mask"]
                valid = gt != 255
                pred, true = fg & valid, (gt == 1) & valid
                for p, t in zip(pred, true):
                    u = float((p | t).sum())
                    ious.append(1.0 if u == 0 else float((p & t).sum()) / u)
                inter += float((pred & true).sum())
                union += float((pred | true).sum())
        finally:
            for n, m in modules.items():
                m.train(modes[n])
        local = {"eval/J": sum(ious) / max(len(ious), 1),
                 "eval/pixel_iou": inter / union if union else 1.0}
        return all_reduce_mean(local, self.ctx)
