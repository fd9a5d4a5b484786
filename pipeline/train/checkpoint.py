"""Checkpoints for multi-rank training (torchrun DDP over gloo/nccl, or DeepSpeed engines).

Layout
------
A run directory holds one folder per checkpoint::

    <directory>/
        step_00001000/
            shared.pt          rank 0 only: {"format", "step", "world_size",
                                             "shared": <caller's dict>}
                               (model / optimizer / scheduler / grad-scaler state dicts that DDP
                               keeps identical on every rank, plus whatever the caller adds)
            rank_00000.pt      every rank: {"format", "step", "rank", "world_size",
            rank_00001.pt                   "state": <caller's rank_state or None>}
            ...                (per-rank RNG states, data position, ...)
            engines/<name>/    one DeepSpeed ``save_checkpoint`` folder per engine (tag "state"):
                               each engine gets its own folder because two engines sharing one
                               folder share one ``latest`` file
            meta.json          written LAST: step, world_size, engine names, file list, created
                               time, torch version
        step_00002000/ ...
        .tmp_step_00003000/    a save in progress (or one a crash interrupted)

Contract
--------
* **Complete** means: a ``step_<8 digits>`` folder that contains ``meta.json``. Folders without
  it and every ``.tmp_*`` folder are never listed, never returned by
  :meth:`CheckpointManager.latest`, and never loaded (nor deleted: a ``step_*`` folder without
  ``meta.json`` may not be ours). ``latest()`` is the complete checkpoint with the highest step.
* **Atomic save.** Every rank writes into the same temporary folder
  ``<directory>/.tmp_step_<step>`` (each file itself through temp + rename, see
  :mod:`pipeline.core.atomic`); after a barrier rank 0 checks that every rank's file is there, writes
  ``meta.json``, fsyncs, and renames the folder to ``step_<step>`` in one ``rename``. A crash at any
  point leaves the previous checkpoint as the latest one, intact. Rank 0 then keeps only the
  newest ``keep_last`` complete checkpoints (``keep_last <= 0`` keeps all; the checkpoint just
  written is never removed) and deletes the ``.tmp_*`` folders crashed runs left behind.
* **Every rank calls** :meth:`~CheckpointManager.save` and :meth:`~CheckpointManager.load` with the
  same arguments (DeepSpeed's ``save_checkpoint``/``load_checkpoint`` are collective). A failure
  on one rank is agreed on with an all-reduce, so every rank raises :class:`CheckpointError`
  instead of the healthy ranks hanging in the next collective.
* **Shared filesystem.** All ranks, on all nodes, must see ``directory`` as one filesystem
  (NFS, Lustre, GPFS, ...): rank 0 checks and renames the files the other ranks wrote. Node-local
  storage (DeepSpeed's ``use_node_local_storage``) and decoupled (asynchronous) DeepSpeed
  checkpoint engines are not supported.
* **Loading** uses ``torch.load(..., weights_only=True)`` for ``shared.pt`` and the rank files: put
  only tensors, numbers, strings, ``None`` and lists/tuples/dicts of them in ``shared`` and
  ``rank_state`` (state dicts of modules, optimizers, schedulers and ``GradScaler`` qualify;
  :func:`capture_rng_state` returns such a dict; for a DDP-wrapped model save
  ``model.module.state_dict()``). DeepSpeed loads its own files (its torch checkpoint engine uses
  ``weights_only=False``).
* **World size.** A checkpoint written by N ranks resumes with N ranks. Otherwise ``load`` raises
  :class:`WorldSizeMismatch`, unless ``allow_world_size_change=True``: then ``shared`` (weights,
  optimizer state) loads and ``rank_state`` is ``None`` on *every* rank, even where a file with
  that rank number exists, because per-rank RNG streams and data positions of a different
  partition do not carry over; the caller starts those fresh. Engines load through DeepSpeed,
  which decides whether its ZeRO partitions fit the new world size; when they do not, pass
  ``engine_load_kwargs`` (e.g. ``load_optimizer_states=False``) and any DeepSpeed error comes back
  as :class:`CheckpointError` naming the engine's folder.
* **Same step saved twice** (a run resumed from an older checkpoint): the old ``step_<n>`` is
  renamed to a ``.tmp_`` name, the new one renamed into place, the old one deleted. A crash
  between those two renames leaves neither as ``step_<n>``: ``latest()`` then falls back to the
  checkpoint before it.

Typical use::

    ckpt = CheckpointManager(run_dir / "checkpoints", keep_last=3)
    if ckpt.latest() is not None:
        got = ckpt.load()
        model.load_state_dict(got.shared["model"]); ...
        restore_rng_state(got.rank_state["rng"])
    ...
    if step % every == 0 or step == last:           # on every rank
        ckpt.save(step, {"model": model.state_dict(), "optimizer": opt.state_dict()},
                  {"rng": capture_rng_state(), "data": loader_position},
                  engines={"generator": g_engine, "discriminator": d_engine})  # DeepSpeed only

Without an initialised process group ``rank``/``world_size`` can be given explicitly and no
barrier is used; a save with ``world_size > 1`` then finalises when rank 0 saves after the other
ranks have written their files (the tests rely on this; rank k > 0 returns the final path before
it exists).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.distributed as dist

from pipeline.core.atomic import _fsync_dir, atomic_open, atomic_write_text

log = logging.getLogger(__name__)

FORMAT = 1
META = "meta.json"
SHARED = "shared.pt"
ENGINES = "engines"
ENGINE_TAG = "state"
TMP_PREFIX = ".tmp_"
_STEP_RE = re.compile(r"^step_(\d+)$")
_ENGINE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read; the message names the file or folder and the fix."""


