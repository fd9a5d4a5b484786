"""WebDataset loaders for the data lake: decode, frame-consistent augmentation, DDP/worker split.

Reading rules (DESIGN.md, "Reading"):

* **Finished shards only.** A shard set is a folder ``shards/<dataset>/<split>/``; its shards are
  the ``NNNNN.tar`` files whose ``NNNNN_stats.json`` exists (:func:`list_shards`). Several sets
  can be mixed (``["shards/msra10k/train", "shards/voc2012/train"]``).
* **No unpickling, ever.** Tar members are read by this module's own reader and only three kinds
  are decoded, by our own code: ``*.jpg`` (torchvision ``decode_jpeg``, RGB), ``mask.png`` (PIL,
  ``np.array`` of the P/L image: palette ids are kept) and ``json`` (``json.loads``). Any other
  member (``.pyd``, ``.pickle``, ``.pth``, ``.npy``, ...) is not even read: it is counted in
  ``ignored_members``.
* **Masks.** ``mask_format`` ``binary`` (0/255 sources) -> {0, 1}; ``palette`` / ``voc`` / null ->
  ids as stored (0 background, 1..N objects, 255 void). ``merge_objects=True`` turns every id
  1..254 into 1 and keeps 255 (SSB pretraining on one merged foreground, as the authors did).
  Padding made by the augmentation is ``AugmentConfig.mask_fill`` (255 = ignore by default).
* **DDP.** Each set's shards are split by global rank (``shards[rank::world_size]``,
  :func:`split_by_rank`) and then by DataLoader worker (:func:`split_by_worker`); both splitters
  are passed explicitly and can be replaced. Every worker then draws shards *with replacement*
  from its own part (resampling, seeded by ``(seed, epoch, rank, worker)``), so the stream never
  ends, and :func:`make_loader` cuts it with ``WebLoader(...).with_epoch(epoch_batches)``: every
  rank gets exactly ``epoch_batches`` batches and DDP never hangs on an uneven last batch.
  A set with fewer shards than ``world_size x num_workers`` is refused with a ``ValueError``
  (:class:`NotEnoughShardsError`) that says how many there are, how many are needed and the fix.
  Rank and world size come from the arguments, else ``RANK``/``WORLD_SIZE`` (torchrun), else an
  initialised ``torch.distributed``, else 0/1.
* **Corrupt data is skipped, warned about and counted.** A member that fails to decode (truncated
  JPEG, bad PNG, bad JSON), a sample missing a member, or a truncated tar is skipped with a
  :class:`CorruptSampleWarning` naming the shard and the key. Counts live in a :class:`ReadStats`:
  - each pipeline (each DataLoader worker process) keeps its own ``dataset.stats``;
  - every batch carries ``batch["stats"]``: what its worker counted since its previous batch (a
    plain dict: counts plus up to 20 ``events`` ``(reason, shard, key, message)``);
  - :class:`ShardLoader` (what :func:`make_loader` returns) adds those up in the main process in
    ``loader.stats`` (a :class:`ReadStats`), e.g. ``loader.stats.corrupt`` after an epoch.
  Problems a worker meets after its last delivered batch are in no batch (they are still warned).

Batches (dicts, made in the workers, in shared memory there so the hand-over copies nothing):
  clips:  ``frames`` uint8 [B, T, 3, H, W] (oldest frame first, last = frame t),
  images: ``image`` uint8 [B, 3, H, W],
  ``mask`` uint8 [B, H, W] when the samples have masks (``has_mask`` bool [B] is added, and missing
  masks are all-255, only when a batch mixes samples with and without),
  ``key`` list[str], ``meta`` list[dict] (the sample's json + ``shard`` + ``augment``: the drawn
  parameters, None without augmentation), ``stats`` dict (see above).
Batches stay uint8: normalise on the device with :func:`pipeline.data.augment.to_float`.
Memory layout: ``frames``/``image`` have the shapes above but, except after a rotation/zoom,
channels-last strides (a permuted view of [B, T, H, W, 3] / [B, H, W, 3], which is what the
JPEG decoder writes: no transposing copy, ~30% of the decode time saved). Torch ops accept any
layout; merge dims with ``.reshape`` (not ``.view``), or call ``.contiguous()``.

Speed: with a flip-only config (``hflip``, and ``size`` equal to the source size or None) the
frames are copied out of the decoder straight into the batch tensor, mirrored on the way, so the
loader runs at ~85-95% of pure decoding (measured on 5-frame 854x480 DAVIS clips).

For inspection and tests without DDP or DataLoader: :func:`iter_samples` yields decoded samples
of every finished shard in order, once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import random
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

import numpy as np
import torch
import webdataset as wds
from PIL import Image

try:  # deprecated in torchvision 0.29 (in favour of torchcodec) but still the fastest here
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # pragma: no cover - a torchvision without image decoding: PIL only
    decode_jpeg = None

from .augment import AugmentConfig, augment_clip, resolve_augment, to_float
from .tario import iter_members
from .augment import _coin as augment_coin

__all__ = [
    "CorruptSampleWarning",
    "IgnoredMemberWarning",
    "NotEnoughShardsError",
    "ReadStats",
    "ShardSet",
    "ShardDataset",
    "ShardLoader",
    "list_shards",
    "shard_sets",
    "split_by_rank",
    "split_by_worker",
    "assign_shards",
    "dist_info",
    "read_tar",
    "decode_sample",
    "iter_samples",
    "make_dataset",
    "make_loader",
    "collate",
    "to_float",
]

Kind = Literal["clip", "image"]
SHARD_RE = re.compile(r"^(\d+)\.tar$")
FRAME_RE = re.compile(r"^(\d{2})\.jpg$")
MAX_EVENTS = 20
_WARNED_IGNORED: set[tuple[str, str]] = set()


class CorruptSampleWarning(UserWarning):
    """A sample or shard was skipped; the message names the shard and the key."""


class NotEnoughShardsError(ValueError):
    """A shard set has fewer shards than ranks x workers."""


class IgnoredMemberWarning(UserWarning):
    """A tar member with an extension the loader never decodes (e.g. a pickle) was skipped."""


# ----------------------------------------------------------------------------------------------
# counters


@dataclasses.dataclass
class ReadStats:
    """What a reader delivered and skipped. ``corrupt`` sums the skip reasons."""

    samples: int = 0             # decoded samples delivered
    shards_opened: int = 0       # shard reads started (with resampling a shard is read many times)
    corrupt_samples: int = 0     # a member failed to decode (JPEG, PNG, JSON, sizes disagree)
    incomplete_samples: int = 0  # a member is missing (e.g. cut off) or the sample is not a `kind`
    truncated_shards: int = 0    # the tar itself is truncated/corrupt: the rest of it is skipped
    ignored_members: int = 0     # members never read: unknown extensions (.pyd, .pickle, .pth, ...)
    events: list = dataclasses.field(default_factory=list)  # last (reason, shard, key, message)

    COUNTS = ("samples", "shards_opened", "corrupt_samples", "incomplete_samples",
              "truncated_shards", "ignored_members")

    @property
    def corrupt(self) -> int:
        return self.corrupt_samples + self.incomplete_samples + self.truncated_shards

    def record(self, reason: str, shard: str, key: str | None, message: str, warn: bool = True):
        setattr(self, reason, getattr(self, reason) + 1)
        self.events.append((reason, shard, key, message))
        del self.events[:-MAX_EVENTS]
        if warn:
            warnings.warn(f"skipped ({reason}) shard {shard} key {key!r}: {message}",
                          CorruptSampleWarning, stacklevel=3)

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.COUNTS}
        d["corrupt"] = self.corrupt
        d["events"] = list(self.events)
        return d

    def add(self, other: "ReadStats | Mapping[str, Any]") -> None:
        get = other.get if isinstance(other, Mapping) else (lambda k, d=0: getattr(other, k, d))
        for k in self.COUNTS:
            setattr(self, k, getattr(self, k) + int(get(k, 0)))
        self.events.extend(tuple(e) for e in (get("events", []) or []))
        del self.events[:-MAX_EVENTS]

    def delta_since(self, last: dict[str, int]) -> dict[str, Any]:
        """Counts (and skip events) since the snapshot ``last``, which is updated in place."""
        d: dict[str, Any] = {k: getattr(self, k) - last.get(k, 0) for k in self.COUNTS}
        new = d["corrupt_samples"] + d["incomplete_samples"] + d["truncated_shards"]
        d["events"] = list(self.events[-new:]) if new else []
        for k in self.COUNTS:
            last[k] = getattr(self, k)
        return d


# ----------------------------------------------------------------------------------------------
# shard lists and splitting


@dataclasses.dataclass(frozen=True)
class ShardSet:
    """The finished shards of one set (one folder, or an explicit list of tar files)."""

    name: str
    shards: tuple[str, ...]
    samples: int | None = None  # from the stats files, when they say


def _stats_path(tar: Path) -> Path:
    return tar.with_name(tar.name[: -len(".tar")] + "_stats.json")


def _read_count(stats: Path) -> int | None:
    try:
        return int(json.loads(stats.read_text())["count"])
    except Exception:
        return None


def list_shards(shard_dir: str | os.PathLike) -> list[str]:
    """Finished shards of a set folder, sorted: ``NNNNN.tar`` with its ``NNNNN_stats.json``."""
    d = Path(shard_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"shard folder {d} does not exist")
    out = []
    for p in sorted(d.iterdir()):
        if SHARD_RE.match(p.name) and p.is_file() and _stats_path(p).is_file():
            out.append(str(p))
    return out


def shard_sets(sources: "str | os.PathLike | Sequence[str | os.PathLike]") -> list[ShardSet]:
    """Resolve folders and/or tar paths to shard sets.

    A folder is one set; tar files given directly form one set together (unfinished ones, without
    their stats file, are dropped with a warning). Raises when a set has no finished shard.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    sets: list[ShardSet] = []
    loose: list[Path] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            shards = list_shards(p)
            if not shards:
                raise FileNotFoundError(
                    f"shard set {p} has no finished shard (NNNNN.tar with NNNNN_stats.json); "
                    "run launch/preprocess.py for it, or wait for it to finish")
            counts = [_read_count(_stats_path(Path(s))) for s in shards]
            total = sum(counts) if all(c is not None for c in counts) else None
            sets.append(ShardSet(str(p), tuple(shards), total))
        elif p.suffix == ".tar":
            loose.append(p)
        else:
            raise FileNotFoundError(f"{p} is neither a shard folder nor a .tar shard")
    if loose:
        finished = [p for p in loose if p.is_file() and _stats_path(p).is_file()]
        dropped = [str(p) for p in loose if p not in finished]
        if dropped:
            warnings.warn(f"ignoring unfinished or missing shards (no _stats.json): {dropped}",
                          stacklevel=2)
        if not finished:
            raise FileNotFoundError(f"none of the given shards is finished: {dropped}")
        counts = [_read_count(_stats_path(p)) for p in finished]
        total = sum(counts) if all(c is not None for c in counts) else None
        sets.append(ShardSet("+".join(sorted({str(p.parent) for p in finished})),
                             tuple(str(p) for p in finished), total))
    if not sets:
        raise ValueError("no shard folders or shards given")
    return sets


