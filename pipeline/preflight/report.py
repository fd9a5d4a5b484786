"""The preflight's table (stdout) from its result dict (``preflight.json``)."""

from __future__ import annotations


def _f(x, fmt: str = ".3g", none: str = "-") -> str:
    return none if x is None else format(x, fmt)


def _section(out: list[str], title: str, entry: dict | None, line) -> None:
    out.append(f"\n== {title}")
    if entry is None:
        out.append("not run")
    elif "error" in entry:
        out.append(f"FAILED: {entry['error']}")
    else:
        out.append(line(entry))


def table(r: dict) -> str:
    out = [f"STCNN preflight ({'quick, ' if r['quick'] else ''}{r['device']}, "
           f"{r['world_size']} rank(s)): {'PASS' if r['ok'] else 'FAIL'}"]
    out.append("\n== environment")
    for i in r["ranks"]:
        gpu = (f"{i.get('device_name')} {i.get('memory_gib')} GiB, cc {i.get('capability')}, "
               f"CUDA {i.get('cuda')}, cuDNN {i.get('cudnn')}, NCCL {i.get('nccl')}"
               if i.get("cuda") else f"CPU ({i.get('cpus')} cores, {i.get('cpu_threads')} threads)")
        out.append(f"rank {i['rank']:>3}  {i['host']}  {i['device']:<7} {gpu}  torch {i['torch']}")
    if r["ranks"] and r["ranks"][0].get("network_env"):
        out.append(f"network env (rank 0): {r['ranks'][0]['network_env']}")
    if r["ranks"] and r["ranks"][0].get("interfaces"):
        out.append(f"interfaces (rank 0): {', '.join(r['ranks'][0]['interfaces'])}")
    for p in r["problems"]:
        out.append(f"PROBLEM: {p}")
    a = r["allreduce"]
    if "skipped" in a:
        out.append(f"all-reduce: skipped ({a['skipped']})")
    elif "error" in a:
        out.append(f"all-reduce: FAILED {a['error']}")
    else:
        out.append(f"all-reduce {a['megabytes']} MB x {a['iterations']} ({a['backend']}): "
                   f"{a['seconds'] * 1e3:.2f} ms, bus bandwidth {a['busbw_gbps']:.2f} GB/s, "
                   f"algorithm bandwidth {a['algbw_gbps']:.2f} GB/s, sum "
                   f"{'correct' if a['correct'] else 'WRONG'}")
    out.append("\n== training phases (per rank; MFU against the device's dense peak)")
    head = (f"{'phase':<13}{'run':<9}{'input':>10}{'batch':>6}{'step s':>9}{'samples/s':>11}"
            f"{'peak GiB':>9}{'GFLOP/step':>11}{'TFLOP/s':>9}{'MFU':>7}  precision, layout")
    out.append(head)
    for p in r["phases"]:
        if "error" in p:
            out.append(f"{p['phase']:<13}FAILED: {p['error']}")
            continue
        for run, m in (("eager", p), ("compiled", p.get("compiled"))):
            if m is None:
                continue
            if "error" in m:
                out.append(f"{p['phase']:<13}{run:<9}FAILED: {m['error']}")
                continue
            hw = "x".join(map(str, m["input_hw"]))
            mfu = f"{100 * m['mfu']:.1f}%" if m["mfu"] is not None else "-"
            out.append(f"{p['phase']:<13}{run:<9}{hw:>10}{m['per_rank_batch']:>6}"
                       f"{m['step_s']:>9.4f}{m['samples_per_s']:>11.2f}"
                       f"{m['peak_memory_gib']:>9.2f}{m['flops_per_step'] / 1e9:>11.1f}"
                       f"{m['achieved_tflops']:>9.3f}{mfu:>7}  {m['precision']}, "
                       f"{'channels_last' if m['channels_last'] else 'contiguous'}"
                       f"{', SyncBN' if m['sync_bn'] else ''}"
                       + (f", first step {m['first_step_s']:.1f} s" if run == "compiled" else ""))
    for p in r["phases"]:
        if p.get("checkpoint_bytes") is not None:
            out.append(f"  checkpoint {p['phase']}: {p['checkpoint_bytes'] / 1e9:.3f} GB written in "
                       f"{p['checkpoint_write_s']:.2f} s ({p['checkpoint_what']})")
    peaks = {p.get("peak") for p in r["phases"] if p.get("peak")}
    for what in sorted(peaks):
        out.append(f"  peak: {what}")
    out.append("\n== numerics (bf16 vs fp32, same weights and batches)")
    for p in r["phases"]:
        n = p.get("numerics")
        if not n:
            continue
        if "error" in n:
            out.append(f"{p['phase']:<13}FAILED: {n['error']}")
            continue
        cells = ", ".join(f"{k} {v['fp32_first']:.4g}/{v['bf16_first']:.4g} "
                          f"({100 * v['rel_first']:.2f}%)" for k, v in n["losses"].items()
                          if "fp32_first" in v)
        out.append(f"{p['phase']:<13}{'ok' if n['ok'] else 'FAIL'} first step within "
                   f"{100 * n['rtol_first_step']:g}% (D {100 * n['rtol_first_step_d']:g}%): "
                   f"{cells}")
    sbn = r.get("sync_bn")
    if sbn:
        out.append(f"SyncBatchNorm: {sbn['status']}")
    _section(out, "online tuning + inference (one sequence)", r.get("online"), lambda o: (
        f"{o['sequence']} ({o['data']}), {o['frames']} frames at "
        f"{'x'.join(map(str, o['size']))}, {o['iterations']} iterations, {o['dreams']} dreams, "
        f"{o['model']}: tuning {o['tune_s_per_frame']:.3f} + inference "
        f"{o['infer_s_per_frame']:.3f} = {o['total_s_per_frame']:.3f} s/frame "
        f"({o['ratio_to_paper']:.2f}x the paper's {o['paper_s_per_frame']} s/frame; lower is "
        "faster)"))
    _section(out, "loader (clips/s, frames only)", r.get("loader"), lambda ld: (
        f"{ld['data']}: {ld['workers']} CPU workers decoding "
        f"{ld['cpu_workers_clips_per_s']:.1f}; JPEG bytes decoded on {ld['device_decode_on']} "
        f"{ld['device_decode_clips_per_s']:.1f} ({ld['ratio_device_to_workers']:.2f}x)"))
    out.append(f"\n{r['seconds']:.0f} s in all; written: {r['json']}")
    return "\n".join(out)
