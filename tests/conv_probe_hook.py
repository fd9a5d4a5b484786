"""A training hook for tests: records, for every convolution call of a run, whether its input
was channels_last and what dtype it computed in. Loaded through the config's extension point,
``hooks=[conv_probe_hook:probe]`` (the tests folder is on ``sys.path`` under pytest); the
records of the last run are in :data:`CALLS`."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.train.loop import HookBase

CALLS: list[dict] = []


class ConvProbe(HookBase):
    def __init__(self):
        self.handles = []

    def before_train(self) -> None:
        CALLS.clear()
        for name, engine in self.loop.phase.engines.items():
            for mod_name, m in engine.module.named_modules():
                if isinstance(m, nn.Conv2d):
                    self.handles.append(m.register_forward_hook(self._record(name, mod_name)))

    @staticmethod
    def _record(engine: str, module: str):
        def hook(m, args, output):
            x = args[0]
            _, c, h, w = x.shape
            if c > 1 and h * w > 1:  # otherwise both layouts are the same memory
                CALLS.append({"engine": engine, "module": module,
                              "channels_last": x.is_contiguous(memory_format=torch.channels_last),
                              "output_dtype": output.dtype})
        return hook

    def after_train(self) -> None:
        for h in self.handles:
            h.remove()


def probe(ctx) -> ConvProbe:
    return ConvProbe()