def split_by_rank(shards: Sequence[str], rank: int, world_size: int) -> list[str]:
    """The shards of global ``rank``: every ``world_size``-th one, starting at ``rank``."""
    return list(shards[rank::world_size])


def split_by_worker(shards: Sequence[str], worker: int, num_workers: int) -> list[str]:
    """The shards of DataLoader worker ``worker`` among a rank's shards."""
    return list(shards[worker::num_workers])


def assign_shards(shards: Sequence[str], rank: int, world_size: int, worker: int = 0,
                  num_workers: int = 1, nodesplitter=split_by_rank,
                  workersplitter=split_by_worker) -> list[str]:
    """The shards one (rank, worker) reads: ``workersplitter(nodesplitter(shards))``."""
    return workersplitter(nodesplitter(list(shards), rank, world_size), worker, max(1, num_workers))


def dist_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): the arguments, else RANK/WORLD_SIZE, else torch.distributed, else 0/1."""
    if rank is None or world_size is None:
        env_r, env_w = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
        if env_r is not None and env_w is not None:
            r, w = int(env_r), int(env_w)
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            r, w = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            r, w = 0, 1
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad rank {rank} for world size {world_size}")
    return int(rank), int(world_size)


def check_shard_counts(sets: Sequence[ShardSet], world_size: int, num_workers: int) -> None:
    """Raise :class:`NotEnoughShardsError` when a set cannot give every (rank, worker) a shard."""
    nw = max(1, num_workers)
    needed = world_size * nw
    for s in sets:
        n = len(s.shards)
        if n >= needed:
            continue
        max_workers = n // world_size
        fix_workers = (f"use num_workers <= {max_workers}" if max_workers >= 1
                       else f"run on at most {n} ranks")
        per_shard = ""
        if s.samples:
            per_shard = (f" (it holds {s.samples} samples: --shard-max-count "
                         f"{max(1, s.samples // needed)} gives >= {needed} shards)")
        raise NotEnoughShardsError(
            f"shard set {s.name} has {n} finished shard(s), but world_size={world_size} x "
            f"num_workers={nw} = {needed} are needed: every rank and every DataLoader worker "
            f"reads shards of its own. Fix: re-shard it with a smaller --shard-max-count"
            f"{per_shard}, or {fix_workers}.")


# ----------------------------------------------------------------------------------------------
# tar reading (no webdataset decoders, nothing unpickled)


def _split_member(name: str) -> tuple[str | None, str | None]:
    """``bear/00004.00.jpg`` -> (``bear/00004``, ``00.jpg``): key = path up to the first dot of
    the file name (the WebDataset rule)."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem or not ext:
        return None, None
    return (f"{head}/{stem}" if head else stem), ext.lower()


