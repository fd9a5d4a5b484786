"""Raw samples of one shard tar: members grouped by key, only the kinds the loader decodes read.

A member ``bear/00004.00.jpg`` belongs to sample ``bear/00004`` as member ``00.jpg``
(:func:`split_member`, the WebDataset rule). Only ``NN.jpg`` / ``jpg`` / ``mask.png`` / ``json``
members are read; any other (``.pyd``, ``.pickle``, ``.pth``, ``.npy``, ...) is never read, let
alone unpickled: it is counted in ``ignored_members``. Reading uses the lean tar parser of
:mod:`pipeline.lake.tario`, not webdataset's decoders.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterator

from botocore.exceptions import BotoCoreError

from pipeline.lake import store as objectstore
from pipeline.lake.contract import split_member, unsafe_member
from pipeline.loading.readstats import ReadStats
from pipeline.lake.tario import iter_members

log = logging.getLogger(__name__)

FRAME_RE = re.compile(r"^(\d{2})\.jpg$")
_WARNED_IGNORED: set[tuple[str, str]] = set()


def _wanted(ext: str) -> bool:
    return ext in ("json", "jpg", "mask.png") or FRAME_RE.match(ext) is not None


def _wanted_member(name: str) -> bool:
    key, ext = split_member(name)
    return key is not None and ext is not None and not key.startswith("__") and _wanted(ext)


def read_tar(url: str, stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    """Raw samples of one tar: ``{"__key__", "__url__", ext: bytes, ...}``, members in tar order
    grouped by key. Only jpg / mask.png / json members are read; others are counted and skipped.
    A truncated or corrupt tar ends the shard with a warning naming the key being read (that
    partial sample is dropped). The file or object is opened by :func:`pipeline.lake.store.
    open_read` (an ``s3://`` object is streamed: ranged reads, no temporary file); a missing,
    truncated or corrupt object, or a read that fails mid-object, counts like a missing,
    truncated or corrupt file."""
    stats = stats if stats is not None else ReadStats()
    stats.shards_opened += 1
    cur: dict[str, Any] | None = None
    member = None
    try:
        with objectstore.open_read(url) as fh:
            for member, data in iter_members(fh, _wanted_member):
                if unsafe_member(member):
                    stats.record("corrupt_samples", url, None,
                                 f"member {member!r} escapes the shard (absolute path or '..'); "
                                 "skipped: this shard was not written by launch/preprocess.py, "
                                 "rebuild it")
                    continue
                key, ext = split_member(member)
                if key is None or ext is None or key.startswith("__"):
                    stats.ignored_members += 1
                    continue
                if cur is None or key != cur["__key__"]:
                    if cur is not None and len(cur) > 2:  # a key with nothing readable: skip it
                        yield cur
                    cur = {"__key__": key, "__url__": url}
                if data is None:  # never read, let alone unpickled
                    stats.ignored_members += 1
                    if (url, ext) not in _WARNED_IGNORED:  # once per shard and extension
                        _WARNED_IGNORED.add((url, ext))
                        log.warning("ignored member %r (key %r) of shard %s: only jpg, mask.png "
                                    "and json members are read; members '.%s' are counted in "
                                    "ignored_members, never decoded", member, key, url, ext)
                    continue
                if ext in cur:
                    stats.record("corrupt_samples", url, key, f"duplicate member {member}")
                    cur["__bad__"] = True
                    continue
                cur[ext] = data
            if cur is not None and len(cur) > 2:
                yield cur
            cur = None
    except (OSError, ValueError, UnicodeDecodeError, BotoCoreError) as exn:
        key = cur["__key__"] if cur is not None else None
        stats.record("truncated_shards", url, key,
                     f"tar read failed at member {member!r} ({type(exn).__name__}: {exn}); "
                     "the rest of this shard is skipped")
