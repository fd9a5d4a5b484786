"""The progress bar within a sequence: its online-tuning steps (every object's), then its frames.

Shown on rank 0 only (as the training's progress lines), and only when stderr is a terminal,
unless ``progress=true`` asks for it anyway (``progress=false``: never), so logs of batch jobs
and CI stay free of bar redraws.
"""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_enabled(setting: bool | None, is_main: bool, stream=None) -> bool:
    if not is_main:
        return False
    if setting is not None:
        return bool(setting)
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class SequenceProgress:
    """``with SequenceProgress(name, tune_steps, frames, enabled) as bar:`` then pass ``bar`` as
    :meth:`~pipeline.inference.segmenter.OnlineSegmenter.segment`'s ``progress``."""

    def __init__(self, name: str, tune_steps: int, frames: int, enabled: bool):
        self.bar = tqdm(total=tune_steps + frames, desc=name, unit="step", leave=False,
                        disable=not enabled, file=sys.stderr, dynamic_ncols=True)
        self.stage = ""

    def __call__(self, stage: str) -> None:
        if stage != self.stage:
            self.stage = stage
            # drawn at once: a stage shorter than tqdm's redraw interval would never show
            self.bar.set_postfix_str("tuning" if stage == "tune" else "segmenting")
        self.bar.update(1)

    def __enter__(self) -> "SequenceProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