def _wanted(ext: str) -> bool:
    return ext in ("json", "jpg", "mask.png") or FRAME_RE.match(ext) is not None


def _wanted_member(name: str) -> bool:
    key, ext = _split_member(name)
    return key is not None and ext is not None and not key.startswith("__") and _wanted(ext)


def read_tar(url: str, stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    """Raw samples of one tar: ``{"__key__", "__url__", ext: bytes, ...}``, members in tar order
    grouped by key. Only jpg / mask.png / json members are read; others are counted and skipped.
    A truncated or corrupt tar ends the shard with a warning naming the key being read (that
    partial sample is dropped)."""
    stats = stats if stats is not None else ReadStats()
    stats.shards_opened += 1
    cur: dict[str, Any] | None = None
    member = None
    try:
        with open(url, "rb", buffering=0) as fh:
            for member, data in iter_members(fh, _wanted_member):
                key, ext = _split_member(member)
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
                        warnings.warn(f"ignored member {member!r} (key {key!r}) of shard {url}"
                                      ": only jpg, mask.png and json members are read; members "
                                      f"'.{ext}' are counted in ignored_members, never decoded",
                                      IgnoredMemberWarning, stacklevel=2)
                    continue
                if ext in cur:
                    stats.record("corrupt_samples", url, key, f"duplicate member {member}")
                    cur["__bad__"] = True
                    continue
                cur[ext] = data
            if cur is not None and len(cur) > 2:
                yield cur
            cur = None
    except (OSError, ValueError, UnicodeDecodeError) as exn:
        key = cur["__key__"] if cur is not None else None
        stats.record("truncated_shards", url, key,
                     f"tar read failed at member {member!r} ({type(exn).__name__}: {exn}); "
                     "the rest of this shard is skipped")


# ----------------------------------------------------------------------------------------------
# decoding


def _decode_jpeg(data: bytes) -> torch.Tensor:
    """JPEG bytes -> uint8 [3, H, W] (RGB). torchvision's libjpeg-turbo decoder (about 2x faster
    than PIL here); PIL is tried when it refuses a file, and a failure of both raises."""
    if not data:
        raise _Corrupt("empty JPEG member")
    first = "torchvision decoder unavailable"
    if decode_jpeg is not None:
        try:
            with warnings.catch_warnings():  # its per-call deprecation notice
                warnings.simplefilter("ignore", DeprecationWarning)
                return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                   mode=ImageReadMode.RGB)
        except RuntimeError as exn:
            first = str(exn).splitlines()[0][-100:]
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG":
                raise ValueError(f"{im.format}, not JPEG")
            arr = np.array(im.convert("RGB"))
    except Exception as exn:  # PIL raises many types; all mean "not a readable JPEG"
        raise _Corrupt(f"bad JPEG: {first}; PIL: {type(exn).__name__}: {exn}") from None
    return torch.from_numpy(arr).permute(2, 0, 1)


