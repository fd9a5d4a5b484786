"""The losses of Sec. 3 (Xu et al., CVPR 2019).

* Eq. 1, :func:`discriminator_loss`: ``-log(1 - D(X^_t)) - log D(X_t)``.
* Eq. 2, :func:`generator_loss`: ``||X_t - X^_t||^2 - lambda_adv * log D(X^_t)``, lambda_adv = 0.001.
* Eq. 3, :func:`segmentation_loss`: pixel-wise cross-entropy, summed over the multi-scale
  predictions (Fig. 1).

D's output decides the form: two logits per frame (the paper's 2-class FC; class 1 = real) use
softmax cross-entropy, one logit (the authors' code) binary cross-entropy with logits; the two
are the same loss under different parameterisations. Likewise a segmentation map with two
channels uses softmax cross-entropy (Eq. 3), one channel BCE-with-logits (code). Every term is a
mean (over frames, elements or non-void pixels), as in the code; Eq. 3's sum over pixels differs
from it by a constant factor that the learning rate absorbs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

VOID = 255  # void / "don't care" label in the masks (DAVIS-2017 palette PNGs)


@dataclass
class LossConfig:
    """The ``loss:`` section of every training phase's config: the weights of the terms above.
    A phase reads those of the losses it computes (GAN: ``lambda_adv``; SSB pretraining: the
    side weights; alternating: all)."""

    lambda_adv: float = 0.001  # Eq. 2 (Sec. 3.3)
    # Weight of the side outputs (all but the last map) in Eq. 3. constant: 1, as in the paper and
    # in the code's SSB pretraining; linear_decay: 1 - step/total_steps, the code's joint training.
    side_weight_schedule: Literal["constant", "linear_decay"] = "constant"
    seg_weight_g: float = 1.0  # the segmentation loss in G's update (alternating training)
    ignore_index: int = VOID   # the mask label Eq. 3 leaves out (void)


class GeneratorLoss(NamedTuple):
    total: torch.Tensor
    mse: torch.Tensor
    adversarial: torch.Tensor


def _real_fake_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """-log D(x) (real) or -log(1 - D(x)) (fake), averaged over frames."""
    if logits.dim() == 2 and logits.shape[1] == 2:
        target = torch.full(logits.shape[:1], int(real), dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, target)
    if logits.dim() == 2 and logits.shape[1] == 1:
        logits = logits.squeeze(1)
    if logits.dim() != 1:
        raise ValueError(f"D logits must be [N], [N, 1] or [N, 2], got {tuple(logits.shape)}")
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Eq. 1: D's loss on real frames X_t and generated frames X^_t (pass G's output detached)."""
    return _real_fake_loss(real_logits, True) + _real_fake_loss(fake_logits, False)


def generator_loss(predicted: torch.Tensor, target: torch.Tensor, fake_logits: torch.Tensor,
                   lambda_adv: float = 0.001) -> GeneratorLoss:
    """Eq. 2: mean squared error to the real frame plus lambda_adv times -log D(X^_t).

    ``target`` must have the prediction's size; :func:`resize_frame` brings a full-resolution
    frame to a 1/4-resolution prediction (the code's configuration).
    """
    if predicted.shape != target.shape:
        raise ValueError(f"prediction {tuple(predicted.shape)} and target {tuple(target.shape)} differ; "
                         "resize the target with resize_frame(target, predicted.shape[-2:])")
    mse = F.mse_loss(predicted, target)
    adversarial = _real_fake_loss(fake_logits, True)
    return GeneratorLoss(mse + lambda_adv * adversarial, mse, adversarial)


def resize_frame(frame: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """A real frame resized (antialiased bilinear) to the predicted frame's size."""
    size = tuple(size[-2:])
    if tuple(frame.shape[-2:]) == size:
        return frame
    return F.interpolate(frame, size=size, mode="bilinear", align_corners=False, antialias=True)


def pixel_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                        ignore_index: int = VOID) -> torch.Tensor:
    """Eq. 3 for one map: cross-entropy averaged over the pixels whose label is not void.

    ``logits`` [N, 2, H, W] (softmax) or [N, 1, H, W] (sigmoid); ``target`` [N, H, W] or
    [N, 1, H, W] with 0 = background, 1 = foreground, ``ignore_index`` = void.
    """
    if target.dim() == 4:
        target = target.squeeze(1)
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"target {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    target = target.long()
    valid = target != ignore_index
    count = valid.sum().clamp(min=1)
    if logits.shape[1] == 2:
        return F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum") / count
    if logits.shape[1] != 1:
        raise ValueError(f"segmentation logits need 1 or 2 channels, got {logits.shape[1]}")
    per_pixel = F.binary_cross_entropy_with_logits(
        logits.squeeze(1), valid * target.float(), reduction="none")  # void pixels: any target
    return (per_pixel * valid).sum() / count


def segmentation_loss(outputs: Sequence[torch.Tensor], target: torch.Tensor, side_weight: float = 1.0,
                      ignore_index: int = VOID) -> torch.Tensor:
    """Eq. 3 summed over the multi-scale predictions: the last map (the fused prediction) with
    weight 1, every other (side) map with ``side_weight``."""
    *sides, final = outputs
    loss = pixel_cross_entropy(final, target, ignore_index)
    for side in sides:
        loss = loss + side_weight * pixel_cross_entropy(side, target, ignore_index)
    return loss


def side_output_weight(schedule: str, step: int = 0, total_steps: int = 1) -> float:
    """The side outputs' weight at ``step`` of ``total_steps`` (see :class:`LossConfig`)."""
    if schedule == "constant":
        return 1.0
    if schedule == "linear_decay":
        return max(0.0, 1.0 - step / max(total_steps, 1))
    raise ValueError(f"unknown side_weight_schedule {schedule!r}; use constant or linear_decay")
