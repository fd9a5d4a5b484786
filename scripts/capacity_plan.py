#!/usr/bin/env python
"""Write docs/scale.md, the capacity plan of the paper's recipe on N GPUs, from figures that each
name their source:

  published  benchmarks/results/datasets.yaml: the datasets' frames, sequences, images and
             archive bytes, each with its reference
  measured   benchmarks/results/*.json: the benchmarks' and the preflight's own output, kept with
             the command and date that produced it (benchmarks/results/record.py)
  config     the recipe's configs, the SLURM scripts and the job's defaults, read from the files
  assumed    the MFU, interconnect, storage and CPU figures: options below, each printed as an
             assumption (the GPU is an option too; its dense peak comes from the vendor figures
             of pipeline/preflight/peaks.py)

    python scripts/capacity_plan.py                      # writes docs/scale.md
    python scripts/capacity_plan.py --check              # exit 1 if docs/scale.md is stale
    python scripts/capacity_plan.py --gpu a100 --mfu 0.3 --out -

The output depends on these inputs only (no clock, no machine): the same inputs give the same
bytes, which tests/unit/test_capacity_plan.py checks against the committed docs/scale.md.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.core.errors import FileProblem, InputMissing, PipelineError  # noqa: E402
from pipeline.lake.preprocess import PreprocessConfig  # noqa: E402
from pipeline.preflight.peaks import peak_flops  # noqa: E402
from pipeline.train.registry import PHASES  # noqa: E402

RESULTS = "benchmarks/results"
OUT = "docs/scale.md"
REGENERATE = "python scripts/capacity_plan.py"
PHASE_TITLES = {"gan": "TCB pretraining (G + D)", "segmentation": "SSB pretraining",
                "alternating": "offline training (alternating)"}
# engines whose gradients a step all-reduces (the phase modules: pipeline/train/phases/)
UPDATED = {"gan": [("G", "D")], "segmentation": [("SSB",)], "alternating": [("G", "D"), ("SSB",)]}
DELTA = 4


# ----------------------------------------------------------------------------------------------
# sources: every figure cites tags whose legend says where it comes from


@dataclass
class Sources:
    entries: list[tuple[str, str, str]] = field(default_factory=list)   # (tag, kind, text)

    def cite(self, kind: str, text: str) -> str:
        """The tag of (kind, text), added on first use: ``[M3]``."""
        for tag, k, t in self.entries:
            if (k, t) == (kind, text):
                return f"[{tag}]"
        letter = {"published": "P", "measured": "M", "config": "C", "assumed": "A"}[kind]
        n = sum(1 for tag, k, _ in self.entries if k == kind) + 1
        self.entries.append((f"{letter}{n}", kind, text))
        return f"[{letter}{n}]"


def when(entry: dict) -> str:
    """The date of a recorded result, and the machine's load when the figure was taken."""
    load = entry["result"].get("load_average")
    return entry["date"] + (f", load average {load[0]:g}" if load else "")


def load_json(results: Path, name: str) -> dict:
    path = results / name
    if not path.is_file():
        raise InputMissing(f"{path} does not exist. Fix: record it: python "
                           f"benchmarks/results/record.py {RESULTS}/{name} -- <the command in "
                           f"{RESULTS}/README.md>")
    entry = json.loads(path.read_text())
    for key in ("command", "date", "result"):
        if key not in entry:
            raise FileProblem(path, f"no {key!r} key", "write it with benchmarks/results/record.py")
    return entry


def dig(entry: dict, key: str):
    """``entry["result"]`` at the dotted ``key`` (list items by index)."""
    value = entry["result"]
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def sbatch_option(path: Path, name: str) -> int:
    m = re.search(rf"^#SBATCH --{name}=(\d+)", path.read_text(), re.M)
    if not m:
        raise FileProblem(path, f"no '#SBATCH --{name}=N' line", "pass the figure as an option")
    return int(m.group(1))


# ----------------------------------------------------------------------------------------------
# formatting


def num(x: float, digits: int = 3) -> str:
    """A figure with ``digits`` significant digits, thousands separated."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 10 ** (digits - 1):
        return f"{round(x):,}"
    return f"{x:.{digits}g}"


def size(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def hours(seconds: float) -> str:
    if seconds >= 360:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 60:.2g} min" if seconds >= 60 else f"{seconds:.2g} s"


TAG = re.compile(r"\[([PMCA])(\d+)\]")
KIND_ORDER = "PMCA"


def tags(text: str) -> str:
    """The tags in ``text``, each once, in the Sources table's order."""
    found = sorted(set(TAG.findall(text)), key=lambda t: (KIND_ORDER.index(t[0]), int(t[1])))
    return "".join(f"[{k}{n}]" for k, n in found)


def mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    if head[-1] == "sources":
        rows = [r[:-1] + [tags(r[-1])] for r in rows]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


# ----------------------------------------------------------------------------------------------
# the model


@dataclass
class SetPlan:
    dataset: str
    split: str
    kind: str
    samples: float
    source_bytes: float
    lake_bytes: float
    shards: int
    cite: str


