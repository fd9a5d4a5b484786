"""The capacity plan from its inputs: the published sizes (``datasets.yaml``) and the recorded
results of the results folder, the configs, the SLURM scripts and the job's defaults, and the
options (the assumptions) -> the document's text (:func:`build`)."""

from __future__ import annotations

import re

import yaml

from pipeline.core.errors import FileProblem, InputMissing
from pipeline.lake.preprocess import PreprocessConfig
from pipeline.preflight.peaks import peak_flops

from .document import render
from .model import dataset_figures, load_phases, plan, plan_sets
from .sources import cite_fig, load_json, REPO, RESULTS, sbatch_option, Sources, when


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
