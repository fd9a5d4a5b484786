"""Durable writes: write-behind keeps every byte and every fsync; a shard's stats file (what marks
it finished) is written only after its tar and parquet are fsynced and their renames are."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import pipeline.core.atomic as atomic
import pipeline.lake.writer as writer
from pipeline.core.writeback import EVERY, WriteBehindFile
from pipeline.lake.plan import plan_clips
from pipeline.sources import get_source
from pipeline.synthetic.davis import write_davis2017
from pipeline.synthetic.spec import SyntheticSpec

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="sync_file_range(2) and /proc/self/fd are Linux's")


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


@linux_only
def test_write_behind_starts_writeback_and_keeps_the_bytes_and_the_fsync(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(_fd_path(fd)),
                                                        real_fsync(fd))[1])
    data = os.urandom(EVERY * 3 + 12345)
    path = tmp_path / "big.bin"
    with atomic.atomic_open(path) as f:
        for i in range(0, len(data), 65536):
            f.write(data[i:i + 65536])
        assert isinstance(f, WriteBehindFile)
        starts = f.writeback_starts
    assert path.read_bytes() == data
    assert starts == 3, "writeback was started once per MiB written"
    # the closing fsync still runs, on the temporary file, before the rename
    assert any(Path(p).name.startswith(".big.bin.") for p in synced), synced
    assert not list(tmp_path.glob(".*.tmp"))


def test_write_behind_of_small_files_starts_nothing(tmp_path):
    with atomic.atomic_open(tmp_path / "small.json") as f:
        f.write(b"{}" * 100)
        assert f.writeback_starts == 0
    assert (tmp_path / "small.json").read_bytes() == b"{}" * 100


@linux_only
def test_a_shard_is_marked_finished_only_after_its_files_and_renames_are_durable(tmp_path,
                                                                                  monkeypatch):
    src = tmp_path / "src"
    write_davis2017(src, SyntheticSpec(n_sequences=1, n_frames=6, seed=3))
    source = get_source("davis2017", src)
    seq = source.sequences("train")
    specs = plan_clips(seq, 4, 1)
    events: list[tuple[str, str]] = []
    real_fsync, real_dir, real_text = os.fsync, writer.fsync_dir, writer.atomic_write_text

    def fsync(fd):
        events.append(("fsync", Path(_fd_path(fd)).name))
        return real_fsync(fd)

    def fsync_dir(folder):
        events.append(("fsync_dir", Path(folder).name))
        return real_dir(folder)

    def write_text(path, text):
        events.append(("stats", Path(path).name))
        return real_text(path, text)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(writer, "fsync_dir", fsync_dir)
    monkeypatch.setattr(writer, "atomic_write_text", write_text)
    out = tmp_path / "set"
    writer.write_shard(out, 0, specs, source, dataset="davis2017", split="train", digest="d")
    kinds = [k for k, _ in events]
    stats_at = kinds.index("stats")
    before = events[:stats_at]
    names = [n for k, n in before if k == "fsync"]
    assert any(n.startswith(".00000.tar.") for n in names), events
    assert any(n.startswith(".00000.parquet.") for n in names), events
    last_file = max(i for i, (k, n) in enumerate(before) if k == "fsync" and n != "set")
    assert ("fsync", "set") in before[last_file + 1:], \
        f"the folder (the renames) was not fsynced before the stats file: {events}"
    assert (out / "00000_stats.json").is_file() and (out / "00000.tar").is_file()
