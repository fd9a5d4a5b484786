"""One command line across every ``stcnn-*`` command (pipeline/cli/common.py).

* Every console script of pyproject.toml (read from it, so a new command is covered): a bad
  argument is one line ``stcnn-<name>: error: <problem>. Fix: <what to do>`` with exit status 2;
  ``--help`` exits 0 with help text for every flag and no comma-separated list; ``--version``
  prints the package's version.
* Bad input found after parsing has the same one-line shape (config keys, a missing catalog
  path, a missing lake, missing evaluation results: every one named, FFCV not installed), also
  from a ``launch/`` script; nothing is written before the inputs are checked.
* ``stcnn-train``: ``--help`` lists the phases; ``<phase> --help`` shows the default config and
  the override syntax; ``--print-config`` prints the resolved config and its valid keys.
* Lists are repeated values after one flag (``--split train val``).
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from support import child_env

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
ERROR_LINE = r"^{name}: error: \S.*\. Fix: \S.*$"
TINY = REPO / "configs" / "tiny"


def entry(name: str):
    module, _, func = SCRIPTS[name].partition(":")
    return getattr(importlib.import_module(module), func)


def call(name: str, *argv) -> int:
    """``main(argv)`` of console script ``name`` in this process; its exit status."""
    try:
        code = entry(name)([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    return 0 if code is None else code


def assert_error_line(name: str, err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and re.match(ERROR_LINE.format(name=re.escape(name)), lines[0]), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def undocumented(help_text: str) -> list[str]:
    """Flags and positionals of an argparse help text that have no help line."""
    lines = help_text.splitlines()
    bare = []
    for i, line in enumerate(lines):
        m = re.match(r"^  (\S.*?)(\s{2,}\S.*)?$", line)
        if not m or m.group(2):
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if not re.match(r"^\s{4,}\S", nxt):
            bare.append(m.group(1))
    return bare


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_bad_argument_is_one_error_line_with_a_fix(name, capsys):
    assert call(name, "--no-such-flag") == 2
    assert_error_line(name, capsys.readouterr().err)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_documents_every_flag(name, capsys):
    assert call(name, "--help") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {name}"), out[:200]
    assert "--version" in out
    assert not undocumented(out), undocumented(out)
    assert "comma-separated" not in out


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_version(name, capsys):
    assert call(name, "--version") == 0
    assert capsys.readouterr().out.strip() == f"{name} {metadata.version('stcnn-pipeline')}"


# ---------------------------------------------------------------------------- stcnn-train
def test_train_help_lists_the_phases(capsys):
    from pipeline.train.registry import PHASES

    assert call("stcnn-train", "--help") == 0
    out = capsys.readouterr().out
    for cmd, what in ((s.command, s.description) for s in PHASES.values()):
        assert cmd in out and " ".join(what.split()[:3]) in " ".join(out.split()), cmd


@pytest.mark.parametrize("phase", ["pretrain_tcb", "pretrain_ssb", "train_offline"])
def test_train_phase_help_shows_default_config_and_override_syntax(phase, capsys):
    assert call("stcnn-train", phase, "--help") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: stcnn-train {phase}")
    assert f"configs/{phase}.yaml" in out and "key=value" in out and "--print-config" in out
    assert not undocumented(out), undocumented(out)


def test_train_print_config_resolves_and_writes_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert call("stcnn-train", "pretrain_ssb", "--print-config", "--config",
                TINY / "pretrain_ssb.yaml", "steps=7", f"run_dir={run_dir}") == 0
    out = capsys.readouterr().out
    cfg = yaml.safe_load(out)
    assert cfg["steps"] == 7 and cfg["run_dir"] == str(run_dir)
    assert re.search(r"^#\s+data\.lake\b", out, re.M) and re.search(r"^#\s+steps\b", out, re.M)
    assert not run_dir.exists() and not list(tmp_path.iterdir())


def test_train_missing_lake_fails_before_writing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = call("stcnn-train", "pretrain_ssb", "--config", TINY / "pretrain_ssb.yaml",
                f"data.lake={tmp_path / 'no_lake'}", f"run_dir={run_dir}",
                "tracking.enabled=false")
    assert code == 2
    assert_error_line("stcnn-train", capsys.readouterr().err, "msra10k/train", "do not exist")
    assert not run_dir.exists()


def test_train_bad_key_names_the_key_and_the_fix(tmp_path, capsys):
    assert call("stcnn-train", "pretrain_tcb", "--print-config", "no_such_key=1") == 2
    assert_error_line("stcnn-train", capsys.readouterr().err, "no_such_key")


@pytest.mark.parametrize("override, needles", [
    ("data.augment.hflpi=0.5", ["data.augment", "'hflpi'", "valid keys", "'hflip'"]),
    ("model_overrides=[spatial.num_clases=1]", ["model_overrides", "'num_clases'", "'num_classes'"]),
])
def test_train_bad_augment_or_model_override_is_one_line_before_anything_runs(
        override, needles, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert call("stcnn-train", "pretrain_ssb", "--config", TINY / "pretrain_ssb.yaml", override,
                f"run_dir={run_dir}", "tracking.enabled=false") == 2
    assert_error_line("stcnn-train", capsys.readouterr().err, *needles)
    assert not run_dir.exists() and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_launch_script_prints_config_and_errors_as_its_command(tmp_path):
    env = child_env()
    ok = subprocess.run([sys.executable, "launch/train_offline.py", "--print-config",
                         f"run_dir={tmp_path / 'r'}"], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert yaml.safe_load(ok.stdout)["run_dir"] == str(tmp_path / "r")
    bad = subprocess.run([sys.executable, "launch/catalog.py", str(tmp_path / "missing")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert_error_line("stcnn-catalog", bad.stderr, f"{tmp_path / 'missing'} does not exist")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------- other commands
def test_segment_help_names_only_existing_configs(capsys):
    assert call("stcnn-segment", "--help") == 0
    for path in re.findall(r"configs/[\w/.-]+\.yaml", capsys.readouterr().out):
        assert (REPO / path).is_file(), path


def test_segment_print_config(tmp_path, capsys):
    out_dir = tmp_path / "out"
    assert call("stcnn-segment", "--print-config", "--out", out_dir,
                "online.iterations=9") == 0
    out = capsys.readouterr().out
    cfg = yaml.safe_load(out)
    assert cfg["out"] == str(out_dir) and cfg["online"]["iterations"] == 9
    assert re.search(r"^#\s+online\.iterations\b", out, re.M)
    assert not out_dir.exists()


@pytest.mark.parametrize("setting, needles", [
    ("online.lucid.shfit=0.2", ["online.lucid", "shfit", "valid keys", "max_shift"]),
    ("online.lucid.blend=poisson", ["online.lucid.blend", "feather"]),
    ("online.lucid.max_shift=-0.1", ["online.lucid.max_shift", ">= 0"])])
def test_segment_bad_lucid_setting(setting, needles, tmp_path, capsys):
    """Checked when the config loads: before the (missing) checkpoint is looked at, and
    before anything is written."""
    out_dir = tmp_path / "out"
    assert call("stcnn-segment", "--checkpoint", tmp_path / "missing.pt", "--video",
                tmp_path / "missing.mp4", "--first-mask", tmp_path / "missing.png",
                "--out", out_dir, setting) == 2
    assert_error_line("stcnn-segment", capsys.readouterr().err, *needles)
    assert not out_dir.exists()


@pytest.mark.parametrize("name", ["stcnn-demo", "stcnn-main"])
def test_job_bad_config_key(name, capsys):
    assert call(name, "no_such_key=1") == 2
    assert_error_line(name, capsys.readouterr().err, "no_such_key")


def test_catalog_missing_path(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert call("stcnn-catalog", missing) == 2
    assert_error_line("stcnn-catalog", capsys.readouterr().err, f"{missing} does not exist")


def test_model_info_missing_config(tmp_path, capsys):
    assert call("stcnn-model-info", "--config", tmp_path / "nope.yaml") == 2
    assert_error_line("stcnn-model-info", capsys.readouterr().err, "nope.yaml")


def test_preprocess_missing_source_writes_nothing(tmp_path, capsys):
    out = tmp_path / "shards"
    assert call("stcnn-preprocess", "davis2016", "--src", tmp_path / "nope", "--out", out) == 2
    assert_error_line("stcnn-preprocess", capsys.readouterr().err, "nope")
    assert not out.exists()


def test_tracking_sync_missing_run_dir(tmp_path, capsys):
    assert call("stcnn-tracking-sync", tmp_path / "a", tmp_path / "b") == 2
    assert_error_line("stcnn-tracking-sync", capsys.readouterr().err,
                      str(tmp_path / "a"), str(tmp_path / "b"))


def test_evaluate_names_every_missing_sequence(tmp_path, capsys):
    from pipeline.synthetic import SyntheticSpec, write_dataset

    root = write_dataset("davis2016", tmp_path / "DAVIS",
                         SyntheticSpec(size=(64, 48), n_sequences=3, n_frames=5, seed=1))
    seqs = (root / "ImageSets" / "480p" / "val.txt").read_text().split()
    names = sorted({line.split("/")[-2] for line in seqs})
    assert len(names) == 3
    results = tmp_path / "results"
    (results / names[0]).mkdir(parents=True)      # one folder (empty), two missing
    assert call("stcnn-evaluate", "--davis-root", root, "--results", results, "--year", 2016,
                "--out", tmp_path / "eval") == 2
    line = assert_error_line("stcnn-evaluate", capsys.readouterr().err, names[1], names[2])
    assert names[0] not in line.split("Fix:")[0].split(": ", 2)[-1]
    assert not (tmp_path / "eval").exists()


def test_lists_are_repeated_values_after_one_flag(tmp_path):
    from pipeline.cli import preflight, preprocess

    cfg, _ = preprocess.parse_args(["davis2016", "--src", str(tmp_path), "--split", "train",
                                    "val"])
    assert cfg.splits == ["train", "val"]
    a = preflight.parse_args(["--phases", "gan", "segmentation", "--skip", "online", "loader",
                              "--compile-phases", "gan"])
    assert a.phases == ["gan", "segmentation"] and a.skip == {"online", "loader"}
    assert a.compile_phases == ["gan"]
    assert call("stcnn-synthetic", "--out", tmp_path / "syn", "--datasets", "msra10k", "voc2012",
                "--size", "32x24", "--images", "1") == 0
    assert sorted(p.name for p in (tmp_path / "syn").iterdir()) == ["msra10k", "voc2012"]


@pytest.mark.slow
def test_ffcv_missing_is_an_error_line_not_a_traceback(tmp_path):
    shim = tmp_path / "shim" / "ffcv"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('No module named ffcv (test shim)')\n")
    env = child_env()
    env["PYTHONPATH"] = f"{shim.parent}{':'}{env['PYTHONPATH']}"
    out = tmp_path / "ssb.beton"
    proc = subprocess.run([sys.executable, "launch/ffcv_store.py", "--lake", str(tmp_path),
                           "--sets", "msra10k/train", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert_error_line("stcnn-ffcv-store", proc.stderr, "ffcv", "pip install")
    assert not out.exists()


def test_a_bug_stays_a_traceback():
    from pipeline.cli import common

    @common.command("stcnn-x")
    def main(argv=None) -> int:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        main([])
