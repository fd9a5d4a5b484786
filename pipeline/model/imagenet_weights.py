"""ImageNet weight files for the model configs' ``weights`` keys
(``temporal.backbone.weights``, ``spatial.backbone.weights``: a torchvision ``resnet101``
state_dict; ``discriminator.weights``: a torchvision ``inception_v3`` state_dict), made with
torchvision's own classes and weights enums.

A file is the ``state_dict()`` of torchvision's model, saved with ``torch.save`` (tensors only,
so :func:`pipeline.model.backbone.read_state_dict` loads it with ``weights_only=True``) and
written atomically. Its tensors come from one of three sources:

* ``imagenet``: torchvision's weights enum (``ResNet101_Weights.IMAGENET1K_V2``,
  ``Inception_V3_Weights.IMAGENET1K_V1``), downloaded into torch's hub cache (``$TORCH_HOME``)
  with its hash checked, or taken from that cache;
* a state_dict file (air-gapped machines: torchvision's ``.pth`` copied from elsewhere), checked
  key for key against torchvision's class;
* random initialisation by torchvision's class (for tests and for trying the plumbing without
  internet; no ImageNet knowledge in it).
"""

from __future__ import annotations

import io
import socket
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision import models as tvm

from pipeline.core.atomic import atomic_write_bytes
from pipeline.core.errors import PipelineError


@dataclass(frozen=True)
class Arch:
    build: Callable[..., nn.Module]
    weights: tvm.WeightsEnum
    kwargs: dict


ARCHS: dict[str, Arch] = {
    # aux_logits on: the same keys as torchvision's ImageNet file (the model code drops them)
    "resnet101": Arch(tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V2, {}),
    "inception_v3": Arch(tvm.inception_v3, tvm.Inception_V3_Weights.IMAGENET1K_V1,
                         {"aux_logits": True}),
}


class ExportError(PipelineError, ValueError):
    """A weight file that cannot be made: ``problem`` and ``fix``."""


def enum_name(arch: str) -> str:
    w = ARCHS[arch].weights
    return f"{type(w).__name__}.{w.name}"


def _no_internet_fix(arch: str) -> str:
    return (f"no internet here? run `stcnn-weights export {arch} --out FILE` on a machine with "
            f"internet and copy FILE here, or pass --from-state-dict with torchvision's "
            f"{Path(ARCHS[arch].weights.url).name} (from a torch hub cache, "
            f"$TORCH_HOME/hub/checkpoints)")


def imagenet_model(arch: str, timeout_s: float = 60.0, progress: bool = False) -> nn.Module:
    """torchvision's model with its ImageNet weights (downloaded, or from the hub cache)."""
    spec = ARCHS[arch]
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)      # a dead network fails instead of hanging
    try:
        return spec.build(weights=spec.weights, progress=progress, **spec.kwargs)
    except (urllib.error.URLError, TimeoutError, ConnectionError, socket.gaierror) as e:
        reason = getattr(e, "reason", None) or e
        raise ExportError(f"cannot download {enum_name(arch)} from {spec.weights.url} ({reason})",
                          _no_internet_fix(arch)) from None
    except RuntimeError as e:
        if "hash" not in str(e):
            raise
        raise ExportError(f"the download of {enum_name(arch)} is corrupt ({e})",
                          f"remove {Path(torch.hub.get_dir()) / 'checkpoints'}/"
                          f"{Path(spec.weights.url).name} and run again") from None
    finally:
        socket.setdefaulttimeout(previous)


def random_model(arch: str, seed: int = 0) -> nn.Module:
    """torchvision's model, randomly initialised by its own code (seeded)."""
    spec = ARCHS[arch]
    torch.manual_seed(seed)
    kwargs = dict(spec.kwargs, init_weights=True) if arch == "inception_v3" else spec.kwargs
    return spec.build(weights=None, **kwargs)


def model_from_state_dict(arch: str, path: str | Path) -> nn.Module:
    """torchvision's model loaded strictly from a state_dict file; errors name the file."""
    from pipeline.model.backbone import PretrainedWeightsError, read_state_dict

    try:
        state = read_state_dict(path)
    except PretrainedWeightsError as e:
        raise ExportError(str(e), f"pass torchvision's {arch} state_dict "
                          f"({Path(ARCHS[arch].weights.url).name})") from None
    model = random_model(arch)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = " ".join(str(e).split())[:300]
        raise ExportError(f"{path}: not a torchvision {arch} state_dict ({first})",
                          f"pass torchvision's {Path(ARCHS[arch].weights.url).name}, or "
                          f"the file `stcnn-weights export {arch}` wrote") from None
    return model


def save_state_dict(path: str | Path, model: nn.Module) -> Path:
    """``model.state_dict()`` (CPU tensors) written atomically to ``path``."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
