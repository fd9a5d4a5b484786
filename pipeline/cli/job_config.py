"""The command line every job command shares: ``[--config FILE] [key=value ...]`` -> the job's
typed config, printed resolved; a bad config is one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TypeVar

from pipeline.core.config import ConfigError, dump_yaml, load_config

T = TypeVar("T")


def job_config(cls: type[T], default: Path, description: str, example: str, name: str,
               argv: list[str] | None = None, log_format: str = "%(levelname)s %(message)s"
               ) -> T | None:
    """The config of job ``name`` from ``argv`` (None after reporting a bad one)."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=default)
    p.add_argument("overrides", nargs="*", help=f"key=value, e.g. {example}")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=log_format)
    try:
        cfg = load_config(cls, a.config, a.overrides)
    except ConfigError as e:
        print(f"{name}: bad config: {e}", file=sys.stderr)
        return None
    print("resolved config:\n" + dump_yaml(cfg))
    return cfg
