"""MSRA10K and PASCAL VOC 2012 (SegmentationObject with its void boundary band) in their release
layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.synthetic.files import save_jpeg, save_png, void_band, write_lines
from pipeline.synthetic.kinds import kind_palette, N_KINDS
from pipeline.synthetic.plan import class_look
from pipeline.synthetic.scene import make_scene
from pipeline.synthetic.spec import seeded_rng, SyntheticSpec


def _image_ids(name: str, n: int) -> dict[str, list[str]]:
    if name == "msra10k":
        return {"train": [str(4 + 17 * i) for i in range(n)]}
    ids = {"train": [], "val": []}
    for g in range(2 * n):
        ids["train" if g % 2 == 0 else "val"].append(f"{2007 + (g // 2) % 6}_{32 + 7 * g:06d}")
    return {k: sorted(v) for k, v in ids.items()}


def write_msra10k(root: Path, spec: SyntheticSpec) -> dict:
    base = root / "MSRA10K_Imgs_GT" / "Imgs"
    lo, hi = spec.n_objects
    ids = _image_ids("msra10k", spec.n_images)["train"]
    for image_id in ids:
        rng = seeded_rng(spec.seed, "msra10k", image_id)
        n_obj = int(rng.integers(lo, hi + 1))
        looks = [class_look(spec, int(rng.integers(N_KINDS)))] + [None] * (n_obj - 1)
        scene = make_scene(rng, spec.size, 1, [1] + [0] * (n_obj - 1), radius=(0.24, 0.36),
                            centre=(0.4, 0.6), distractor_scale=0.45, behind=list(range(1, n_obj)),
                            camera=0.0, min_visible=0.9, looks=looks,
                            palette=kind_palette(spec.seed))
        r = scene.render(0)
        save_jpeg(base / f"{image_id}.jpg", r.image, spec.jpeg_quality)
        save_png(base / f"{image_id}.png", np.where(r.labels > 0, 255, 0).astype(np.uint8),
                  palette=False)
    return {"images": len(ids), "masks": len(ids)}


def write_voc2012(root: Path, spec: SyntheticSpec) -> dict:
    base = root / "VOCdevkit" / "VOC2012"
    lo, hi = spec.n_objects
    band = max(1, int(round(min(spec.size) / 150)))
    ids = _image_ids("voc2012", spec.n_images)
    for split, split_ids in ids.items():
        for image_id in split_ids:
            rng = seeded_rng(spec.seed, "voc2012", image_id)
            n_obj = int(rng.integers(lo, hi + 1))
            classes = [int(c) for c in rng.integers(1, 21, n_obj)]
            inst = [int(v) + 1 for v in rng.permutation(n_obj)]
            looks = [class_look(spec, c) for c in classes]
            scene = make_scene(rng, spec.size, 1, inst, looks=looks, radius=(0.12, 0.3),
                                centre=(0.25, 0.75), camera=0.0, palette=kind_palette(spec.seed))
            r = scene.render(0)
            obj = r.labels.copy()
            cls_lut = np.zeros(n_obj + 1, dtype=np.uint8)
            for k in range(n_obj):
                cls_lut[inst[k]] = classes[k]
            cls = cls_lut[obj]
            void = void_band(obj, band)
            obj[void] = 255
            cls[void] = 255
            save_jpeg(base / "JPEGImages" / f"{image_id}.jpg", r.image, spec.jpeg_quality)
            save_png(base / "SegmentationObject" / f"{image_id}.png", obj, palette=True)
            save_png(base / "SegmentationClass" / f"{image_id}.png", cls, palette=True)
    sets = base / "ImageSets" / "Segmentation"
    write_lines(sets / "train.txt", ids["train"])
    write_lines(sets / "val.txt", ids["val"])
    write_lines(sets / "trainval.txt", sorted(ids["train"] + ids["val"]))
    n = len(ids["train"]) + len(ids["val"])
    return {"images": n, "masks": n}
