"""How the pipeline reports: one logger per module, warnings through it, one set-up per command,
and one line that sums up a job's data events.

The rules are checked on the source (``ast``): every logger is ``log = logging.getLogger(__name__)``
at module level; no ``warnings.warn``, no root-logger calls, no ``basicConfig``; ``print`` is a
command's own output (``pipeline/cli/``, ``pipeline/jobs/`` and the allow-list below), never a
warning and never on stderr outside the commands and jobs. The behaviour is checked on runs of
``stcnn-train`` in this process: the resume warning and the data-event line on stderr at the
default level, and the counts in ``summary.json``.
"""

from __future__ import annotations

import ast
import json
import logging
import shutil
import tarfile
from pathlib import Path

import pytest

from pipeline.cli.train import main as train_main
from pipeline.core.config import ConfigError
from pipeline.core.logs import LEVEL_ENV, report_events, setup_logging

from support.training import REPO, tiny

PIPELINE = REPO / "pipeline"
COMMAND_DIRS = ("cli", "jobs")       # a command's output: results, progress, JSON summaries

# modules outside cli/ and jobs/ that print, and why (stdout only)
ALLOWED_PRINTS = {
    "train/runner.py": "the training command's output: --print-config, the JSON summary line, "
                       "the MLflow UI hint, the 'resumed from' progress line",
    "train/hooks.py": "ProgressHook's progress lines and StopHook's 'run the same command again' "
                      "notice, on stdout",
}


