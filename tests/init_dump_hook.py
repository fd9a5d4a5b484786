"""A training hook for tests: before the first step, rank 0 saves every engine's weights to
``$STCNN_INIT_DUMP`` (what the run starts from, after ``init_from``). Loaded through the
config's extension point, ``hooks=[init_dump_hook:dump]``, with the tests folder on PYTHONPATH."""

from __future__ import annotations

import os

import torch

from pipeline.train.loop import HookBase


class InitDump(HookBase):
    def __init__(self, path: str):
        self.path = path

    def before_train(self) -> None:
        state = {name: {k: v.detach().clone() for k, v in e.module.state_dict().items()}
                 for name, e in self.loop.phase.engines.items()}
        torch.save(state, self.path)


def dump(ctx) -> InitDump | None:
    path = os.environ.get("STCNN_INIT_DUMP")
    return InitDump(path) if path and ctx.is_main else None
