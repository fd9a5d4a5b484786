"""The docs' commands are tests: every command block of the docs (``support.docblocks.DOCS``) is
run as written, or marked as needing what this machine lacks with the test that runs its local
equivalent.

How a document's blocks are run (``test_the_commands_of_each_document_run_as_written``):

* in a fresh checkout (the repository's tracked and untracked-but-not-ignored files copied to a
  temporary folder, ``.venv`` linked), blocks in document order, each with ``bash -e``, so a
  block may use what an earlier block of the same document made (as a reader following along);
* the environment is the test process's without launcher or tracking variables (no
  ``MLFLOW_TRACKING_URI`` unless a block sets it), ``.venv/bin`` first on ``PATH``;
* substitution rule, and nothing else: ``/data/<NAME>`` (a user's copy of a release) becomes
  small generated data in that layout (:data:`DATA`), ``/lake``, ``/w`` and ``/shared`` (a
  user's storage) become folders of the temporary root; flags, values and order stay;
* the suite's own command (``bash scripts/test.sh``, what ``.ci/run`` runs) is not run inside
  the suite.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import REPO, child_env
from support.docblocks import DOCS, all_blocks, command_blocks, mark_problem

# /data/<NAME> -> the synthetic dataset written for it (pipeline/synthetic, stcnn-synthetic)
DATA = {"DAVIS": "davis2016", "DAVIS2017": "davis2017", "ILSVRC2015": "ilsvrc_vid",
        "MSRA10K": "msra10k", "VOC2012": "voc2012", "YTO": "youtube_objects"}
STORAGE = ("/lake", "/w", "/shared")
SUITE_COMMAND = re.compile(r"^\s*bash scripts/test\.sh\b.*$", re.M)


def test_every_command_block_is_run_or_marked_with_an_existing_test():
    blocks = all_blocks()
    assert {b.doc for b in blocks} >= {"README.md", "launch/slurm/README.md", "docker/README.md"}
    problems = [p for b in blocks if b.marked for p in [mark_problem(b)] if p]
    assert not problems, "\n".join(problems)


def test_an_unknown_local_equivalent_is_reported(tmp_path):
    (tmp_path / "doc.md").write_text(
        "Text.\n\n*Needs a GPU. Local equivalent: `tests/unit/test_nothing_here.py`.*\n\n"
        "```bash\necho hi\n```\n\n```bash\necho run\n```\n")
    marked, plain = command_blocks("doc.md", tmp_path)
    assert marked.marked and not plain.marked
    assert "does not exist" in mark_problem(marked, tmp_path)


def substitute(text: str, data_root: Path, storage_root: Path) -> str:
    """The test's one substitution rule (module docstring)."""
    def data(m: re.Match) -> str:
        name = m.group(1)
        if name in DATA:
            return str(data_root / DATA[name])
        return str(data_root / "files" / name)
    text = re.sub(r"(?<![\w./-])/data/([\w.-]+)", data, text)
    for top in STORAGE:
        text = re.sub(rf"(?<![\w./-]){top}(?=/|\b)", str(storage_root) + top, text)
    return SUITE_COMMAND.sub("", text)


def test_substitution_changes_only_data_roots_and_storage(tmp_path):
    text = ("python launch/preprocess.py davis2016 --src /data/DAVIS --out /lake/shards --workers 8\n"
            "python launch/evaluate.py --davis-root /data/DAVIS2017 --results runs/x\n"
            "stcnn-weights export resnet101 --out /w/resnet101.pth\n"
            "bash scripts/test.sh -m 'not slow'\n")
    out = substitute(text, Path("/D"), Path("/S"))
    assert out == ("python launch/preprocess.py davis2016 --src /D/davis2016 --out /S/lake/shards "
                   "--workers 8\npython launch/evaluate.py --davis-root /D/davis2017 --results "
                   "runs/x\nstcnn-weights export resnet101 --out /S/w/resnet101.pth\n\n")


def _fresh_checkout(dst: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    (dst / ".venv").symlink_to(REPO / ".venv")
    return dst


def _write_data(root: Path) -> None:
    """The generated releases behind ``/data/<NAME>``, and ``/data/<file>`` inputs of a user's
    own video (a clip, its frames, its first mask) taken from the generated DAVIS-2016."""
    subprocess.run([sys.executable, str(REPO / "launch" / "make_synthetic.py"), "--out",
                    str(root)], check=True, capture_output=True, env=child_env())
    files = root / "files"
    files.mkdir()
    seq = sorted((root / "davis2016" / "JPEGImages" / "480p").iterdir())[0]
    shutil.copytree(seq, files / "frames")
    shutil.copy(root / "davis2016" / "Annotations" / "480p" / seq.name / "00000.png",
                files / "first_mask.png")
    import cv2
    frames = sorted(seq.glob("*.jpg"))
    first = cv2.imread(str(frames[0]))
    writer = cv2.VideoWriter(str(files / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 24,
                             (first.shape[1], first.shape[0]))
    for f in frames:
        writer.write(cv2.imread(str(f)))
    writer.release()


def _setup_is_current(checkout: Path) -> bool:
    """scripts/main.sh runs scripts/setup.sh, which reinstalls the project when .venv's stamp
    does not match pyproject.toml: from a copied checkout that would point the shared .venv's
    editable install at the copy. The suite's setup has just run, so the stamp matches."""
    import hashlib

    stamp = REPO / ".venv" / ".setup-stamp"
    want = hashlib.sha256((checkout / "pyproject.toml").read_bytes()
                          + (checkout / "scripts" / "setup.sh").read_bytes()).hexdigest()[:16]
    return stamp.is_file() and stamp.read_text().split()[0] == want


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS)
def test_the_commands_of_each_document_run_as_written(doc, tmp_path):
    blocks = [b for b in command_blocks(doc) if not b.marked]
    if not blocks:
        return
    checkout = _fresh_checkout(tmp_path / "checkout")
    assert _setup_is_current(checkout), "the .venv is older than pyproject.toml: run bash scripts/setup.sh"
    data, storage = tmp_path / "data", tmp_path / "storage"
    _write_data(data)
    for top in STORAGE:
        (storage / top.strip("/")).mkdir(parents=True)
    env = child_env()
    env.pop("PYTHONPATH", None)
    env["PATH"] = f"{checkout / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"
    for block in blocks:
        script = substitute(block.text, data, storage)
        t0 = time.perf_counter()
        proc = subprocess.run(["bash", "-e", "-c", script], cwd=checkout, env=env,
                              capture_output=True, text=True, timeout=900)
        took = time.perf_counter() - t0
        assert proc.returncode == 0, (
            f"{block.where} failed (exit {proc.returncode}, {took:.0f} s):\n{script}\n"
            f"--- stdout (end)\n{proc.stdout[-3000:]}\n--- stderr (end)\n{proc.stderr[-3000:]}")
        print(f"{block.where}: ok in {took:.1f} s")
        if "bash scripts/main.sh" in script:
            # the main job's embedded default shows what the paper claims: offline training
            # adds to online tuning on the job's own val sequences
            assert "offline training helps here" in proc.stdout, proc.stdout[-3000:]
    assert not (checkout / "mlflow.db").exists(), "a command created mlflow.db in the working dir"