def _modules() -> list[tuple[str, ast.Module]]:
    return [(p.relative_to(PIPELINE).as_posix(), ast.parse(p.read_text(encoding="utf-8"), str(p)))
            for p in sorted(PIPELINE.rglob("*.py"))]


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _text_start(node: ast.AST) -> str:
    """The literal start of a str or f-string argument ("" for anything else)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value)
    return ""


def rule_violations(modules: list[tuple[str, ast.Module]]) -> list[str]:
    """Every place in ``modules`` (``(path under pipeline/, tree)``) that breaks a rule."""
    bad = []
    for rel, tree in modules:
        in_command = rel.split("/", 1)[0] in COMMAND_DIRS
        module_loggers = [n for n in tree.body if isinstance(n, ast.Assign)
                          and isinstance(n.value, ast.Call)
                          and _dotted(n.value.func) == "logging.getLogger"]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("warnings", "logging") and \
                    any(a.name in ("warn", "getLogger") for a in node.names):
                bad.append(f"{rel}:{node.lineno}: import the module, call log.warning")
            if not isinstance(node, ast.Call):
                continue
            name, where = _dotted(node.func), f"{rel}:{node.lineno}"
            if name == "warnings.warn":
                bad.append(f"{where}: warnings.warn (use log.warning)")
            elif name == "logging.basicConfig":
                bad.append(f"{where}: logging.basicConfig (commands set up logging through "
                           "pipeline.core.logs.setup_logging)")
            elif name in {f"logging.{f}" for f in ("debug", "info", "warning", "error",
                                                    "exception", "critical", "log")}:
                bad.append(f"{where}: {name} logs on the root logger (use log = "
                           "logging.getLogger(__name__))")
            elif name == "logging.getLogger":
                ok = (len(node.args) == 1 and not node.keywords
                      and isinstance(node.args[0], ast.Name) and node.args[0].id == "__name__"
                      and any(a.value is node and [_dotted(t) for t in a.targets] == ["log"]
                              for a in module_loggers))
                if not ok:
                    bad.append(f"{where}: a logger other than `log = logging.getLogger(__name__)` "
                               "at module level")
            elif name == "print":
                to_stderr = any(k.arg == "file" and _dotted(k.value) == "sys.stderr"
                                for k in node.keywords)
                if node.args and _text_start(node.args[0]).lower().lstrip().startswith("warning"):
                    bad.append(f"{where}: a printed warning (use log.warning)")
                elif not in_command and to_stderr:
                    bad.append(f"{where}: print to stderr in library code (use log.warning)")
                elif not in_command and rel not in ALLOWED_PRINTS:
                    bad.append(f"{where}: print in library code (log it, or add the module to "
                               "ALLOWED_PRINTS with the reason)")
        if len(module_loggers) > 1:
            bad.append(f"{rel}: {len(module_loggers)} loggers (one per module)")
    return bad


def test_every_module_reports_through_its_one_logger():
    assert rule_violations(_modules()) == []


@pytest.mark.parametrize("source, broken", [
    ("import warnings\nwarnings.warn('x')\n", "warnings.warn"),
    ("import logging\nlogger = logging.getLogger(__name__)\n", "a logger other than"),
    ("import logging\nlog = logging.getLogger('pipeline')\n", "a logger other than"),
    ("import logging\nlogging.warning('x')\n", "root logger"),
    ("import sys\nprint('x', file=sys.stderr)\n", "print to stderr"),
    ("print(f'warning: {1}')\n", "a printed warning"),
    ("import logging\nlogging.basicConfig()\n", "basicConfig"),
])
def test_the_rules_catch_each_kind_of_violation(source, broken):
    [found] = rule_violations([("lake/example.py", ast.parse(source))])
    assert broken in found and found.startswith("lake/example.py:")


def test_prints_in_commands_and_jobs_are_their_output():
    ok = "import sys\nprint('result')\nprint('note', file=sys.stderr)\n"
    assert rule_violations([("cli/example.py", ast.parse(ok)),
                            ("train/runner.py", ast.parse("print('{}')\n"))]) == []


def test_setup_logging_shows_warnings_on_stderr_and_reads_the_level(capsys, monkeypatch):
    log = logging.getLogger("pipeline.example")
    monkeypatch.delenv(LEVEL_ENV, raising=False)
    restore = setup_logging()
    try:
        log.info("hidden at the default level")
        log.warning("shown %d", 1)
        assert capsys.readouterr().err == "warning: shown 1\n"
        monkeypatch.setenv(LEVEL_ENV, "info")
        setup_logging()                              # once per process: the level only
        report_events(log, "job", {"corrupt_samples": 0})
        assert capsys.readouterr().err == ("info: job: no data events (nothing skipped, retried "
                                           "or spooled)\n")
    finally:
        restore()
    monkeypatch.setenv(LEVEL_ENV, "loud")
    with pytest.raises(ConfigError, match="STCNN_LOG_LEVEL='LOUD' is not a logging level"):
        setup_logging()


# -- behaviour: one training command, in this process ---------------------------------------------

def _train(lake: Path, run_dir: Path, *extra: str) -> int:
    return train_main(["pretrain_ssb", "--config", str(tiny("segmentation")), f"data.lake={lake}",
                       f"run_dir={run_dir}", "tracking.enabled=false", *extra])


def test_a_resume_past_a_truncated_checkpoint_warns_on_stderr(train_lake, tmp_path, capsys,
                                                             monkeypatch):
    monkeypatch.delenv(LEVEL_ENV, raising=False)
    run_dir = tmp_path / "seg"
    assert _train(train_lake, run_dir, "steps=4") == 0
    newest = run_dir / "checkpoints" / "step_00000004"
    (newest / "shared.pt").write_bytes((newest / "shared.pt").read_bytes()[:100])
    capsys.readouterr()
    assert _train(train_lake, run_dir, "steps=5") == 0
    err = capsys.readouterr().err
    assert f"warning: checkpoint {newest} cannot be resumed from (" in err, err
    assert "trying the previous one" in err
    assert json.loads((run_dir / "summary.json").read_text())["start_step"] == 2


def _corrupt_first_jpeg_of_every_shard(lake: Path, sets: list[str]) -> int:
    """Overwrite the first JPEG member's start in every shard of ``sets`` (the tar stays
    readable; that sample no longer decodes). Returns the number of shards changed."""
    n = 0
    for s in sets:
        for tar in sorted((lake / s).glob("*.tar")):
            with tarfile.open(tar) as t:
                member = next(m for m in t.getmembers() if m.name.endswith(".jpg"))
            with open(tar, "r+b") as f:
                f.seek(member.offset_data)
                f.write(b"\0" * 16)
            n += 1
    return n


def test_a_training_run_counts_corrupt_samples_in_one_line_and_its_summary(
        train_lake, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(LEVEL_ENV, raising=False)
    sets = ["msra10k/train", "voc2012/train"]
    lake = tmp_path / "lake"
    for s in sets:
        shutil.copytree(train_lake / s, lake / s)
    assert _corrupt_first_jpeg_of_every_shard(lake, sets) > 0
    run_dir = tmp_path / "run"
    assert _train(lake, run_dir, "steps=2") == 0
    events = json.loads((run_dir / "summary.json").read_text())["data_events"]
    assert events["corrupt_samples"] >= 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "data events" in ln]
    assert lines == [f"warning: segmentation: data events: corrupt_samples "
                     f"{events['corrupt_samples']}"], lines
