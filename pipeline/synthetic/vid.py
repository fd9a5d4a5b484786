"""ILSVRC2015 VID in its release layout: upper-case ``.JPEG`` frames, per-frame XML boxes,
unprefixed list files per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.synthetic.files import save_jpeg, write_lines
from pipeline.synthetic.plan import video_plan, video_scene
from pipeline.synthetic.spec import SyntheticSpec, VID_WNIDS


def _vid_xml(folder: str, stem: str, size: tuple[int, int], boxes: list[tuple]) -> str:
    w, h = size
    out = ["<annotation>", f"\t<folder>{folder}</folder>", f"\t<filename>{stem}</filename>",
           "\t<source>", "\t\t<database>ILSVRC_2015</database>", "\t</source>",
           "\t<size>", f"\t\t<width>{w}</width>", f"\t\t<height>{h}</height>", "\t</size>"]
    for trackid, wnid, (x0, y0, x1, y1), occ in boxes:
        out += ["\t<object>", f"\t\t<trackid>{trackid}</trackid>", f"\t\t<name>{wnid}</name>",
                "\t\t<bndbox>", f"\t\t\t<xmax>{x1}</xmax>", f"\t\t\t<xmin>{x0}</xmin>",
                f"\t\t\t<ymax>{y1}</ymax>", f"\t\t\t<ymin>{y0}</ymin>", "\t\t</bndbox>",
                f"\t\t<occluded>{occ}</occluded>", "\t\t<generated>0</generated>", "\t</object>"]
    return "\n".join(out + ["</annotation>", ""])


def _vid_box(vis: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(vis)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def write_ilsvrc_vid(root: Path, spec: SyntheticSpec) -> dict:
    """Frames ``%06d.JPEG``, one XML per frame (boxes ``xmax, xmin, ymax, ymin``), and the
    official lists: ``train_<k>.txt`` one line ``<folder>/<snippet> 1`` per snippet showing class
    k (a snippet with a second class's object is in both files), ``val.txt`` one line
    ``<snippet>/<frame> <running index>`` per frame; no ``train/`` / ``val/`` prefix."""
    plan = video_plan("ilsvrc_vid", spec)
    n_frames = 0
    val_lines: list[str] = []
    by_class: dict[int, list[str]] = {}
    for split, seqs in plan.items():
        for sp in seqs:
            seq, nf, kw = sp.name, sp.n_frames, sp.opts
            scene = video_scene("ilsvrc_vid", spec, split, sp)
            prim = scene.labels.index(1)
            # the first distractor, when there is one, is an object of a second class
            classes = [(prim, kw["cls"])]
            if len(scene.objects) > 1:
                classes.append((1 if prim == 0 else 0, (kw["cls"] + 7) % 30))
            shown: set[int] = set()
            for t in range(nf):
                r = scene.render(t, amodal=True)
                stem = f"{t:06d}"
                save_jpeg(root / "Data" / "VID" / split / seq / f"{stem}.JPEG", r.image,
                           spec.jpeg_quality)
                boxes = []
                for trackid, (obj, cls) in enumerate(classes):
                    vis = r.owner == obj + 1
                    if vis.any():
                        occ = int(bool((r.amodal[obj] & ~vis).any()))
                        boxes.append((trackid, VID_WNIDS[cls], _vid_box(vis), occ))
                        shown.add(cls)
                xml = root / "Annotations" / "VID" / split / seq / f"{stem}.xml"
                xml.parent.mkdir(parents=True, exist_ok=True)
                xml.write_text(_vid_xml(seq, stem, spec.size, boxes), encoding="ascii")
                if split == "val":
                    val_lines.append(f"{seq}/{stem} {len(val_lines) + 1}")
            n_frames += nf
            if split == "train":
                for cls in sorted(shown | {kw["cls"]}):
                    by_class.setdefault(cls, []).append(seq)
    sets = root / "ImageSets" / "VID"
    for cls, snippets in sorted(by_class.items()):  # the release's 30 files are never empty
        write_lines(sets / f"train_{cls + 1}.txt", [f"{seq} 1" for seq in sorted(snippets)])
    write_lines(sets / "val.txt", val_lines)
    return {"sequences": sum(len(v) for v in plan.values()), "frames": n_frames, "masks": 0}
