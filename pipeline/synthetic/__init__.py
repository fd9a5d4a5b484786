"""Small synthetic datasets written in the official on-disk layouts of ``docs/layouts.md``.

The content is meant to be learnable, not noise: procedural textured backgrounds (smooth colour
noise, gradients, stripes, static clutter) larger than the frame so that the camera can pan;
several textured objects (ellipses, wobbling blobs, rounded polygons) that move along smooth paths,
change scale and aspect, rotate, and occlude one another in depth order. Every mask is computed
from the same per-pixel coverage the image was painted with, so masks are pixel-consistent with the
frames and show only the *visible* part of each object.

As the real datasets' splits share object categories, every dataset and split draws its annotated
objects from one small set of object kinds (shape + texture + motion families,
:mod:`~pipeline.synthetic.kinds`), each scene with its own instances; the backgrounds wear the
kinds' colours, so that telling an object from the background takes learned appearance, which is
what offline training can add to online tuning on the first frame.

The files carry the releases' quirks (docs/layouts.md): ILSVRC VID's unprefixed list files and
upper-case ``.JPEG`` frames, DAVIS-2016's one grey + alpha (LA) annotation, DAVIS-2017's void
(255) along object borders, VOC's void boundary band, YouTube-Objects' lossy JPEG labels.

Writing is deterministic: the same :class:`SyntheticSpec` gives byte-identical files (fixed JPEG
quality, no timestamps, sorted iteration); a different seed gives different content.

    >>> from pipeline.synthetic import SyntheticSpec, write_all
    >>> roots = write_all("/tmp/synth", SyntheticSpec(size=(128, 72)))
    >>> roots["davis2016"]          # pass this as --src to launch/preprocess.py

Write into an empty folder: files of an earlier, larger run are not deleted (the list files are
rewritten, so list-driven readers ignore them, but MSRA10K has no list file).

:func:`scene_for` rebuilds the exact :class:`Scene` behind a written video sequence; its
:meth:`Scene.render` also returns each object's unoccluded (amodal) mask, for tests.

The modules: :mod:`~pipeline.synthetic.spec` (what to generate), :mod:`~pipeline.synthetic.scene`
(the renderer), :mod:`~pipeline.synthetic.kinds` (the shared object kinds),
:mod:`~pipeline.synthetic.plan` (sequences per dataset),
:mod:`~pipeline.synthetic.files` (file formats), and one writer module per layout
(:mod:`~pipeline.synthetic.davis`, :mod:`~pipeline.synthetic.images`,
:mod:`~pipeline.synthetic.vid`, :mod:`~pipeline.synthetic.youtube_objects`).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.synthetic.davis import write_davis2016, write_davis2017
from pipeline.synthetic.images import write_msra10k, write_voc2012
from pipeline.synthetic.plan import scene_for, sequence_names
from pipeline.synthetic.scene import Rendered, Scene
from pipeline.synthetic.spec import DATASETS, PRESETS, SyntheticSpec, check_name, parse_size
from pipeline.synthetic.vid import write_ilsvrc_vid
from pipeline.synthetic.youtube_objects import write_youtube_objects

__all__ = ["DATASETS", "PRESETS", "Rendered", "Scene", "SyntheticSpec", "parse_size", "scene_for",
           "sequence_names", "write_all", "write_dataset", "write_dataset_with_stats"]

_WRITERS = {
    "davis2016": write_davis2016,
    "davis2017": write_davis2017,
    "msra10k": write_msra10k,
    "voc2012": write_voc2012,
    "ilsvrc_vid": write_ilsvrc_vid,
    "youtube_objects": write_youtube_objects,
}


# ------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------
def write_dataset_with_stats(name: str, root: str | Path,
                             spec: SyntheticSpec | None = None) -> tuple[Path, dict[str, int]]:
    """Like :func:`write_dataset`, also returning counts (sequences/images, frames, masks)."""
    check_name(name)
    spec = spec or SyntheticSpec()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stats = _WRITERS[name](root, spec)
    return root, stats


def write_dataset(name: str, root: str | Path, spec: SyntheticSpec | None = None) -> Path:
    """Write dataset ``name`` in its official layout under ``root``; returns the root to pass as
    ``--src``. Raises ValueError naming the valid names for an unknown ``name``."""
    return write_dataset_with_stats(name, root, spec)[0]


def write_all(root: str | Path, spec: SyntheticSpec | None = None) -> dict[str, Path]:
    """Every dataset of :data:`DATASETS`, one subfolder ``root/<name>`` each."""
    root = Path(root)
    return {name: write_dataset(name, root / name, spec) for name in DATASETS}
