#!/usr/bin/env python
"""Clips/s of the loader reading the same shards from ``s3://`` (streamed) and from the local
folder, in one run: the price of object storage, printed as a ratio.

The shards are what ``launch/preprocess.py`` writes from the DAVIS folder (the real sample when
found, else synthetic 854x480 data); they are uploaded with ``pipeline.lake.store.upload_set`` to
a ``moto`` S3 server started on 127.0.0.1 in its own process (fake credentials), so the server
does not share this process's interpreter. Both contenders are
``pipeline.loading.loader.make_loader`` with the same shards, seed, preset ``tcb_pretrain``,
batch size and workers; only the URL differs. Each is warmed up and then timed over ``--clips``
clips, ``--repeats`` times round-robin; the best and the median are kept.

Target: none set by the issue; the ratio s3/local is printed (and PASS/FAIL against
``--target``, default 0.5, a floor for loopback where the server's CPU is this machine's).

    python benchmarks/s3_streaming.py
    python benchmarks/s3_streaming.py --workers 2 --json
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from _common import (  # the repo is put on sys.path there
                     SPLITS, add_data_args, add_run_args, davis_source, run_and_report, split_sequences,
                     summarise)
from loader_throughput import list_clips, preprocess_shards, project_factory, time_one

from pipeline.lake import store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(port: int) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"moto_server did not answer on port {port} within 60 s")


def run(args, tmp: Path) -> dict:
    src, what = davis_source(args.davis_root, tmp, args.synthetic,
                             n_frames=8 if args.quick else 50)
    # every split needs >= max(1, workers) shards (one per worker)
    smallest = min(len(list_clips(src, split_sequences(src, s))) for s in SPLITS)
    per_shard = max(1, min(args.shard_max_count, smallest // max(1, args.workers)))
    shard_dirs = preprocess_shards(src, tmp / "shards", per_shard)
    port = free_port()
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
           "AWS_EC2_METADATA_DISABLED": "true"}
    os.environ.update(env)
    for var in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3", store.ENDPOINT_ENV):
        os.environ.pop(var, None)
    server = start_moto(port)
    try:
        store.filesystem().mkdir("bench")
        urls = []
        for d in shard_dirs:
            url = f"s3://bench/shards/davis2016/{d.name}"
            store.upload_set(d, url)
            urls.append(url)
        contenders = {"local": project_factory(shard_dirs, args.batch_size, args.workers),
                      "s3": project_factory(urls, args.batch_size, args.workers)}
        rates: dict[str, list[float]] = {k: [] for k in contenders}
        for _ in range(args.repeats):
            for name, (make, count) in contenders.items():
                rates[name].append(time_one(make, count, args.warmup, args.clips))
    finally:
        server.kill()
        server.wait()
    results = {k: summarise(v) for k, v in rates.items()}
    ratio = results["s3"]["best"] / results["local"]["best"]
    return {"benchmark": "s3_streaming", "data": what, "workers": args.workers,
            "batch_size": args.batch_size, "timed_clips": args.clips, "repeats": args.repeats,
            "cpu_count": os.cpu_count(), "clips_per_s": results,
            "ratio_s3_to_local": ratio,
            "ratio_s3_to_local_median": results["s3"]["median"] / results["local"]["median"],
            "target": args.target, "pass": ratio >= args.target,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def print_table(r: dict) -> None:
    print(f"data: {r['data']}; workers={r['workers']} batch_size={r['batch_size']} "
          f"clips timed={r['timed_clips']} x{r['repeats']}; load {r['load_average']}")
    for name, v in r["clips_per_s"].items():
        print(f"  {name:6s} {v['best']:8.1f} clips/s best   {v['median']:8.1f} median")
    verdict = "PASS" if r["pass"] else "FAIL"
    print(f"s3/local {r['ratio_s3_to_local']:.2f} (median {r['ratio_s3_to_local_median']:.2f}), "
          f"floor {r['target']}: {verdict}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_args(p)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for both")
    p.add_argument("--batch-size", type=int, default=3)
    p.add_argument("--clips", type=int, default=150, help="clips timed per run")
    p.add_argument("--warmup", type=int, default=15, help="clips consumed before timing")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shard-max-count", type=int, default=10)
    p.add_argument("--target", type=float, default=0.5, help="floor for s3/local")
    add_run_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.clips, args.warmup, args.repeats = 12, 3, 1
    return args


def main(argv=None) -> int:
    return run_and_report(parse_args(argv), run, print_table, "s3_bench_")


if __name__ == "__main__":
    sys.exit(main())
