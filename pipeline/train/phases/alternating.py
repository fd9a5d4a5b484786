"""Phase 3: iterative offline training of both branches on DAVIS-2016 train (paper Sec. 3.3).

Clips of delta+1 frames with the mask of the last one. Two schedules (``alternating.schedule``):

* ``rounds`` (the paper's text): ``tcb_steps`` steps training the temporal coherence branch with
  the SSB frozen (G: Eq. 2 plus the segmentation loss reaching G through the frozen SSB's
  attention inputs, unless ``detach_temporal``; D: Eq. 1; Adam, lr_G 1e-8, lr_D 1e-4), then
  ``ssb_steps`` steps training the SSB with the TCB frozen (Eq. 3 with G's temporal features;
  SGD lr 1e-4), and so on. A frozen branch runs in eval mode (BatchNorm statistics fixed).
* ``per_step`` (the authors' code): every step updates G and D (gated by ``margin``) and then
  the SSB on G's features of that step.

The loss weights (``lambda_adv``, ``seg_weight_g``, the side weights) are the ``loss:`` section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from pipeline.model.spatial import foreground_probability
from pipeline.model.stcnn import build_discriminator, build_generator, build_ssb
from pipeline.train.config import TrainConfig
from pipeline.train.data import frames_to_input, frames_to_tanh
from pipeline.train.phases.gan import GanLosses, split_clip
from pipeline.train.loop import Update
from pipeline.train.losses import segmentation_loss, side_output_weight
from pipeline.train.optim import OptimConfig
from pipeline.train.phases.base import EvalConfig, MarginGate, PhaseBase
from pipeline.train.phases.segmentation import to_target
from pipeline.train.weights import apply_init
from pipeline.core.config import ConfigError


@dataclass
class AlternatingConfig:
    schedule: Literal["rounds", "per_step"] = "rounds"
    first: Literal["tcb", "ssb"] = "tcb"
    tcb_steps: int = 1000          # steps per TCB round (rounds schedule)
    ssb_steps: int = 1000          # steps per SSB round
    optim_g: OptimConfig = field(default_factory=lambda: OptimConfig(name="adam", lr=1e-8,
                                                                     weight_decay=5e-4))
    optim_d: OptimConfig = field(default_factory=lambda: OptimConfig(name="adam", lr=1e-4,
                                                                     weight_decay=5e-4))
    optim_ssb: OptimConfig = field(default_factory=lambda: OptimConfig(
        name="sgd", lr=1e-4, momentum=0.9, weight_decay=5e-4))
    margin: float | None = None


@dataclass
class AlternatingTrainConfig(TrainConfig):
    alternating: AlternatingConfig = field(default_factory=AlternatingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


class AlternatingPhase(PhaseBase):
    name = "alternating"
    register_as = "stcnn"
    kind = "clip"
    masks = True

    def __init__(self, cfg: AlternatingTrainConfig, model_cfg, ctx, plan, init: dict | None = None):
        super().__init__(cfg, model_cfg, ctx, plan)
        self.acfg = a = cfg.alternating
        if a.tcb_steps < 1 or a.ssb_steps < 1:
            raise ConfigError("alternating.tcb_steps and ssb_steps must be >= 1")
        self.delta = model_cfg.temporal.delta
        self.detach = model_cfg.detach_temporal
        g, d, ssb = build_generator(model_cfg), build_discriminator(model_cfg), build_ssb(model_cfg)
        apply_init({"G": g, "D": d, "SSB": ssb}, init or {}, required=["G", "D", "SSB"],
                   missing_policy=cfg.init_missing, uris=list(cfg.init_from))
        n_tcb, n_ssb = self.update_counts(cfg.steps)
        self.make_engine("G", g, a.optim_g, n_tcb, sync_bn=True)
        self.make_engine("D", d, a.optim_d, n_tcb, sync_bn=True)
        self.make_engine("SSB", ssb, a.optim_ssb, n_ssb)
        self.gate = MarginGate(a.margin)
        self.loss = cfg.loss
        self.gan = GanLosses(self, self.loss.lambda_adv)

    # -- schedule ----------------------------------------------------------------------------
    def branch_at(self, step: int) -> str:
        """``tcb``, ``ssb`` or ``both`` for the 0-based ``step``."""
        a = self.acfg
        if a.schedule == "per_step":
            return "both"
        order = [("tcb", a.tcb_steps), ("ssb", a.ssb_steps)]
        if a.first == "ssb":
            order.reverse()
        pos = step % (a.tcb_steps + a.ssb_steps)
        return order[0][0] if pos < order[0][1] else order[1][0]

    def update_counts(self, steps: int) -> tuple[int, int]:
        branches = [self.branch_at(s) for s in range(steps)]
        tcb = sum(b in ("tcb", "both") for b in branches)
        ssb = sum(b in ("ssb", "both") for b in branches)
        return max(tcb, 1), max(ssb, 1)

    # -- loop protocol -------------------------------------------------------------------------
    def prepare(self, batch: dict) -> dict:
        previous, current = split_clip(batch["frames"], self.delta)
        return {"previous": frames_to_input(previous, self.device),
                "image": frames_to_input(current, self.device, self.cfg.dist.channels_last),
                "target": frames_to_tanh(current, self.device),
                "mask": to_target(batch["mask"], self.device)}

    def _side_weight(self, step: int) -> float:
        return side_output_weight(self.loss.side_weight_schedule, step, self.cfg.steps)

    def g_terms(self, m: dict, step: int) -> dict[str, torch.Tensor]:
        terms = self.gan.g_terms(m)
        if self.detach or self.loss.seg_weight_g == 0:
            return terms
        with self.engines["SSB"].frozen() as ssb:
            seg = segmentation_loss(ssb(m["image"], m["features"]), m["mask"],
                                    self._side_weight(step), self.loss.ignore_index)
        terms["seg"] = seg
        terms["loss"] = terms["loss"] + self.loss.seg_weight_g * seg
        return terms

    def ssb_terms(self, m: dict, step: int) -> dict[str, torch.Tensor]:
        features = m.get("features")
        if features is None:
            with torch.no_grad():
                features = self.engines["G"].module(m["previous"]).features
        features = tuple(f.detach() for f in features)
        outputs = self.engines["SSB"](m["image"], features)
        return {"loss": segmentation_loss(outputs, m["mask"], self._side_weight(step),
                                          self.loss.ignore_index)}

    def _set_modes(self, branch: str) -> None:
        tcb_on = branch in ("tcb", "both")
        ssb_on = branch in ("ssb", "both")
        self.engines["G"].train(tcb_on)
        self.engines["D"].train(tcb_on)
        self.engines["SSB"].train(ssb_on)

    def updates(self, step: int) -> list[Update]:
        branch = self.branch_at(step)
        self._set_modes(branch)
        out = []
        if branch in ("tcb", "both"):
            if self.gate.allows("G"):
                out.append(Update("G", lambda m: self.g_terms(m, step)))
            if self.gate.allows("D"):
                out.append(Update("D", self.gan.d_terms))
        if branch in ("ssb", "both"):
            out.append(Update("SSB", lambda m: self.ssb_terms(m, step)))
        return out

    def end_step(self, step: int, metrics: dict[str, float]) -> None:
        self.gate.record(metrics, {"G": "G/adv", "D": "D/loss"})
        metrics["branch/tcb"] = float(self.branch_at(step) in ("tcb", "both"))

    def state_dict(self) -> dict:
        return {"gate": dict(self.gate.last)}

    def load_state_dict(self, state: dict) -> None:
        self.gate.last = dict(state.get("gate", {}))

    def predict_foreground(self, micro: dict) -> torch.Tensor:
        features = self.engines["G"].module(micro["previous"]).features
        final = self.engines["SSB"].module(micro["image"], features)[-1]
        return foreground_probability(final)[:, 0] > 0.5
