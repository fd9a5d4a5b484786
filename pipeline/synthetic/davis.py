"""DAVIS-2016 and DAVIS-2017 in their release layouts (one LA annotation; void along object
borders in multi-object sequences)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.synthetic.files import save_jpeg, save_png, void_band, write_lines, LA_FRAME, VOID
from pipeline.synthetic.plan import video_plan, video_scene
from pipeline.synthetic.spec import DAVIS_ATTRIBUTES, SyntheticSpec


# ------------------------------------------------------------------------------------------------
# Writers
# ------------------------------------------------------------------------------------------------
def write_davis2016(root: Path, spec: SyntheticSpec) -> dict:
    plan = video_plan("davis2016", spec)
    info = []
    lines: dict[str, list[str]] = {}
    n_frames = 0
    for split, seqs in plan.items():
        lines[split] = []
        for sp in seqs:
            seq, nf, kw = sp.name, sp.n_frames, sp.opts
            scene = video_scene("davis2016", spec, split, sp)
            occluded = False
            for t in range(nf):
                r = scene.render(t, amodal=True)
                stem = f"{t:05d}"
                save_jpeg(root / "JPEGImages" / "480p" / seq / f"{stem}.jpg", r.image,
                           spec.jpeg_quality)
                # the release's quirk: one annotation of the train split is grey + alpha (LA)
                la = split == "train" and sp is seqs[0] and t == min(nf - 1, LA_FRAME)
                save_png(root / "Annotations" / "480p" / seq / f"{stem}.png",
                          np.where(r.labels > 0, 255, 0).astype(np.uint8), palette=False,
                          alpha=la)
                prim = scene.labels.index(1)
                occluded |= bool((r.amodal[prim] & (r.owner != prim + 1)).any())
                lines[split].append(f"/JPEGImages/480p/{seq}/{stem}.jpg "
                                    f"/Annotations/480p/{seq}/{stem}.png ")
            n_frames += nf
            attrs = []
            if len(scene.objects) > 1:
                attrs.append("BC")
            if scene.camera_motion >= 2:
                attrs.append("CS")
            if scene.objects[scene.labels.index(1)].look.shape == "blob":
                attrs.append("DEF")
            if occluded:
                attrs.append("OCC")
            attrs.append("SV")
            info.append((seq, nf, "training" if split == "train" else "test", attrs, not occluded))
    for split in ("train", "val"):
        write_lines(root / "ImageSets" / "480p" / f"{split}.txt", lines[split])
    trainval = sorted(lines["train"] + lines["val"],
                      key=lambda ln: (ln.split("/")[3], ln.split("/")[4]))
    write_lines(root / "ImageSets" / "480p" / "trainval.txt", trainval)
    out = [f"attributes: [{', '.join(DAVIS_ATTRIBUTES)}]", "sets: [training,test]", "sequences:"]
    for seq, nf, set_, attrs, eval_t in sorted(info):
        out += [f"- attributes: [{', '.join(attrs)}]", f"  name: {seq}", f"  num_frames: {nf}",
                f"  set: {set_}", f"  eval_t: {eval_t}"]
    write_lines(root / "Annotations" / "db_info.yml", out + [""])
    return {"sequences": len(info), "frames": n_frames, "masks": n_frames}


def write_davis2017(root: Path, spec: SyntheticSpec) -> dict:
    plan = video_plan("davis2017", spec)
    n_frames = n_masks = 0
    lists: dict[str, list[str]] = {}
    for split, seqs in plan.items():
        lists[split] = []
        for sp in seqs:
            seq, nf, kw = sp.name, sp.n_frames, sp.opts
            scene = video_scene("davis2017", spec, split, sp)
            for t in range(nf):
                r = scene.render(t)
                stem = f"{t:05d}"
                save_jpeg(root / "JPEGImages" / "480p" / seq / f"{stem}.jpg", r.image,
                           spec.jpeg_quality)
                if split != "test-dev" or t == 0:
                    labels = r.labels
                    if not kw["single"]:  # void (255) along one object's border, as on
                        labels = _davis2017_void(labels, max(kw["labels"]))  # tennis' racket
                    save_png(root / "Annotations" / "480p" / seq / f"{stem}.png", labels,
                              palette=True)
                    n_masks += 1
            n_frames += nf
            lists[split].append(seq)
            if kw["single"] and split in ("train", "val"):
                lists.setdefault(f"2016/{split}", []).append(seq)
    for split, seqs in lists.items():
        if not split.startswith("2016/"):
            write_lines(root / "ImageSets" / "2017" / f"{split}.txt", sorted(seqs))
    for split in ("train", "val"):  # the DAVIS-2016 subset (single-object sequences)
        write_lines(root / "ImageSets" / "2016" / f"{split}.txt",
                     sorted(lists.get(f"2016/{split}", [])))
    n_seq = sum(len(v) for k, v in lists.items() if not k.startswith("2016/"))
    return {"sequences": n_seq, "frames": n_frames, "masks": n_masks}


def _davis2017_void(labels: np.ndarray, obj: int) -> np.ndarray:
    """``labels`` with the background pixels touching object ``obj`` set to void (255): DAVIS-2017
    marks uncertain pixels along thin objects so (tennis: 225 void pixels along the racket). The
    object's own pixels are kept."""
    ring = void_band(labels == obj, 1) & (labels == 0)
    if not ring.any() or not (labels == obj).any():
        return labels
    out = labels.copy()
    out[ring] = VOID
    return out
