"""The segmentation job's config (:class:`SegmentConfig`: inputs, online tuning, evaluation,
tracking) and the checkpoint it tunes from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipeline.core.dist import DistConfig
from pipeline.tracking import TrackingConfig, store_for
from pipeline.inference.tuning import OnlineConfig
from pipeline.train.weights import fetch_weights


@dataclass
class SegmentConfig:
    checkpoint: str | None = None        # weights.pt, runs:/ or models:/ URI of the STCNN
    out: str = "runs/segment"
    model_overrides: list[str] = field(default_factory=list)  # on the checkpoint's model config
    online: OnlineConfig = field(default_factory=OnlineConfig)
    # DAVIS
    davis_root: str | None = None
    year: int = 2016                     # 2016 or 2017
    split: str = "val"
    sequences: list[str] | None = None
    # YouTube-Objects (evaluation only: one split, sparse labels)
    youtube_objects_root: str | None = None
    categories: list[str] | None = None  # e.g. [cat, dog]; None: all
    evaluate: bool = True
    redo: bool = False                   # segment sequences already complete in `out` again
    progress: bool | None = None         # a bar per sequence on rank 0; None: if stderr is a tty
    print_table: bool = True             # print the J/F table (the main job prints it at its end)
    overlays: int = 2                    # sequences whose overlay GIF is logged
    # a user's video
    video: str | None = None
    frames: str | None = None
    first_mask: str | None = None
    fps: float = 24.0
    overlay_format: Literal["gif", "mp4"] = "gif"
    dist: DistConfig = field(default_factory=lambda: DistConfig(timeout_s=1800.0))
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(run_name="segment"))


def load_checkpoint_weights(cfg: SegmentConfig) -> tuple[dict, dict]:
    """(state dicts by branch, stored model config) of ``cfg.checkpoint``: a weights.pt, or its
    URI resolved in the job's store (:func:`pipeline.tracking.store_for` of ``cfg.out``)."""
    payload = fetch_weights(cfg.checkpoint, store_for(cfg.out, cfg.tracking.tracking_uri),
                            what="--checkpoint")
    return payload["models"], payload.get("model_config") or {}