def dataset_figures(cfg: dict, src: Sources, pre: dict) -> dict:
    """Bytes per frame / mask / image of each dataset, with their tags."""
    ds, refs = cfg["datasets"], cfg["references"]
    amp1 = pre["result"]["amplification"]["1"]
    m_frame = src.cite("measured", f"{RESULTS}/preprocess.json key amplification.1."
                       "source_frame_bytes / source_frames (DAVIS-2016 release files, "
                       f"{when(pre)})")
    m_mask = src.cite("measured", f"{RESULTS}/preprocess.json key amplification.1."
                      f"source_mask_bytes / source_masks ({when(pre)})")
    davis_frame = amp1["source_frame_bytes"] / amp1["source_frames"]
    davis_mask = amp1["source_mask_bytes"] / amp1["source_masks"]
    out = {}
    for name, d in ds.items():
        f: dict = {}
        if name == "ilsvrc_vid":
            frames = sum(s["frames"]["value"] for s in d["splits"].values())
            f["frame"] = (d["archive_bytes"]["value"] / frames,
                          cite_fig(src, d["archive_bytes"], refs)
                          + "".join(cite_fig(src, s["frames"], refs)
                                    for s in d["splits"].values()))
        elif name in ("davis2016", "davis2017"):
            f["frame"], f["mask"] = (davis_frame, m_frame), (davis_mask, m_mask)
        elif name == "youtube_objects":
            f["frame"] = (d["bytes_per_frame"]["value"], cite_fig(src, d["bytes_per_frame"], refs))
            f["mask"] = (davis_mask, m_mask + src.cite(
                "assumed", "YouTube-Objects' masks stored as PNGs of DAVIS's size"))
        elif name == "msra10k":
            f["image"] = (d["bytes_per_image"]["value"], cite_fig(src, d["bytes_per_image"], refs))
        elif name in ("voc2012", "sbd"):
            voc = cfg["datasets"]["voc2012"]
            f["image"] = (voc["archive_bytes"]["value"] / voc["archive_images"]["value"],
                          cite_fig(src, voc["archive_bytes"], refs)
                          + cite_fig(src, voc["archive_images"], refs))
        out[name] = f
    return out


def cite_fig(src: Sources, fig: dict, refs: dict) -> str:
    """The tag of a figure of datasets.yaml: its reference (or its own words), published
    unless marked ``kind: assumed``."""
    ref = refs.get(fig["source"], fig["source"])
    kind = fig.get("kind", "published")
    text = ref + (f" ({fig['note']})" if fig.get("note") else "") + (
        " (approximate)" if fig.get("approx") else "")
    return src.cite(kind, text)


def plan_sets(cfg: dict, figs: dict, src: Sources, overhead: tuple[float, str], stride: int,
              shard_count: int, shard_bytes: int, c_shard: str) -> list[SetPlan]:
    refs = cfg["references"]
    plans = []
    for name, d in cfg["datasets"].items():
        f = figs[name]
        for split, s in d["splits"].items():
            cites = "".join(cite_fig(src, v, refs) for v in s.values())
            if d["kind"] == "clip":
                targets = s["annotated"]["value"] if d.get("masks") else s["frames"]["value"]
                seqs = s["sequences"]["value"]
                # every stride-th target of each sequence: about targets/k + seqs (k-1)/(2k)
                samples = targets / stride + seqs * (stride - 1) / (2 * stride)
                per = (DELTA + 1) * f["frame"][0] + (f["mask"][0] if d.get("masks") else 0)
                source = s["frames"]["value"] * f["frame"][0] + (
                    targets * f["mask"][0] if d.get("masks") else 0)
                cites += f["frame"][1] + (f["mask"][1] if d.get("masks") else "")
            else:
                samples = s["images"]["value"]
                per = f["image"][0]
                source = samples * per
                cites += f["image"][1]
            lake = samples * (per + overhead[0])
            shards = max(math.ceil(samples / shard_count), math.ceil(lake / shard_bytes))
            plans.append(SetPlan(name, split, d["kind"], samples, source, lake, shards,
                                 cites + overhead[1] + c_shard))
    return plans


@dataclass
class Phase:
    name: str
    config: str
    steps: int
    batch: int
    every: int
    workers: int
    sets: list[str]
    flops_per_step: float
    params: dict
    checkpoint_bytes: float
    checkpoint_write_s: float
    input_hw: list
    cite: dict


def load_phases(pf: dict, src: Sources) -> list[Phase]:
    out = []
    by_name = {p["phase"]: p for p in pf["result"]["phases"]}
    for name in PHASES:
        if name not in by_name or "error" in by_name[name]:
            raise FileProblem(f"{RESULTS}/preflight.json", f"phase {name!r} was not measured",
                              "record the preflight again with every phase")
        p = by_name[name]
        i = list(pf["result"]["phases"]).index(p)
        path = PHASES[name].config
        conf = yaml.safe_load((REPO / path).read_text())
        key = f"{RESULTS}/preflight.json key phases.{i}"
        cite = {
            "steps": src.cite("config", f"{path} steps"),
            "batch": src.cite("config", f"{path} batch.size (the paper's batch)"),
            "every": src.cite("config", f"{path} checkpoint.every"),
            "workers": src.cite("config", f"{path} data.num_workers"),
            "sets": src.cite("config", f"{path} data.sets"),
            "flops": src.cite("measured", f"{key}.flops_per_step (torch FLOP counter, paper "
                                          f"config, {pf['date']})"),
            "params": src.cite("measured", f"{key}.engine_parameters ({pf['date']})"),
            "ckpt": src.cite("measured", f"{key}.checkpoint_bytes ({pf['date']})"),
            "ckpt_s": src.cite("measured", f"{key}.checkpoint_write_s (local disk of the "
                                           f"measuring machine, {pf['date']})"),
        }
        if p["per_rank_batch"] != conf["batch"]["size"]:
            raise FileProblem(f"{RESULTS}/preflight.json", f"phase {name} measured at batch "
                              f"{p['per_rank_batch']}, {path} says {conf['batch']['size']}",
                              "record the preflight again on one rank")
        out.append(Phase(name, path, conf["steps"], conf["batch"]["size"],
                         conf["checkpoint"]["every"], conf["data"]["num_workers"],
                         conf["data"]["sets"], p["flops_per_step"], p["engine_parameters"],
                         p["checkpoint_bytes"], p["checkpoint_write_s"], p["input_hw"], cite))
    return out


