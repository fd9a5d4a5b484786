"""The RNG states a checkpoint keeps (Python, NumPy, torch CPU and CUDA), captured and restored."""

from __future__ import annotations

import random

import numpy as np
import torch


# --------------------------------------------------------------------------------------------
# RNG states


def capture_rng_state() -> dict:
    """The global RNG states: python ``random``, numpy's global generator, torch CPU, and every
    CUDA device when CUDA is available. Only tensors, ints, floats, strs and None: the dict
    survives ``torch.load(weights_only=True)``."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "python": {"version": int(version),
                   "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"name": str(name),
                  "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict) -> None:
    """Set the global RNG states from :func:`capture_rng_state`'s dict (parts it lacks are left
    alone; CUDA states are restored for the devices present in both)."""
    if "python" in state:
        p = state["python"]
        random.setstate((int(p["version"]), tuple(int(v) for v in p["state"].tolist()),
                         p["gauss_next"]))
    if "numpy" in state:
        n = state["numpy"]
        keys = np.asarray(n["keys"].cpu().numpy(), dtype=np.uint32)
        np.random.set_state((n["name"], keys, int(n["pos"]), int(n["has_gauss"]),
                             float(n["cached_gaussian"])))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        cuda = state["cuda"][: torch.cuda.device_count()]
        for i, s in enumerate(cuda):
            torch.cuda.set_rng_state(s.cpu(), i)