class WorldSizeMismatch(CheckpointError):
    """The checkpoint was written by a different number of ranks than this run has."""


@dataclass
class Loaded:
    """What :meth:`CheckpointManager.load` returns."""

    path: Path                      # the checkpoint folder
    step: int
    shared: dict                    # the ``shared`` dict given to save()
    rank_state: dict | None         # this rank's ``rank_state``; None when world sizes differ
    world_size: int                 # the world size the checkpoint was written with
    meta: dict = field(default_factory=dict)  # meta.json


def step_folder_name(step: int) -> str:
    return f"step_{step:08d}"


def rank_file_name(rank: int) -> str:
    return f"rank_{rank:05d}.pt"


# --------------------------------------------------------------------------------------------
# RNG states


def capture_rng_state() -> dict:
    """The global RNG states: python ``random``, numpy's global generator, torch CPU, and every
    CUDA device when CUDA is available. Only tensors, ints, floats, strs and None: the dict
    survives ``torch.load(weights_only=True)``."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "python": {"version": int(version),
                   "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"name": str(name),
                  "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict) -> None:
    """Set the global RNG states from :func:`capture_rng_state`'s dict (parts it lacks are left
    alone; CUDA states are restored for the devices present in both)."""
    if "python" in state:
        p = state["python"]
        random.setstate((int(p["version"]), tuple(int(v) for v in p["state"].tolist()),
                         p["gauss_next"]))
    if "numpy" in state:
        n = state["numpy"]
        keys = np.asarray(n["keys"].cpu().numpy(), dtype=np.uint32)
        np.random.set_state((n["name"], keys, int(n["pos"]), int(n["has_gauss"]),
                             float(n["cached_gaussian"])))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        cuda = state["cuda"][: torch.cuda.device_count()]
        for i, s in enumerate(cuda):
            torch.cuda.set_rng_state(s.cpu(), i)


# --------------------------------------------------------------------------------------------
# helpers


def _save_torch(path: Path, obj: Any) -> None:
    """``torch.save`` to a file object through temp + rename; errors name the file."""
    try:
        with atomic_open(path) as f:
            torch.save(obj, f)
    except Exception as e:
        raise CheckpointError(
            f"could not write {path}: {type(e).__name__}: {e}. Checkpoint contents must be "
            f"tensors, numbers, strings, None and lists/tuples/dicts of them (state_dict()s "
            f"qualify).") from e


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _remove_folder(path: Path) -> None:
    """Remove a checkpoint folder so that no crash leaves a half-deleted one that still looks
    complete: rename it to a ``.tmp_`` name first (atomic), then delete."""
    doomed = path.with_name(f"{TMP_PREFIX}removed_{path.name}_{os.getpid()}")
    os.rename(path, doomed)
    _rmtree(doomed)


def _relative_files(folder: Path) -> list[str]:
    """Files under ``folder`` (posix relative paths), without meta.json and writers' temps."""
    out = []
    for p in folder.rglob("*"):
        if p.is_file() and p.name != META and not (p.name.startswith(".")
                                                   and p.name.endswith(".tmp")):
            out.append(p.relative_to(folder).as_posix())
    return sorted(out)