@dataclass
class Scale:
    """One phase on N GPUs."""
    phase: Phase
    gpus: int
    global_batch: int
    steps: int
    compute_s: float
    allreduce_s: float
    loader_s: float
    step_s: float
    limited_by: str
    checkpoints: int
    checkpoint_s: float
    total_s: float
    cores_needed: float
    cores_needed_s3: float
    node_mb_s: float
    node_get_s: float
    prefix_get_s: float
    streams: int
    min_shards: int


def plan(args, phase: Phase, n: int, rate: dict, sets: dict[str, SetPlan], block: int) -> Scale:
    per_sample = phase.flops_per_step / phase.batch
    total_samples = phase.steps * phase.batch
    gb = n * phase.batch
    steps = math.ceil(total_samples / gb)
    compute = phase.batch * per_sample / (args.peak * args.mfu)
    grads = [4 * sum(phase.params[e] for e in group) for group in UPDATED[phase.name]]
    busbw = (args.busbw_intra if n <= args.gpus_per_node else args.busbw_inter) * 1e9
    allreduce = (sum(grads) / len(grads)) * 2 * (n - 1) / n / busbw if n > 1 else 0.0
    per_core = rate[phase.name]
    cores = args.loader_cores
    loader = phase.batch / (cores * per_core * args.s3_ratio)
    step = max(compute, allreduce, loader)
    limited = max((compute, "compute"), (allreduce, "all-reduce"), (loader, "loader"))[1]
    n_ckpt = math.ceil(steps / phase.every)
    ckpt_s = phase.checkpoint_bytes / (args.checkpoint_gbs * 1e9)
    total = steps * step + n_ckpt * ckpt_s
    demand = phase.batch / step                               # samples/s per GPU
    phase_sets = [sets[s] for s in phase.sets]
    samples = sum(p.samples for p in phase_sets)
    lake = sum(p.lake_bytes for p in phase_sets)
    node = demand * min(n, args.gpus_per_node)
    mb_s = node * lake / samples / 1e6
    # requests per sample of each set: one HEAD per shard opened, one GET per read-ahead block;
    # the sets are read in proportion to their samples
    requests = [(p.samples / samples) * (1 + math.ceil(p.lake_bytes / p.shards / block))
                / (p.samples / p.shards) for p in phase_sets]
    get_s = node * sum(requests)
    busiest = demand * n * max(requests)
    return Scale(phase, n, gb, steps, compute, allreduce, loader, step, limited, n_ckpt, ckpt_s,
                 total, phase.batch / compute / per_core,
                 phase.batch / compute / (per_core * args.s3_ratio), mb_s, get_s, busiest,
                 n * phase.workers, min(p.shards for p in phase_sets))


# ----------------------------------------------------------------------------------------------
# the document


RESPONSES = {
    "loader cores": "config knobs: `data.num_workers` (DataLoader processes per rank) and "
                    "`data.decode_device: cuda` (JPEG bytes decoded on the GPU, flip-only presets "
                    "such as TCB pretraining's; built and tested on the CPU, not measured on a "
                    "GPU); more CPU cores per GPU in `launch/slurm/train.sbatch`",
    "S3 request rate": "config knob: larger shards (`preprocess.py --shard-max-count/--shard-max-"
                       "bytes`: fewer shard opens per sample); each set is its own prefix "
                       "(`<lake>/<dataset>/<split>/`); the 8 MiB read-ahead block is fixed in "
                       "`pipeline/lake/store.py` (a knob for it: not done)",
    "shard count per stream": "documented limit, handled: a set with fewer shards than ranks x "
                              "workers is shared whole by every stream, each with its own seed "
                              "(README \"Loading\"); the exact pass raises NotEnoughShardsError "
                              "with the fix; knob: `preprocess.py --shard-max-count` (more, "
                              "smaller shards)",
    "checkpoint bandwidth": "config knobs: `checkpoint.every`, `checkpoint.keep_last`; rank 0 "
                            "alone writes `shared.pt` (DDP state is the same on every rank); "
                            "`dist.engine=deepspeed` saves ZeRO-partitioned state from every "
                            "rank; asynchronous checkpoint writes: not done",
    "all-reduce": "config knobs: `batch.micro_size` with gradient accumulation (one all-reduce per "
                  "global step, `no_sync` on the others), a larger per-GPU `batch.size`, "
                  "`dist.engine=deepspeed dist.zero_stage=2`; gradient compression and bf16 "
                  "gradient all-reduce: not done",
    "compute": "nothing to fix: the GPUs are the limit (MFU: `dist.precision=bf16`, "
               "`dist.channels_last=true`, `dist.compile=true`)",
}


