"""Online tuning (lucid dreams + SSB fine-tuning on the first frame) and inference of one DAVIS
sequence, in seconds per frame, against the paper's 3.90 s/frame (Table 1, one GPU)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from pipeline.core.config import load_config
from pipeline.core.dist import DistConfig
from pipeline.model.config import ModelConfig
from pipeline.sources.davis import find_davis

PAPER_S_PER_FRAME = 3.90


def davis_root_or_synthetic(explicit: str | None, tmp: Path) -> tuple[Path, str]:
    root = find_davis(explicit)
    if root is not None:
        return root, f"DAVIS at {root}"
    from pipeline.synthetic import SyntheticSpec, write_dataset

    root = write_dataset("davis2016", tmp / "davis", SyntheticSpec(
        size=(854, 480), n_sequences=1, n_frames=12, n_images=1, seed=0))
    return root, "synthetic DAVIS-2016 layout (no DAVIS root found)"


def load_sequence(root: Path, name: str | None, frames: int | None):
    from PIL import Image

    seqs = sorted(p for p in (root / "JPEGImages" / "480p").iterdir() if p.is_dir())
    seq = next((s for s in seqs if s.name == name), None) if name else seqs[0]
    if seq is None:
        raise FileNotFoundError(f"sequence {name!r} not under {root}/JPEGImages/480p")
    files = sorted(seq.glob("*.jpg"))[:frames]
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    mask = np.asarray(Image.open(root / "Annotations" / "480p" / seq.name / f"{files[0].stem}.png"))
    return seq.name, images, (mask > 0).astype(np.uint8)


def measure_online(device: torch.device, *, model: str, iterations: int, dreams: int,
                   size: list[int] | None, frames: int | None, davis_root: str | None,
                   sequence: str | None, precision: str = "fp32") -> dict:
    from pipeline.model.stcnn import build_generator, build_ssb
    from pipeline.inference.segmenter import OnlineSegmenter
    from pipeline.inference.tuning import OnlineConfig

    torch.manual_seed(0)
    cfg = load_config(ModelConfig, model)
    weights = {"G": build_generator(cfg).state_dict(), "SSB": build_ssb(cfg).state_dict()}
    with tempfile.TemporaryDirectory(prefix="stcnn-preflight-") as tmp:
        root, what = davis_root_or_synthetic(davis_root, Path(tmp))
        name, images, mask = load_sequence(root, sequence, frames)
    online = OnlineConfig(iterations=iterations, dreams=dreams, size=size)
    seg = OnlineSegmenter(cfg, weights, online, device, dist=DistConfig(precision=precision))
    result = seg.segment(name, images, mask)
    t = result.timing()
    return {"model": model, "data": what, "sequence": name, "frames": t["frames"],
            "size": size or list(images[0].shape[:2]), "iterations": iterations,
            "dreams": dreams, "precision": precision,
            "tune_s_per_frame": t["tune_s_per_frame"], "infer_s_per_frame": t["infer_s_per_frame"],
            "total_s_per_frame": t["total_s_per_frame"], "paper_s_per_frame": PAPER_S_PER_FRAME,
            "ratio_to_paper": t["total_s_per_frame"] / PAPER_S_PER_FRAME}
