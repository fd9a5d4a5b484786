"""docs/scale.md is what scripts/capacity_plan.py writes from the committed inputs, and every
figure in it names its source."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "scale.md"
TAG = re.compile(r"\[([PMCA]\d+)\]")
FIGURE = re.compile(r"(?<![A-Za-z\d])\d")   # a number, not a digit of a name (S3, H100)


def _script():
    spec = importlib.util.spec_from_file_location("capacity_plan",
                                                  REPO / "scripts" / "capacity_plan.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def plan():
    return _script()


def _legend(text: str) -> dict[str, str]:
    body = text.split("\n## Sources\n", 1)[1]
    return {m.group(1): m.group(2) for m in
            re.finditer(r"^\| ([PMCA]\d+) \| (published|measured|config|assumed) \|", body, re.M)}


def test_doc_is_current(plan, tmp_path):
    out = tmp_path / "scale.md"
    assert plan.main(["--out", str(out)]) == 0
    assert out.read_text() == DOC.read_text(), (
        f"docs/scale.md is stale: regenerate it with `{plan.REGENERATE}`")


def test_check_fails_on_an_edited_doc(plan, tmp_path, capsys):
    edited = tmp_path / "scale.md"
    edited.write_text(DOC.read_text().replace("| 8 |", "| 9 |", 1))
    assert plan.main(["--out", str(edited), "--check"]) == 1
    assert plan.REGENERATE in capsys.readouterr().err
    edited.write_text(DOC.read_text())
    assert plan.main(["--out", str(edited), "--check"]) == 0


def test_every_figure_names_a_source():
    text = DOC.read_text()
    head, _, _ = text.partition("\n## Sources\n")
    legend = _legend(text)
    assert legend, "no Sources table"
    unsourced = []
    lines = head.splitlines()
    for i, line in enumerate(lines):
        prose = re.sub(r"`[^`]*`", "", line)   # commands and option names are not figures
        header = i + 1 < len(lines) and lines[i + 1].startswith("|---")
        if line.startswith(("#", "|---")) or header or not FIGURE.search(prose):
            continue
        tags = TAG.findall(line)
        if not tags:
            unsourced.append(line)
        missing = [t for t in tags if t not in legend]
        assert not missing, f"tags {missing} not in the Sources table: {line}"
    assert not unsourced, "lines with figures and no source:\n" + "\n".join(unsourced[:5])
    # and every source listed is used
    used = set(TAG.findall(head))
    assert set(legend) == used, f"listed but unused: {sorted(set(legend) - used)}"


def test_measured_sources_name_a_results_key():
    legend = _legend(DOC.read_text())
    text = DOC.read_text().split("\n## Sources\n", 1)[1]
    for line in text.splitlines():
        if re.match(r"^\| M\d+ \| measured \|", line):
            assert re.search(r"benchmarks/results/\w+\.json key \S+", line), line
    assert any(k.startswith("M") for k in legend)


def test_the_preflight_records_parameters_and_checkpoint_bytes():
    """What the plan reads from the preflight: each model's parameters and the bytes of the
    phase's checkpoint (fp32 weights plus Adam's two moments: at least 12 bytes a parameter)."""
    from pipeline.core.dist import DistConfig, init_distributed
    from pipeline.preflight.phase_steps import measure_phase

    ctx = init_distributed(DistConfig(device="cpu"))
    r = measure_phase("gan", ctx, quick=True, steps=1, warmup=0)
    params = r["engine_parameters"]
    assert set(params) == {"G", "D"} and min(params.values()) > 0
    n = sum(params.values())
    assert 12 * n <= r["checkpoint_bytes"] <= 12 * n + 2**20
    assert r["checkpoint_write_s"] > 0


def test_the_preflight_keeps_random_paper_models_finite():
    """The paper configs run from random weights, whose full-depth ResNets diverge within a step
    at the paper's rates: every optimizer of every phase gets the preflight's tiny rate; the
    tiny configs keep theirs."""
    from pipeline.preflight.phase_steps import RANDOM_WEIGHTS_LR, optimizer_keys, phase_config
    from pipeline.train.registry import PHASES

    for name in PHASES:
        paper, tiny = phase_config(name, False, 1), phase_config(name, True, 1)
        keys = optimizer_keys(paper)
        assert keys, name
        for key in keys:
            section, field = key.split(".")
            assert getattr(getattr(paper, section), field).lr == RANDOM_WEIGHTS_LR
            assert getattr(getattr(tiny, section), field).lr > RANDOM_WEIGHTS_LR
