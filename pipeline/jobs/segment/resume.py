"""Which sequences a segmentation job has already finished, so that a re-run skips them.

**The rule.** A sequence is complete when its completion marker ``<out>/.complete/<name>.json``
exists, names the same job fingerprint as this run and the same frames, and every one of those
frames' ``<out>/<name>/<frame>.png`` exists. Each PNG is written atomically (a temporary name,
fsync, rename: :mod:`pipeline.core.atomic`), so an existing PNG is a whole one; the marker is
written (atomically too) only after the sequence's last PNG. A run killed mid-sequence therefore
leaves no marker for it, even when all its PNGs happen to be present, and the re-run segments it
again (removing the killed writer's temporary files first).

**The fingerprint** covers what decides a sequence's masks: the online-tuning config, the model
overrides, the DAVIS year, the precision and memory format, and the tuned-from weights
themselves (a digest of G's and the SSB's tensors, so a ``models:/`` alias moved to another
version is noticed). Results written under another fingerprint are segmented again.
``redo=true`` segments every sequence again whatever the markers say.

Markers live outside the sequence folders, which keep the official results layout (PNGs only).
Per-sequence seeds depend on the sequence's name only
(:func:`pipeline.inference.segmenter.sequence_seed`), so a resumed run writes the same bytes as
an uninterrupted one, on any number of ranks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import torch

from pipeline.core.atomic import atomic_write_text, remove_stale_temps
from pipeline.core.config import to_dict

MARKERS = ".complete"


def marker_path(out: Path, name: str) -> Path:
    return Path(out) / MARKERS / f"{name}.json"


def _tensor_digest(h, state: dict[str, torch.Tensor]) -> None:
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def _online_settings(online) -> dict:
    """``online`` as plain data, its lucid-dream settings only where they differ from the
    defaults (so the fingerprint of a run with the default dreams does not depend on how many
    of those defaults a config spells out)."""
    settings = to_dict(online)
    default = to_dict(type(online.lucid)())
    settings["lucid"] = {k: v for k, v in settings["lucid"].items() if v != default[k]}
    if settings.get("augment") == "lucid":    # the plain augmentation is not used then
        del settings["augment"], settings["plain_augment"]
    else:
        settings.pop("lucid")
    if not settings.get("segment_at"):
        settings.pop("segment_at", None)
    return settings


def job_fingerprint(cfg, modules: dict[str, torch.nn.Module | None]) -> str:
    """A digest of every setting and weight that decides the masks (see the module docstring)."""
    h = hashlib.sha256()
    settings = {"online": _online_settings(cfg.online),
                "model_overrides": list(cfg.model_overrides), "year": cfg.year,
                "precision": cfg.dist.precision, "channels_last": cfg.dist.channels_last}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name in sorted(modules):
        if modules[name] is not None:
            h.update(f"[{name}]".encode())
            _tensor_digest(h, modules[name].state_dict())
    return h.hexdigest()


def read_marker(out: Path, name: str) -> dict | None:
    try:
        return json.loads(marker_path(out, name).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def is_complete(out: Path, name: str, ids: list[str], fingerprint: str) -> bool:
    """Whether ``<out>/<name>`` holds this job's finished results (the module's rule)."""
    marker = read_marker(out, name)
    if not isinstance(marker, dict) or marker.get("fingerprint") != fingerprint \
            or marker.get("frames") != list(ids):
        return False
    folder = Path(out) / name
    return all((folder / f"{i}.png").is_file() for i in ids)


def start_sequence(out: Path, name: str) -> None:
    """Before (re)writing a sequence: its marker removed (a kill from here on leaves it
    incomplete) and any temporary files of a killed writer removed."""
    with contextlib.suppress(FileNotFoundError):
        marker_path(out, name).unlink()
    folder = Path(out) / name
    if folder.is_dir():
        remove_stale_temps(folder)


def finish_sequence(out: Path, name: str, ids: list[str], fingerprint: str, timing: dict) -> None:
    """The marker, written last: the sequence counts as complete from here on."""
    atomic_write_text(marker_path(out, name), json.dumps(
        {"fingerprint": fingerprint, "frames": list(ids), "timing": timing}, indent=2,
        sort_keys=True))
