"""A fast decoder for the PNGs the releases' masks are: 8-bit grey or palette, not interlaced,
every row filtered with None or Sub. Anything else is not decoded here (None): the general
decoders (libspng, Pillow) take it, and name any problem.

Why by hand: the official masks are tiny streams of long runs (a DAVIS-2016 854x480 annotation
is 3 KB for 410 KB of pixels; DAVIS-2017's palette masks are None-filtered, DAVIS-2016's
Sub-filtered). zlib 1.2, which libpng, libspng and Pillow are built with here, inflates such
runs a byte at a time (0.8 ms per DAVIS-2016 mask) and they unfilter Sub rows a byte at a time
(0.7 ms more); zlib-ng (python-zlib-ng) inflates the same stream in 0.04 ms, and a Sub row of a
mask is constant between its few non-zero bytes, so its prefix sum is taken over those only.
No PNG library we know of uses zlib-ng or skips runs that way. Measured on the release files:
1.65 ms -> 0.45 ms (DAVIS-2016, Sub), 2.2 ms (Pillow) -> 0.1 ms (DAVIS-2017, None); values equal
to Pillow's (tests/unit/test_png_rows.py, on every real mask we hold). benchmarks/micro_claims.py
prints the ratios to Pillow (6.7-6.9x on DAVIS-2016 masks, 33-46x on palette masks) and to
zlib's inflate (50-60x).

Checks kept from libpng: the signature, every chunk's CRC, IHDR's fields, the zlib stream's own
checksum (zlib-ng's inflate), and the exact decompressed length.
"""

from __future__ import annotations

import struct

import numpy as np

try:
    from zlib_ng import zlib_ng as _zlib
except ImportError:  # pragma: no cover - a dependency; without it the general decoders run
    _zlib = None

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DENSE = 16  # a row set with more than 1/16 non-zero bytes: numpy's plain prefix sum


def decode_simple_png(data: bytes) -> tuple[np.ndarray, int] | None:
    """(uint8 [H, W] stored values: grey levels or palette indices, PNG colour type) of an
    8-bit grey (type 0) or palette (type 3) non-interlaced PNG whose rows are all None- or
    Sub-filtered; None for any other PNG, or any damage (the caller's general decoder then
    reads it and says what is wrong)."""
    if _zlib is None or len(data) < 57 or not data.startswith(PNG_SIGNATURE):
        return None
    mv = memoryview(data)
    pos, n = 8, len(data)
    idat: list[memoryview] = []
    hdr = None
    while pos + 12 <= n:
        length = int.from_bytes(mv[pos:pos + 4], "big")
        end = pos + 12 + length
        if end > n:
            return None
        kind = bytes(mv[pos + 4:pos + 8])
        body = mv[pos + 8:pos + 8 + length]
        if _zlib.crc32(mv[pos + 4:pos + 8 + length]) != int.from_bytes(mv[end - 4:end], "big"):
            return None
        if hdr is None:
            if kind != b"IHDR" or length != 13:
                return None
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos = end
    else:
        return None  # no IEND
    width, height, depth, colour, compression, filter_method, interlace = hdr
    if depth != 8 or colour not in (0, 3) or compression or filter_method or interlace \
            or not width or not height or not idat:
        return None
    try:
        raw = _zlib.decompress(b"".join(idat))
    except Exception:  # noqa: BLE001 - zlib_ng.error and friends: damaged
        return None
    if len(raw) != height * (width + 1):
        return None
    rows = np.frombuffer(raw, np.uint8).reshape(height, width + 1)
    filters = rows[:, 0]
    if filters.max() > 1:
        return None  # Up/Average/Paeth rows: the general decoders
    x = rows[:, 1:]
    sub = filters == 1
    if not sub.any():
        return np.ascontiguousarray(x), colour
    out = _undo_sub(np.ascontiguousarray(x))
    if not sub.all():
        out[~sub] = x[~sub]  # None rows are stored as they are
    return out, colour


def _undo_sub(x: np.ndarray) -> np.ndarray:
    """Each row's prefix sum mod 256 (the Sub filter of 1-byte pixels undone), uint8 [H, W]."""
    height, width = x.shape
    marks = x != 0
    marks[:, 0] = True  # every row starts a run
    idx = np.flatnonzero(marks)
    if idx.size * _DENSE > x.size:
        return np.cumsum(x, axis=1, dtype=np.uint8)
    total = np.cumsum(x.reshape(-1)[idx], dtype=np.int64)
    starts = np.flatnonzero(idx % width == 0)  # where each row's runs begin in idx
    before = np.zeros(height, np.int64)
    before[1:] = total[starts[1:] - 1]  # the running total at the end of the previous row
    per_row = np.diff(np.append(starts, idx.size))
    values = ((total - np.repeat(before, per_row)) & 0xFF).astype(np.uint8)
    return np.repeat(values, np.diff(np.append(idx, x.size))).reshape(height, width)


class FastPathGate:
    """Whether to try :func:`decode_simple_png` on the next file of a run of files from one
    writer (a sequence's ground truth, a method's results). Pillow and OpenCV write masks with
    Paeth and Up rows, which this decoder leaves to the general ones after inflating them, for
    nothing; so after ``patience`` refusals in a row the gate tries one file in ``every``, and
    one success opens it again. Speed only: what a file decodes to never depends on it."""

    def __init__(self, patience: int = 2, every: int = 16):
        self.patience, self.every = patience, every
        self.refused = 0  # refusals in a row

    def decode(self, data: bytes) -> tuple[np.ndarray, int] | None:
        if self.refused >= self.patience and (self.refused - self.patience) % self.every:
            self.refused += 1
            return None
        got = decode_simple_png(data)
        self.refused = 0 if got is not None else self.refused + 1
        return got
