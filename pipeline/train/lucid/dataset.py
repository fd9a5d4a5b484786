"""Lucid dreams as a torch ``Dataset`` for online tuning (drawn on the fly, deterministic per index)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from pipeline.train.lucid.config import check_inputs, dream_seed, LucidDreamConfig
from pipeline.train.lucid.dream import lucid_dream


class LucidDreamDataset(torch.utils.data.Dataset):
    """``n`` lucid dreams of one annotated frame, as a map-style dataset.

    ``ds[i]`` -> ``(image uint8 [3, H, W], mask uint8 [H, W])`` tensors, made on demand and
    deterministic in ``(seed, i)`` (the same as :func:`lucid_dream_pairs`); ``size=(H, W)``
    resizes the result (image area-averaged when shrinking, bilinear when enlarging; mask
    nearest neighbour)."""

    def __init__(self, image: np.ndarray, mask: np.ndarray, n: int, seed: int = 0,
                 cfg: LucidDreamConfig | None = None, size: tuple[int, int] | None = None):
        check_inputs(image, mask)
        if n < 0:
            raise ValueError(f"LucidDreamDataset: n must be >= 0, got {n}")
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ValueError(f"LucidDreamDataset: size must be (H, W) >= 1, got {size}")
        self.image, self.mask = np.ascontiguousarray(image), np.ascontiguousarray(mask)
        self.n, self.seed, self.cfg = int(n), int(seed), cfg or LucidDreamConfig()
        self.size = None if size is None else (int(size[0]), int(size[1]))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"LucidDreamDataset index {i} out of range [0, {self.n})")
        img, msk = lucid_dream(self.image, self.mask, dream_seed(self.seed, i), self.cfg)
        if self.size is not None and self.size != msk.shape:
            h, w = self.size
            shrink = h * w < msk.size
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink
                             else cv2.INTER_LINEAR)
            msk = cv2.resize(msk, (w, h), interpolation=cv2.INTER_NEAREST)
        return (torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
                torch.from_numpy(np.ascontiguousarray(msk)))
