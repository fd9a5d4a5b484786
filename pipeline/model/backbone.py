"""Backbones: ResNet trunks (both branches) and Inception-v3 (the discriminator), with
ImageNet weights read from local torchvision-format state_dict files.

* :class:`ResNetTrunk` is torchvision's ResNet without its classifier, built from torchvision's
  ``Bottleneck`` blocks under the same module names, so a torchvision ResNet-101 state_dict
  (``resnet101-*.pth``) loads into it key for key. Options: more input channels (the TCB sees
  3*delta), dilated res4/res5 at stride 1 (the SSB, Sec. 3.2), fewer blocks and narrower
  channels (tiny CPU models) through the same code path.
* :func:`load_pretrained` checks a file against a module and names the file, the offending keys
  and shapes when they do not fit. The TCB's 3*delta-channel ``conv1`` is initialised from the
  file's 3-channel one by :func:`tile_rgb_conv`.
* :class:`FrozenBatchNorm2d` keeps BatchNorm on its running statistics even in ``train()``:
  batch sizes 1-3 (the paper's) and 1x1 pooled maps cannot be normalised over the batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import inception_v3
from torchvision.models import inception as tv_inception
from torchvision.models.inception import Inception3
from torchvision.models.resnet import Bottleneck

from pipeline.core.errors import PipelineError

NormLayer = Callable[[int], nn.Module]


class PretrainedWeightsError(PipelineError, ValueError):
    """A weights file that is missing, unreadable, or does not fit the model it is meant for."""


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalises with (and never updates) its running statistics, in
    ``train()`` mode too.

    Same parameters and state_dict keys as ``nn.BatchNorm2d``; the affine weight and bias stay
    trainable. The authors keep every BatchNorm of the SSB in eval mode in all phases.
    ``nn.SyncBatchNorm.convert_sync_batchnorm`` would turn these into ordinary SyncBatchNorm:
    convert only the branches that do not freeze their statistics.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, eps=self.eps)


def norm_layer(frozen: bool) -> NormLayer:
    return FrozenBatchNorm2d if frozen else nn.BatchNorm2d


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int,
                 norm: NormLayer) -> nn.Sequential:
    """Convolution + BN + ReLU, the unit that follows every convolution in Fig. 1."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        norm(out_channels), nn.ReLU(inplace=True))


