"""The main job's final verdict (``pipeline/jobs/demo.py``: does its offline training beat the same
online tuning from a random model?) on made-up segment summaries, and its embedded default
(``configs/demo.yaml``) against the job's own defaults."""

from __future__ import annotations

import math
from pathlib import Path

from pipeline.core.config import load_config, to_dict
from pipeline.jobs.demo import DemoConfig, compare_offline

REPO = Path(__file__).resolve().parents[2]


def _summary(j: float | None, f: float | None = None) -> dict:
    metrics = {} if j is None else {"J-Mean": j, "F-Mean": j if f is None else f}
    return {"evaluation": {"metrics": metrics}}


def test_offline_training_helps_when_j_gains_at_least_the_margin():
    v = compare_offline(_summary(0.75, 0.5), _summary(0.625, 0.25), DemoConfig())
    assert v["helps"] is True and v["margin"] == 0.05
    assert v["J_difference"] == 0.125 and (v["J_offline"], v["J_online_only"]) == (0.75, 0.625)
    assert (v["F_offline"], v["F_online_only"]) == (0.5, 0.25)
    assert "offline training helps here: J +0.125" in v["text"]
    assert "does NOT" not in v["text"]
    rows = {ln.split()[0]: ln.split()[1:] for ln in v["text"].splitlines()[2:4]}
    assert rows == {"J-Mean": ["0.750", "0.625", "+0.125"], "F-Mean": ["0.500", "0.250", "+0.250"]}


def test_a_gain_below_the_margin_or_a_loss_is_not_help():
    for off, base in ((0.65, 0.625), (0.5, 0.75)):
        v = compare_offline(_summary(off), _summary(base), DemoConfig())
        assert v["helps"] is False, (off, base)
        assert "offline training does NOT visibly help here" in v["text"]
        assert f"J {off - base:+.3f}, want >= +0.05" in v["text"]
    # the margin is a parameter; the gain exactly at it counts
    assert compare_offline(_summary(0.75), _summary(0.625), DemoConfig(), margin=0.125)["helps"]
    assert not compare_offline(_summary(0.75), _summary(0.625), DemoConfig(), margin=0.25)["helps"]


def test_missing_scores_are_no_verdict_of_help():
    v = compare_offline(_summary(None), _summary(0.5), DemoConfig())
    assert math.isnan(v["J_difference"]) and v["helps"] is False
    assert "does NOT" in v["text"]


def test_the_verdict_names_the_demos_budget():
    cfg = DemoConfig()
    cfg.steps.gan, cfg.steps.segmentation, cfg.steps.alternating = 7, 11, 13
    cfg.sample_data.size = (80, 40)
    text = compare_offline(_summary(0.5), _summary(0.5), cfg)["text"]
    assert "(7/11/13 steps of the tiny model on generated 80x40 data)" in text


def test_the_embedded_default_is_the_jobs_default():
    """configs/demo.yaml (what `bash scripts/main.sh` runs) states the defaults of DemoConfig, so
    that the budget the README's figures were measured with is the one both give."""
    loaded = to_dict(load_config(DemoConfig, REPO / "configs" / "demo.yaml", []))
    assert loaded == to_dict(DemoConfig())
