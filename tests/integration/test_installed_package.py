"""The project as users install it: a wheel built from what docker/Dockerfile copies before its
``pip install .``, installed (not editable) into a fresh virtual environment, and the console
commands run from a folder outside the repository on their default config paths.

The fresh environment borrows the test environment's dependencies through a ``.pth`` line (torch
is not installed twice); that line adds a folder to ``sys.path`` without running the editable
install's finder, so ``pipeline`` can only come from the wheel (checked).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from support import LAUNCH_VARS

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
# the demo, shortened: every stage on a little generated data
DEMO = ["stcnn-demo"]
DEMO_SMALL = ["steps.gan=2", "steps.segmentation=2", "steps.alternating=2",
              "segment.iterations=2", "segment.dreams=1", "sample_data.sequences=1",
              "sample_data.frames=6", "sample_data.images=4", "lake.workers=1"]


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        word, _, args = current.strip().partition(" ")
        out.append((word.upper(), args.strip()))
        current = ""
    return out


def install_sources(instructions: list[tuple[str, str]]) -> list[str]:
    """What the image copies before the RUN that pip-installs the project (``"."``)."""
    sources = []
    for word, args in instructions:
        if word == "RUN" and re.search(r"pip install[^&]*[\"' ]\.(\[[^\]]*\])?[\"' ]", args + " "):
            return sources
        if word == "COPY":
            sources += [a for a in args.split()[:-1] if not a.startswith("--")]
    raise AssertionError(f"{DOCKERFILE}: no RUN that pip-installs the project (\".\") found")


def default_command(instructions: list[tuple[str, str]]) -> list[str]:
    cmds = [args for word, args in instructions if word == "CMD"]
    assert cmds, f"{DOCKERFILE}: no CMD"
    return json.loads(cmds[-1])


def test_docker_default_command_is_the_demo_run_here():
    assert default_command(dockerfile_instructions(DOCKERFILE.read_text())) == DEMO


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv holding the wheel (non-editable); its bin folder, a clean environment and a
    working folder outside the repository."""
    root = tmp_path_factory.mktemp("installed")
    src = root / "src"
    src.mkdir()
    for name in install_sources(dockerfile_instructions(DOCKERFILE.read_text())):
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    dist = root / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", str(src), "-w", str(dist)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = dist.glob("stcnn_pipeline-*.whl")

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True, check=True,
                             timeout=60).stdout.strip()
    borrowed = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(purelib) / "test_venv_dependencies.pth").write_text("\n".join(borrowed) + "\n")

    env = {k: v for k, v in os.environ.items()
           if k not in LAUNCH_VARS and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    work = root / "work"
    work.mkdir()
    inst = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--ignore-installed",
                           "--no-index", "-q", str(wheel)], env=env, cwd=work,
                          capture_output=True, text=True, timeout=600)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    return {"venv": venv, "bin": venv / "bin", "env": env, "work": work}


def run(installed, *cmd: str, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(installed["bin"] / cmd[0]), *cmd[1:]], env=installed["env"],
                          cwd=installed["work"], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (f"{' '.join(cmd)} exited {proc.returncode}\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def lake(installed) -> Path:
    """An ILSVRC VID lake made by the installed stcnn-synthetic and stcnn-preprocess."""
    work = installed["work"]
    run(installed, "stcnn-synthetic", "--out", "sources", "--datasets", "ilsvrc_vid",
        "--sequences", "2", "--frames", "8")
    run(installed, "stcnn-preprocess", "ilsvrc_vid", "--src", "sources/ilsvrc_vid",
        "--shard-max-count", "8", "--no-progress")
    assert (work / "shards" / "ilsvrc_vid" / "train" / "catalog.parquet").is_file()
    return work / "shards"


@pytest.mark.slow
def test_wheel_installs_pipeline_and_its_configs_into_the_fresh_venv(installed):
    proc = run(installed, "python", "-c",
               "import json, pipeline, importlib.resources as r; print(json.dumps([pipeline.__file__,"
               " str(r.files('pipeline.configs') / 'tiny' / 'pretrain_tcb.yaml')]))")
    module, config = (Path(p) for p in json.loads(proc.stdout))
    assert module.is_relative_to(installed["venv"]), module
    assert config.is_relative_to(installed["venv"]) and config.is_file(), config


@pytest.mark.slow
def test_installed_demo_runs_on_its_default_config(installed):
    proc = run(installed, *DEMO, *DEMO_SMALL, timeout=600)
    assert "J&F-Mean" in proc.stdout
    assert (installed["work"] / "runs" / "demo" / "summary.json").is_file()


@pytest.mark.slow
def test_installed_catalog_lists_the_preprocessed_lake(installed, lake):
    proc = run(installed, "stcnn-catalog", str(lake), "--json")
    assert "ilsvrc_vid" in proc.stdout


@pytest.mark.slow
def test_installed_train_finds_the_packaged_tiny_config(installed, lake, tmp_path):
    run(installed, "stcnn-train", "pretrain_tcb", "--config", "configs/tiny/pretrain_tcb.yaml",
        f"data.lake={lake}", "steps=1", "tracking.enabled=false", f"run_dir={tmp_path / 'tiny'}")
    assert (tmp_path / "tiny" / "summary.json").is_file()


@pytest.mark.slow
def test_installed_train_runs_on_its_default_config(installed, lake, tmp_path):
    # the paper's config, made small by overrides: the default path is what is checked
    run(installed, "stcnn-train", "pretrain_tcb", f"data.lake={lake}", "steps=1",
        "tracking.enabled=false", f"run_dir={tmp_path / 'default'}", "model=model/tiny.yaml",
        "data.sets=[ilsvrc_vid/train]", "data.augment={size: [48, 64]}", "data.num_workers=0",
        "data.epoch_batches=1")
    summary = json.loads((tmp_path / "default" / "summary.json").read_text())
    assert summary["steps"] == 1


@pytest.mark.slow
def test_installed_model_info_finds_the_packaged_model_config(installed):
    proc = run(installed, "stcnn-model-info", "--config", "configs/model/tiny.yaml",
               "--height", "64", "--width", "96", "--json")
    assert json.loads(proc.stdout)["parts"]
