"""Optimizers and learning-rate schedules of the paper's recipe, by config.

    optim:
      name: sgd            # sgd | adam
      lr: 1.0e-3
      momentum: 0.9
      weight_decay: 5.0e-4
      bias_lr_mult: 1.0    # the authors' code: 2.0 for biases in SSB pretraining
      schedule: poly       # constant | poly (lr * (1 - step/total)^power)
      power: 0.9
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from pipeline.core.config import ConfigError


@dataclass
class OptimConfig:
    name: Literal["sgd", "adam"] = "adam"
    lr: float = 1e-4
    momentum: float = 0.9                                  # sgd
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam
    weight_decay: float = 0.0
    bias_lr_mult: float = 1.0
    schedule: Literal["constant", "poly"] = "constant"
    power: float = 0.9                                      # poly


def param_groups(module: nn.Module, cfg: OptimConfig) -> list[dict]:
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"{type(module).__name__} has no trainable parameters to optimize")
    if cfg.bias_lr_mult == 1.0:
        return [{"params": params}]
    biases = [p for n, p in module.named_parameters() if p.requires_grad and n.endswith(".bias")]
    ids = {id(p) for p in biases}
    rest = [p for p in params if id(p) not in ids]
    return [{"params": rest}, {"params": biases, "lr": cfg.lr * cfg.bias_lr_mult}]


def build_optimizer(module: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.lr <= 0:
        raise ConfigError(f"optimizer lr must be > 0, got {cfg.lr}")
    groups = param_groups(module, cfg)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        if len(cfg.betas) != 2:
            raise ConfigError(f"optim betas must have 2 values, got {cfg.betas}")
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas),
                                weight_decay=cfg.weight_decay)
    raise ConfigError(f"unknown optimizer {cfg.name!r}; use sgd or adam")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """``poly``: lr x (1 - step / total_steps) ^ power, stepped once per optimizer step."""
    if cfg.schedule == "constant":
        return None
    if cfg.schedule == "poly":
        total = max(int(total_steps), 1)
        power = float(cfg.power)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: max(0.0, 1.0 - step / total) ** power)
    raise ConfigError(f"unknown lr schedule {cfg.schedule!r}; use constant or poly")
