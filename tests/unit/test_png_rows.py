"""The fast mask-PNG decoder (``pipeline/core/png_rows.py``) gives Pillow's values on every real
mask we hold and on made files with None and Sub rows, refuses (None) every other kind of PNG and
every damaged one, and the one mask reader still names the problem of a damaged file."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core.mask_png import MaskFormatError, read_mask
from pipeline.core.png_rows import decode_simple_png

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def make_png(values: np.ndarray, filters: list[int], colour: int = 0, level: int = 9) -> bytes:
    """An 8-bit PNG of ``values`` whose row r is written with filter ``filters[r]`` (0-2)."""
    h, w = values.shape
    rows = []
    for r in range(h):
        row = values[r].astype(np.int16)
        if filters[r] == 1:    # Sub: minus the pixel on the left
            row = np.diff(np.concatenate(([0], row))) % 256
        elif filters[r] == 2:  # Up: minus the pixel above
            row = (row - (values[r - 1].astype(np.int16) if r else 0)) % 256
        rows.append(bytes([filters[r]]) + row.astype(np.uint8).tobytes())
    body = [_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))]
    if colour == 3:
        body.append(_chunk(b"PLTE", bytes(range(256)) * 3))
    body.append(_chunk(b"IDAT", zlib.compress(b"".join(rows), level)))
    return b"\x89PNG\r\n\x1a\n" + b"".join(body) + _chunk(b"IEND", b"")


def pil_values(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.array(im)


def _real_masks() -> list[Path]:
    found = []
    for pattern in ("DAVIS/Annotations/480p/*/*.png",
                    "real_layouts/DAVIS2017/DAVIS/Annotations/480p/*/*.png",
                    "DAVIS-2016-240p/DAVIS/Annotations/480p/*/0000[0-4].png"):
        found += sorted(SHARED.glob(pattern))
    return found


def test_every_real_mask_reads_as_pillow_reads_it():
    masks = _real_masks()
    if not masks:
        pytest.skip(f"no real masks under {SHARED}")
    fast = 0
    for path in masks:
        data = path.read_bytes()
        values, mode = read_mask(data)
        assert np.array_equal(values, pil_values(data)[..., 0] if mode == "LA"
                              else pil_values(data)), path
        got = decode_simple_png(data)
        if got is not None:
            fast += 1
            assert np.array_equal(got[0], pil_values(data)), path
    full = [p for p in masks if "real_layouts" in str(p) or "/DAVIS/Annotations" in str(p)
            and "240p" not in str(p)]
    # the full-resolution release files (None and Sub rows) all take the fast path
    assert all(decode_simple_png(p.read_bytes()) is not None for p in full)
    assert fast >= len(full)


@pytest.mark.parametrize("colour", [0, 3])
def test_none_and_sub_rows_mixed(colour):
    rng = np.random.default_rng(1)
    values = np.zeros((23, 37), np.uint8)
    values[5:15, 8:30] = 255 if colour == 0 else 2
    values[17:20, 1:5] = 7
    values[21] = rng.integers(0, 256, 37)            # a dense row
    filters = [int(f) for f in rng.integers(0, 2, 23)]
    data = make_png(values, filters, colour)
    got = decode_simple_png(data)
    assert got is not None and got[1] == colour
    assert np.array_equal(got[0], values) and np.array_equal(got[0], pil_values(data))
    mode = read_mask(data)[1]
    assert mode == ("L" if colour == 0 else "P")


def test_dense_noise_with_sub_rows():
    values = np.random.default_rng(2).integers(0, 256, (16, 40), dtype=np.uint8)
    data = make_png(values, [1] * 16)
    assert np.array_equal(decode_simple_png(data)[0], values)


def test_other_pngs_are_left_to_the_general_decoders():
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    assert decode_simple_png(buf.getvalue()) is None                     # RGB
    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buf, format="PNG",
                                                                      optimize=True)
    data = buf.getvalue()
    got = decode_simple_png(data)  # Pillow may pick Up/Paeth rows: then not ours
    assert got is None or np.array_equal(got[0], pil_values(data))
    values = np.full((4, 6), 9, np.uint8)
    data = make_png(values, [0, 2, 0, 0])                                # an Up row
    assert decode_simple_png(data) is None
    assert np.array_equal(read_mask(data)[0], values)                   # read by Pillow


def test_damaged_files_are_refused_here_and_named_by_the_reader():
    values = np.zeros((20, 30), np.uint8)
    values[4:9, 3:20] = 255
    good = make_png(values, [1] * 20)
    idat = good.index(b"IDAT")
    flipped = bytearray(good)
    flipped[idat + 10] ^= 0xFF                                           # data and CRC differ
    length = int.from_bytes(good[idat - 4:idat], "big")
    bad_crc = bytearray(good)
    bad_crc[idat + 4 + length] ^= 0x01                                   # only the CRC is wrong
    assert decode_simple_png(bytes(bad_crc)) is None  # refused here (libpng refuses it too);
    assert np.array_equal(read_mask(bytes(bad_crc))[0], values)  # libspng/Pillow read it
    for bad in (good[: len(good) // 2], bytes(flipped), good[:idat + 4] + good[-12:]):
        assert decode_simple_png(bad) is None
        with pytest.raises(MaskFormatError, match="corrupt or truncated"):
            read_mask(bad)


def test_the_gate_stops_trying_files_it_cannot_decode_and_reopens(monkeypatch):
    from pipeline.core import png_rows

    values = np.zeros((6, 8), np.uint8)
    values[2:4, 2:6] = 255
    paeth_like = make_png(values, [0, 2, 0, 0, 0, 0])   # refused here (an Up row)
    simple = make_png(values, [1] * 6)
    tries = []
    real = png_rows.decode_simple_png
    monkeypatch.setattr(png_rows, "decode_simple_png", lambda d: tries.append(d) or real(d))
    gate = png_rows.FastPathGate(patience=2, every=4)
    files = [paeth_like] * 12 + [simple] * 3
    got = [read_mask(d, gate=gate)[0] for d in files]
    assert all(np.array_equal(g, values) for g in got)   # the same values either way
    # tried: the first 2, then one in 4 of the refused run (files 3, 7, 11), then the simple ones
    # once a try succeeded: 2 + 3 + ... <= 15, and fewer than without the gate
    assert len(tries) < len(files)
    assert tries[:2] == [paeth_like, paeth_like] and tries[-1] == simple
    assert gate.refused == 0


class _CumsumSpy:
    """numpy as ``png_rows`` sees it, noting each ``cumsum``: ``"rows"`` (the per-row prefix
    sum of dense Sub rows) or ``"runs"`` (the one prefix sum over the run starts: sparse)."""

    def __init__(self):
        self.calls: list[str] = []

    def __getattr__(self, name):
        return getattr(np, name)

    def cumsum(self, a, *args, **kwargs):
        self.calls.append("rows" if kwargs.get("axis") == 1 else "runs")
        return np.cumsum(a, *args, **kwargs)


def test_wide_sparse_sub_rows_take_the_run_path_and_read_as_pillow(monkeypatch):
    """A mask-like 854-wide grey PNG, every row Sub-filtered: few non-zero filtered bytes, so the
    decoder sums over run starts only; its values are Pillow's, including runs that touch the
    first and last column, levels whose differences wrap around 256, and empty rows."""
    from pipeline.core import png_rows

    values = np.zeros((96, 854), np.uint8)
    values[10:40, 100:300] = 255
    values[20:30, 250:500] = 200       # overlaps: 255 -> 200 -> 0 (differences wrap)
    values[45:60, 0:50] = 7            # from the first column
    values[45:60, 60:61] = 250         # one pixel wide
    values[70:96, 800:854] = 128       # to the last column, down to the last row
    data = make_png(values, [1] * 96)
    spy = _CumsumSpy()
    monkeypatch.setattr(png_rows, "np", spy)
    got = decode_simple_png(data)
    assert spy.calls == ["runs"]       # the sparse path, not numpy's per-row prefix sum
    assert got is not None and got[1] == 0
    assert np.array_equal(got[0], pil_values(data)) and np.array_equal(got[0], values)

    spy.calls.clear()                  # the same picture as noise: the dense path
    noise = np.random.default_rng(3).integers(0, 256, values.shape, dtype=np.uint8)
    dense = make_png(noise, [1] * 96)
    assert np.array_equal(decode_simple_png(dense)[0], pil_values(dense))
    assert spy.calls == ["rows"]
