"""Atomic file writes: write to a temporary name in the same folder, fsync, rename.

A reader never sees a half-written file; a killed writer leaves only a
``.<name>.<host>-<pid>.tmp`` file, which the next run removes: :func:`remove_stale_temps` for
files one writer owns (a shard), :func:`remove_dead_temps` for files several processes may be
writing at once (an array job's ``manifest.json``): only temps whose writer is gone. A write
that fails for lack of space (``ENOSPC``/``EDQUOT``) removes its temporary file and raises
:class:`DiskFullError`, an ``OSError`` naming the file and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import time
from pathlib import Path
from typing import BinaryIO, Iterator

from pipeline.core.errors import PipelineError
from pipeline.core.writeback import WriteBehindFile

TMP_SUFFIX = ".tmp"


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:64] or "host"


_HOST = _host_tag()


def temp_path(path: Path) -> Path:
    """Where a writer of ``path`` in this process writes before renaming
    (``.<name>.<host>-<pid>.tmp``, in the same folder)."""
    return path.with_name(f".{path.name}.{_HOST}-{os.getpid()}{TMP_SUFFIX}")


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class DiskFullError(PipelineError, OSError):
    """No space (or quota) left while writing a file atomically; the message names the file and
    the fix, ``errno`` and ``filename`` are the failed write's. Nothing half-written is left
    behind: the temporary file is removed."""

    def __init__(self, problem: str, fix: str, errno_: int, filename: str):
        super().__init__(problem, fix)
        self.errno, self.filename = errno_, filename


_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def _disk_full(exc: OSError, path: Path) -> DiskFullError:
    return DiskFullError(
        f"{exc.strerror or os.strerror(exc.errno)} while writing {path} (its temporary file was "
        f"removed; nothing half-written is visible)", f"free space on the filesystem of "
        f"{path.parent} or write to another folder, then run the same command again: files "
        f"already finished are kept", exc.errno, str(path))


@contextlib.contextmanager
def atomic_open(path: str | Path, sync_dir: bool = True) -> Iterator[BinaryIO]:
    """``with atomic_open(p) as f: f.write(...)``: ``p`` appears whole, or not at all.
    ``sync_dir=False`` leaves the folder's fsync (the rename's durability) to the caller, who
    writes several files and syncs the folder once (:func:`fsync_dir`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        f = WriteBehindFile(open(tmp, "wb"))  # the closing fsync then waits for the tail only
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise _disk_full(exc, path) from exc
        raise
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, path)
        if sync_dir:
            fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):   # flushing the buffer can fail again (disk full)
            f.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL and \
                not isinstance(exc, DiskFullError):
            raise _disk_full(exc, path) from exc
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def stale_temps(folder: Path, name: str | None = None) -> list[Path]:
    """Temporary files left by killed writers (of ``name`` only, when given)."""
    pattern = f".{name}.*{TMP_SUFFIX}" if name else f".*{TMP_SUFFIX}"
    return sorted(folder.glob(pattern))


def remove_stale_temps(folder: Path, name: str | None = None) -> int:
    n = 0
    for p in stale_temps(folder, name):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            n += 1
    return n


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True                      # runs, as another user
    except (ProcessLookupError, OverflowError, ValueError):
        return False
    return pid > 0


def writer_gone(temp: Path, name: str, *, max_age_s: float = 600.0) -> bool:
    """Whether the writer of ``temp`` (a :func:`temp_path` of ``name``) has certainly stopped.

    Written on this host: its process no longer runs. Written on another host (a shared
    filesystem: array tasks on other nodes), or named by an older version without a host: the
    file has not changed for ``max_age_s`` (a manifest or catalog takes seconds to write).
    """
    tag = temp.name[len(name) + 2: -len(TMP_SUFFIX)]
    host, _, pid = tag.rpartition("-")
    if host == _HOST and pid.isdigit():
        return not _pid_running(int(pid))
    try:
        age = time.time() - temp.stat().st_mtime
    except FileNotFoundError:
        return False
    return age > max_age_s


def remove_dead_temps(folder: Path, name: str, *, max_age_s: float = 600.0) -> int:
    """Remove the temporary files of ``name`` whose writers are gone (:func:`writer_gone`),
    leaving those of writers still at work (another array task writing the same file)."""
    n = 0
    for p in stale_temps(folder, name):
        if writer_gone(p, name, max_age_s=max_age_s):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
    return n
