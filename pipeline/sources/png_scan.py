"""A PNG's structure checked without decoding its pixels: chunk CRCs, header, and the inflated
image data (length and filter bytes). Enough to validate a mask and tell whether it holds any
foreground: a PNG's scanlines are all zero exactly when their filtered bytes are (every PNG
filter predicts 0 from zero neighbours), so no unfiltering is needed for that question.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# colour type -> (channels, PIL-style mode name for messages)
COLOR_TYPES = {0: (1, "L"), 2: (3, "RGB"), 3: (1, "P"), 4: (2, "LA"), 6: (4, "RGBA")}


@dataclasses.dataclass(frozen=True)
class PngScan:
    width: int
    height: int
    bit_depth: int
    color_type: int
    interlaced: bool
    compressed: bytes  # the IDAT stream

    @property
    def row_bytes(self) -> int:
        """Bytes per scanline, its filter byte included."""
        return (self.width * self.bit_depth * COLOR_TYPES[self.color_type][0] + 7) // 8 + 1

    @property
    def mode(self) -> str:
        if self.color_type == 0 and self.bit_depth == 1:
            return "1"
        if self.color_type == 0 and self.bit_depth == 16:
            return "I;16"
        return COLOR_TYPES[self.color_type][1]

    def any_nonzero(self, step: int = 1 << 16) -> bool:
        """Whether any pixel is non-zero (non-interlaced images). Inflates only up to the first
        non-zero scanline; an all-zero image is inflated whole and its length and filter bytes
        checked."""
        row, inflater, seen = self.row_bytes, zlib.decompressobj(), 0
        pending, tail = self.compressed, b""
        try:
            while True:
                chunk = inflater.decompress(pending, step)
                pending = inflater.unconsumed_tail
                buf = tail + chunk
                whole = len(buf) // row * row
                rows = np.frombuffer(buf[:whole], np.uint8).reshape(-1, row)
                if rows.size and (rows[:, 1:].any() or rows[:, 0].max() > 4):
                    if rows[:, 0].max() > 4:
                        raise ValueError("invalid scanline filter type (corrupted)")
                    return True
                seen += whole
                tail = buf[whole:]
                if not chunk and not pending:
                    break
        except zlib.error as e:
            raise ValueError(f"corrupt image data ({e})") from None
        if not inflater.eof or tail or seen != row * self.height:
            raise ValueError(f"image data holds {seen + len(tail)} bytes, "
                             f"{row * self.height} expected (truncated or corrupted)")
        return False


def scan_png(data: bytes) -> PngScan:
    """Check the PNG's structure; raises ValueError saying what is wrong."""
    if not data.startswith(SIGNATURE):
        raise ValueError("bad PNG signature")
    pos, header, idat, ended = len(SIGNATURE), None, [], False
    while pos + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 8 + length
        if end + 4 > len(data):
            raise ValueError(f"chunk {kind!r} runs past the end of the file (truncated)")
        body = data[pos + 8:end]
        if zlib.crc32(kind + body) != struct.unpack(">I", data[end:end + 4])[0]:
            raise ValueError(f"CRC mismatch in chunk {kind!r} (corrupted)")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            ended = True
            break
        pos = end + 4
    if header is None or not ended or not idat:
        raise ValueError("missing IHDR, IDAT or IEND chunk (truncated)")
    width, height, depth, ctype, _, _, interlace = header
    if ctype not in COLOR_TYPES or width == 0 or height == 0:
        raise ValueError(f"invalid header (colour type {ctype}, size {width}x{height})")
    return PngScan(width, height, depth, ctype, bool(interlace), b"".join(idat))