class CheckpointManager:
    """Saves, lists, prunes and loads the checkpoints of one run directory (see module docs).

    ``rank``/``world_size`` default to ``torch.distributed``'s when a process group is
    initialised, else 0/1. Barriers and failure agreement use the default process group whenever
    it is initialised with more than one rank.
    """

    def __init__(self, directory: str | Path, keep_last: int = 3, *, rank: int | None = None,
                 world_size: int | None = None):
        self.directory = Path(directory)
        self.keep_last = int(keep_last)
        initialized = dist.is_available() and dist.is_initialized()
        self.rank = int(rank if rank is not None else (dist.get_rank() if initialized else 0))
        self.world_size = int(world_size if world_size is not None
                              else (dist.get_world_size() if initialized else 1))
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"invalid rank {self.rank} for world size {self.world_size}")

    # ---- collectives -----------------------------------------------------------------------

    @staticmethod
    def _distributed() -> bool:
        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def _barrier(self) -> None:
        if self._distributed():
            dist.barrier()

    def _all_ok(self, ok: bool) -> bool:
        """True when ``ok`` on every rank (an all-reduce: also a barrier)."""
        if not self._distributed():
            return ok
        device = torch.device("cpu")
        if dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def _agree(self, error: BaseException | None, what: str) -> None:
        """Raise on every rank when ``error`` happened on any rank."""
        if self._all_ok(error is None):
            return
        if error is not None:
            if isinstance(error, CheckpointError):
                raise error
            raise CheckpointError(f"{what}: {type(error).__name__}: {error}") from error
        raise CheckpointError(f"{what}: another rank failed (see its log)")

    # ---- listing ---------------------------------------------------------------------------

    def path_for(self, step: int) -> Path:
        """The folder a complete checkpoint of ``step`` has."""
        return self.directory / step_folder_name(step)

    def _tmp_for(self, step: int) -> Path:
        return self.directory / f"{TMP_PREFIX}{step_folder_name(step)}"

    def list(self) -> list[Path]:
        """Complete checkpoints (folders ``step_<n>`` with meta.json), oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for p in self.directory.iterdir():
            m = _STEP_RE.match(p.name)
            if m and p.is_dir() and (p / META).is_file():
                found.append((int(m.group(1)), p))
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        """The newest complete checkpoint folder, or None."""
        done = self.list()
        return done[-1] if done else None

    # ---- saving ----------------------------------------------------------------------------

    def save(self, step: int, shared: dict, rank_state: dict | None = None,
             engines: Mapping[str, Any] | None = None) -> Path:
        """Write checkpoint ``step`` and return its folder. Call on every rank.

        ``shared`` is written by rank 0 only (keep it identical across ranks, e.g. DDP's model
        and optimizer state dicts); ``rank_state`` by every rank; every engine in ``engines``
        (DeepSpeed) saves into ``engines/<name>/`` on every rank.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        names = self._engine_names(engines)
        final, tmp = self.path_for(step), self._tmp_for(step)
        self.directory.mkdir(parents=True, exist_ok=True)

        # 1. an empty temporary folder (a crashed save of the same step may have left one). Only
        # safe to clear when no other rank can be writing into it yet: after a barrier, or alone.
        if self.rank == 0 and (self._distributed() or self.world_size == 1):
            _rmtree(tmp)
        self._barrier()
        tmp.mkdir(parents=True, exist_ok=True)

        # 2. this rank's files
        error = None
        try:
            if self.rank == 0:
                _save_torch(tmp / SHARED, {"format": FORMAT, "step": step,
                                           "world_size": self.world_size, "shared": shared})
            _save_torch(tmp / rank_file_name(self.rank),
                        {"format": FORMAT, "step": step, "rank": self.rank,
                         "world_size": self.world_size, "state": rank_state})
        except Exception as e:  # agreed on below, so that no rank hangs
            error = e
        try:
            self._agree(error, f"saving checkpoint step {step} into {tmp} failed; the previous "
                               f"checkpoint ({self.latest()}) stays the latest")
        except CheckpointError:
            if self.rank == 0:
                _rmtree(tmp)
            raise

        # 3. DeepSpeed engines (collective: every rank, same order)
        for name in names:
            engine = engines[name]  # type: ignore[index]
            if getattr(getattr(engine, "checkpoint_engine", None), "is_decoupled",
                       lambda: False)():
                raise CheckpointError(
                    f"engine {name!r} uses a decoupled (asynchronous) checkpoint engine, which "
                    f"cannot be made atomic here; use DeepSpeed's default checkpoint engine")
            engine.save_checkpoint(str(tmp / ENGINES / name), tag=ENGINE_TAG)

        # 4. rank 0 checks, writes meta.json, renames, prunes
        self._barrier()
        error = None
        if self.rank == 0:
            try:
                self._finalize(step, tmp, final, names)
            except Exception as e:
                error = e
        self._agree(error, f"finalising checkpoint {final} failed")
        return final

    @staticmethod
    def _engine_names(engines: Mapping[str, Any] | None) -> list[str]:
        names = sorted(engines or {})
        for n in names:
            if not _ENGINE_NAME_RE.match(n):
                raise ValueError(f"engine name {n!r} must be a plain folder name "
                                 f"(letters, digits, '_', '.', '-')")
        return names

    def _finalize(self, step: int, tmp: Path, final: Path, names: list[str]) -> None:
        missing = [rank_file_name(r) for r in range(self.world_size)
                   if not (tmp / rank_file_name(r)).is_file()]
        if not (tmp / SHARED).is_file():
            missing.insert(0, SHARED)
        for n in names:
            if not (tmp / ENGINES / n / ENGINE_TAG).is_dir():
                missing.append(f"{ENGINES}/{n}/{ENGINE_TAG}/")
        if missing:
            raise CheckpointError(
                f"checkpoint {tmp} lacks {', '.join(missing)}: every one of the {self.world_size} "
                f"ranks must call save() with the same step, and {self.directory} must be on a "
                f"filesystem all nodes share. The previous checkpoint stays the latest.")
        meta = {"format": FORMAT, "step": step, "world_size": self.world_size,
                "engines": names, "files": _relative_files(tmp),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "torch_version": torch.__version__}
        atomic_write_text(tmp / META, json.dumps(meta, indent=1) + "\n")
        _fsync_dir(tmp)
        if final.exists():
            # e.g. a resumed run saving a step that was saved before: move the old one aside
            # first (a directory cannot be replaced by rename while it has files)
            aside = self.directory / f"{TMP_PREFIX}replaced_{final.name}_{os.getpid()}"
            _rmtree(aside)
            os.rename(final, aside)
            os.rename(tmp, final)
            _rmtree(aside)
        else:
            os.rename(tmp, final)
        _fsync_dir(self.directory)
        try:
            self._prune(keep=final)
            self._remove_stale_tmps()
        except OSError as e:  # the checkpoint itself is safe: do not stop training for this
            log.warning("checkpoint %s saved, but cleaning %s failed: %s", final,
                        self.directory, e)

    def _prune(self, keep: Path) -> None:
        if self.keep_last <= 0:
            return
        done = self.list()
        excess = len(done) - self.keep_last
        for p in done:
            if excess <= 0:
                break
            if p != keep:
                _remove_folder(p)
                excess -= 1

    def _remove_stale_tmps(self) -> None:
        for p in self.directory.glob(f"{TMP_PREFIX}*"):
            if p.is_dir():
                _rmtree(p)

    # ---- loading ---------------------------------------------------------------------------

    def load(self, path: str | Path | None = None, *, engines: Mapping[str, Any] | None = None,
             allow_world_size_change: bool = False, map_location: Any = "cpu",
             engine_load_kwargs: Mapping[str, Any] | None = None) -> Loaded:
        """Load checkpoint ``path`` (default: :meth:`latest`). Call on every rank.

        Engines in ``engines`` load their ``engines/<name>/`` folder (``engine_load_kwargs`` go to
        DeepSpeed's ``load_checkpoint``, e.g. ``load_optimizer_states=False``).
        """
        folder = Path(path) if path is not None else self.latest()
        if folder is None:
            raise CheckpointError(
                f"no complete checkpoint in {self.directory} (a step_<n> folder with {META}); "
                f"check the path, or start the run without resuming")
        names = self._engine_names(engines)
        error, loaded = None, None
        try:
            loaded = self._load_files(folder, names, allow_world_size_change, map_location)
        except Exception as e:  # agreed on below, so that no rank hangs in the engines' load
            error = e
        if isinstance(error, WorldSizeMismatch):
            raise error  # same meta.json on every rank: every rank raises it
        self._agree(error, f"loading checkpoint {folder} failed")
        assert loaded is not None
        for name in names:
            where = folder / ENGINES / name
            try:
                load_path, _ = engines[name].load_checkpoint(  # type: ignore[index]
                    str(where), tag=ENGINE_TAG, **dict(engine_load_kwargs or {}))
            except Exception as e:
                raise CheckpointError(
                    f"engine {name!r} could not load {where}: {type(e).__name__}: {e}. "
                    f"{self._fallback_hint(folder)}") from e
            if load_path is None:
                raise CheckpointError(
                    f"engine {name!r} loaded nothing from {where} (DeepSpeed returned None). "
                    f"{self._fallback_hint(folder)}")
        return loaded

    def _load_files(self, folder: Path, names: list[str], allow: bool,
                    map_location: Any) -> Loaded:
        meta_path = folder / META
        if not meta_path.is_file():
            raise CheckpointError(
                f"{folder} is not a complete checkpoint (no {META}: its save was interrupted); "
                f"pick another one, e.g. the latest complete one: {self.latest()}")
        try:
            meta = json.loads(meta_path.read_text())
            step, saved_world = int(meta["step"]), int(meta["world_size"])
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise CheckpointError(f"cannot read {meta_path}: {e}. "
                                  f"{self._fallback_hint(folder)}") from e
        if saved_world != self.world_size and not allow:
            raise WorldSizeMismatch(
                f"checkpoint {folder} was written by {saved_world} ranks but this run has "
                f"{self.world_size}; resume with the same number of processes (torchrun "
                f"--nproc_per_node ... --nnodes ... giving {saved_world} in total), or pass "
                f"resume.allow_world_size_change=true to resume the weights and optimizer state "
                f"with fresh per-rank RNG/data positions, or start a new run with "
                f"init_from={folder}")
        absent = [f for f in meta.get("files", []) if not (folder / f).is_file()]
        if absent:
            raise CheckpointError(f"checkpoint {folder} lacks {', '.join(absent[:5])}"
                                  f"{' ...' if len(absent) > 5 else ''}. "
                                  f"{self._fallback_hint(folder)}")
        unknown = sorted(set(names) - set(meta.get("engines", [])))
        if unknown:
            raise CheckpointError(f"checkpoint {folder} has no engine(s) {unknown}; it has "
                                  f"{meta.get('engines', [])}")
        shared = self._read(folder / SHARED, folder, map_location)
        rank_state = None
        if saved_world == self.world_size:
            rank_state = self._read(folder / rank_file_name(self.rank), folder,
                                    map_location)["state"]
        return Loaded(path=folder, step=step, shared=shared["shared"], rank_state=rank_state,
                      world_size=saved_world, meta=meta)

    def _read(self, file: Path, folder: Path, map_location: Any) -> dict:
        try:
            obj = torch.load(file, map_location=map_location, weights_only=True)
        except Exception as e:
            raise CheckpointError(
                f"cannot load {file}: {type(e).__name__}: {e}. The file is corrupt or truncated "
                f"(or holds objects weights_only=True refuses). "
                f"{self._fallback_hint(folder)}") from e
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise CheckpointError(f"{file} is not a checkpoint file of this pipeline (format "
                                  f"{FORMAT}). {self._fallback_hint(folder)}")
        return obj

    def _fallback_hint(self, folder: Path) -> str:
        earlier = [p for p in self.list() if p.resolve() != folder.resolve()
                   and _step_of(p) < _step_of(folder)]
        prev = f"the previous one, {earlier[-1]}" if earlier else "no earlier checkpoint exists"
        return f"Delete the checkpoint folder {folder} to fall back to {prev}."


def _step_of(folder: Path) -> int:
    m = _STEP_RE.match(folder.name)
    return int(m.group(1)) if m else -1