def limits(s: Scale, args) -> dict[str, float]:
    """Each candidate bottleneck as demand / limit (> 1: it binds)."""
    return {
        "loader cores": s.cores_needed_s3 / args.loader_cores,
        "S3 request rate": s.prefix_get_s / args.s3_get_limit,
        "shard count per stream": s.streams / s.min_shards,
        "checkpoint bandwidth": (s.checkpoint_s / (min(s.phase.every, s.steps) * s.step_s)
                                 / args.checkpoint_budget),
        "all-reduce": s.allreduce_s / s.compute_s,
    }


def render(args, src: Sources, cfg: dict, entries: dict, sets: list[SetPlan],
           phases: list[Phase], rate: dict, rate_cite: dict, scales: dict, c: dict) -> str:
    L = ["# Capacity plan: the paper's recipe on N GPUs", "",
         f"Generated by `{REGENERATE}` from the figures it names; do not edit by hand "
         "(`tests/unit/test_capacity_plan.py` fails when this file is stale). Every figure "
         "cites its sources in brackets, listed under [Sources](#sources): **P** published "
         "(`benchmarks/results/datasets.yaml`), **M** measured (a benchmark's or the "
         "preflight's JSON in `benchmarks/results/`, with the command and date that produced "
         "it), **C** the project's configs and scripts, **A** assumed (an option of the "
         "script: rerun it with your cluster's figures, e.g. `--gpu a100 --mfu 0.3 "
         "--busbw-inter 25`). Figures derived from others cite those.", "",
         f"The CPU figures were measured on a {c['cpu_count']}-core CPU VM shared with other "
         f"work (each JSON holds its load average) {c['cpu_cite']}; the GPU is not measured: "
         "its time is the FLOPs the "
         "preflight counted at the paper's configs divided by the GPU's dense peak times an "
         "assumed MFU. On a GPU cluster, record the preflight there "
         "(`torchrun --nproc_per_node=8 launch/preflight.py`, README \"Before a long run\") and "
         "pass its MFU and all-reduce bus bandwidth.", ""]

    L += ["## Inputs", ""]
    rows = [["GPU", f"{args.gpu}, {args.precision} dense peak {num(args.peak / 1e12)} TFLOP/s",
             c["peak"]],
            ["MFU", f"{args.mfu:g}", c["mfu"]],
            ["GPUs per node", str(args.gpus_per_node), c["gpn"]],
            ["CPU cores per GPU for the loader", f"{args.loader_cores:g}", c["cores"]],
            ["all-reduce bus bandwidth, within a node / across nodes",
             f"{args.busbw_intra:g} / {args.busbw_inter:g} GB/s", c["busbw"]],
            ["checkpoint write bandwidth (rank 0 to shared storage)",
             f"{args.checkpoint_gbs:g} GB/s", c["ckpt_bw"]],
            ["checkpoint time budget", f"{100 * args.checkpoint_budget:g}% of the time between "
             "checkpoints", c["ckpt_budget"]],
            ["S3 GET/HEAD requests per second per prefix", num(args.s3_get_limit), c["s3_limit"]],
            ["S3 read-ahead block", mib(c["block"]), c["block_cite"]],
            ["loader throughput from S3 / local disk", f"{args.s3_ratio:.2f}", c["s3_ratio"]],
            ["lake: delta, clip stride", f"{DELTA}, {args.clip_stride}", c["stride"]],
            ["shard limits", f"{c['shard_count']} samples, {mib(c['shard_bytes'])}",
             c["shard"]],
            ["shared filesystem bandwidth (preprocessing: sources read, shards written)",
             f"{args.fs_gbs:g} GB/s", c["fs"]],
            ["tar headers and json per sample", f"{num(c['overhead'])} bytes", c["overhead_cite"]]]
    L += table(["input", "value", "sources"], rows)

    L += ["## 1. The lake: bytes and shards per dataset", "",
          f"At delta {DELTA} and clip stride {args.clip_stride}: one clip per annotated frame "
          "(every frame for VID, which has no masks), each holding 5 JPEGs (+ the mask); image "
          "sets one sample per image. Shards: whichever of the job's two limits comes first "
          + c["stride"] + c["shard"] + ".", ""]
    rows = []
    for p in sets:
        rows.append([f"{p.dataset}/{p.split}", p.kind, num(p.samples), size(p.source_bytes),
                     size(p.lake_bytes), f"{p.lake_bytes / p.source_bytes:.2f}x", num(p.shards),
                     p.cite])
    tot = [p for p in sets if p.dataset != "sbd"]
    rows.append(["**all but SBD**", "", num(sum(p.samples for p in tot)),
                 size(sum(p.source_bytes for p in tot)), size(sum(p.lake_bytes for p in tot)),
                 "", num(sum(p.shards for p in tot)), "".join(sorted({p.cite for p in tot}))])
    L += table(["set", "kind", "samples", "source", "lake", "lake/source", "shards", "sources"],
               rows)
    note_sbd = cfg["datasets"]["sbd"]["paper_images"]
    vid_fig = cfg["datasets"]["ilsvrc_vid"]
    L += ["- VID's bytes per frame are the archive's size over the train and val frames "
          + tags(cite_fig(src, vid_fig["archive_bytes"], cfg["references"])
                 + "".join(cite_fig(src, x["frames"], cfg["references"])
                           for x in vid_fig["splits"].values()))
          + ": an upper bound, since the archive also holds the test split and the mp4 "
          "snippets; the lake is at most that.",
          f"- The paper's \"PASCAL VOC 2012 ... {note_sbd['value']:,} images\" is SBD's count "
          f"{cite_fig(src, note_sbd, cfg['references'])}; the pipeline reads VOC 2012's "
          "segmentation lists (`voc2012/train`): the SBD rows size what reading it would "
          "add (a reader for it: not done).", ""]
    amp = entries["preprocess"]["result"]["amplification"]
    rows = [[str(a["clip_stride"]), f"{a['amplification']:.3f}x", f"{a['frame_amplification']:.3f}x",
             src.cite("measured", f"{RESULTS}/preprocess.json key amplification.{k} "
                                  f"({when(entries['preprocess'])})")] for k, a in amp.items()]
    L += ["Lake amplification measured on the DAVIS-2016 release's files (the job's own plan) "
          + tags("".join(r[-1] for r in rows)) + ":", ""]
    L += table(["clip stride", "lake / source bytes", "frames only", "sources"], rows)
    rows = []
    for k in amp:
        stride_sets = [p for p in plan_sets(cfg, c["figs"], src, (c["overhead"], c["overhead_cite"]),
                                            int(k), c["shard_count"], c["shard_bytes"], c["shard"])
                       if p.dataset == "ilsvrc_vid"]
        rows.append([k, num(sum(p.samples for p in stride_sets)),
                     size(sum(p.lake_bytes for p in stride_sets)),
                     num(sum(p.shards for p in stride_sets)),
                     "".join(sorted({p.cite for p in stride_sets}))])
    L += ["ILSVRC2015 VID (train + val) at each clip stride (`preprocess.py --clip-stride`) "
          + tags("".join(r[-1] for r in rows)) + ":", ""]
    L += table(["clip stride", "clips", "lake", "shards", "sources"], rows)

    L += [f"## 2. Preprocessing: core-hours and wall time of a {args.tasks}-task array", ""]
    w1, w2 = c["w1"], c["w2"]
    linear = src.cite("assumed", "the job's rate grows in proportion to its workers (one per "
                                 "core of the task)")
    L += [f"Written MB/s per core: {num(w1)} {c['w1_cite']} (with 2 workers {num(w2)} "
          f"{c['w2_cite']}, on the measuring machine's {c['cpu_count']} shared cores "
          f"{c['cpu_cite']}); a task of {args.cores_per_task} cores {c['cpt']} is taken to "
          f"write {args.cores_per_task} times that {linear}. Measured with the sources in the "
          "page cache and the shards written to local disk: on a cluster the shared filesystem "
          "(or object store) bounds the wall time, hence the larger of the two columns.", ""]
    rows = []
    per_task = w1 * 1e6 * args.cores_per_task
    for p in sets:
        core_h = p.lake_bytes / (w1 * 1e6) / 3600
        used = min(args.tasks, p.shards)
        cpu = math.ceil(p.shards / args.tasks) * (p.lake_bytes / p.shards) / per_task
        io = (p.source_bytes + p.lake_bytes) / (args.fs_gbs * 1e9)
        rows.append([f"{p.dataset}/{p.split}", size(p.lake_bytes), num(core_h, 3),
                     f"{used} of {args.tasks}", hours(cpu), hours(io),
                     p.cite + c["w1_cite"] + c["cpt"] + linear + c["tasks"] + c["fs"]])
    L += table(["set", "lake", "core-hours", "tasks with work", "wall time, CPU-bound",
                "wall time, storage-bound", "sources"], rows)

    sets_by = {f"{p.dataset}/{p.split}": p for p in sets}
    by_phase = {ph.name: ph for ph in phases}
    L += ["## 3. Training: per phase, on 1 GPU and on N", ""]
    rows = []
    for ph in phases:
        per = ph.flops_per_step / ph.batch
        gpu_h = ph.steps * ph.batch * per / (args.peak * args.mfu) / 3600
        grads = " / ".join(size(4 * sum(ph.params[e] for e in g)) for g in UPDATED[ph.name])
        rows.append([PHASE_TITLES[ph.name], f"`{ph.config}`", ", ".join(ph.sets),
                     num(ph.steps), str(ph.batch), "x".join(map(str, ph.input_hw)),
                     num(per / 1e9) + " GFLOP", grads,
                     f"{size(ph.checkpoint_bytes)} ({ph.checkpoint_write_s:.2g} s here)",
                     num(gpu_h, 3),
                     ph.cite["sets"] + ph.cite["steps"] + ph.cite["batch"] + ph.cite["flops"]
                     + ph.cite["params"] + ph.cite["ckpt"] + ph.cite["ckpt_s"] + c["peak"]
                     + c["mfu"]])
    L += ["Gradients per step: 4 bytes per parameter of the models a step updates (a TCB round "
          "/ an SSB round) " + c["fp32"] + ". The offline phase's FLOPs are the mean of a TCB "
          "step and an SSB step " + by_phase["alternating"].cite["flops"] + ". GPU-hours: the recipe's steps "
          "x batch samples at the FLOPs per sample, the peak and the MFU, nothing else.", ""]
    L += table(["phase", "config", "data", "steps", "batch", "input", "FLOPs per sample",
                "gradients per step", "checkpoint", "GPU-hours", "sources"], rows)
    L += ["Loader throughput per CPU core (one process, one thread):", ""]
    rows = [[PHASE_TITLES[k], f"{num(v)} samples/s", "not measured (no GPU)", rate_cite[k]]
            for k, v in rate.items()]
    L += table(["phase data", "CPU decode", "GPU decode (`data.decode_device: cuda`)",
                "sources"], rows)
    for ph in phases:
        L += [f"### {PHASE_TITLES[ph.name]}", ""]
        rows = []
        for n in args.gpus:
            s = scales[(ph.name, n)]
            base = (ph.cite["steps"] + ph.cite["batch"] + ph.cite["flops"] + c["peak"] + c["mfu"])
            rows.append([str(n), num(s.global_batch), num(s.steps), f"{1e3 * s.compute_s:.3g}",
                         f"{1e3 * s.allreduce_s:.3g}", f"{1e3 * s.loader_s:.3g}",
                         s.limited_by, f"{s.checkpoints} x {s.checkpoint_s:.2g} s",
                         hours(s.total_s), f"{s.cores_needed:.2g} / {s.cores_needed_s3:.2g}",
                         f"{num(s.node_mb_s)} MB/s, {num(s.node_get_s)} GET/s",
                         base + ph.cite["params"] + c["busbw"] + rate_cite[ph.name] + c["cores"]
                         + c["s3_ratio"] + ph.cite["ckpt"] + ph.cite["every"] + c["ckpt_bw"]
                         + c["block_cite"] + c["gpn"]
                         + "".join(sorted({sets_by[x].cite for x in ph.sets}))])
        L += table(["GPUs", "global batch", "steps", "compute ms/step", "all-reduce ms/step",
                    "loader ms/step (S3)", "step limited by", "checkpoints", "wall time",
                    "loader cores per GPU (local / S3)", "S3 per node", "sources"], rows)
    L += ["- The global batch is the paper's per-GPU batch times N (the same samples in all; "
          "`batch.size`): the paper trains on one GPU, and the learning rates at a larger batch "
          "are not studied (a documented limit: README \"Training\").",
          "- Step time = the largest of compute, all-reduce (assumed fully overlapped with the "
          "backward pass) and the loader; start-up, compilation and evaluation are not counted.",
          ""]

    L += ["## 4. What breaks first at " + ", ".join(str(g) for g in args.gpus if g > 1)
          + " GPUs", "",
          "Each candidate as demand / limit (more than one: it binds): loader cores needed from S3 / "
          "cores per GPU; the busiest prefix's S3 requests / the per-prefix limit; loader "
          "streams (GPUs x `data.num_workers`) / shards of the phase's smallest set; checkpoint "
          "time / the budget between checkpoints; all-reduce / compute time per step.", ""]
    rows = []
    for n in (g for g in args.gpus if g > 1):
        for ph in phases:
            s = scales[(ph.name, n)]
            lim = limits(s, args)
            ranked = sorted(lim, key=lambda k: -lim[k])
            cells = [f"{lim[k]:.2g}" for k in RESPONSES if k != "compute"]
            binding = [k for k in ranked if lim[k] > 1]
            verdict = (", then ".join(binding) if binding
                       else f"none (nearest: {ranked[0]})")
            rows.append([str(n), PHASE_TITLES[ph.name], *cells, f"**{verdict}**",
                         ph.cite["workers"] + rate_cite[ph.name] + c["cores"] + c["s3_limit"]
                         + c["ckpt_budget"] + c["busbw"] + ph.cite["flops"] + c["mfu"]])
    L += table(["GPUs", "phase", "loader cores", "S3 requests", "shards per stream",
                "checkpoint", "all-reduce", "binding (the first named first)", "sources"], rows)
    L += ["What the pipeline does about each:", ""]
    where = {"loader cores": src.cite("config", "pipeline/loading/loader.py make_loader, "
                                                "pipeline/loading/device_decode.py"),
             "S3 request rate": c["block_cite"],
             "shard count per stream": src.cite("config", "pipeline/lake/listing.py "
                                                          "assign_shards, NotEnoughShardsError"),
             "checkpoint bandwidth": src.cite("config", "pipeline/train/checkpoint/manager.py "
                                                        "CheckpointManager.save"),
             "all-reduce": src.cite("config", "pipeline/train/loop.py run_step (no_sync on all "
                                              "but the last micro-batch)"),
             "compute": c["mfu"]}
    L += table(["bottleneck", "config knob, documented limit, or not done", "sources"],
               [[k, v, where[k]] for k, v in RESPONSES.items()])

    L += ["## Sources", ""]
    order = sorted(src.entries, key=lambda e: (KIND_ORDER.index(e[0][0]), int(e[0][1:])))
    L += table(["tag", "kind", "source"], [[t, k, s] for t, k, s in order])
    return "\n".join(L).rstrip() + "\n"


