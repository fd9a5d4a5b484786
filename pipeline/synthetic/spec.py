"""What to generate (:class:`SyntheticSpec`: size, counts, seed, JPEG quality), the names and
classes the releases use, and the deterministic random streams every writer draws from."""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

from pipeline.sources.registry import SOURCES


DATASETS = tuple(SOURCES)   # one writer per registered dataset (pipeline.sources.registry)
PRESETS = {"tiny": (128, 72), "full": (854, 480)}  # (width, height)

YTO_CLASSES = ("aeroplane", "bird", "boat", "car", "cat", "cow", "dog", "horse", "motorbike",
               "train")

# ImageNet VID's 30 classes (WordNet ids, in the order of ImageSets/VID/train_<k>.txt, k = 1..30).
VID_WNIDS = (
    "n02691156", "n02419796", "n02131653", "n02834778", "n01503061", "n02924116", "n02958343",
    "n02402425", "n02084071", "n02121808", "n02503517", "n02118333", "n02510455", "n02342885",
    "n02374451", "n02129165", "n01674464", "n02484322", "n03790512", "n02324045", "n02509815",
    "n02411705", "n01726692", "n02355227", "n02129604", "n04468005", "n01662784", "n04530566",
    "n02062744", "n02391049",
)

DAVIS_ATTRIBUTES = ("AC", "BC", "CS", "DB", "DEF", "EA", "FM", "HO", "IO", "LR", "MB", "OCC",
                    "OV", "ROT", "SC", "SV")

# DAVIS-style sequence names: lowercase words joined by dashes (no digits, no dots).
NOUNS = ("bear", "boat", "bus", "camel", "car", "cow", "dog", "goat", "horse", "kite", "lion",
          "parrot", "swan", "tram", "tractor", "rhino", "scooter", "surfer", "skater", "drone",
          "mallard", "pony", "yacht", "bike", "hiker", "crane", "fox", "seal")
MODIFIERS = ("jump", "turn", "walk", "shadow", "race", "drift", "dance", "flip", "gate", "run",
              "loop", "park", "roundabout", "chase", "bumps", "trees", "lake", "street")


# ------------------------------------------------------------------------------------------------
# Spec
# ------------------------------------------------------------------------------------------------
def parse_size(size) -> tuple[int, int]:
    """``"tiny"``, ``"full"``, ``"WxH"`` or a ``(width, height)`` pair -> ``(width, height)``."""
    if isinstance(size, str):
        key = size.strip().lower()
        if key in PRESETS:
            return PRESETS[key]
        parts = key.split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"size must be one of {sorted(PRESETS)} or WxH (e.g. 854x480), "
                             f"got {size!r}")
        w, h = (int(p) for p in parts)
    else:
        try:
            w, h = (int(v) for v in size)
        except (TypeError, ValueError):
            raise ValueError(f"size must be (width, height), got {size!r}") from None
    if w < 16 or h < 16:
        raise ValueError(f"size must be at least 16x16, got {w}x{h}")
    return w, h


@dataclasses.dataclass
class SyntheticSpec:
    """What to write. Counts are per split for the video sets (``n_sequences``) and per split for
    the image sets (``n_images``); ``n_objects`` is the (min, max) number of objects per scene."""

    size: tuple[int, int] = (128, 72)  # (width, height); "tiny" / "full" / "WxH" accepted too
    n_sequences: int = 3
    n_frames: int = 8  # nominal; sequences vary by up to +-2 frames
    n_images: int = 6
    n_objects: tuple[int, int] = (1, 3)
    seed: int = 0
    label_every: int = 5  # youtube_objects: every label_every-th frame (from frame 1) has a mask
    jpeg_quality: int = 90
    test_dev_sequences: int = 0  # davis2017: extra test-dev sequences annotated on frame 0 only

    def __post_init__(self) -> None:
        self.size = parse_size(self.size)
        lo, hi = (int(v) for v in self.n_objects)
        if not 1 <= lo <= hi <= 50:
            raise ValueError(f"n_objects must be (min, max) with 1 <= min <= max <= 50, "
                             f"got {self.n_objects!r}")
        self.n_objects = (lo, hi)
        for field in ("n_sequences", "n_frames", "n_images", "label_every"):
            if int(getattr(self, field)) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)!r}")
            setattr(self, field, int(getattr(self, field)))
        if int(self.test_dev_sequences) < 0:
            raise ValueError("test_dev_sequences must be >= 0")
        self.test_dev_sequences = int(self.test_dev_sequences)
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality!r}")
        self.jpeg_quality = int(self.jpeg_quality)
        self.seed = int(self.seed)


def seeded_rng(seed: int, *keys) -> np.random.Generator:
    """A generator that depends only on the seed and the keys (stable across runs/platforms)."""
    s = seed % (1 << 64)
    entropy = [s & 0xFFFFFFFF, s >> 32] + [zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def frame_counts(n_frames: int, n: int) -> list[int]:
    """Per-sequence frame counts: n_frames, +2, -1, +1, -2, ... (never below min(n_frames, 2))."""
    deltas = (0, 2, -1, 1, -2)
    floor = min(n_frames, 2)
    return [max(floor, n_frames + deltas[i % len(deltas)]) for i in range(n)]


def check_name(name: str) -> None:
    """Raise ValueError naming the valid names when ``name`` is not a dataset we write."""
    if name not in DATASETS:
        raise ValueError(f"unknown synthetic dataset {name!r}; valid names: {', '.join(DATASETS)}")
