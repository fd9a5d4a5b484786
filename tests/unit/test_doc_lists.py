"""Lists in the README that name what the code has are checked against the code: the datasets
the preprocessing job takes, the console commands and the scripts behind them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from pipeline.sources import SOURCES

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def _commands_table() -> str:
    start = README.index("| command | script |")
    return README[start:README.index("\n\n", start)]


def test_the_readme_names_every_dataset_the_preprocessing_job_takes():
    m = re.search(r"with DATASET one of `([^`]+)`", README)
    assert m, "README.md: the preprocessing usage no longer lists DATASET's values"
    assert m.group(1).split() == list(SOURCES)


def test_the_readme_lists_every_console_command_and_its_launcher():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    table = _commands_table()
    named = set(re.findall(r"stcnn-[a-z-]+", table))
    assert named == set(scripts), (f"README's command table lacks {sorted(set(scripts) - named)}"
                                   f" and names {sorted(named - set(scripts))} in addition")
    for launcher in re.findall(r"`(launch/\w+\.py)`", table):
        assert (REPO / launcher).is_file(), f"README's command table names {launcher}"
