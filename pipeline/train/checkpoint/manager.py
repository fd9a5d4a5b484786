"""The checkpoint manager: saves all ranks' state into a step folder atomically, keeps the last K,
finds the newest complete one and loads it (see :mod:`pipeline.train.checkpoint`)."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from pipeline.core.atomic import fsync_dir, atomic_write_text
from pipeline.core.dist import DistContext, any_rank, barrier, default_group_context
from pipeline.train.checkpoint.files import relative_files, remove_folder, rmtree, save_torch
from pipeline.train.checkpoint.layout import (_ENGINE_NAME_RE, STEP_RE, CheckpointError,
                                              ENGINE_TAG, ENGINES, FORMAT, Loaded, META,
                                              rank_file_name, SHARED, step_folder_name, TMP_PREFIX,
                                              WorldSizeMismatch)

log = logging.getLogger(__name__)


class CheckpointManager:
    """Saves, lists, prunes and loads the checkpoints of one run directory (see module docs).

    ``ctx`` (default: the default process group's context, else a single process's) gives the
    rank, the world size and the collectives: barriers and failure agreement run over its process
    group when it is distributed. A context without a process group (``backend`` None) but with
    several ranks saves without barriers (see the package docs).
    """

    def __init__(self, directory: str | Path, keep_last: int = 3, *,
                 ctx: DistContext | None = None):
        self.directory = Path(directory)
        self.keep_last = int(keep_last)
        self.ctx = ctx if ctx is not None else default_group_context()
        self.rank, self.world_size = int(self.ctx.rank), int(self.ctx.world_size)
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"invalid rank {self.rank} for world size {self.world_size}")

    # ---- collectives -----------------------------------------------------------------------

    def _agree(self, error: BaseException | None, what: str) -> None:
        """Raise on every rank when ``error`` happened on any rank (an all-reduce over the
        context's process group: also a barrier)."""
        if not any_rank(error is not None, self.ctx):
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
            m = STEP_RE.match(p.name)
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
        if self.rank == 0 and (self.ctx.distributed or self.world_size == 1):
            rmtree(tmp)
        barrier(self.ctx)
        tmp.mkdir(parents=True, exist_ok=True)

        # 2. this rank's files
        error = None
        try:
            if self.rank == 0:
                save_torch(tmp / SHARED, {"format": FORMAT, "step": step,
                                           "world_size": self.world_size, "shared": shared})
            save_torch(tmp / rank_file_name(self.rank),
                        {"format": FORMAT, "step": step, "rank": self.rank,
                         "world_size": self.world_size, "state": rank_state})
        except Exception as e:  # agreed on below, so that no rank hangs
            error = e
        try:
            self._agree(error, f"saving checkpoint step {step} into {tmp} failed; the previous "
                               f"checkpoint ({self.latest()}) stays the latest")
        except CheckpointError:
            if self.rank == 0:
                rmtree(tmp)
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
        barrier(self.ctx)
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
        files = relative_files(tmp)
        meta = {"format": FORMAT, "step": step, "world_size": self.world_size,
                "engines": names, "files": files,
                "sizes": {f: (tmp / f).stat().st_size for f in files},
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "torch_version": torch.__version__}
        atomic_write_text(tmp / META, json.dumps(meta, indent=1) + "\n")
        fsync_dir(tmp)
        if final.exists():
            # e.g. a resumed run saving a step that was saved before: move the old one aside
            # first (a directory cannot be replaced by rename while it has files)
            aside = self.directory / f"{TMP_PREFIX}replaced_{final.name}_{os.getpid()}"
            rmtree(aside)
            os.rename(final, aside)
            os.rename(tmp, final)
            rmtree(aside)
        else:
            os.rename(tmp, final)
        fsync_dir(self.directory)
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
                remove_folder(p)
                excess -= 1

    def _remove_stale_tmps(self) -> None:
        for p in self.directory.glob(f"{TMP_PREFIX}*"):
            if p.is_dir():
                rmtree(p)

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
            error = None
            try:
                load_path, _ = engines[name].load_checkpoint(  # type: ignore[index]
                    str(where), tag=ENGINE_TAG, **dict(engine_load_kwargs or {}))
                if load_path is None:
                    error = CheckpointError(
                        f"engine {name!r} loaded nothing from {where} (DeepSpeed returned None). "
                        f"{self._fallback_hint(folder)}")
            except Exception as e:  # agreed on below: every rank raises, none goes on alone
                error = CheckpointError(
                    f"engine {name!r} could not load {where}: {type(e).__name__}: {e}. "
                    f"{self._fallback_hint(folder)}")
                error.__cause__ = e
            self._agree(error, f"loading engine {name!r} from {where} failed")
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
        damaged = self._damaged_files(folder, meta)
        if damaged:
            raise CheckpointError(f"checkpoint {folder} has damaged files: {'; '.join(damaged[:5])}"
                                  f"{' ...' if len(damaged) > 5 else ''}. "
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

    @staticmethod
    def _damaged_files(folder: Path, meta: dict) -> list[str]:
        """Files of ``folder`` whose size differs from the one meta.json recorded (truncated or
        overwritten), and zip-format torch files (every ``.pt`` file torch saves by default,
        DeepSpeed's included) that lack their zip directory (truncated: covers checkpoints whose
        meta.json records no sizes). Cheap (a stat and the file's last bytes), done on every
        rank for every rank's files, so that all ranks reach the same verdict before any engine
        starts loading."""
        damaged = []
        sizes = meta.get("sizes") or {}
        for f in meta.get("files", []):
            path = folder / f
            size = path.stat().st_size
            if f in sizes and int(sizes[f]) != size:
                damaged.append(f"{path} is {size} bytes, {int(sizes[f])} when saved (truncated "
                               f"or overwritten)")
            elif f.endswith(".pt") and _torch_zip_truncated(path):
                damaged.append(f"{path} is truncated (its zip directory is missing)")
        return damaged

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


def _torch_zip_truncated(path: Path) -> bool:
    """True when ``path`` starts like a zip archive (torch's default format) but has no readable
    zip directory at its end."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":
                return False          # not zip format (legacy torch.save): not checked here
    except OSError:
        return True
    return not zipfile.is_zipfile(path)


def _step_of(folder: Path) -> int:
    m = STEP_RE.match(folder.name)
    return int(m.group(1)) if m else -1
