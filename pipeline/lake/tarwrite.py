"""A lean writer of shard tars: regular members only, bytes identical to ``tarfile``'s
``GNU_FORMAT`` output for the same members (mode 0644, uid/gid 0, mtime 0, no owner names).

Why by hand: ``tarfile.addfile`` builds a ``TarInfo`` copy, a header dict and a dozen field
conversions per member, plus a ``BytesIO`` round trip of the data (1.3-1.7x this writer's time
per DAVIS member: benchmarks/micro_claims.py prints both); a shard holds
7 members per clip, so that was a quarter of the preprocessing job's time. Every header here is a
fixed template with only the name, size and checksum filled in; the data is written as it is.
The round trip (``tarfile`` and :mod:`pipeline.lake.tario` read it back) and the byte identity
with ``tarfile`` are tested (``tests/unit/test_tario.py``).
"""

from __future__ import annotations

from typing import BinaryIO

BLOCK = 512
RECORD = 20 * BLOCK  # tarfile pads the archive to a whole record, as tar(1) does
NAME_LEN = 100
GNU_MAGIC = b"ustar  \0"
_NUL = b"\0"
_ZEROS = bytes(RECORD)


def _octal(n: int, digits: int) -> bytes:
    if not 0 <= n < 8 ** (digits - 1):  # GNU base-256: sizes of 8 GiB and more
        if n < 0 or n >= 256 ** (digits - 1):
            raise ValueError(f"tar number field overflow ({n})")
        return bytes([0o200]) + n.to_bytes(digits - 1, "big")
    return b"%0*o\0" % (digits - 1, n)


def _template(mode: int, kind: bytes, magic: bytes) -> tuple[bytes, bytes, int]:
    """The parts of a header around name (0:100) and size (124:136); and the byte sum of the
    fixed fields with the checksum field as spaces, as the checksum is defined."""
    middle = _octal(mode, 8) + _octal(0, 8) + _octal(0, 8)  # mode, uid, gid  (100:124)
    tail = (_octal(0, 12) + b" " * 8 + kind + bytes(100) + magic  # mtime, chksum, type, link
            + bytes(32) + bytes(32) + bytes(8) + bytes(8) + bytes(155))  # names, dev, prefix
    tail += bytes(BLOCK - NAME_LEN - len(middle) - 12 - len(tail))
    return middle, tail, sum(middle) + sum(tail)


_REGULAR = _template(0o644, b"0", GNU_MAGIC)
_LONGNAME = _template(0, b"L", GNU_MAGIC)  # tarfile's ././@LongLink header (ustar fields)


def _header(name: bytes, size: int, template: tuple[bytes, bytes, int]) -> bytes:
    middle, tail, fixed = template
    name_field = name[:NAME_LEN] + bytes(NAME_LEN - len(name[:NAME_LEN]))
    size_field = _octal(size, 12)
    chksum = fixed + sum(name_field) + sum(size_field)
    # the checksum field (148:156) is the first 8 bytes of ``tail`` (after mtime's 12)
    return b"".join((name_field, middle, size_field, tail[:12], b"%06o\0 " % chksum, tail[20:]))


def _padding(size: int) -> bytes:
    return _ZEROS[:-size % BLOCK] if size % BLOCK else b""


def member_header(name: str, size: int) -> bytes:
    """The header block(s) of a regular member, a GNU long-name record first when the UTF-8
    name is longer than 100 bytes (as ``tarfile`` writes it)."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) <= NAME_LEN:
        return _header(raw, size, _REGULAR)
    long = raw + _NUL
    return (_header(b"././@LongLink", len(long), _LONGNAME) + long + _padding(len(long))
            + _header(raw, size, _REGULAR))


class TarWriter:
    """``add(name, data)`` per member, then ``close()`` (end-of-archive blocks and the record
    padding); the file object stays the caller's."""

    def __init__(self, fh: BinaryIO):
        self.fh, self.offset = fh, 0

    def add(self, name: str, data: bytes | memoryview) -> None:
        header = member_header(name, len(data))
        pad = _padding(len(data))
        self.fh.write(header)
        self.fh.write(data)
        if pad:
            self.fh.write(pad)
        self.offset += len(header) + len(data) + len(pad)

    def close(self) -> None:
        self.offset += 2 * BLOCK  # two zero blocks end the archive
        rest = -self.offset % RECORD
        self.fh.write(_ZEROS[:2 * BLOCK])
        if rest:
            self.fh.write(_ZEROS[:rest])
        self.offset += rest

    def __enter__(self) -> "TarWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
