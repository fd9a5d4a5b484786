"""Scoring what the job wrote: DAVIS J/F/T with the official protocol, or YouTube-Objects mean IoU;
the tables in the MLflow run."""

from __future__ import annotations

from pathlib import Path

from pipeline.jobs.segment.config import SegmentConfig
from pipeline.evaluation.davis import evaluate_davis, format_tables, write_outputs
from pipeline.evaluation.youtube_objects import evaluate_youtube_objects, format_table
from pipeline.evaluation.youtube_objects import write_outputs as write_yto_outputs


def evaluate_results(cfg: SegmentConfig, out: Path, tracker, log: bool = True) -> dict:
    """Score ``out`` (``<out>/eval/``); ``log=False``: files written, nothing printed or sent
    to the run (the results of an earlier tuning step, ``online.segment_at``)."""
    report = evaluate_davis(cfg.davis_root, out, cfg.year, cfg.split, sequences=cfg.sequences)
    g = report.global_row()
    metrics = {"JF-Mean": g[0], "J-Mean": g[1], "J-Recall": g[2], "J-Decay": g[3],
               "F-Mean": g[4], "F-Recall": g[5], "F-Decay": g[6]}
    if report.has_t:
        metrics["T-Mean"] = report.global_t()[0]
    return _report(cfg, tracker, metrics, format_tables(report), write_outputs(report, out / "eval"),
                   log)


def _report(cfg: SegmentConfig, tracker, metrics: dict, table: str, files: dict,
            log: bool = True) -> dict:
    """An evaluation's table printed (``print_table``), its metrics and files in the run."""
    if not log:
        return {"metrics": metrics, "table": table, "files": {k: str(v) for k, v in files.items()}}
    if cfg.print_table:
        print(table, flush=True)
    tracker.log_metrics({f"eval/{k}": v for k, v in metrics.items() if v == v}, step=0)
    for p in files.values():
        tracker.log_artifact(p, "eval")
    return {"metrics": metrics, "table": table, "files": {k: str(v) for k, v in files.items()}}


def evaluate_youtube_objects_results(cfg: SegmentConfig, out: Path, tracker,
                                     log: bool = True) -> dict:
    report = evaluate_youtube_objects(cfg.youtube_objects_root, out, categories=cfg.categories,
                                      shots=cfg.sequences)
    metrics = {"mIoU": report.mean()} | {f"mIoU/{c}": m for c, m, _, _ in report.per_category()}
    return _report(cfg, tracker, metrics, format_table(report),
                   write_yto_outputs(report, out / "eval"), log)
