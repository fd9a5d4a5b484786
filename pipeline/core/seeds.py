"""Seeds derived from named parts (``seed_int("shards", seed, epoch, rank, worker)``): one stable
hash for every loader, so a resumed run replays its draws on any machine and Python."""

from __future__ import annotations

import hashlib
from typing import Any


def seed_int(*parts: Any) -> int:
    """A 63-bit seed from the ``repr`` of ``parts`` (blake2b; never Python's salted ``hash``)."""
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)
