"""The PASCAL VOC / DAVIS colour map: palette PNG masks are written with it, overlays drawn."""

from __future__ import annotations

import numpy as np


def davis_palette() -> list[int]:
    """The PASCAL VOC / DAVIS colour map (bit-interleaved index -> RGB): 256 entries, 768 ints
    ``[r0, g0, b0, r1, ...]``. Id 1 is (128, 0, 0), id 2 (0, 128, 0), 255 (224, 224, 192)."""
    pal = []
    for idx in range(256):
        r = g = b = 0
        c = idx
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal.extend((r, g, b))
    return pal


PALETTE = davis_palette()
PALETTE_RGB = np.asarray(PALETTE, dtype=np.uint8).reshape(256, 3)
