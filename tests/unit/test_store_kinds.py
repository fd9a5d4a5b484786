"""Local paths and ``s3://`` URLs are told apart in one module, ``pipeline/lake/store.py``: every
other module opens, lists and writes a location through it without asking which kind it is. And
that module's entry points answer local paths exactly as the code that read them directly did."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipeline.core.errors import PipelineError
from pipeline.lake import store

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("pipeline", "launch", "benchmarks", "scripts")
STORE = REPO / "pipeline" / "lake" / "store.py"


def _is_s3_text(node: ast.AST) -> bool:
    return (isinstance(node, ast.Constant) and isinstance(node.value, str)
            and (node.value == "s3" or node.value.startswith("s3:")))


def kind_branches(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) of each place the code asks whether a location is on the object store: a
    call of ``is_s3`` or ``split_url``, a use of ``S3_PREFIX``, ``.startswith("s3...")``, or a
    comparison with ``"s3"`` / ``"s3:..."``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in ("is_s3", "split_url"):
                found.append((node.lineno, f"{name}()"))
            elif name in ("startswith", "endswith") and any(_is_s3_text(a) for a in node.args):
                found.append((node.lineno, f'.{name}("s3...")'))
        elif isinstance(node, (ast.Name, ast.Attribute)):
            if (node.id if isinstance(node, ast.Name) else node.attr) == "S3_PREFIX":
                found.append((node.lineno, "S3_PREFIX"))
        elif isinstance(node, ast.Compare):
            if any(_is_s3_text(c) for c in [node.left, *node.comparators]):
                found.append((node.lineno, 'a comparison with "s3..."'))
    return sorted(set(found))


def test_the_detector_sees_each_way_of_asking():
    code = ("a = is_s3(u)\nb = store.is_s3(u)\nc = u.startswith('s3://')\n"
            "d = x == 's3'\ne = S3_PREFIX\nf = store.split_url(u)\n"
            "g = f's3://{b}/{k}'\nh = u.startswith('/tmp')\n")
    assert [line for line, _ in kind_branches(ast.parse(code))] == [1, 2, 3, 4, 5, 6]


def test_no_module_but_the_store_asks_which_kind_a_location_is():
    offenders = []
    for folder in SCANNED:
        for f in sorted((REPO / folder).rglob("*.py")):
            if f == STORE:
                continue
            for line, what in kind_branches(ast.parse(f.read_text(encoding="utf-8"))):
                offenders.append(f"{f.relative_to(REPO)}:{line}: {what}")
    assert not offenders, ("only pipeline/lake/store.py may tell local paths from s3:// URLs "
                           "(open, list and write through its functions instead):\n"
                           + "\n".join(offenders))


# -- local locations through the store's entry points ---------------------------------------------

def _finished_set(d: Path) -> None:
    d.mkdir(parents=True)
    for name in ("00000.tar", "00000_stats.json", "00001.tar", "00002.tar", "00002_stats.json",
                 "notes.tar", "00003_stats.json"):
        (d / name).write_bytes(b"x")
    (d / "00004.tar").mkdir()              # a folder, not a shard
    (d / "00004_stats.json").write_bytes(b"x")


def test_local_listing_and_reading(tmp_path):
    d = tmp_path / "lake" / "davis2016" / "train"
    _finished_set(d)
    assert store.locate(tmp_path / "lake", "davis2016", "train") == d
    assert store.list_finished(d) == [str(d / "00000.tar"), str(d / "00002.tar")]
    assert store.list_finished(str(d) + "/") == [str(d / "00000.tar"), str(d / "00002.tar")]
    assert store.list_finished(tmp_path / "missing") == []
    assert store.is_set(d) and not store.is_set(d / "00000.tar")
    assert not store.is_set(tmp_path / "missing")
    assert store.parent(str(d / "00000.tar")) == str(d)
    assert store.parent("00000.tar") == "."
    with store.open_read(str(d / "00000.tar")) as f:
        assert f.read() == b"x"
    with pytest.raises(FileNotFoundError):
        store.open_read(str(d / "gone.tar"))


def test_object_store_locations_need_no_request_to_name(tmp_path):
    assert store.locate("s3://b/lake/", "davis2016", "train") == "s3://b/lake/davis2016/train"
    assert store.locate(Path("s3://b/lake")) == "s3://b/lake"
    assert store.is_set("s3://b/lake/davis2016/train") and not store.is_set("s3://b/x/00000.tar")
    assert store.parent("s3://b/x/00000.tar") == "s3://b/x"


def test_a_local_lake_is_written_in_place_and_read_as_it_is(tmp_path):
    with store.writer_for(tmp_path / "lake") as lake:
        assert lake.root == tmp_path / "lake"
        assert lake.publish(tmp_path / "lake" / "a" / "b", "a", "b") is None
    with pytest.raises(PipelineError, match="staging"):
        with store.writer_for(tmp_path / "lake", staging=tmp_path / "st"):
            pass
    with store.local_copy(str(tmp_path / "lake") + "/") as copy:
        assert copy.path == str(tmp_path / "lake") + "/"
        assert copy.show(f"{tmp_path}/lake/x") == f"{tmp_path}/lake/x"
    with store.local_copy(tmp_path / "lake", rewrite=True) as copy:
        assert copy.path == str(tmp_path / "lake")
    with pytest.raises(store.NotLocalError, match="local"):
        with store.local_copy("s3://b/lake", rewrite=True):
            pass
