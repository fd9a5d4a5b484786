"""The weights file a phase hands to the next one (``weights.pt``, logged to MLflow as a model).

    {"format": "stcnn-weights/1", "phase": "gan", "step": 12000,
     "model_config": {...}, "models": {"G": state_dict, "D": ..., "SSB": ...}}

Plain tensors and containers only: it loads with ``torch.load(weights_only=True)``. A phase's
``init_from`` is a list of such files (or ``runs:/`` / ``models:/`` URIs resolving to one,
see :func:`pipeline.tracking.resolve_init`); later files win for a branch present in several.
"""

from __future__ import annotations

import io
import logging
import tempfile
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from pipeline.core.atomic import atomic_write_bytes
from pipeline.core.config import ConfigError
from pipeline.core.errors import PipelineError
from pipeline.tracking import resolve_init
from pipeline.model.stcnn import build_discriminator, build_generator, build_ssb
from pipeline.model.config import ModelConfig
from pipeline.core.config import from_dict

FORMAT = "stcnn-weights/1"
log = logging.getLogger(__name__)


class WeightsError(PipelineError, ValueError):
    pass


def save_weights(path: str | Path, models: dict[str, nn.Module], *, phase: str, step: int,
                 model_config: dict) -> Path:
    payload = {"format": FORMAT, "phase": phase, "step": int(step), "model_config": model_config,
               "models": {k: {n: t.detach().cpu() for n, t in m.state_dict().items()}
                          for k, m in models.items()}}
    buf = io.BytesIO()
    torch.save(payload, buf)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def save_random_weights(path: str | Path, model_config: dict, *, seed: int = 0,
                        branches: Iterable[str] = ("G", "SSB")) -> Path:
    """A weights file of randomly initialised branches (``G``, ``SSB``, ``D``) of
    ``model_config`` (a stored model config dict): the "no offline training" baseline that
    online tuning starts from in the accuracy benchmark, the demo and the learning check."""
    cfg = from_dict(ModelConfig, model_config)
    build = {"G": build_generator, "SSB": build_ssb, "D": build_discriminator}
    torch.manual_seed(seed)
    return save_weights(path, {b: build[b](cfg) for b in branches}, phase="random", step=0,
                        model_config=model_config)


def load_weights(path: str | Path) -> dict:
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc}; it must be a weights.pt "
                           "written by a training phase (or its MLflow model)") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise WeightsError(f"{path} is not an STCNN weights file (format {FORMAT!r}); pass the "
                           "weights.pt of a phase run, its runs:/ or models:/ URI")
    return payload


def fetch_weights(uri: str, store: str | None, what: str = "init_from") -> dict:
    """The payload of the ``weights.pt`` named by a local path, a ``runs:/`` or a ``models:/``
    URI resolved in tracking store ``store`` (a run's :func:`pipeline.tracking.store_for`; see
    :func:`pipeline.tracking.resolve_init`); a download goes to a temporary folder that is
    removed once the weights are in memory. Errors (:class:`WeightsError`) name the setting as
    ``what``."""
    with tempfile.TemporaryDirectory(prefix="stcnn-init-") as tmp:
        try:
            path = resolve_init(uri, tmp, tracking_uri=store, what=what)
        except FileNotFoundError as exc:
            raise WeightsError(str(exc)) from exc
        return load_weights(path)


def gather_init(uris: Iterable[str], store: str | None,
                fetch=fetch_weights) -> tuple[dict[str, dict], list[str]]:
    """Branch state dicts from every ``init_from`` entry (later entries win; URIs resolved in
    ``store``) and their sources."""
    merged: dict[str, dict] = {}
    sources: list[str] = []
    for uri in uris:
        if not uri:
            continue
        payload = fetch(uri, store)
        for branch, sd in payload["models"].items():
            merged[branch] = sd
        sources.append(f"{uri} -> {sorted(payload['models'])} (phase {payload.get('phase')}, "
                       f"step {payload.get('step')})")
    return merged, sources


def apply_init(modules: dict[str, nn.Module], states: dict[str, dict], *, required: list[str],
               missing_policy: str, uris: list[str]) -> list[str]:
    """Load ``states`` into ``modules``; a ``required`` branch without weights is an error
    (``init_missing: error``) or stays randomly initialised with a warning (``random``)."""
    missing = [b for b in modules if b in required and b not in states]
    if missing:
        msg = (f"init_from {uris or '[]'} has no weights for {', '.join(missing)}; this phase "
               f"starts from pretrained {' and '.join(missing)} (give the previous phases' "
               "weights.pt files or models:/ URIs), or set init_missing=random")
        if missing_policy == "error":
            raise ConfigError(msg)
        log.warning("%s: starting from random weights", msg.split(";")[0])
    loaded = []
    for branch, module in modules.items():
        sd = states.get(branch)
        if sd is None:
            continue
        try:
            module.load_state_dict(sd)
        except RuntimeError as exc:
            raise WeightsError(f"the {branch} weights from init_from do not fit this model "
                               f"configuration: {str(exc)[:500]}; use the same model config "
                               "(and model_overrides) as the phase that wrote them") from exc
        loaded.append(branch)
    return loaded


def warn_random_backbones(model_cfg, branches: Iterable[str], init: dict | None = None,
                          rank: int = 0) -> list[str]:
    """Warn (rank 0) about full-depth ResNet encoders that start from random weights: the paper
    starts both from ImageNet, and random ResNet-101s (the SSB's with frozen BatchNorm above
    all) give losses of 1e4 or more, or non-finite ones. Returns the config keys warned about."""
    warned = []
    for branch in branches:
        name = {"temporal": "G", "spatial": "SSB"}[branch]
        backbone = getattr(model_cfg, branch).backbone
        if backbone.weights or (init and name in init) or sum(backbone.blocks) < 16:
            continue
        key = f"model.{branch}.backbone.weights"
        warned.append(key)
        if rank == 0:
            log.warning("%s starts from a random ResNet-%d (%s is null): the paper starts from "
                        "ImageNet weights; expect very large or non-finite losses. Set %s to a "
                        "local torchvision resnet101 state_dict (.pth).", name,
                        3 * sum(backbone.blocks) + 2, key, key)
    return warned
