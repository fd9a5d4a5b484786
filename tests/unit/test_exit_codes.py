"""One error base, one exit-code rule (pipeline/core/errors.py, pipeline/cli/common.py).

* A user error (a :class:`PipelineError`) is exactly one stderr line
  ``stcnn-X: error: <problem>. Fix: <fix>`` and exit status 2, for several commands in process
  and for an installed console script run as a child process.
* Anything else is a bug: it propagates (in process) and the console script prints its
  traceback and exits 1, also a plain ``ValueError`` (no command catches builtin errors).
* A diverged training is one line too, with exit status 1.
* Every exception class defined under ``pipeline/`` derives from PipelineError, or is one of the
  few internal ones listed here; every PipelineError class pickles (errors cross worker
  processes) with its message, ``problem``, ``fix`` and own attributes.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pickle
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline
from pipeline.core.errors import FileProblem, PipelineError

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny"
ERROR_LINE = r"^{name}: error: \S.*\. Fix: \S.*$"

# exception classes that are not the user's to fix (or not errors at all)
INTERNAL = {
    "pipeline.loading.ffcv.loader.LoaderThreadDied",        # FFCV's thread stopped: a bug there
    "pipeline.loading.decode.CorruptSampleError",           # one bad sample: counted, skipped
    "pipeline.loading.decode.IncompleteSampleError",        # (the loader's ReadStats)
    "pipeline.loading.readstats.CorruptSampleWarning",      # warnings
    "pipeline.loading.tarsamples.IgnoredMemberWarning",
}


def one_error_line(name: str, err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.match(ERROR_LINE.format(name=re.escape(name)), lines[0]), lines[0]
    return lines[0]


# ------------------------------------------------------------------------- in process
def _catalog(tmp_path):
    from pipeline.cli.catalog import main
    return main, [str(tmp_path / "missing")], "missing does not exist"


def _weights(tmp_path):
    from pipeline.cli.weights import main
    return main, ["export", "resnet101", "--out", str(tmp_path)], "is a folder"


def _tracking_sync(tmp_path):
    from pipeline.cli.tracking_sync import main
    return main, [str(tmp_path / "gone")], "do not exist"


def _model_info(tmp_path):
    from pipeline.cli.model_info import main
    return main, ["--config", str(tmp_path / "nope.yaml")], "nope.yaml"


def _train(tmp_path):
    from pipeline.cli.train import main
    return main, ["pretrain_tcb", "--print-config", "no_such_key=1"], "no_such_key"


CASES = {"stcnn-catalog": _catalog, "stcnn-weights": _weights,
         "stcnn-tracking-sync": _tracking_sync, "stcnn-model-info": _model_info,
         "stcnn-train": _train}


@pytest.mark.parametrize("name", sorted(CASES))
def test_user_error_is_one_line_and_exit_2(name, tmp_path, capsys):
    main, argv, needle = CASES[name](tmp_path)
    assert main(argv) == 2
    assert needle in one_error_line(name, capsys.readouterr().err)


def test_bug_propagates_even_a_value_error(tmp_path, monkeypatch):
    import pipeline.cli.catalog as cli

    def broken(*_a, **_k):
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr(cli, "summarize", broken)
    with pytest.raises(ValueError, match="a bug"):
        cli.main([str(tmp_path)])


def test_bug_in_training_propagates(tmp_path, monkeypatch):
    import pipeline.train.runner as runner
    from pipeline.cli.train import main

    def broken(*_a, **_k):
        return 1 / 0

    monkeypatch.setattr(runner, "run_phase", broken)
    with pytest.raises(ZeroDivisionError):
        main(["pretrain_ssb", "--config", str(TINY / "pretrain_ssb.yaml"),
              f"run_dir={tmp_path / 'run'}"])


def test_diverged_training_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    import pipeline.train.runner as runner
    from pipeline.cli.train import main
    from pipeline.train.loop import NonFiniteLossError

    def diverged(*_a, **_k):
        raise NonFiniteLossError("SSB loss is nan at step 2 (phase segmentation)")

    monkeypatch.setattr(runner, "run_phase", diverged)
    assert main(["pretrain_ssb", "--config", str(TINY / "pretrain_ssb.yaml"),
                 f"run_dir={tmp_path / 'run'}"]) == 1
    line = one_error_line("stcnn-train", capsys.readouterr().err)
    assert "loss is nan" in line and "Fix: lower optim.lr" in line


# ------------------------------------------------------------------ installed console script
def _run_catalog(args: list[str], tmp_path: Path, hook: str = "") -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "stcnn-catalog"
    if not script.exists():
        pytest.fail(f"{script} is not installed (pip install -e .)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if hook:
        (tmp_path / "hook").mkdir(exist_ok=True)
        (tmp_path / "hook" / "sitecustomize.py").write_text(hook)
        env["PYTHONPATH"] = str(tmp_path / "hook")
    return subprocess.run([str(script), *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_console_script_user_error_and_bug(tmp_path):
    bad = _run_catalog([str(tmp_path / "missing")], tmp_path)
    assert bad.returncode == 2, bad.stderr
    assert "missing does not exist" in one_error_line("stcnn-catalog", bad.stderr)
    bug = _run_catalog([str(tmp_path)], tmp_path, hook=(
        "import pipeline.lake.catalog as c\n"
        "def summarize(root):\n"
        "    raise ValueError('a bug, not bad input')\n"
        "c.summarize = summarize\n"))
    assert bug.returncode == 1, bug.stderr
    assert "Traceback (most recent call last)" in bug.stderr
    assert bug.stderr.strip().splitlines()[-1] == "ValueError: a bug, not bad input"
    assert "stcnn-catalog: error:" not in bug.stderr


# ------------------------------------------------------------------------ the classes
def exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined under ``pipeline/`` (modules whose optional dependency
    is not installed are skipped)."""
    found = {}
    for info in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
        try:
            module = importlib.import_module(info.name)
        except ImportError as e:
            if (e.name or "").startswith("pipeline"):
                raise
            continue
        for cls in vars(module).values():
            if inspect.isclass(cls) and issubclass(cls, BaseException) \
                    and cls.__module__ == module.__name__:
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return found


