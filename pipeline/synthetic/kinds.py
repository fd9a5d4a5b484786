"""The object kinds every dataset and split shares: a small set of shape + texture + motion
families (as the real datasets' splits share object categories), the colours they wear, and
which kind a dataset's class is.

Kinds depend on the seed only, never on the dataset or split: what offline training learns of
them on the training sets (MSRA10K, VOC, ILSVRC VID, DAVIS train) carries over to DAVIS val.
Each annotated object is an instance of a kind (:func:`~pipeline.synthetic.scene.make_scene`
jitters its colours, aspect and pattern angle); the backgrounds wear the kinds' colours too
(:func:`kind_palette`), so that telling an object from the background takes its learned
appearance, not its colour.
"""

from __future__ import annotations

import dataclasses
import zlib
from functools import lru_cache

import numpy as np

from pipeline.synthetic.scene import Look, random_look
from pipeline.synthetic.spec import seeded_rng

N_KINDS = 6
_SHAPES = ("ellipse", "blob", "polygon")
_PATTERNS = ("stripes", "checker", "rings", "spots")


@lru_cache(maxsize=64)
def _kinds(seed: int) -> tuple[Look, ...]:
    out = []
    for k in range(N_KINDS):  # every shape and pattern is some kind's
        look = random_look(seeded_rng(seed, "kind", k))
        out.append(dataclasses.replace(look, shape=_SHAPES[k % len(_SHAPES)],
                                       pattern=_PATTERNS[k % len(_PATTERNS)]))
    return tuple(out)


def kind_look(seed: int, kind: int) -> Look:
    """The look of kind ``kind`` (0..N_KINDS-1) for ``seed``."""
    return _kinds(seed)[kind % N_KINDS]


def kind_of(cls) -> int:
    """The kind of a dataset's class (an int id or a name), the same in every dataset."""
    if isinstance(cls, (int, np.integer)):
        return int(cls) % N_KINDS
    return zlib.crc32(str(cls).encode()) % N_KINDS


@lru_cache(maxsize=64)
def kind_palette(seed: int) -> np.ndarray:
    """(2 * N_KINDS, 3) float32: the two colours of every kind."""
    return np.stack([c for look in _kinds(seed) for c in (look.c1, look.c2)]).astype(np.float32)
