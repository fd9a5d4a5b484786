"""Model size and cost: parameters per part and FLOPs per forward pass.

Everything is built and run on PyTorch's ``meta`` device: shapes only, no memory and no
arithmetic, so a full-resolution count of the whole model takes about a second on a CPU.
FLOPs are those ``torch.utils.flop_counter.FlopCounterMode`` counts (convolutions, transposed
convolutions and matrix products, 2 FLOPs per multiply-add; normalisation, activations,
pooling and resizing are not counted).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pipeline.model.config import ModelConfig
from pipeline.model.stcnn import build_discriminator, build_stcnn

# The authors' model (reference notes: built from their repository with random weights).
AUTHORS_CODE_PARAMETERS = {
    "G (TCB)": 57_966_595,
    "SSB": 71_696_197,
    "STCNN (G + SSB)": 129_662_792,
    "D": 21_787_617,
}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _flops(fn, *args) -> int:
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


def model_summary(cfg: ModelConfig, height: int = 480, width: int = 854, batch: int = 1) -> dict:
    """Parameters and forward FLOPs of G, SSB, STCNN and D for ``batch`` frames of height x width.

    D is costed on what it sees in training: G's predicted frame (resized to its input size when
    the config sets one). Weight files named in the config are not read.
    """
    cfg = replace(cfg,
                  temporal=replace(cfg.temporal, backbone=replace(cfg.temporal.backbone, weights=None)),
                  spatial=replace(cfg.spatial, backbone=replace(cfg.spatial.backbone, weights=None)),
                  discriminator=replace(cfg.discriminator, weights=None))
    with torch.device("meta"):
        net = build_stcnn(cfg).eval()
        d = build_discriminator(cfg).eval()
        previous = torch.empty(batch, cfg.temporal.delta, 3, height, width)
        frame = torch.empty(batch, 3, height, width)
        with torch.no_grad():
            predicted, features = net.tcb(previous)
            flops = {
                "G (TCB)": _flops(net.tcb, previous),
                "SSB": _flops(net.ssb, frame, features),
                "STCNN (G + SSB)": _flops(net, previous, frame),
                "D": _flops(d, predicted),
            }
    params = {"G (TCB)": count_parameters(net.tcb), "SSB": count_parameters(net.ssb),
              "STCNN (G + SSB)": count_parameters(net), "D": count_parameters(d)}
    return {
        "input": {"batch": batch, "height": height, "width": width, "delta": cfg.temporal.delta},
        "parts": {name: {"parameters": params[name], "gflops": flops[name] / 1e9,
                         "authors_code_parameters": AUTHORS_CODE_PARAMETERS[name]}
                  for name in params},
        "predicted_frame": list(predicted.shape[1:]),
        "temporal_features": [list(f.shape[1:]) for f in features],
    }
