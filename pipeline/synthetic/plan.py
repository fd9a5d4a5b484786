"""Which sequences each video dataset gets (names, lengths, splits, options) and the scene behind
each: shared by the writers and :func:`scene_for`."""

from __future__ import annotations

import dataclasses

from pipeline.synthetic.files import davis_names
from pipeline.synthetic.kinds import kind_look, kind_of, kind_palette, N_KINDS
from pipeline.synthetic.scene import Look, make_scene, Scene
from pipeline.synthetic.spec import check_name, frame_counts, seeded_rng, SyntheticSpec, YTO_CLASSES


# ------------------------------------------------------------------------------------------------
# Scenes per dataset (shared by the writers and scene_for)
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _SeqPlan:
    name: str  # official-style sequence name
    n_frames: int
    index: int  # generation index within its split (keys the scene's random stream)
    opts: dict  # labels / single (DAVIS), cls (VID, YouTube-Objects)


def _davis_splits(name: str, spec: SyntheticSpec) -> list[tuple[str, int]]:
    out = [("train", spec.n_sequences), ("val", spec.n_sequences)]
    if name == "davis2017" and spec.test_dev_sequences:
        out.append(("test-dev", spec.test_dev_sequences))
    return out


def video_plan(name: str, spec: SyntheticSpec) -> dict[str, list[_SeqPlan]]:
    """split -> its sequences sorted by name, for a video dataset."""
    rng = seeded_rng(spec.seed, name, "names")
    lo, hi = spec.n_objects
    plan: dict[str, list[_SeqPlan]] = {}
    if name in ("davis2016", "davis2017"):
        splits = _davis_splits(name, spec)
        total = sum(n for _, n in splits)
        names = davis_names(rng, total)
        frames = frame_counts(spec.n_frames, total)
        g = 0
        for s, (split, n) in enumerate(splits):
            seqs = []
            for j in range(n):
                srng = seeded_rng(spec.seed, name, split, j, "objects")
                if name == "davis2016":
                    n_obj = int(srng.integers(lo, hi + 1))
                    opts = {"labels": [1] + [0] * (n_obj - 1), "single": True}
                else:
                    # alternate multi-object sequences (>= 2 objects that occlude each other) and
                    # single-object ones (the DAVIS-2016 subset)
                    multi = (j + s) % 2 == 0
                    n_obj = int(srng.integers(max(2, lo), max(2, hi) + 1)) if multi else 1
                    opts = {"labels": [int(v) + 1 for v in srng.permutation(n_obj)],
                            "single": not multi}
                seqs.append(_SeqPlan(names[g], frames[g], j, opts))
                g += 1
            plan[split] = sorted(seqs, key=lambda p: p.name)
        return plan
    if name == "ilsvrc_vid":
        n = spec.n_sequences
        frames = frame_counts(spec.n_frames, 2 * n)
        train = []
        for j in range(n):
            folder = min(3, j * 4 // n)
            snippet = f"ILSVRC2015_VID_train_{folder:04d}/ILSVRC2015_train_{folder * 10000 + j:08d}"
            train.append(_SeqPlan(snippet, frames[j], j, {"cls": int(rng.integers(30))}))
        plan["train"] = train
        plan["val"] = [_SeqPlan(f"ILSVRC2015_val_{j:08d}", frames[n + j], j,
                                {"cls": int(rng.integers(30))}) for j in range(n)]
        return plan
    if name == "youtube_objects":
        frames = frame_counts(spec.n_frames, spec.n_sequences)
        seqs = []
        for j in range(spec.n_sequences):  # two shots per video, videos cycling over the classes
            cls = YTO_CLASSES[(j // 2) % len(YTO_CLASSES)]
            video = f"{j // (2 * len(YTO_CLASSES)) + 1:04d}"
            seqs.append(_SeqPlan(f"{cls}/{video}/{j % 2 + 1:03d}", frames[j], j, {"cls": cls}))
        plan["test"] = sorted(seqs, key=lambda p: p.name)
        return plan
    raise ValueError(f"{name} is not a video dataset")


def class_look(spec: SyntheticSpec, cls) -> Look:
    """The look of a class: its kind's (:mod:`~pipeline.synthetic.kinds`), the same in every
    dataset; instances jitter it."""
    return kind_look(spec.seed, kind_of(cls))


def video_scene(name: str, spec: SyntheticSpec, split: str, sp: _SeqPlan) -> Scene:
    rng = seeded_rng(spec.seed, name, split, sp.index, "scene")
    palette = kind_palette(spec.seed)
    if name == "davis2016":
        # one annotated object of a shared kind; smaller unannotated distractors (other things)
        # behind it or passing in front
        labels = sp.opts["labels"]
        behind = list(range(1, len(labels))) if rng.random() < 0.5 else None
        looks = [class_look(spec, int(rng.integers(N_KINDS)))] + [None] * (len(labels) - 1)
        return make_scene(rng, spec.size, sp.n_frames, labels, distractor_scale=0.55,
                           behind=behind, looks=looks, palette=palette)
    if name == "davis2017":
        kinds = rng.integers(N_KINDS, size=len(sp.opts["labels"]))
        return make_scene(rng, spec.size, sp.n_frames, sp.opts["labels"],
                           looks=[class_look(spec, int(k)) for k in kinds], palette=palette)
    # VID / YouTube-Objects: one object of the sequence's class, distractors behind it
    lo, hi = spec.n_objects
    n_obj = int(rng.integers(lo, hi + 1))
    looks = [class_look(spec, sp.opts["cls"])] + [None] * (n_obj - 1)
    return make_scene(rng, spec.size, sp.n_frames, [1] + [0] * (n_obj - 1), looks=looks,
                       behind=list(range(1, n_obj)), distractor_scale=0.6, radius=(0.16, 0.28),
                       palette=palette)


def scene_for(name: str, spec: SyntheticSpec | None, split: str, index: int) -> Scene:
    """The scene behind sequence ``index`` (in the sorted order of the written list files) of
    ``split`` of a video dataset; ``scene_for(...).render(t)`` reproduces frame t exactly."""
    spec = spec or SyntheticSpec()
    check_name(name)
    plan = video_plan(name, spec)
    if split not in plan:
        raise ValueError(f"{name} has splits {sorted(plan)}, not {split!r}")
    return video_scene(name, spec, split, plan[split][index])


def sequence_names(name: str, spec: SyntheticSpec | None = None) -> dict[str, list[str]]:
    """split -> sorted sequence names a video dataset gets for ``spec``."""
    check_name(name)
    return {k: [p.name for p in v] for k, v in video_plan(name, spec or SyntheticSpec()).items()}