def _decode_mask(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        if im.format != "PNG":
            raise ValueError(f"mask is {im.format}, not PNG")
        if im.mode in ("P", "L"):
            arr = np.array(im)  # palette indices / grey values as stored
        elif im.mode == "1":
            arr = np.array(im).astype(np.uint8)
        else:
            raise ValueError(f"mask PNG mode {im.mode} is not an index mask (P, L or 1)")
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise ValueError(f"mask decoded to {arr.dtype} {arr.shape}, expected uint8 [H, W]")
    return arr


def _mask_tensor(arr: np.ndarray, mask_format: str | None, merge_objects: bool) -> torch.Tensor:
    if mask_format == "binary":
        return torch.from_numpy(np.minimum(arr, 1, out=arr))  # value > 0 -> 1, in place
    m = torch.from_numpy(arr)
    if merge_objects:
        fg = (m > 0) & (m != 255)
        return torch.where(fg, torch.ones_like(m), m)
    return m


def _sample_kind(raw: Mapping[str, Any]) -> str | None:
    if "00.jpg" in raw:
        return "clip"
    if "jpg" in raw:
        return "image"
    return None


def decode_sample(raw: Mapping[str, Any], kind: Kind | None = None, *,
                  merge_objects: bool = False, masks: bool = True,
                  out: torch.Tensor | None = None, hflip: bool = False) -> dict[str, Any]:
    """Decode one raw sample; raises ``ValueError``/``RuntimeError``/``OSError`` when it is
    corrupt or incomplete (the pipeline counts and skips those). ``kind=None`` detects it.

    Returns ``{"key", "shard", "frames" [T,3,H,W] | "image" [3,H,W], "mask" [H,W] or absent,
    "meta"}`` (uint8 tensors; frames/image are channels-last views of HWC memory).
    ``masks=False`` leaves ``mask.png`` alone (not decoded, no "mask" key; TCB pretraining).
    ``out``: an HWC uint8 buffer ([T, H, W, 3] or [H, W, 3], e.g. a slot of a batch) to write the
    pixels into when the shapes match (otherwise it is not used); ``hflip``: mirror frames and
    mask while copying them out of the decoder (the loader's flip-only fast path).
    """
    key, url = raw.get("__key__"), raw.get("__url__")
    found = _sample_kind(raw)
    kind = kind or found
    if kind not in ("clip", "image"):
        raise _Incomplete("no 00.jpg or jpg member")
    meta = _parse_json(raw)
    res: dict[str, Any] = {"key": key, "shard": url}
    try:
        if kind == "clip":
            if found != "clip":
                raise _Incomplete("not a clip sample (no 00.jpg member)")
            names = sorted(k for k in raw if isinstance(k, str) and FRAME_RE.match(k))
            expected = [f"{i:02d}.jpg" for i in range(len(names))]
            if names != expected:
                raise _Incomplete(f"frame members {names} are not 00.jpg..{len(names) - 1:02d}.jpg")
            ids = meta.get("frame_ids")
            if isinstance(ids, list) and len(ids) != len(names):
                raise _Incomplete(f"{len(names)} frame members but {len(ids)} frame_ids in json")
            decoded = [_decode_jpeg(raw[n]) for n in names]
            shape = decoded[0].shape
            if any(d.shape != shape for d in decoded):
                raise _Corrupt(f"frames of different sizes: {[tuple(d.shape) for d in decoded]}")
            hw = tuple(shape[-2:])
            # the decoders give HWC memory; keep it (channels-last) instead of a transposing copy
            want = (len(decoded),) + hw + (3,)
            buf = out if out is not None and tuple(out.shape) == want else torch.empty(want,
                                                                                  dtype=torch.uint8)
            for i, d in enumerate(decoded):
                src = d.permute(1, 2, 0)
                buf[i].copy_(src.flip(1) if hflip else src)
            res["frames"] = buf.permute(0, 3, 1, 2)
        else:
            if "jpg" not in raw:
                raise _Incomplete("not an image sample (no jpg member)")
            d = _decode_jpeg(raw["jpg"])  # [3, H, W] view of HWC memory
            hw = tuple(d.shape[-2:])
            src = d.permute(1, 2, 0)
            if out is not None and tuple(out.shape) == hw + (3,):
                out.copy_(src.flip(1) if hflip else src)
                res["image"] = out.permute(2, 0, 1)
            else:
                res["image"] = (src.flip(1) if hflip else src).permute(2, 0, 1)
    except RuntimeError as exn:  # e.g. out of memory on a huge frame
        raise _Corrupt(f"{type(exn).__name__}: {exn}") from None
    mask_format = meta.get("mask_format")
    if not masks:
        pass
    elif "mask.png" in raw:
        try:
            arr = _decode_mask(raw["mask.png"])
        except Exception as exn:  # PIL raises many types; all mean "not a readable mask"
            raise _Corrupt(f"bad mask.png: {type(exn).__name__}: {exn}") from None
        if arr.shape != hw:
            raise _Corrupt(f"mask is {arr.shape[1]}x{arr.shape[0]}, frames {hw[1]}x{hw[0]}")
        m = _mask_tensor(arr, mask_format, merge_objects)
        res["mask"] = m.flip(-1) if hflip else m
    elif mask_format:
        raise _Incomplete(f"mask_format {mask_format!r} but no mask.png member")
    meta["shard"] = url
    res["meta"] = meta
    return res


def _parse_json(raw: Mapping[str, Any]) -> dict[str, Any]:
    if "json" not in raw:
        raise _Incomplete("no json member")
    try:
        meta = json.loads(raw["json"].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exn:
        raise _Corrupt(f"bad json member: {exn}") from None
    if not isinstance(meta, dict):
        raise _Corrupt("json member is not an object")
    return meta


class _Corrupt(ValueError):
    reason = "corrupt_samples"


class _Incomplete(ValueError):
    reason = "incomplete_samples"


def _count_failure(stats: ReadStats, raw: Mapping[str, Any], exn: Exception) -> None:
    if isinstance(exn, (_Corrupt, _Incomplete)):
        stats.record(exn.reason, raw.get("__url__"), raw.get("__key__"), str(exn))
    else:
        stats.record("corrupt_samples", raw.get("__url__"), raw.get("__key__"),
                     f"{type(exn).__name__}: {exn}")


_DECODE_ERRORS = (ValueError, RuntimeError, OSError, SyntaxError)
_NO_AUGMENT = {"hflip": False, "angle": 0.0, "scale": 1.0, "crop": None, "time_reverse": False}


def _flip_only(cfg: AugmentConfig) -> bool:
    """Whether the config is at most a flip (plus a resize to a size the sample may already have):
    then the flip is done while copying out of the JPEG decoder, into the batch."""
    return (cfg.crop is None and cfg.rotate_deg == 0 and cfg.scale == (1.0, 1.0)
            and cfg.time_reverse == 0)


def _process(raw: Mapping[str, Any], kind: Kind | None, merge_objects: bool, cfg: AugmentConfig,
             gen: torch.Generator | None, stats: ReadStats, slot: torch.Tensor | None = None,
             masks: bool = True) -> dict[str, Any] | None:
    """Decode + augment one raw sample; None (counted, warned) when it is corrupt.

    With a flip-only config, the flip coin is drawn first (the same single draw
    :func:`augment_clip` would make) and the flip is fused into the decoder's copy (into ``slot``
    when given); a resize, if the size differs, follows. Same results as decode-then-augment."""
    if raw.get("__bad__"):
        return None  # already counted by the reader
    fast = _flip_only(cfg)
    flip = fast and augment_coin(cfg.hflip, gen)  # no draw when hflip == 0
    try:
        sample = decode_sample(raw, kind, merge_objects=merge_objects, masks=masks,
                               out=slot if fast else None, hflip=flip)
    except _DECODE_ERRORS as exn:
        _count_failure(stats, raw, exn)
        return None
    stats.samples += 1
    if cfg.is_identity:
        sample["meta"]["augment"] = None
        return sample
    name = "frames" if "frames" in sample else "image"
    x = sample[name]
    if fast:
        params = dict(_NO_AUGMENT, hflip=flip)
        if cfg.size is not None and tuple(cfg.size) != tuple(x.shape[-2:]):
            frames, mask, _ = augment_clip(x if name == "frames" else x[None], sample.get("mask"),
                                           dataclasses.replace(cfg, hflip=0.0), gen)
            sample[name] = frames if name == "frames" else frames[0]
            if mask is not None:
                sample["mask"] = mask
    else:
        frames, mask, params = augment_clip(x if name == "frames" else x[None], sample.get("mask"),
                                            cfg, gen)
        sample[name] = frames if name == "frames" else frames[0]
        if mask is not None:
            sample["mask"] = mask
    sample["meta"]["augment"] = params
    return sample


# ----------------------------------------------------------------------------------------------
# batching


def _in_worker() -> bool:
    return torch.utils.data.get_worker_info() is not None


def _alloc(shape: Sequence[int], dtype: torch.dtype = torch.uint8,
           shared: bool = False) -> torch.Tensor:
    """An uninitialised contiguous tensor, in shared memory when ``shared`` (what a DataLoader
    worker hands over without another copy, as torch's default_collate does)."""
    if not shared:
        return torch.empty(tuple(shape), dtype=dtype)
    numel = 1
    for n in shape:
        numel *= int(n)
    base = torch.empty(0, dtype=dtype)
    storage = base._typed_storage()._new_shared(numel, device=base.device)
    return base.new(storage).view(tuple(shape))


def _alloc_batch_like(t: torch.Tensor, n: int, shared: bool) -> torch.Tensor:
    """[n, *t.shape] with the same dimension order in memory as ``t`` (e.g. channels-last)."""
    order = sorted(range(t.dim()), key=lambda d: (-t.stride(d), d))
    buf = _alloc([n] + [t.shape[d] for d in order], t.dtype, shared)
    return buf.permute(0, *[1 + order.index(d) for d in range(t.dim())])


def _stack(tensors: Sequence[torch.Tensor], shared: bool,
           out: torch.Tensor | None = None) -> torch.Tensor:
    if out is not None and all(t.data_ptr() == out[i].data_ptr() and t.stride() == out[i].stride()
                               for i, t in enumerate(tensors)):
        return out  # decoded straight into the batch
    buf = _alloc_batch_like(tensors[0], len(tensors), shared)
    for i, t in enumerate(tensors):
        buf[i].copy_(t)
    return buf


def collate(samples: Sequence[dict[str, Any]], *, shared: bool | None = None,
            out: torch.Tensor | None = None) -> dict[str, Any]:
    """Stack decoded samples into a batch dict (see the module docstring). The batch keeps the
    samples' memory layout, and is put in shared memory inside DataLoader workers (``shared``).
    ``out``: the batch tensor the samples were decoded into, if any (then nothing is copied)."""
    shared = _in_worker() if shared is None else shared
    name = "frames" if "frames" in samples[0] else "image"
    tensors = [s[name] for s in samples]
    if any(t.shape != tensors[0].shape for t in tensors):
        shapes = sorted({tuple(t.shape) for t in tensors})
        raise ValueError(f"samples of different shapes {shapes} cannot be batched: set "
                         "AugmentConfig.size (e.g. a preset) or use batch_size=1")
    batch: dict[str, Any] = {name: _stack(tensors, shared, out)}
    masks = [s.get("mask") for s in samples]
    if any(m is not None for m in masks):
        hw = tensors[0].shape[-2:]
        has = torch.tensor([m is not None for m in masks])
        full = [m if m is not None else torch.full(hw, 255, dtype=torch.uint8) for m in masks]
        batch["mask"] = _stack(full, shared)
        if not bool(has.all()):
            batch["has_mask"] = has
    batch["key"] = [s["key"] for s in samples]
    batch["meta"] = [s["meta"] for s in samples]
    return batch


# ----------------------------------------------------------------------------------------------
# the pipeline


def _seed_int(*parts: Any) -> int:
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def _peek_shape(raw: Mapping[str, Any], kind: Kind | None) -> tuple[int, ...] | None:
    """The HWC shape a sample will decode to, from its json (None when unknown)."""
    try:
        meta = json.loads(raw["json"])
        h, w = int(meta["height"]), int(meta["width"])
    except Exception:
        return None
    if (kind or _sample_kind(raw)) == "clip":
        n = sum(1 for k in raw if isinstance(k, str) and FRAME_RE.match(k))
        return (n, h, w, 3) if n else None
    return (h, w, 3)


class ShardDataset(wds.DataPipeline):
    """An IterableDataset (a webdataset ``DataPipeline``) of decoded, augmented samples, or of
    batches when ``batch_size`` is set. Built by :func:`make_dataset`; see the module docstring.

    In each DataLoader worker the pipeline is: this worker's shards (split by rank, then worker)
    -> resampled shard stream -> tar reader -> shuffle buffer of raw samples -> decode ->
    augment -> (batch). Extra stages can be appended with ``.append(stage)`` / ``.compose(...)``.
    """

    def __init__(self, sets: Sequence[ShardSet], *, kind: Kind | None, augment: AugmentConfig,
                 seed: int, rank: int, world_size: int, resampled: bool = True,
                 shuffle_buffer: int = 100, merge_objects: bool = False, masks: bool = True,
                 weights: Sequence[float] | None = None, batch_size: int | None = None,
                 partial: bool = False, nodesplitter: Callable = split_by_rank,
                 workersplitter: Callable = split_by_worker):
        super().__init__()
        if weights is not None and len(weights) != len(sets):
            raise ValueError(f"{len(weights)} weights for {len(sets)} shard sets")
        self.sets = list(sets)
        self.kind = kind
        self.augment = augment
        self.seed = int(seed)
        self.rank, self.world_size = rank, world_size
        self.resampled = resampled
        self.shuffle_buffer = int(shuffle_buffer)
        self.merge_objects = merge_objects
        self.masks = masks
        self.weights = list(weights) if weights is not None else None
        self.batch_size = batch_size
        self.partial = partial
        self.nodesplitter = nodesplitter
        self.workersplitter = workersplitter
        self.epoch = 0          # set by set_epoch (or by ShardLoader per iteration), main process
        self._seen_epoch: int | None = None
        self._repeat = 0        # iterations at an unchanged epoch (persistent workers)
        self.stats = ReadStats()
        self._reported: dict[str, int] = {}  # what batches have reported of self.stats so far

    def set_epoch(self, epoch: int) -> None:
        """Change the seed material of the next iteration (fresh shard order and augmentation)."""
        self.epoch = int(epoch)

    def worker_shards(self, worker: int = 0, num_workers: int = 1) -> list[list[str]]:
        """The shards of each set that (this rank, ``worker``) reads."""
        return [assign_shards(s.shards, self.rank, self.world_size, worker, num_workers,
                              self.nodesplitter, self.workersplitter) for s in self.sets]

    def _urls(self, parts: list[list[str]], rng: random.Random) -> Iterator[str]:
        if not self.resampled:
            urls = [u for p in parts for u in p]
            rng.shuffle(urls)
            yield from urls
            return
        live = [(i, p) for i, p in enumerate(parts) if p]
        if self.weights is None:
            pool = [u for _, p in live for u in p]  # uniform over shards ~ by sample count
            while True:
                yield pool[rng.randrange(len(pool))]
        w = [float(self.weights[i]) for i, _ in live]
        while True:
            p = rng.choices(live, weights=w)[0][1]
            yield p[rng.randrange(len(p))]

    def _start(self):
        """Per-iteration state of this worker: its shards and seeded generators."""
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        check_shard_counts(self.sets, self.world_size, num_workers)
        parts = self.worker_shards(worker, num_workers)
        # seeds depend on (seed, epoch, rank, worker): an epoch replays exactly after a resume
        # with set_epoch. A persistent worker keeps its copy's epoch, so it counts repeats.
        self._repeat = self._repeat + 1 if self._seen_epoch == self.epoch else 0
        self._seen_epoch = self.epoch
        base = (self.seed, self.epoch, self._repeat, self.rank, worker)
        rng = random.Random(_seed_int("shards", *base))
        gen = torch.Generator().manual_seed(_seed_int("augment", *base))
        return worker, parts, rng, gen

    def _guard(self, worker: int, failures: int, n_parts: int) -> None:
        if self.resampled and failures > max(50, 10 * n_parts):
            raise RuntimeError(
                f"rank {self.rank} worker {worker}: nothing usable in the last {failures} "
                f"samples/shards of {[s.name for s in self.sets]} (kind={self.kind!r}); read "
                f"stats: {self.stats.as_dict()}. Are these shards of kind {self.kind!r}?")

    def _raw(self, worker: int, parts: list[list[str]], rng: random.Random
             ) -> Iterator[dict[str, Any]]:
        """Raw samples of this worker's shard stream, through the shuffle buffer."""
        n_parts = sum(len(p) for p in parts)
        empty = 0
        buf: list[dict[str, Any]] = []
        for url in self._urls(parts, rng):
            got = 0
            for raw in read_tar(url, self.stats):
                got += 1
                if self.shuffle_buffer > 1:
                    if len(buf) < self.shuffle_buffer:
                        buf.append(raw)
                        continue
                    i = rng.randrange(len(buf))
                    buf[i], raw = raw, buf[i]
                yield raw
            empty = 0 if got else empty + 1
            self._guard(worker, empty, n_parts)
        rng.shuffle(buf)
        yield from buf

    def _samples(self) -> Iterator[dict[str, Any]]:
        worker, parts, rng, gen = self._start()
        n_parts = sum(len(p) for p in parts)
        failures = 0
        for raw in self._raw(worker, parts, rng):
            s = _process(raw, self.kind, self.merge_objects, self.augment, gen, self.stats,
                         masks=self.masks)
            if s is None:
                failures += 1
                self._guard(worker, failures, n_parts)
                continue
            failures = 0
            yield s

    def _batches(self) -> Iterator[dict[str, Any]]:
        """Batches; with a flip-only config the pixels are decoded straight into the batch
        tensor (in shared memory inside a worker), so nothing is copied again."""
        worker, parts, rng, gen = self._start()
        n_parts = sum(len(p) for p in parts)
        shared = _in_worker()
        fast = _flip_only(self.augment)
        size = tuple(self.augment.size) if self.augment.size is not None else None
        group: list[dict[str, Any]] = []
        out = None
        failures = 0
        for raw in self._raw(worker, parts, rng):
            slot = None
            if fast:
                shape = _peek_shape(raw, self.kind)
                if shape is not None and size is not None and shape[-3:-1] != size:
                    shape = None  # will be resized: no use decoding into the batch
                if out is None and shape is not None:
                    out = _alloc((self.batch_size,) + shape, shared=shared)
                if out is not None and shape == tuple(out.shape[1:]):
                    slot = out[len(group)]
            s = _process(raw, self.kind, self.merge_objects, self.augment, gen, self.stats, slot,
                         self.masks)
            if s is None:
                failures += 1
                self._guard(worker, failures, n_parts)
                continue
            failures = 0
            group.append(s)
            if len(group) == self.batch_size:
                yield self._collate(group, shared, out)
                group, out = [], None
        if group and self.partial:
            yield self._collate(group, shared, out)

    def _collate(self, group, shared, out) -> dict[str, Any]:
        if out is not None:
            out = out[: len(group)]
            out = out.permute(0, 1, 4, 2, 3) if out.dim() == 5 else out.permute(0, 3, 1, 2)
        batch = collate(group, shared=shared, out=out)
        batch["stats"] = self.stats.delta_since(self._reported)
        return batch

    def iterator1(self):
        source = self._batches() if self.batch_size else self._samples()
        for stage in self.pipeline:
            source = self.invoke(stage, source)
        return source


def make_dataset(urls_or_dir: "str | os.PathLike | Sequence[str | os.PathLike]", *,
                 kind: Kind = "clip", augment: "AugmentConfig | str | Mapping | None" = None,
                 seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 num_workers: int | None = None, resampled: bool = True,
                 shuffle_buffer: int = 100, merge_objects: bool = False, masks: bool = True,
                 weights: Sequence[float] | None = None, batch_size: int | None = None,
                 partial: bool = False, nodesplitter: Callable = split_by_rank,
                 workersplitter: Callable = split_by_worker) -> ShardDataset:
    """A :class:`ShardDataset` over one or more shard sets (folders, or tar paths).

    ``kind``: "clip" or "image" (samples of the other kind are skipped and counted).
    ``augment``: an :class:`AugmentConfig`, a preset name, a mapping, or None (nothing).
    ``seed``: with rank, worker and epoch, seeds the shard draws and the augmentation.
    ``rank``/``world_size``: default from the environment (torchrun) or torch.distributed.
    ``num_workers``: when given, the shard-count check runs now rather than in the workers.
    ``resampled``: draw shards with replacement for ever (for DDP training; cut the stream with
    ``with_epoch``); False reads this rank/worker's shards once each, in a seeded order.
    ``shuffle_buffer``: raw (undecoded) samples mixed before decoding (memory ~ that many raw
    samples per worker; 1 or 0 = off).
    ``merge_objects``: object ids 1..254 -> 1 (255 kept); ``masks=False``: masks are not decoded
    (the TCB pretraining phase needs frames only; saves the PNG decode, ~15% of a 854x480 clip).
    ``weights``: per-set sampling weights; default uniform over all shards (~ by sample count).
    ``batch_size``: collate in the pipeline (what :func:`make_loader` does); ``partial`` keeps a
    last short batch (only meaningful when ``resampled=False``).
    """
    sets = shard_sets(urls_or_dir)
    rank, world_size = dist_info(rank, world_size)
    if num_workers is not None:
        check_shard_counts(sets, world_size, num_workers)
    if kind not in ("clip", "image"):
        raise ValueError(f"kind must be 'clip' or 'image', not {kind!r}")
    return ShardDataset(sets, kind=kind, augment=resolve_augment(augment), seed=seed, rank=rank,
                        world_size=world_size, resampled=resampled, shuffle_buffer=shuffle_buffer,
                        merge_objects=merge_objects, masks=masks, weights=weights,
                        batch_size=batch_size, partial=partial, nodesplitter=nodesplitter, workersplitter=workersplitter)


class ShardLoader(wds.WebLoader):
    """``wds.WebLoader`` over a batched :class:`ShardDataset`, with ``stats`` (a :class:`ReadStats`
    summed from the batches' ``stats`` in this process) and ``set_epoch``. Each new iteration
    (epoch) re-seeds the workers' shard draws and augmentation."""

    def __init__(self, dataset: ShardDataset, **loader_kwargs: Any):
        super().__init__(dataset, batch_size=None, **loader_kwargs)
        self.dataset = dataset
        self.stats = ReadStats()
        self.epoch_batches: int | None = None
        self._started = False
        self._explicit_epoch = False

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the next iteration (seeds its shard draws and augmentation, so a resumed
        run replays it exactly). Without calls, iterations are epochs 0, 1, 2, ..."""
        self.dataset.set_epoch(epoch)
        self._explicit_epoch = True

    def __iter__(self):
        # runs at the first next(), before the DataLoader starts (and copies the dataset into) its
        # workers: each epoch gets fresh shard draws and augmentation, reproducibly
        if self._started and not self._explicit_epoch:
            self.dataset.set_epoch(self.dataset.epoch + 1)
        self._explicit_epoch = False
        self._started = True
        for batch in super().__iter__():
            st = batch.get("stats")
            if st:
                self.stats.add(st)
            yield batch

    def with_epoch(self, nsamples: int = -1, nbatches: int = -1) -> "ShardLoader":
        super().with_epoch(nsamples, nbatches)
        self.epoch_batches = max(nsamples, nbatches)
        return self

    def __len__(self) -> int:
        if self.epoch_batches is None or self.epoch_batches < 0:
            raise TypeError("this loader has no epoch length (make_loader(epoch_batches=None))")
        return self.epoch_batches


def make_loader(shard_dirs: "str | os.PathLike | Sequence[str | os.PathLike]", batch_size: int,
                num_workers: int = 2, epoch_batches: int | None = None, *,
                rank: int | None = None, world_size: int | None = None, seed: int = 0,
                augment: "AugmentConfig | str | Mapping | None" = None, kind: Kind = "clip",
                shuffle_buffer: int = 100, merge_objects: bool = False, masks: bool = True,
                weights: Sequence[float] | None = None, pin_memory: bool = False,
                persistent_workers: bool = False, prefetch_factor: int | None = None,
                multiprocessing_context: Any = None) -> ShardLoader:
    """A DDP-safe loader: exactly ``epoch_batches`` batches of ``batch_size`` per rank and epoch.

    Shards are resampled (see :func:`make_dataset`), batched inside the workers, and the loader is
    cut with ``.with_epoch(epoch_batches)`` (``None``: never ends). Raises
    :class:`NotEnoughShardsError` (a ``ValueError``) when a set has fewer shards than
    ``world_size x max(1, num_workers)``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ds = make_dataset(shard_dirs, kind=kind, augment=augment, seed=seed, rank=rank,
                      world_size=world_size, num_workers=num_workers, resampled=True,
                      shuffle_buffer=shuffle_buffer, merge_objects=merge_objects, masks=masks,
                      weights=weights, batch_size=batch_size)
    kw: dict[str, Any] = dict(num_workers=num_workers, pin_memory=pin_memory)
    if num_workers > 0:
        kw["persistent_workers"] = persistent_workers
        if prefetch_factor is not None:
            kw["prefetch_factor"] = prefetch_factor
        if multiprocessing_context is not None:
            kw["multiprocessing_context"] = multiprocessing_context
    loader = ShardLoader(ds, **kw)
    if epoch_batches is not None:
        if epoch_batches < 1:
            raise ValueError(f"epoch_batches must be >= 1, got {epoch_batches}")
        loader = loader.with_epoch(epoch_batches)
    return loader


def iter_samples(sources: "str | os.PathLike | Sequence[str | os.PathLike]", *,
                 kind: Kind | None = None, augment: "AugmentConfig | str | Mapping | None" = None,
                 merge_objects: bool = False, masks: bool = True, seed: int = 0,
                 stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    """Every decoded sample of the finished shards of ``sources`` (folders or tar paths), in shard
    and tar order, once; no DDP, no workers, no shuffling. ``kind=None`` accepts both kinds.
    Corrupt samples are skipped, warned about and counted in ``stats`` (pass a :class:`ReadStats`
    to read the counts afterwards)."""
    stats = stats if stats is not None else ReadStats()
    cfg = resolve_augment(augment)
    gen = torch.Generator().manual_seed(_seed_int("iter_samples", seed))
    for s in shard_sets(sources):
        for url in s.shards:
            for raw in read_tar(url, stats):
                sample = _process(raw, kind, merge_objects, cfg, gen, stats, masks=masks)
                if sample is not None:
                    yield sample
