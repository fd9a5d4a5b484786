"""The loader's lean tar reader agrees with tarfile and refuses damaged archives."""

from __future__ import annotations

import io
import tarfile

import pytest

from pipeline.lake.tario import TarFormatError, iter_member_offsets, iter_members

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
