"""The whole pipeline on the embedded default (``launch/demo.py``, the README's first command):

generated data in the official layouts -> data lake -> GAN pretraining of the TCB -> SSB
pretraining -> alternating offline training -> online tuning (lucid dreaming) + segmentation of
DAVIS-2016 val -> evaluation (J, F, T) -> the same online tuning from a random model (does the
offline training help?), all with the tiny model on the CPU, tracked in a local
MLflow store under one pipeline run. Each phase is the code a user launches by hand
(``launch/pretrain_tcb.py`` ... ``launch/segment.py``); each phase after the first starts from
the previous phases' *registered models* (``models:/stcnn-tcb@demo`` ...), as a user picks
them in the MLflow UI.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Literal

from pipeline.core.atomic import atomic_write_text
from pipeline.core.config import to_dict
from pipeline.jobs.main import LakeConfig, LoaderCheckConfig, MainConfig, SampleDataConfig, run_main
from pipeline.tracking import Tracker, TrackingConfig, environment_info, git_info, ui_hint
from pipeline.train.weights import load_weights, save_random_weights
from pipeline.train.config import load_train_config, override_train_config
from pipeline.train.registry import by_name
from pipeline.train.runner import run_config
from pipeline.jobs.segment import SegmentConfig, run_segment
from pipeline.train.optim import OptimConfig
from pipeline.inference.tuning import OnlineConfig

TRAIN_DATASETS = ["davis2016", "msra10k", "voc2012", "ilsvrc_vid"]


@dataclasses.dataclass
class PhaseSteps:
    gan: int = 30
    segmentation: int = 500
    alternating: int = 40


@dataclasses.dataclass
class DemoSegmentConfig:
    iterations: int = 60           # online tuning steps per object (paper: 400)
    dreams: int = 20
    size: list[int] | None = None  # [H, W]; None: the generated videos' size
    # the tiny model has no ImageNet start and little offline training: Adam fits it in tens of
    # steps where the paper's SGD at 1e-4 (for a fully trained STCNN) would need thousands
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = 1e-3


@dataclasses.dataclass
class DemoConfig:
    out: Path = Path("runs/demo")
    datasets: list[str] = dataclasses.field(default_factory=lambda: list(TRAIN_DATASETS))
    sample_data: SampleDataConfig = dataclasses.field(default_factory=lambda: SampleDataConfig(
        size=(64, 48), sequences=5, frames=12, images=32))
    lake: LakeConfig = dataclasses.field(default_factory=lambda: LakeConfig(shard_max_count=6))
    steps: PhaseSteps = dataclasses.field(default_factory=PhaseSteps)
    # [H, W] the training phases' samples are resized to; None: the generated frames' size, the
    # size the val videos are tuned and segmented at (a tiny CNN learns objects at one scale)
    train_size: list[int] | None = None
    segment: DemoSegmentConfig = dataclasses.field(default_factory=DemoSegmentConfig)
    alias: str = "demo"
    experiment: str = "stcnn-demo"


def _stage(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _segment_config(cfg: DemoConfig, checkpoint: str, results: Path, out: Path, run_name: str):
    return SegmentConfig(
        checkpoint=checkpoint, out=str(results), davis_root=str(out / "sources" / "davis2016"),
        year=2016, split="val", print_table=False,
        online=OnlineConfig(iterations=cfg.segment.iterations, dreams=cfg.segment.dreams,
                            size=cfg.segment.size,
                            optim=OptimConfig(name=cfg.segment.optimizer, lr=cfg.segment.lr,
                                              momentum=0.9, weight_decay=5e-4)),
        tracking=TrackingConfig(experiment=cfg.experiment, run_name=run_name))


def compare_offline(trained: dict, online_only: dict, cfg: DemoConfig,
                    margin: float = 0.05) -> dict:
    """The demo's final verdict: does its offline training beat the same online tuning from a
    random model on its own val data? ``trained`` and ``online_only`` are segment summaries."""
    a = trained.get("evaluation", {}).get("metrics", {})
    b = online_only.get("evaluation", {}).get("metrics", {})
    rows = [(k, a.get(k, float("nan")), b.get(k, float("nan"))) for k in ("J-Mean", "F-Mean")]
    d = rows[0][1] - rows[0][2]
    helps = d >= margin
    lines = ["offline training vs online tuning alone (same online tuning from a random model):",
             f"  {'':<8}{'offline + online':>18}{'online only':>14}{'difference':>12}"]
    lines += [f"  {k:<8}{x:>18.3f}{y:>14.3f}{x - y:>+12.3f}" for k, x, y in rows]
    budget = (f"{cfg.steps.gan}/{cfg.steps.segmentation}/{cfg.steps.alternating} steps of the "
              f"tiny model on generated {cfg.sample_data.size[0]}x{cfg.sample_data.size[1]} data")
    if helps:
        lines.append(f"  offline training helps here: J {d:+.3f} ({budget}).")
    else:
        lines.append(f"  offline training does NOT visibly help here (J {d:+.3f}, want >= "
                     f"+{margin}): the demo's budget ({budget}) is too small for that. The "
                     "real-video benchmark, benchmarks/accuracy_proxy.py (README \"Does it "
                     "learn?\"), measures what each phase adds.")
    return {"J_offline": rows[0][1], "J_online_only": rows[0][2], "F_offline": rows[1][1],
            "F_online_only": rows[1][2], "J_difference": d, "helps": helps, "margin": margin,
            "text": "\n".join(lines)}


def run_demo(cfg: DemoConfig) -> dict:
    out = Path(cfg.out).resolve()
    report: dict = {"config": to_dict(cfg), "seconds": {}}
    t = time.perf_counter()
    data = run_main(MainConfig(out=out, datasets=list(cfg.datasets), sample_data=cfg.sample_data,
                               lake=cfg.lake, loader=LoaderCheckConfig(batches=1)))
    if not data["ok"]:
        raise RuntimeError(f"the data lake has problems: {data['validation_errors']}")
    report["seconds"]["data"] = round(time.perf_counter() - t, 1)
    lake = out / "shards"

    # one pipeline run; every phase nests under it and uses its store
    tracking = TrackingConfig(experiment=cfg.experiment, run_name="pipeline")
    pipeline_run = Tracker(tracking, phase="pipeline", run_dir=out, default_store=out)
    pipeline_run.start({"demo": to_dict(cfg)}, {"phase": "pipeline", **environment_info(1, "cpu"),
                                                 **git_info()})
    saved_env = {k: os.environ.get(k) for k in ("STCNN_PARENT_RUN_ID", "MLFLOW_TRACKING_URI")}
    os.environ.update(pipeline_run.child_env())
    try:
        w, h = cfg.sample_data.size
        common = {"data.lake": str(lake), "tracking.experiment": cfg.experiment,
                  "tracking.alias": cfg.alias, "log.every": 10, "checkpoint.every": 1000,
                  "data.augment.size": list(cfg.train_size or (h, w))}
        rounds = max(1, cfg.steps.alternating // 4)
        extra = {"alternating": {
            "init_missing": "error",
            "init_from": [f"models:/stcnn-tcb@{cfg.alias}", f"models:/stcnn-ssb@{cfg.alias}"],
            "alternating.tcb_steps": rounds, "alternating.ssb_steps": rounds}}
        report["phases"] = {}
        for i, phase in enumerate(("gan", "segmentation", "alternating"), start=1):
            spec = by_name(phase)
            name, steps = spec.command, getattr(cfg.steps, phase)
            t = _stage(f"training {i}/3: {name} ({phase}, {steps} steps)")
            phase_cfg = load_train_config(spec.config_class, spec.tiny_config, [])
            s = run_config(phase, override_train_config(phase_cfg, common | {
                "run_dir": str(out / "train" / name), "steps": steps} | extra.get(phase, {})))
            report["phases"][name] = {k: s[k] for k in ("steps", "weights", "mlflow_run_id",
                                                        "samples_per_s", "last_metrics")}
            report["seconds"][name] = round(time.perf_counter() - t, 1)

        t = _stage("online tuning (lucid dreams of the first frame) + segmentation + evaluation")
        seg = run_segment(_segment_config(cfg, f"models:/stcnn@{cfg.alias}", out / "results",
                                          out, "segment"))
        report["segment"] = seg
        report["seconds"]["segment"] = round(time.perf_counter() - t, 1)

        # does offline training help? the same online tuning from a random model of the same
        # config (the online-only baseline of benchmarks/accuracy_proxy.py)
        t = _stage("the same online tuning from a randomly initialised model (online only)")
        trained = Path(report["phases"]["train_offline"]["weights"])
        rand = save_random_weights(out / "random_weights.pt",
                                   load_weights(trained)["model_config"])
        base = run_segment(_segment_config(cfg, str(rand), out / "results_online_only", out,
                                           "segment-online-only"))
        report["online_only"] = base
        report["seconds"]["online_only"] = round(time.perf_counter() - t, 1)
        report["offline_vs_online_only"] = compare_offline(seg, base, cfg)
        ev = seg.get("evaluation", {}).get("metrics", {})
        ev_base = base.get("evaluation", {}).get("metrics", {})
        pipeline_run.log_metrics({f"eval/{k}": v for k, v in ev.items() if v == v}
                                 | {f"eval_online_only/{k}": v for k, v in ev_base.items()
                                    if v == v}, step=0)
        pipeline_run.end("FINISHED")
    except BaseException:
        pipeline_run.end("FAILED")
        raise
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    report["mlflow"] = {"tracking_uri": pipeline_run.tracking_uri, "run_id": pipeline_run.run_id}
    atomic_write_text(out / "summary.json", json.dumps(report, indent=1, default=str) + "\n")
    print("\n== done")
    print(seg.get("evaluation", {}).get("table", ""))
    print(report["offline_vs_online_only"]["text"])
    timing = seg.get("timing", {})
    if timing:
        print(f"online tuning {timing['tune_s_per_frame']:.2f} s/frame, inference "
              f"{timing['infer_s_per_frame']:.3f} s/frame (paper, GPU: 3.90 s/frame in all)")
    print(f"summary: {out / 'summary.json'}; results: {out / 'results'}")
    print(ui_hint(pipeline_run.tracking_uri, pipeline_run.run_id))
    print(f"  (experiment '{cfg.experiment}'; models stcnn-tcb, stcnn-ssb, stcnn with alias "
          f"'{cfg.alias}')")
    return report
