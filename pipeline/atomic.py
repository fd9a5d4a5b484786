"""Atomic file writes: write to a temporary name in the same folder, fsync, rename.

A reader never sees a half-written file; a killed writer leaves only a ``.<name>.*.tmp`` file,
which the next run removes (:func:`remove_stale_temps`). A write that fails for lack of space
(``ENOSPC``/``EDQUOT``) removes its temporary file and raises :class:`DiskFullError`, an
``OSError`` naming the file and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import BinaryIO, Iterator

TMP_SUFFIX = ".tmp"


def temp_path(path: Path) -> Path:
    """Where a writer of ``path`` in this process writes before renaming (``.<name>.<pid>.tmp``,
    in the same folder)."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def _fsync_dir(folder: Path) -> None:
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


class DiskFullError(OSError):
    """No space (or quota) left while writing a file atomically; the message names the file and
    the fix. Nothing half-written is left behind: the temporary file is removed."""


_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def _disk_full(exc: OSError, path: Path) -> DiskFullError:
    return DiskFullError(
        exc.errno, f"{exc.strerror or os.strerror(exc.errno)} while writing {path} (its "
        f"temporary file was removed; nothing half-written is visible). Fix: free space on the "
        f"filesystem of {path.parent} or write to another folder, then run the same command "
        f"again: files already finished are kept", str(path))


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """``with atomic_open(p) as f: f.write(...)``: ``p`` appears whole, or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        f = open(tmp, "wb")
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
        _fsync_dir(path.parent)
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
