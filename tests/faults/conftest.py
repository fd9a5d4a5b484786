"""Fixtures of the fault suite shared by more than one of its files."""

from __future__ import annotations

import pytest

from faultlib import PREEMPT_RUN
from support.training import failure, torchrun


@pytest.fixture(scope="session")
def uninterrupted_gan(train_lake, tmp_path_factory):
    """A 2-rank GAN run of :data:`PREEMPT_RUN` that nothing interrupts: what a signalled and
    resumed run must equal, bit for bit (``test_preemption.py``, ``test_slurm_preemption.py``)."""
    ref = tmp_path_factory.mktemp("preempt") / "uninterrupted"
    proc = torchrun("gan", train_lake, ref, *PREEMPT_RUN)
    assert proc.returncode == 0, failure(proc)
    return ref
