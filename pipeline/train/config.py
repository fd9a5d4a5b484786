"""The configuration every training phase shares (``configs/<phase>.yaml``).

Each phase module extends :class:`TrainConfig` with its own section (``gan:``,
``segmentation:``, ``alternating:``); the weights of the losses are one ``loss:`` section for
every phase (:class:`pipeline.train.losses.LossConfig`), and ``data.augment`` is an
:class:`pipeline.loading.augment.AugmentConfig` (a preset and the keys it changes). Paths in a
config (``model``) are looked up next to the config file, then as
:func:`pipeline.core.config.find_config` finds configs (the working directory, then the packaged
configs). The model config is read at load with ``model_overrides`` applied, so a bad override
is a config error before anything runs.

Batch sizes are global, as in the paper: ``batch.size`` samples per optimizer step over all
ranks. With ``batch.micro_size`` unset every rank takes ``size / world_size`` per step in one
forward; set it to the most that fits on a device and the difference becomes gradient
accumulation (``size = micro_size x world_size x accumulation``, checked).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.core.config import ConfigError, find_config, load_config, with_overrides
from pipeline.core.dist import DistConfig
from pipeline.loading.augment import AugmentConfig, get_preset
from pipeline.model.config import ModelConfig
from pipeline.tracking import TrackingConfig
from pipeline.train.losses import LossConfig



@dataclass
class BatchConfig:
    size: int = 8                      # global batch: samples per optimizer step, all ranks
    micro_size: int | None = None      # per-rank samples per forward; None: size / world_size


@dataclass
class DataConfig:
    lake: str = "shards"               # data lake root (launch/preprocess.py --out)
    sets: list[str] = field(default_factory=list)   # "<dataset>/<split>" folders under the lake
    weights: list[float] | None = None # sampling weight per set (None: by size)
    backend: Literal["webdataset", "ffcv"] = "webdataset"
    ffcv_store: str | None = None      # .beton written by launch/ffcv_store.py (backend: ffcv)
    augment: AugmentConfig = field(default_factory=lambda: get_preset("none"))
    num_workers: int = 2
    epoch_batches: int = 1000          # batches per rank and epoch (bounds the replay on resume)
    shuffle_buffer: int = 100
    merge_objects: bool = True         # object ids -> one foreground (binary segmentation)
    # None: JPEGs decoded in the DataLoader workers; "cuda" (or "cpu"): workers send JPEG bytes
    # and the trainer decodes each batch there (flip-only presets: pipeline/loading/device_decode.py)
    decode_device: str | None = None


@dataclass
class CheckpointConfig:
    every: int = 1000                  # steps between checkpoints (and one at the end)
    keep_last: int = 3
    resume: bool = True                # continue from run_dir/checkpoints' latest
    allow_world_size_change: bool = False
    log_to_mlflow: Literal["none", "last", "all"] = "last"
    stop_after: int | None = None      # stop (with a checkpoint) after this many steps of this
                                       # invocation; SIGTERM/SIGUSR1 do the same at any step


@dataclass
class LogConfig:
    every: int = 10                    # steps between progress lines (and reduced metrics)


@dataclass
class TrainConfig:
    run_dir: str = "runs/train"        # checkpoints, tracking state, weights.pt
    seed: int = 0
    steps: int = 1000                  # optimizer steps
    model: str = "model/stcnn.yaml"
    model_overrides: list[str] = field(default_factory=list)  # e.g. ["spatial.num_classes=1"]
    init_from: str | list[str] = field(default_factory=list)  # weights: paths, runs:/, models:/ URIs
    init_missing: Literal["error", "random"] = "error"  # a needed branch absent from init_from
    batch: BatchConfig = field(default_factory=BatchConfig)
    data: DataConfig = field(default_factory=DataConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    log: LogConfig = field(default_factory=LogConfig)
    loss: LossConfig = field(default_factory=LossConfig)  # the weights of every phase's losses
    # extra hooks, "module:callable" import paths: each callable is called with the rank's
    # DistContext and returns a hook (or None), appended after the built-in ones
    hooks: list[str] = field(default_factory=list)
    config_path: str | None = None     # set by load_train_config: the file read


@dataclass(frozen=True)
class BatchPlan:
    global_size: int
    micro_size: int      # per rank and forward
    accum: int           # forwards per rank and optimizer step
    world_size: int


def plan_batch(cfg: BatchConfig, world_size: int) -> BatchPlan:
    """Per-rank micro-batch and accumulation for ``cfg.size`` over ``world_size`` ranks."""
    size, micro = int(cfg.size), cfg.micro_size
    if size < 1:
        raise ConfigError(f"batch.size must be >= 1, got {size}")
    if micro is None:
        if size % world_size:
            fits = [w for w in range(1, size + 1) if size % w == 0]
            raise ConfigError(
                f"batch.size={size} cannot be split over {world_size} ranks; run on "
                f"{fits} ranks, set batch.size to a multiple of {world_size}, or set "
                f"batch.micro_size with batch.size = micro_size x ranks x accumulation")
        return BatchPlan(size, size // world_size, 1, world_size)
    micro = int(micro)
    if micro < 1 or size % (micro * world_size):
        raise ConfigError(
            f"batch.size={size} is not micro_size ({micro}) x ranks ({world_size}) x an integer "
            f"accumulation; pick micro_size dividing {size // world_size if size >= world_size else size}"
            f" or change batch.size")
    return BatchPlan(size, micro, size // (micro * world_size), world_size)


def resolve_path(path: str, config_path: str | None) -> Path:
    """A config named in a config (``model``): next to the config file, else :func:`find_config`."""
    p = Path(path).expanduser()
    beside = Path(config_path).resolve().parent / p if config_path else None
    if beside is not None and not p.is_absolute() and beside.is_file():
        return beside
    try:
        return find_config(p)
    except ConfigError as e:
        raise ConfigError(f"{e} (named by {config_path or 'the command line'})") from None


def load_model_config(cfg: TrainConfig) -> ModelConfig:
    return load_config(ModelConfig, resolve_path(cfg.model, cfg.config_path),
                       list(cfg.model_overrides))


def load_train_config(cls: type, path: str | Path | None, overrides: list[str]) -> Any:
    path = find_config(path) if path is not None else None
    cfg = load_config(cls, path, overrides)
    cfg.config_path = str(path) if path is not None else None
    return _checked(cfg)


def override_train_config(cfg: Any, values: dict[str, Any]) -> Any:
    """A loaded phase config with dotted keys set to typed values (``{"steps": 10,
    "data.lake": "/lake"}``), checked as ``key=value`` overrides are."""
    return _checked(with_overrides(cfg, values))


def _checked(cfg: Any) -> Any:
    if cfg.steps < 1:
        raise ConfigError(f"steps must be >= 1, got {cfg.steps}")
    if cfg.checkpoint.every < 1:
        raise ConfigError(f"checkpoint.every must be >= 1, got {cfg.checkpoint.every}")
    if cfg.data.epoch_batches < 1:
        raise ConfigError(f"data.epoch_batches must be >= 1, got {cfg.data.epoch_batches}")
    if isinstance(cfg.init_from, str):
        cfg.init_from = [cfg.init_from]
    try:
        load_model_config(cfg)  # the model file and model_overrides: bad keys fail here, at load
    except ConfigError as e:
        raise ConfigError(f"model / model_overrides: {e}") from None
    return cfg
