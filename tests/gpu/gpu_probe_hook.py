"""A training hook for the GPU tests: after training, writes what each engine's model ended up
as (device and dtype of its parameters, BatchNorm vs SyncBatchNorm layers, channels_last
convolution weights, compiled or not) to the JSON file named by ``$STCNN_GPU_PROBE``. Loaded
through the config's extension point, ``hooks=[gpu_probe_hook:probe]``, with ``tests/gpu`` on
``PYTHONPATH`` (``test_gpu_path.py`` sets it for its child runs)."""

from __future__ import annotations

import json
import os

import torch
from torch import nn

from pipeline.train.loop import HookBase


class GpuProbe(HookBase):
    def __init__(self, path: str):
        self.path = path

    def after_train(self) -> None:
        out = {}
        for name, engine in self.loop.phase.engines.items():
            module = engine.module
            params = list(module.parameters())
            convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
            wrapped = getattr(engine, "wrapped", module)
            out[name] = {
                "devices": sorted({str(p.device) for p in params}),
                "dtypes": sorted({str(p.dtype) for p in params}),
                "sync_bn": sum(isinstance(m, nn.SyncBatchNorm) for m in module.modules()),
                "batch_norm": sum(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                  for m in module.modules()),
                "convs": len(convs),
                "convs_channels_last": sum(
                    m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs
                    if m.weight.dim() == 4 and m.weight.shape[-2:] != (1, 1)),
                "convs_spatial": sum(m.weight.shape[-2:] != (1, 1) for m in convs),
                "compiled": hasattr(wrapped, "_orig_mod"),
                "finite": all(bool(torch.isfinite(p).all()) for p in params),
            }
        with open(self.path, "w") as f:
            json.dump(out, f, indent=2)


def probe(ctx) -> GpuProbe | None:
    path = os.environ.get("STCNN_GPU_PROBE")
    if not path or not ctx.is_main:
        return None
    return GpuProbe(path)
