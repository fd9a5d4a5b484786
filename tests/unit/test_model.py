"""STCNN model: parameter counts against the authors' model, reference shapes at 854x480 (on the
meta device: shapes only, instant), tiny CPU forward/backward, weight loading from local files."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch
import torchvision

from pipeline.core.config import load_config
from pipeline.model import (FrozenBatchNorm2d, ModelConfig, PretrainedWeightsError, ResNetTrunk,
                            build_discriminator, build_generator, build_ssb, build_stcnn)
from pipeline.model.info import AUTHORS_CODE_PARAMETERS, count_parameters
from pipeline.train.losses import discriminator_loss, generator_loss, resize_frame, segmentation_loss

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "model"
# The authors' code variant, on the tiny model.
TINY_CODE = ["temporal.first_conv_init=tile", "temporal.deconv_kernel=4",
             "temporal.deconv_init=bilinear", "temporal.skips=2", "temporal.compact_bn_relu=false", "temporal.deconv_bn_relu=false",
             "temporal.predict_full_resolution=false", "spatial.backbone.maxpool_ceil_mode=true",
             "spatial.num_classes=1", "spatial.fusion_head=conv3x3_bn_relu_conv1x1",
             "discriminator.outputs=1", "detach_temporal=true"]


def config(name: str, *overrides: str) -> ModelConfig:
    return load_config(ModelConfig, CONFIGS / f"{name}.yaml", list(overrides))


def meta_parts(cfg: ModelConfig):
    with torch.device("meta"):
        return build_stcnn(cfg), build_discriminator(cfg)


def shapes(tensors) -> list[tuple[int, ...]]:
    return [tuple(t.shape[1:]) for t in tensors]


# ---- parameter counts ----------------------------------------------------------------------------

def test_code_config_matches_the_authors_parameter_counts():
    net, d = meta_parts(config("stcnn_code"))
    counts = {"G (TCB)": count_parameters(net.tcb), "SSB": count_parameters(net.ssb),
              "STCNN (G + SSB)": count_parameters(net), "D": count_parameters(d)}
    for part, n in counts.items():
        assert abs(n - AUTHORS_CODE_PARAMETERS[part]) <= 0.01 * AUTHORS_CODE_PARAMETERS[part], part
    assert counts["SSB"] == 71_696_197 and counts["D"] == 21_787_617
    assert counts["G (TCB)"] == 57_966_595 - 832  # no biases on the three 3x3 convs before BN
    assert count_parameters(net.tcb.encoder) == 42_528_384
    assert count_parameters(net.ssb.encoder) == 42_500_160


def test_paper_config_counts_and_their_difference_from_the_code():
    net, d = meta_parts(config("stcnn"))
    assert count_parameters(net.tcb) == 55_680_195
    assert count_parameters(net.ssb) == 69_355_594
    assert count_parameters(d) == 21_789_666  # 2-class FC
    code, _ = meta_parts(config("stcnn", "temporal.deconv_kernel=4"))
    assert count_parameters(code.tcb) - count_parameters(net.tcb) == 2_322_432  # 4x4 vs 3x3


def test_trunks_have_torchvision_resnet101_keys_and_shapes():
    with torch.device("meta"):
        tv = {k: v.shape for k, v in torchvision.models.resnet101().state_dict().items()
              if not k.startswith("fc.")}
        net = build_stcnn(config("stcnn_code"))
    for trunk in (net.ssb.encoder, net.tcb.encoder):
        ours = {k: v.shape for k, v in trunk.state_dict().items()}
        assert ours.keys() == tv.keys()
        assert {k for k in ours if ours[k] != tv[k]} <= {"conv1.weight"}
    assert net.tcb.encoder.conv1.weight.shape == (64, 12, 7, 7)


# ---- shapes ----------------------------------------------------------------------------------------

def test_code_config_reproduces_the_reference_shapes_at_854x480():
    net, d = meta_parts(config("stcnn_code"))
    with torch.device("meta"):
        previous, frame = torch.empty(1, 4, 3, 480, 854), torch.empty(1, 3, 480, 854)
        assert shapes(net.tcb.encoder(previous.flatten(1, 2))) == [
            (256, 120, 214), (512, 60, 107), (1024, 30, 54), (2048, 15, 27)]
        assert shapes(net.ssb.encoder(frame)) == [
            (256, 121, 214), (512, 61, 107), (1024, 61, 107), (2048, 61, 107)]
        out = net(previous, frame)
        assert shapes(out.temporal_features) == [(512, 30, 54), (256, 60, 107), (64, 120, 214)]
        assert tuple(out.frame.shape) == (1, 3, 120, 214)
        assert [tuple(s.shape) for s in out.segmentation] == [(1, 1, 480, 854)] * 5
        assert tuple(d(out.frame).shape) == (1,)


def test_paper_config_shapes_at_854x480():
    net, d = meta_parts(config("stcnn"))
    with torch.device("meta"):
        previous, frame = torch.empty(2, 4, 3, 480, 854), torch.empty(2, 3, 480, 854)
        assert shapes(net.ssb.encoder(frame)) == [
            (256, 120, 214), (512, 60, 107), (1024, 60, 107), (2048, 60, 107)]
        out = net(previous, frame)
        assert shapes(out.temporal_features) == [(512, 30, 54), (256, 60, 107), (64, 120, 214)]
        assert tuple(out.frame.shape) == (2, 3, 480, 854)
        assert [tuple(s.shape) for s in out.segmentation] == [(2, 2, 480, 854)] * 5
        assert tuple(d(out.frame).shape) == (2, 2)
        out = net(torch.empty(1, 4, 3, 333, 517), torch.empty(1, 3, 333, 517))  # any size
        assert tuple(out.frame.shape) == (1, 3, 333, 517)
        assert [tuple(s.shape) for s in out.segmentation] == [(1, 2, 333, 517)] * 5


# ---- tiny model on the CPU -------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["paper", "code"])
def test_tiny_forward_backward(variant):
    torch.manual_seed(0)
    cfg = config("tiny", *(TINY_CODE if variant == "code" else []))
    net, d = build_stcnn(cfg), build_discriminator(cfg)
    clip = torch.rand(2, 5, 3, 72, 100) * 2 - 1   # odd sizes on purpose
    mask = (torch.rand(2, 72, 100) > 0.5).long()
    mask[:, :4] = 255
    out = net(clip[:, :4], clip[:, 4])
    classes = 2 if variant == "paper" else 1
    assert [tuple(s.shape) for s in out.segmentation] == [(2, classes, 72, 100)] * 5
    assert tuple(out.frame.shape) == ((2, 3, 72, 100) if variant == "paper" else (2, 3, 18, 25))

    seg = segmentation_loss(out.segmentation, mask)
    seg.backward(retain_graph=True)
    assert all(p.grad is not None for p in net.ssb.parameters())
    # The paper lets the segmentation loss reach the TCB; the code detaches the temporal features.
    tcb_grad = net.tcb.up1.deconv.weight.grad
    assert (tcb_grad is None) == (variant == "code")

    target = resize_frame(clip[:, 4], out.frame.shape)
    d_loss = discriminator_loss(d(target), d(out.frame.detach()))
    d_loss.backward()
    g = generator_loss(out.frame, target, d(out.frame))
    g.total.backward()
    assert all(torch.isfinite(x) for x in (seg, d_loss, g.total))
    assert net.tcb.head.weight.grad is not None and net.tcb.encoder.conv1.weight.grad is not None


def test_ssb_runs_without_temporal_features_as_zeros():
    torch.manual_seed(0)
    ssb = build_ssb(config("tiny")).eval()
    frame = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        alone = ssb(frame)
        zeros = [torch.zeros(1, c, s, s) for c, s in ((32, 4), (16, 8), (8, 16))]
        with_zeros = ssb(frame, zeros)
    assert len(alone) == 5
    for a, b in zip(alone, with_zeros):
        torch.testing.assert_close(a, b)


def test_frozen_batchnorm_keeps_statistics_at_batch_one():
    cfg = config("tiny")
    ssb = build_ssb(cfg).train()
    bns = [m for m in ssb.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(isinstance(m, FrozenBatchNorm2d) for m in bns)
    before = {k: v.clone() for k, v in ssb.state_dict().items() if "running" in k}
    ssb(torch.randn(1, 3, 64, 64))  # batch 1 with 1x1 pooled maps: fails with training BatchNorm
    after = ssb.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in build_generator(cfg).modules())


# ---- weights from local files ----------------------------------------------------------------------

def tiny_resnet_file(path: Path, **overrides) -> dict[str, torch.Tensor]:
    """A random torchvision-format state_dict of the tiny trunk (3 input channels, with an FC)."""
    trunk = ResNetTrunk((1, 1, 1, 1), width_div=16)
    state = dict(trunk.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 128), torch.randn(1000)
    state.update(overrides)
    torch.save(state, path)
    return state


@pytest.mark.parametrize("mode,scale", [("tile_mean", 0.25), ("tile", 1.0)])
def test_generator_first_conv_is_tiled_from_the_rgb_conv(tmp_path, mode, scale):
    state = tiny_resnet_file(tmp_path / "resnet.pth")
    cfg = config("tiny", f"temporal.backbone.weights={tmp_path / 'resnet.pth'}",
                 f"temporal.first_conv_init={mode}")
    g = build_generator(cfg)
    w, rgb = g.encoder.conv1.weight.detach(), state["conv1.weight"]
    assert w.shape == (4, 12, 7, 7)
    for k in range(4):  # frame k's channels 3k..3k+2 get the RGB kernel
        torch.testing.assert_close(w[:, 3 * k:3 * k + 3], rgb * scale)
    torch.testing.assert_close(g.encoder.layer4[0].conv2.weight.detach(), state["layer4.0.conv2.weight"])
    torch.testing.assert_close(g.encoder.bn1.running_var, state["bn1.running_var"])


def test_ssb_loads_the_same_file(tmp_path):
    state = tiny_resnet_file(tmp_path / "resnet.pth")
    ssb = build_ssb(config("tiny", f"spatial.backbone.weights={tmp_path / 'resnet.pth'}"))
    for k, v in ssb.encoder.state_dict().items():
        torch.testing.assert_close(v, state[k])
    assert ssb.encoder.layer3[0].conv2.dilation == (2, 2)


def test_missing_weights_file_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "resnet101.pth"
    with pytest.raises(PretrainedWeightsError, match="resnet101.pth: pretrained weights file not found"):
        build_generator(config("tiny", f"temporal.backbone.weights={missing}"))


def test_mismatched_weights_file_names_file_keys_and_shapes(tmp_path):
    path = tmp_path / "wrong.pth"
    state = tiny_resnet_file(path, **{"layer1.0.conv1.weight": torch.randn(8, 4, 1, 1)})
    del state["layer4.0.bn3.bias"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(PretrainedWeightsError) as e:
        build_ssb(config("tiny", f"spatial.backbone.weights={path}"))
    msg = str(e.value)
    assert str(path) in msg and "layer4.0.bn3.bias" in msg and "extra.weight" in msg
    assert "layer1.0.conv1.weight: file (8, 4, 1, 1) vs model (4, 4, 1, 1)" in msg
    with pytest.raises(PretrainedWeightsError, match="wrong.pth"):  # a full-width model, tiny file
        with torch.device("meta"):
            build_generator(config("stcnn", f"temporal.backbone.weights={path}"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match="junk.pth: not a readable torch state_dict"):
        build_generator(config("tiny", f"temporal.backbone.weights={tmp_path / 'junk.pth'}"))


def test_discriminator_loads_torchvision_inception_v3(tmp_path):
    torch.manual_seed(0)
    inception = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    torch.save(inception.state_dict(), tmp_path / "inception.pth")
    weights = f"discriminator.weights={tmp_path / 'inception.pth'}"
    d = build_discriminator(config("tiny", weights, "discriminator.width_div=1"))
    torch.testing.assert_close(d.inception.Mixed_7c.branch_pool.conv.weight,
                               inception.Mixed_7c.branch_pool.conv.weight)
    assert d.inception.AuxLogits is None and d.inception.fc.out_features == 2
    with pytest.raises(PretrainedWeightsError, match="inception.pth: .*full-width D only"):
        build_discriminator(config("tiny", weights))            # the tiny D is 1/16 wide


def test_narrow_discriminator_is_inception_v3_with_divided_channels():
    full = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    tiny = build_discriminator(config("tiny")).inception      # width_div 16
    full_state, tiny_state = full.state_dict(), tiny.state_dict()
    assert full_state.keys() == tiny_state.keys()              # same blocks under the same names
    for key in ("Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch_pool.conv.weight",
                "Mixed_6e.branch7x7dbl_5.conv.weight", "Mixed_7c.branch3x3_2b.conv.weight"):
        f, t = full_state[key].shape, tiny_state[key].shape
        assert t[0] * 16 == f[0] and (t[1] == f[1] == 3 or t[1] * 16 == f[1]), key
    assert tiny.fc.in_features == 128 and sum(p.numel() for p in tiny.parameters()) < 0.2e6
    assert tiny(torch.randn(2, 3, 75, 75)).shape == (2, 2)
    with pytest.raises(ValueError, match="width_div must be one of"):
        build_discriminator(config("tiny", "discriminator.width_div=3"))


# ---- launcher and the real-size model ----------------------------------------------------------------

def test_model_info_json(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(REPO / "launch"))
    model_info = importlib.import_module("model_info")
    assert model_info.main(["--config", str(CONFIGS / "tiny.yaml"), "--height", "64", "--width", "96",
                            "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info["parts"]) == {"G (TCB)", "SSB", "STCNN (G + SSB)", "D"}
    assert info["parts"]["SSB"]["parameters"] == count_parameters(build_ssb(config("tiny")))
    assert info["parts"]["STCNN (G + SSB)"]["gflops"] > info["parts"]["SSB"]["gflops"] > 0


@pytest.mark.slow
def test_paper_model_real_forward_on_cpu():
    torch.manual_seed(0)
    cfg = config("stcnn")
    net, d = build_stcnn(cfg).eval(), build_discriminator(cfg).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 4, 3, 128, 224) * 2 - 1, torch.randn(1, 3, 128, 224))
        logits = d(out.frame)
    assert [tuple(s.shape) for s in out.segmentation] == [(1, 2, 128, 224)] * 5
    assert tuple(out.frame.shape) == (1, 3, 128, 224) and tuple(logits.shape) == (1, 2)
    assert all(torch.isfinite(s).all() for s in out.segmentation)
    assert out.frame.abs().max() <= 1
