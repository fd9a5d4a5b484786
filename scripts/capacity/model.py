"""The capacity plan's model: lake samples, bytes and shards per dataset split
(:func:`plan_sets`), each training phase as the preflight measured it (:func:`load_phases`), and
a phase on N GPUs (:func:`plan`): step time as the largest of compute, all-reduce and the loader,
checkpoints, loader cores, S3 traffic, and each candidate bottleneck as demand / limit
(:func:`limits`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import yaml

from pipeline.core.errors import FileProblem
from pipeline.train.registry import PHASES

from .sources import cite_fig, REPO, RESULTS, Sources, when

DELTA = 4
# engines whose gradients a step all-reduces (the phase modules: pipeline/train/phases/)
UPDATED = {"gan": [("G", "D")], "segmentation": [("SSB",)], "alternating": [("G", "D"), ("SSB",)]}


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
