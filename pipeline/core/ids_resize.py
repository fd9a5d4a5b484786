"""The one resize rule for object-id masks: nearest neighbour with half-pixel centres.

Output pixel ``i`` takes source pixel ``floor((i + 0.5) * in / out)`` (clamped), computed in
float32: PyTorch's ``mode="nearest-exact"`` / torchvision's ``NEAREST_EXACT``, which the
loader's augmentation uses for masks. Inference (first masks, lucid dreams, results), online
tuning and the FFCV store resize ids here, so a mask is resized the same way in training and in
inference (OpenCV's ``INTER_NEAREST`` takes ``floor(i * in / out)``: up to one pixel off, shifted
half a pixel towards the origin). Ids are never blended.
"""

from __future__ import annotations

import numpy as np


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source index of each output index (``nearest-exact``, float32 as PyTorch computes it)."""
    scale = np.float32(in_size) / np.float32(out_size)
    pos = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale
    return np.minimum(np.floor(pos).astype(np.int64), in_size - 1)


def resize_ids_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(h, w[, ...])`` ids -> ``(H, W[, ...])`` by the rule above (a copy, same dtype)."""
    H, W = int(size[0]), int(size[1])
    return labels[nearest_indices(labels.shape[0], H)[:, None],
                  nearest_indices(labels.shape[1], W)[None, :]]