def init_new_layers(module: nn.Module) -> None:
    """He initialisation [13] for layers that get no pretrained weights (Sec. 3.3)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ResNetTrunk(nn.Module):
    """ResNet (He et al. [14]) up to res5, returning the res2..res5 feature maps.

    ``blocks``: Bottleneck blocks per stage ([3, 4, 23, 3] is ResNet-101). ``width_div`` divides
    every channel count. A stage given per-block dilations runs at stride 1 and dilates its 3x3
    convs instead (dilated convolution [4], Sec. 3.2); one dilation per block allows multi-grid.
    """

    def __init__(self, blocks: Sequence[int] = (3, 4, 23, 3), in_channels: int = 3,
                 width_div: int = 1, res4_dilations: Sequence[int] | None = None,
                 res5_dilations: Sequence[int] | None = None, norm: NormLayer = nn.BatchNorm2d,
                 maxpool_ceil_mode: bool = False):
        super().__init__()
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"blocks must be 4 positive counts (res2..res5), got {list(blocks)}")
        if width_div < 1 or 64 % width_div:
            raise ValueError(f"width_div must divide 64, got {width_div}")
        stem = 64 // width_div
        self._norm = norm
        self._inplanes = stem
        self.conv1 = nn.Conv2d(in_channels, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=maxpool_ceil_mode)
        dilations = [None, None, res4_dilations, res5_dilations]
        for i, (n, d) in enumerate(zip(blocks, dilations)):
            if d is not None and len(d) != n:
                raise ValueError(f"res{i + 2}: {len(d)} dilations for {n} blocks")
            stride = 1 if i == 0 or d is not None else 2
            stage = self._make_stage(stem * 2 ** i, n, stride, list(d) if d else [1] * n)
            self.add_module(f"layer{i + 1}", stage)
        self.channels = tuple(stem * 2 ** i * Bottleneck.expansion for i in range(4))
        init_new_layers(self)

    def _make_stage(self, planes: int, n: int, stride: int, dilations: list[int]) -> nn.Sequential:
        out = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self._inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, out, kernel_size=1, stride=stride, bias=False), self._norm(out))
        layers = []
        for k in range(n):
            layers.append(Bottleneck(self._inplanes, planes, stride if k == 0 else 1,
                                     downsample if k == 0 else None, dilation=dilations[k],
                                     norm_layer=self._norm))
            self._inplanes = out
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return feats


def build_resnet_trunk(blocks: Sequence[int], *, in_channels: int = 3, width_div: int = 1,
                       res4_dilations: Sequence[int] | None = None,
                       res5_dilations: Sequence[int] | None = None, frozen_bn: bool = False,
                       maxpool_ceil_mode: bool = False, weights: str | Path | None = None,
                       first_conv_init: str = "tile_mean") -> ResNetTrunk:
    """A trunk, randomly initialised, or loaded from a torchvision ResNet state_dict file."""
    trunk = ResNetTrunk(blocks, in_channels, width_div, res4_dilations, res5_dilations,
                        norm_layer(frozen_bn), maxpool_ceil_mode)
    if weights:
        state = read_state_dict(weights)
        if "conv1.weight" in state and in_channels != state["conv1.weight"].shape[1]:
            state["conv1.weight"] = tile_rgb_conv(state["conv1.weight"], in_channels, first_conv_init)
        load_pretrained(trunk, state, weights, ignore=("fc.",), what="ResNet trunk",
                        hint="Is it a torchvision ResNet state_dict with the config's backbone.blocks "
                             "and backbone.width_div (ResNet-101: [3, 4, 23, 3], 1)?")
    return trunk


def tile_rgb_conv(weight: torch.Tensor, in_channels: int, mode: str = "tile_mean") -> torch.Tensor:
    """A first-conv kernel for ``in_channels`` = 3*delta stacked frames from an RGB one.

    ``tile``: the RGB kernel repeated delta times (the authors' code): a static clip then gives
    delta times the ImageNet response, which the pretrained BatchNorm statistics do not expect.
    ``tile_mean``: repeated and divided by delta, so a static clip gives exactly the ImageNet
    response (our default; the paper does not say).
    """
    rgb = weight.shape[1]
    if in_channels % rgb:
        raise PretrainedWeightsError(
            f"cannot build a {in_channels}-channel first conv from a {rgb}-channel one")
    repeats = in_channels // rgb
    tiled = weight.repeat(1, repeats, 1, 1)
    if mode == "tile_mean":
        return tiled / repeats
    if mode == "tile":
        return tiled
    raise ValueError(f"first_conv_init must be 'tile' or 'tile_mean', got {mode!r}")


INCEPTION_WIDTH_DIVS = (1, 2, 4, 8, 16)   # every Inception-v3 channel count divides by these


def _narrow_conv(width_div: int) -> Callable[..., nn.Module]:
    """torchvision's ``BasicConv2d`` with every channel count divided by ``width_div``; the RGB
    input of the stem keeps its 3 channels."""
    def conv(in_channels: int, out_channels: int, **kwargs) -> nn.Module:
        return tv_inception.BasicConv2d(in_channels if in_channels == 3 else in_channels // width_div,
                                        out_channels // width_div, **kwargs)
    return conv


def build_inception_v3(outputs: int, *, transform_input: bool,
                       weights: str | Path | None = None, width_div: int = 1) -> Inception3:
    """torchvision's Inception-v3 [43], auxiliary head off, its FC replaced by ``outputs`` units.

    The new FC gets He initialisation [13] (Sec. 3.3); every other layer comes from ``weights``
    (a torchvision ``inception_v3`` state_dict; its ``AuxLogits.*`` and ``fc.*`` are dropped) or,
    without a file, from torchvision's truncated-normal initialisation.

    ``width_div`` > 1 builds the same network (torchvision's blocks, module names and topology,
    through ``Inception3``'s ``inception_blocks`` argument) with every channel count divided by
    it: the tiny CPU configs' D (1/16 width: 0.09M parameters instead of 21.8M). ImageNet weights
    exist only for full width.
    """
    if width_div not in INCEPTION_WIDTH_DIVS:
        raise ValueError(f"discriminator.width_div must be one of {INCEPTION_WIDTH_DIVS} "
                         f"(Inception-v3's channel counts divide by these), got {width_div}")
    if width_div == 1:
        net = inception_v3(weights=None, aux_logits=False, init_weights=weights is None,
                           transform_input=transform_input, num_classes=outputs)
    else:
        if weights:
            raise PretrainedWeightsError(
                f"{weights}: ImageNet Inception-v3 weights fit a full-width D only; set "
                f"discriminator.width_div=1 to load them, or discriminator.weights=null")
        conv = _narrow_conv(width_div)
        blocks = [conv] + [functools.partial(block, conv_block=conv) for block in (
            tv_inception.InceptionA, tv_inception.InceptionB, tv_inception.InceptionC,
            tv_inception.InceptionD, tv_inception.InceptionE, tv_inception.InceptionAux)]
        net = Inception3(num_classes=outputs, aux_logits=False, transform_input=transform_input,
                         inception_blocks=blocks, init_weights=True)
        net.fc = nn.Linear(net.fc.in_features // width_div, outputs)
    if weights:
        load_pretrained(net, read_state_dict(weights), weights, ignore=("fc.", "AuxLogits."),
                        what="Inception-v3 discriminator",
                        hint="Is it torchvision's inception_v3 state_dict?")
    nn.init.kaiming_normal_(net.fc.weight)
    nn.init.zeros_(net.fc.bias)
    return net


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a local state_dict file (loaded with ``weights_only=True``: no unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(
            f"{path}: pretrained weights file not found; set the config's 'weights' key to a "
            "local torchvision-format state_dict (.pth), or to null for random initialisation")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read is reported with the file name
        raise PretrainedWeightsError(f"{path}: not a readable torch state_dict ({e})") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(
            f"{path}: expected a state_dict (a mapping of names to tensors), as torchvision "
            "saves its model weights")
    return dict(state)


def load_pretrained(module: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, *,
                    ignore: tuple[str, ...] = (), what: str = "model", hint: str = "") -> None:
    """Load ``state`` into ``module`` strictly, keys starting with ``ignore`` left out on both
    sides (layers the module replaces, such as a classifier).

    Every mismatch is reported at once, naming the file: keys the module needs and the file
    lacks, keys the file has and the module does not, and shapes that differ.
    """
    state = {k: v for k, v in state.items() if not k.startswith(ignore)}
    own = {k: v for k, v in module.state_dict().items() if not k.startswith(ignore)}
    # BatchNorm fills num_batches_tracked itself when an (older) file lacks it.
    missing = sorted(k for k in own.keys() - state.keys() if not k.endswith("num_batches_tracked"))
    unexpected = sorted(state.keys() - own.keys())
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own.keys() & state.keys() if state[k].shape != own[k].shape]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatches", sorted(shapes))):
        if items:
            shown = ", ".join(items[:5]) + (f", ... ({len(items)} in all)" if len(items) > 5 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise PretrainedWeightsError(
            f"{path}: does not fit the {what} (" + "; ".join(problems) + "). " + hint)
    module.load_state_dict(state, strict=False)
