"""The segmentation job's progress bar (``pipeline/jobs/segment/progress.py``): each stage of a
sequence is drawn when it starts, however fast it is, and the bar shows only where asked for."""

from __future__ import annotations

import io

from pipeline.jobs.segment.progress import progress_enabled, SequenceProgress


def test_each_stage_is_drawn_when_it_starts_even_within_one_redraw_interval(capsys):
    with SequenceProgress("blackswan", tune_steps=3, frames=2, enabled=True) as bar:
        for _ in range(3):
            bar("tune")
        bar("segment")          # microseconds later: within tqdm's 0.1 s redraw interval
        bar("segment")
    err = capsys.readouterr().err
    assert "0/5 [00:00<?, ?step/s, tuning]" in err
    assert "3/5" in err and "segmenting]" in err


def test_disabled_bar_writes_nothing(capsys):
    with SequenceProgress("blackswan", tune_steps=2, frames=1, enabled=False) as bar:
        bar("tune")
        bar("segment")
    assert capsys.readouterr().err == ""


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_shown_on_rank_0_at_a_terminal_or_when_asked():
    assert progress_enabled(None, True, _Tty()) is True
    assert progress_enabled(None, True, io.StringIO()) is False          # a log file
    assert progress_enabled(True, True, io.StringIO()) is True           # progress=true
    assert progress_enabled(False, True, _Tty()) is False                # progress=false
    assert progress_enabled(True, False, _Tty()) is False                # other ranks: never
