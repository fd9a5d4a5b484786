"""Phase 1: adversarial pretraining of the temporal coherence branch (paper Sec. 3.3, Eq. 1-2).

Clips of delta+1 frames (ILSVRC VID): G predicts frame t from frames t-delta..t-1; D tells real
frames from predicted ones. Each step updates G, then D:

* G: ``||X_t - G(X_{t-delta..t-1})||^2 + lambda_adv * -log D(G(...))`` with D frozen
  (``requires_grad`` off: no gradient reaches D; needed by DeepSpeed ZeRO-2 too);
* D: Eq. 1 on the real frame and G's prediction of this step (detached).

G's input is ImageNet-normalised (its encoder is an ImageNet ResNet-101); G's output, the target
and D's input are in [-1, 1] (tanh; Inception-v3's own input range). With a 1/4-resolution
prediction (the authors' code) the real frame is resized to it. ``gan.margin`` (authors' code:
0.3) gates the updates, see :class:`pipeline.train.phases.base.MarginGate`; ``lambda_adv`` is
``loss.lambda_adv``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pipeline.core.config import ConfigError
from pipeline.model.stcnn import build_discriminator, build_generator
from pipeline.train.config import TrainConfig
from pipeline.train.data import frames_to_input, frames_to_tanh
from pipeline.train.loop import Update
from pipeline.train.losses import discriminator_loss, generator_loss, resize_frame
from pipeline.train.optim import OptimConfig
from pipeline.train.phases.base import MarginGate, PhaseBase
from pipeline.train.weights import apply_init, warn_random_backbones


def _adam(lr: float, wd: float) -> OptimConfig:
    return OptimConfig(name="adam", lr=lr, weight_decay=wd)


@dataclass
class GanConfig:
    optim_g: OptimConfig = field(default_factory=lambda: _adam(1e-7, 2e-4))
    optim_d: OptimConfig = field(default_factory=lambda: _adam(1e-4, 2e-4))
    margin: float | None = None      # None: paper (both every step); authors' code: 0.3


@dataclass
class GanTrainConfig(TrainConfig):
    gan: GanConfig = field(default_factory=GanConfig)


def split_clip(frames: torch.Tensor, delta: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N, delta+1, 3, H, W] -> (previous [N, delta, 3, H, W], current [N, 3, H, W])."""
    if frames.dim() != 5 or frames.shape[1] != delta + 1:
        raise ConfigError(f"clips have shape {tuple(frames.shape)} but the model's delta is {delta}: "
                          f"it needs {delta + 1} frames per clip; rebuild the shards with "
                          f"launch/preprocess.py --delta {delta} or set "
                          f"model_overrides=[temporal.delta={frames.shape[1] - 1}]")
    return frames[:, :delta], frames[:, delta]


class GanLosses:
    """G's and D's updates on micro-batches with ``previous`` and ``target`` (shared by the GAN
    and the alternating phase)."""

    def __init__(self, phase: PhaseBase, lambda_adv: float):
        self.phase, self.lambda_adv = phase, lambda_adv

    def g_terms(self, m: dict) -> dict[str, torch.Tensor]:
        g, d = self.phase.engines["G"], self.phase.engines["D"]
        predicted, features = g(m["previous"])
        target = resize_frame(m["target"], predicted.shape[-2:])
        with d.frozen() as d_plain:
            fake_logits = d_plain(predicted)
        loss = generator_loss(predicted, target, fake_logits, self.lambda_adv)
        m["fake"] = predicted.detach()
        m["features"] = features
        return {"loss": loss.total, "mse": loss.mse, "adv": loss.adversarial}

    def fake(self, m: dict) -> torch.Tensor:
        if "fake" not in m:  # G was not updated this step: its prediction, without gradients
            with torch.no_grad():
                m["fake"] = self.phase.engines["G"].module(m["previous"]).frame
        return m["fake"]

    def d_terms(self, m: dict) -> dict[str, torch.Tensor]:
        d = self.phase.engines["D"]
        fake = self.fake(m)
        real = resize_frame(m["target"], fake.shape[-2:])
        real_logits = d(real)
        fake_logits = d(fake)
        return {"loss": discriminator_loss(real_logits, fake_logits)}


class GanPhase(PhaseBase):
    name = "gan"
    register_as = "stcnn-tcb"
    kind = "clip"
    masks = False

    def __init__(self, cfg: GanTrainConfig, model_cfg, ctx, plan, init: dict | None = None):
        super().__init__(cfg, model_cfg, ctx, plan)
        self.gcfg = cfg.gan
        self.delta = model_cfg.temporal.delta
        g, d = build_generator(model_cfg), build_discriminator(model_cfg)
        apply_init({"G": g, "D": d}, init or {}, required=[], missing_policy="random",
                   uris=list(cfg.init_from))
        warn_random_backbones(model_cfg, ["temporal"], init, ctx.rank)
        self.make_engine("G", g, self.gcfg.optim_g, cfg.steps, sync_bn=True)
        self.make_engine("D", d, self.gcfg.optim_d, cfg.steps, sync_bn=True)
        self.gate = MarginGate(self.gcfg.margin)
        self.losses = GanLosses(self, cfg.loss.lambda_adv)

    def prepare(self, batch: dict) -> dict:
        previous, current = split_clip(batch["frames"], self.delta)
        return {"previous": frames_to_input(previous, self.device),
                "target": frames_to_tanh(current, self.device)}

    def updates(self, step: int) -> list[Update]:
        out = []
        if self.gate.allows("G"):
            out.append(Update("G", self.losses.g_terms))
        if self.gate.allows("D"):
            out.append(Update("D", self.losses.d_terms))
        return out

    def end_step(self, step: int, metrics: dict[str, float]) -> None:
        self.gate.record(metrics, {"G": "G/adv", "D": "D/loss"})

    def state_dict(self) -> dict:
        return {"gate": dict(self.gate.last)}

    def load_state_dict(self, state: dict) -> None:
        self.gate.last = dict(state.get("gate", {}))