# ----------------------------------------------------------------------------------------------


def build(args) -> str:
    results = REPO / args.results
    if not (results / "datasets.yaml").is_file():
        raise InputMissing(f"{results / 'datasets.yaml'} does not exist. Fix: pass --results, "
                           f"the folder holding the plan's inputs (default {RESULTS})")
    cfg = yaml.safe_load((results / "datasets.yaml").read_text())
    entries = {n: load_json(results, f"{n}.json")
               for n in ("preprocess", "loader", "s3", "preflight")}
    src = Sources()
    peak, peak_what = peak_flops(args.gpu, args.precision)
    if peak is None:
        raise FileProblem("pipeline/preflight/peaks.py", peak_what,
                          "pass --gpu with a name in its table (e.g. 'h100 sxm', a100)")
    args.peak = peak
    pre, ld, s3 = entries["preprocess"], entries["loader"], entries["s3"]
    store = (REPO / "pipeline/lake/store.py").read_text()
    block = int(re.search(r"block_size=(\d+) << 20", store).group(1)) << 20
    train_sbatch = REPO / "launch/slurm/train.sbatch"
    pre_sbatch = REPO / "launch/slurm/preprocess.sbatch"
    if args.loader_cores is None:
        args.loader_cores = (sbatch_option(train_sbatch, "cpus-per-task")
                             / sbatch_option(train_sbatch, "gpus-per-node")) - 1
        cores_cite = src.cite("config", "launch/slurm/train.sbatch --cpus-per-task / "
                                        "--gpus-per-node, less one core for the training process")
    else:
        cores_cite = src.cite("assumed", "--loader-cores")
    if args.cores_per_task is None:
        args.cores_per_task = sbatch_option(pre_sbatch, "cpus-per-task")
        cpt = src.cite("config", "launch/slurm/preprocess.sbatch --cpus-per-task (the job's "
                                 "--workers)")
    else:
        cpt = src.cite("assumed", "--cores-per-task")
    if args.s3_ratio is None:
        args.s3_ratio = s3["result"]["ratio_s3_to_local"]
        s3_ratio = src.cite("measured", f"{RESULTS}/s3.json key ratio_s3_to_local (moto on "
                                        f"loopback, {when(s3)})")
    else:
        s3_ratio = src.cite("assumed", "--s3-ratio")
    c = {
        "peak": src.cite("published", f"pipeline/preflight/peaks.py: {peak_what} (vendor "
                                      "datasheet; --gpu, --precision)"),
        "mfu": src.cite("assumed", "--mfu: model FLOPs utilisation of a ResNet-101 convnet in "
                                   "bf16 (not measured: no GPU)"),
        "gpn": src.cite("assumed", "--gpus-per-node"),
        "cores": cores_cite, "cpt": cpt, "s3_ratio": s3_ratio,
        "busbw": src.cite("assumed", "--busbw-intra (NVLink), --busbw-inter (InfiniBand); "
                                     "the preflight measures both on a cluster"),
        "ckpt_bw": src.cite("assumed", "--checkpoint-gbs"),
        "ckpt_budget": src.cite("assumed", "--checkpoint-budget"),
        "s3_limit": src.cite("published", "AWS S3 user guide, 'Best practices design patterns: "
                                          "optimizing Amazon S3 performance' (5,500 GET/HEAD "
                                          "per second per partitioned prefix; --s3-get-limit)"),
        "block": block,
        "block_cite": src.cite("config", "pipeline/lake/store.py open_read: block_size "
                                         "(s3fs read-ahead)"),
        "stride": src.cite("config", "pipeline/lake/plan.py, PreprocessConfig.delta; "
                                     "--clip-stride"),
        "shard_count": PreprocessConfig.shard_max_count,
        "shard_bytes": PreprocessConfig.shard_max_bytes,
        "shard": src.cite("config", "pipeline/lake/preprocess.py PreprocessConfig "
                                    "shard_max_count, shard_max_bytes (the job's defaults)"),
        "tasks": src.cite("assumed", "--tasks (the SLURM array's size)"),
        "fp32": src.cite("config", "pipeline/core/dist.py autocast: dist.precision=bf16 computes "
                                   "in bf16, parameters and their gradients stay fp32"),
        "fs": src.cite("assumed", "--fs-gbs: aggregate bandwidth of the storage the array "
                                  "reads the sources from and writes the lake to"),
        "overhead": pre["result"]["lake"]["overhead_bytes_per_sample"],
        "overhead_cite": src.cite("measured", f"{RESULTS}/preprocess.json key lake."
                                              f"overhead_bytes_per_sample ({when(pre)})"),
        "cpu_count": ld["result"]["cpu_count"],
        "cpu_cite": src.cite("measured", f"{RESULTS}/loader.json key cpu_count ({when(ld)})"),
        "w1": pre["result"]["results"]["preprocess w=1"]["written_mb_per_s"],
        "w1_cite": src.cite("measured", f"{RESULTS}/preprocess.json key results.preprocess "
                                        f"w=1.written_mb_per_s ({when(pre)})"),
        "w2": pre["result"]["results"]["preprocess w=2"]["written_mb_per_s"],
        "w2_cite": src.cite("measured", f"{RESULTS}/preprocess.json key results.preprocess "
                                        f"w=2.written_mb_per_s ({when(pre)})"),
    }
    c["figs"] = dataset_figures(cfg, src, pre)
    sets = plan_sets(cfg, c["figs"], src, (c["overhead"], c["overhead_cite"]), args.clip_stride,
                     c["shard_count"], c["shard_bytes"], c["shard"])
    phases = load_phases(entries["preflight"], src)

    # loader samples/s per core, per phase's data
    frames = ld["result"]["clips_per_s"]["loader-frames"]["best"]
    masks = ld["result"]["clips_per_s"]["loader"]["best"]
    m_frames = src.cite("measured", f"{RESULTS}/loader.json key clips_per_s.loader-frames.best "
                                    f"(854x480 clips, 1 core, {when(ld)})")
    m_masks = src.cite("measured", f"{RESULTS}/loader.json key clips_per_s.loader.best "
                                   f"(854x480 clips with masks, 1 core, {when(ld)})")
    w, h = cfg["datasets"]["ilsvrc_vid"]["frame_pixels"]["value"]
    vid_factor = (w * h) / (854 * 480)
    a_vid = src.cite("assumed", f"decode time in proportion to pixels: VID's {w}x{h} frames "
                                f"{vid_factor:.2f}x DAVIS's 854x480 (the resize to 480x854 "
                                "not counted)")
    mask_s = 1 / masks - 1 / frames
    rate = {"gan": frames / vid_factor,
            "segmentation": 1 / (1 / (5 * frames) + mask_s),
            "alternating": masks}
    rate_cite = {"gan": m_frames + a_vid + cite_fig(src, cfg["datasets"]["ilsvrc_vid"]
                                                    ["frame_pixels"], cfg["references"]),
                 "segmentation": m_frames + m_masks + src.cite(
                     "assumed", "an image sample costs a fifth of a clip's frames plus its "
                                "mask (source images no larger than 854x480); rotation not "
                                "counted"),
                 "alternating": m_masks + src.cite(
                     "assumed", "the offline preset's rotation and rescale not counted")}
    by_name = {f"{p.dataset}/{p.split}": p for p in sets}
    for ph in phases:
        for name in ph.sets:
            if name not in by_name:
                raise FileProblem(results / "datasets.yaml", f"no split {name} (read by "
                                  f"{ph.config})", "add its published sizes")
    scales = {(ph.name, n): plan(args, ph, n, rate, by_name, block)
              for ph in phases for n in args.gpus}
    return render(args, src, cfg, entries, sets, phases, rate, rate_cite, scales, c)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=OUT, help=f"the document (default {OUT}; '-' for stdout)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when --out differs from what would be written")
    p.add_argument("--results", default=RESULTS, help="the folder of the inputs")
    p.add_argument("--gpus", type=lambda s: [int(x) for x in s.split(",")],
                   default=[1, 8, 64, 512], help="GPU counts planned (default 1,8,64,512)")
    p.add_argument("--gpu", default="h100 sxm",
                   help="a device of pipeline/preflight/peaks.py (default 'h100 sxm')")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--mfu", type=float, default=0.35, help="assumed MFU (default 0.35)")
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--loader-cores", type=float, default=None,
                   help="CPU cores per GPU for the loader (default: launch/slurm/train.sbatch's "
                        "CPUs per GPU, less one)")
    p.add_argument("--busbw-intra", type=float, default=350.0,
                   help="all-reduce bus bandwidth within a node, GB/s (default 350: NVLink)")
    p.add_argument("--busbw-inter", type=float, default=40.0,
                   help="across nodes, GB/s (default 40: one 400 Gb/s InfiniBand link per GPU)")
    p.add_argument("--checkpoint-gbs", type=float, default=1.0,
                   help="GB/s rank 0 writes a checkpoint at (default 1: a shared filesystem)")
    p.add_argument("--checkpoint-budget", type=float, default=0.05,
                   help="share of the time between checkpoints they may take (default 0.05)")
    p.add_argument("--s3-get-limit", type=float, default=5500.0,
                   help="GET/HEAD requests per second per prefix (default 5500: AWS S3)")
    p.add_argument("--s3-ratio", type=float, default=None,
                   help="loader rate from S3 / from local disk (default: measured, s3.json)")
    p.add_argument("--clip-stride", type=int, default=1)
    p.add_argument("--tasks", type=int, default=64, help="SLURM array tasks (default 64)")
    p.add_argument("--fs-gbs", type=float, default=10.0,
                   help="aggregate GB/s of the storage preprocessing reads and writes (default 10)")
    p.add_argument("--cores-per-task", type=int, default=None,
                   help="cores per array task (default: launch/slurm/preprocess.sbatch's)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        text = build(args)
    except PipelineError as e:
        print(f"capacity_plan: {e}", file=sys.stderr)
        return e.exit_status
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    out = REPO / args.out if not Path(args.out).is_absolute() else Path(args.out)
    if args.check:
        if not out.is_file() or out.read_text() != text:
            print(f"{args.out} is stale: regenerate it with `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
