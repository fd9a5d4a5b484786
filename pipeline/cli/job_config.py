"""The command line every job command shares: ``[--config FILE] [key=value ...]`` -> the job's
typed config, printed resolved. A bad config raises ConfigError, which the command's
``common.command`` wrapper reports as one ``stcnn-X: error: ...`` line (exit status 2)."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pipeline.cli import common
from pipeline.core.config import dump_yaml, load_config

T = TypeVar("T")

# what a job command's bad config asks for (``common.command(NAME, fix=FIX)``)
FIX = "correct that key or value in the --config file or the key=value overrides"


def job_config(cls: type[T], default: Path, description: str, example: str, name: str,
               argv: list[str] | None = None) -> T:
    """The config of job command ``name`` (``stcnn-X``) from ``argv``."""
    p = common.parser(name, description)
    p.add_argument("--config", type=Path, default=default, help="the job's YAML config")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help=f"override any config key, e.g. {example}")
    a = p.parse_args(argv)
    cfg = load_config(cls, a.config, a.overrides)
    print("resolved config:\n" + dump_yaml(cfg))
    return cfg
