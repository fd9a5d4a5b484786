"""The loader's lean tar reader agrees with tarfile and refuses damaged archives; the shard
writer's lean tar writer gives tarfile's GNU-format bytes."""

from __future__ import annotations

import io
import random
import tarfile

import pytest

from pipeline.lake.tario import TarFormatError, iter_member_offsets, iter_members
from pipeline.lake.tarwrite import TarWriter

NAMES = ["a" * 120 + "/00001.00.jpg", "ünï/00002.json", "seq/00003.mask.png"]


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_names_and_data_match_tarfile(tmp_path, fmt):
    path = tmp_path / "x.tar"
    names = NAMES if fmt != tarfile.USTAR_FORMAT else ["b" * 90 + "/" + "c" * 60 + ".jpg", "d/e.json"]
    with tarfile.open(path, "w", format=fmt) as t:
        for i, name in enumerate(names):
            data = bytes([i]) * (700 * i + 1)
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        t.addfile(tarfile.TarInfo("a-dir"))  # not a regular file... still a member
    with tarfile.open(path) as t:
        expected = [(m.name, t.extractfile(m).read()) for m in t if m.isreg()]
    with open(path, "rb") as f:
        assert list(iter_members(f, lambda n: True)) == expected
    with open(path, "rb") as f:
        assert [(n, None) for n, _ in expected] == list(iter_members(f, lambda n: False))
    with open(path, "rb") as f:
        offsets = list(iter_member_offsets(f))
    raw = path.read_bytes()
    assert [raw[o:o + s] for _, o, s in offsets] == [d for _, d in expected]


def test_truncation_and_corruption_are_errors(tmp_path):
    path = tmp_path / "x.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as t:
        for name in ("s/1.jpg", "s/1.json"):
            ti = tarfile.TarInfo(name)
            ti.size = 2000
            t.addfile(ti, io.BytesIO(b"x" * 2000))
    raw = path.read_bytes()
    (tmp_path / "cut.tar").write_bytes(raw[:1000])
    with open(tmp_path / "cut.tar", "rb") as f, pytest.raises(TarFormatError, match="truncated"):
        list(iter_members(f, lambda n: True))
    bad = bytearray(raw)
    bad[10] ^= 0xFF  # inside the first header's name
    (tmp_path / "bad.tar").write_bytes(bytes(bad))
    with open(tmp_path / "bad.tar", "rb") as f, pytest.raises(TarFormatError, match="checksum"):
        list(iter_members(f, lambda n: True))


def _tarfile_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """What the shard writer wrote with tarfile before TarWriter (same TarInfo settings)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime, ti.uid, ti.gid = len(data), 0o644, 0, 0, 0
            ti.uname = ti.gname = ""
            t.addfile(ti, io.BytesIO(data))
    return out.getvalue()


def _writer_bytes(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with TarWriter(out) as w:
        for name, data in members:
            w.add(name, data)
    assert w.offset == len(out.getvalue())
    return out.getvalue()


def test_tar_writer_gives_tarfiles_gnu_bytes():
    """Names of 1..300 bytes around the 100-byte field (GNU long-name records), non-ASCII names,
    sizes on and off the 512-byte blocks, empty members and archives that end on and across a
    10 KiB record: byte for byte what tarfile writes; and both readers read it back."""
    rng = random.Random(0)
    cases = [[], [("a.jpg", b"")], [("x" * 100, b"1" * 512)], [("x" * 101, b"2" * 513)],
             [("é" * 50, b"3")], [("s/" + "y" * 298, bytes(10240 - 3 * 512))]]
    for _ in range(150):
        cases.append([("k" * rng.choice([1, 40, 99, 100, 101, 150, 300]) + "é" * rng.randint(0, 3)
                       + f".{i:02d}.jpg", rng.randbytes(rng.randint(0, 3000)))
                      for i in range(rng.randint(1, 9))])
    for members in cases:
        raw = _writer_bytes(members)
        assert raw == _tarfile_bytes(members), [(len(n.encode()), len(d)) for n, d in members]
        assert list(iter_members(io.BytesIO(raw), lambda n: True)) == members
        with tarfile.open(fileobj=io.BytesIO(raw)) as t:
            assert [(m.name, t.extractfile(m).read()) for m in t] == members
