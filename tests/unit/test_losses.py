"""Losses of Eq. 1-3 against values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.core.config import ConfigError, load_config
from pipeline.train.losses import (LossConfig, discriminator_loss, generator_loss, pixel_cross_entropy,
                                   resize_frame, segmentation_loss, side_output_weight)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_discriminator_loss_one_logit():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 3.0])
    expected = (-math.log(sigmoid(2.0)) - math.log(0.5)) / 2 \
        + (-math.log(1 - sigmoid(-1.0)) - math.log(1 - sigmoid(3.0))) / 2
    assert discriminator_loss(real, fake).item() == pytest.approx(expected, rel=1e-6)
    # [N, 1] logits are the same thing.
    assert discriminator_loss(real[:, None], fake[:, None]).item() == pytest.approx(expected, rel=1e-6)


def test_discriminator_loss_two_classes():
    # softmax([0, ln 3]) = [1/4, 3/4]: D(x) = P(real) = 3/4.
    real = torch.tensor([[0.0, math.log(3.0)]])
    fake = torch.tensor([[math.log(4.0), 0.0]])  # P(real) = 1/5
    expected = -math.log(3 / 4) - math.log(1 - 1 / 5)
    assert discriminator_loss(real, fake).item() == pytest.approx(expected, rel=1e-6)


def test_two_class_and_one_logit_forms_agree():
    z = torch.tensor([0.7, -1.3, 2.2])
    two = torch.stack([torch.zeros(3), z], 1)  # softmax([0, z])[1] = sigmoid(z)
    one = discriminator_loss(z, -z).item()
    assert discriminator_loss(two, -two).item() == pytest.approx(one, rel=1e-6)


def test_generator_loss_eq2():
    predicted = torch.tensor([[[[0.5, -0.5]]]])
    target = torch.tensor([[[[1.0, 0.5]]]])
    fake = torch.tensor([0.0])
    out = generator_loss(predicted, target, fake, lambda_adv=0.001)
    mse = (0.5 ** 2 + 1.0 ** 2) / 2
    assert out.mse.item() == pytest.approx(mse)
    assert out.adversarial.item() == pytest.approx(math.log(2))  # -log D = -log 0.5
    assert out.total.item() == pytest.approx(mse + 0.001 * math.log(2))
    with pytest.raises(ValueError, match="resize_frame"):
        generator_loss(predicted, torch.zeros(1, 1, 2, 2), fake)


def test_resize_frame_to_prediction_size():
    frame = torch.full((2, 3, 8, 12), 0.25)
    assert resize_frame(frame, (8, 12)) is frame
    small = resize_frame(frame, torch.Size([2, 3, 2, 3]))
    torch.testing.assert_close(small, torch.full((2, 3, 2, 3), 0.25))


def test_pixel_cross_entropy_one_channel_ignores_void():
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 5.0]]]])
    target = torch.tensor([[[1, 0], [0, 255]]])
    expected = (-math.log(0.5) - math.log(1 - sigmoid(2.0)) - math.log(1 - sigmoid(-1.0))) / 3
    assert pixel_cross_entropy(logits, target).item() == pytest.approx(expected, rel=1e-6)
    assert pixel_cross_entropy(logits, target[:, None]).item() == pytest.approx(expected, rel=1e-6)


def test_pixel_cross_entropy_two_classes_ignores_void():
    # pixel (0,0): logits [0, ln 3] -> P(fg) = 3/4, label 1; pixel (0,1): [0, 0], label 0; void.
    logits = torch.tensor([[[[0.0, 0.0, 9.0]], [[math.log(3.0), 0.0, -9.0]]]])
    target = torch.tensor([[[1, 0, 255]]])
    expected = (-math.log(3 / 4) - math.log(1 / 2)) / 2
    assert pixel_cross_entropy(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_all_void_gives_zero_not_nan():
    target = torch.full((1, 2, 2), 255)
    assert pixel_cross_entropy(torch.randn(1, 1, 2, 2), target).item() == 0
    assert pixel_cross_entropy(torch.randn(1, 2, 2, 2), target).item() == 0


def test_segmentation_loss_weights_side_outputs():
    target = torch.tensor([[[1, 0]]])
    side1 = torch.zeros(1, 1, 1, 2)                       # log 2 per pixel
    side2 = torch.tensor([[[[1.0, -1.0]]]])               # -log sigmoid(1) per pixel
    final = torch.tensor([[[[3.0, -3.0]]]])               # -log sigmoid(3) per pixel
    l_side1, l_side2, l_final = math.log(2), -math.log(sigmoid(1.0)), -math.log(sigmoid(3.0))
    got = segmentation_loss([side1, side2, final], target, side_weight=0.25)
    assert got.item() == pytest.approx(l_final + 0.25 * (l_side1 + l_side2), rel=1e-6)
    got = segmentation_loss([side1, side2, final], target)
    assert got.item() == pytest.approx(l_final + l_side1 + l_side2, rel=1e-6)


def test_side_output_weight_schedules():
    cfg = load_config(LossConfig, None, ["side_weight_schedule=linear_decay"])
    assert (cfg.lambda_adv, cfg.ignore_index) == (0.001, 255)
    assert side_output_weight(cfg.side_weight_schedule, 30, 40) == 0.25
    with pytest.raises(ConfigError, match="side_weight_schedule"):
        load_config(LossConfig, None, ["side_weight_schedule=cosine"])
    assert side_output_weight("constant", 50, 100) == 1.0
    assert side_output_weight("linear_decay", 0, 100) == 1.0
    assert side_output_weight("linear_decay", 25, 100) == 0.75
    assert side_output_weight("linear_decay", 100, 100) == 0.0
    with pytest.raises(ValueError):
        side_output_weight("cosine", 1, 2)


def test_shape_errors():
    with pytest.raises(ValueError, match="does not match"):
        pixel_cross_entropy(torch.zeros(1, 1, 2, 2), torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="1 or 2 channels"):
        pixel_cross_entropy(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="D logits"):
        discriminator_loss(torch.zeros(2, 3), torch.zeros(2, 3))
