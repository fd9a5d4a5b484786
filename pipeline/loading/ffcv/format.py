"""The FFCV store's format, shared by its writer (:mod:`pipeline.loading.ffcv.store`) and its loader
(:mod:`pipeline.loading.ffcv.loader`): the ``mask`` field's record, the sidecar that goes with a
``.beton`` (its path and its checks), and the optional ffcv import.

The ``mask`` field is a ``BytesField`` holding an 8-byte header (``uint32`` height, ``uint32``
width, little endian) and then ``height * width`` ``uint8`` labels, row-major
(:func:`encode_mask_record`). The sidecar ``<out>.keys.json`` records the ``.beton``'s size and
sample count, and one record per sample (:func:`load_sidecar` refuses a pair that does not match).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError

INSTALL_HINT = ("install it with `pip install -e .[ffcv]` after "
                "`apt-get install -y pkg-config libopencv-dev libturbojpeg0-dev`")
SIDECAR_SUFFIX = ".keys.json"
STORE_FORMAT = "stcnn-ffcv-store"
STORE_VERSION = 1
MASK_HEADER_BYTES = 8
MASK_PAD_VALUE = 255  # padding (size=None) is void, like VOC's boundary label
FIELD_NAMES = ("image", "mask", "index")


class FFCVUnavailable(PipelineError, ImportError):
    """FFCV (or one of its native dependencies) cannot be imported."""


class StoreError(PipelineError, ValueError):
    """A shard set cannot go into the store, or a ``.beton`` and its sidecar do not match."""


def require_ffcv():
    """Import ffcv or raise :class:`FFCVUnavailable` saying how to install it."""
    try:
        import ffcv  # noqa: F401
        import ffcv.fields  # noqa: F401
        import ffcv.loader  # noqa: F401
        import ffcv.writer  # noqa: F401
    except Exception as e:  # ImportError, or a native library that fails to load (OSError)
        raise FFCVUnavailable(f"the FFCV store needs the ffcv package, which failed to import "
                              f"({type(e).__name__}: {e})", INSTALL_HINT) from e
    return ffcv


def encode_mask_record(labels: np.ndarray) -> np.ndarray:
    """(H, W) uint8 labels -> the bytes stored in the ``mask`` field (header + pixels)."""
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    h, w = labels.shape
    header = np.array([h, w], dtype="<u4").view(np.uint8)
    return np.concatenate([header, labels.reshape(-1)])


def decode_mask_record(record: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_mask_record` (plain numpy; the loader uses JIT code)."""
    record = np.asarray(record, dtype=np.uint8)
    h, w = (int(v) for v in record[:MASK_HEADER_BYTES].view("<u4"))
    return record[MASK_HEADER_BYTES:MASK_HEADER_BYTES + h * w].reshape(h, w).copy()


def sidecar_path(beton_path: str | Path) -> Path:
    """``<out>.beton`` -> ``<out>.beton.keys.json``."""
    p = Path(beton_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def load_sidecar(beton_path: str | Path) -> dict:
    """The sidecar of a ``.beton``; checks that the two belong together."""
    beton_path = Path(beton_path)
    side = sidecar_path(beton_path)
    if not beton_path.is_file():
        raise FileNotFoundError(f"{beton_path}: no such .beton; build it with write_beton()")
    if not side.is_file():
        raise StoreError(f"{beton_path}: its sidecar {side.name} is missing; re-run write_beton()")
    doc = json.loads(side.read_text())
    if doc.get("format") != STORE_FORMAT or doc.get("version") != STORE_VERSION:
        raise StoreError(f"{side}: not a {STORE_FORMAT} v{STORE_VERSION} sidecar")
    size = beton_path.stat().st_size
    if doc.get("beton_bytes") != size or len(doc.get("samples", ())) != doc.get("num_samples"):
        raise StoreError(f"{beton_path} ({size} bytes) does not match its sidecar "
                         f"({doc.get('beton_bytes')} bytes): a write was interrupted; "
                         f"re-run write_beton()")
    return doc
