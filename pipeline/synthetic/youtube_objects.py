"""YouTube-Objects in its release layout: sparse lossy JPEG labels per shot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.synthetic.files import save_jpeg
from pipeline.synthetic.plan import video_plan, video_scene
from pipeline.synthetic.spec import SyntheticSpec


def write_youtube_objects(root: Path, spec: SyntheticSpec) -> dict:
    plan = video_plan("youtube_objects", spec)
    n_frames = n_masks = 0
    for sp in plan["test"]:
        seq, nf, kw = sp.name, sp.n_frames, sp.opts
        cls, video, shot = seq.split("/")
        scene = video_scene("youtube_objects", spec, "test", sp)
        frames_dir = root / "v1" / cls / "data" / video / "shots" / shot
        labels_dir = root / "youtube_masks" / cls / "data" / video / "shots" / shot / "labels"
        for t in range(nf):
            r = scene.render(t)
            save_jpeg(frames_dir / f"frame{t + 1:04d}.jpg", r.image, spec.jpeg_quality)
            if t % spec.label_every == 0:
                save_jpeg(labels_dir / f"{t + 1:05d}.jpg",
                           np.where(r.labels > 0, 255, 0).astype(np.uint8), spec.jpeg_quality)
                n_masks += 1
        n_frames += nf
    return {"sequences": len(plan["test"]), "frames": n_frames, "masks": n_masks}