def test_every_error_class_is_a_pipeline_error_or_listed_internal():
    classes = exception_classes()
    assert len(classes) > 20 and "pipeline.core.errors.FileProblem" in classes
    stray = sorted(n for n, c in classes.items()
                   if not issubclass(c, PipelineError) and n not in INTERNAL)
    assert not stray, f"derive these from PipelineError, or list them in INTERNAL: {stray}"
    assert not [n for n in INTERNAL if n in classes and issubclass(classes[n], PipelineError)]


def _instance(cls: type[PipelineError]) -> PipelineError:
    """``cls`` made with a value for every parameter of its constructor."""
    args = []
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        args.append(28 if "int" in str(p.annotation) else f"the {p.name}")
    return cls(*args)


def test_every_pipeline_error_pickles():
    classes = [c for c in exception_classes().values() if issubclass(c, PipelineError)]
    assert len(classes) > 15
    for cls in classes:
        e = _instance(cls)
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is cls
        assert (str(back), back.problem, back.fix) == (str(e), e.problem, e.fix), cls
        assert vars(back) == vars(e), cls
        if isinstance(e, OSError):
            assert (back.errno, back.filename) == (e.errno, e.filename), cls


def test_message_shape():
    e = PipelineError("the lake is empty", "run stcnn-preprocess")
    assert str(e) == "the lake is empty. Fix: run stcnn-preprocess"
    one = PipelineError("shard 3 is bad. Fix: rebuild it")
    assert (one.problem, one.fix, str(one)) == ("shard 3 is bad", "rebuild it",
                                                "shard 3 is bad. Fix: rebuild it")
    assert PipelineError("no fix named").fix is None
    f = FileProblem("/d/x.png", "not a PNG", "write it again")
    assert str(f) == "/d/x.png: not a PNG. Fix: write it again" and isinstance(f, ValueError)
    assert (f.path, f.problem, f.fix) == ("/d/x.png", "not a PNG", "write it again")
