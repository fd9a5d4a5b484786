"""What each rank runs on, whether every rank reached the rendezvous, and the all-reduce
bandwidth they get; failures named by rank and host with the likely fix."""

from __future__ import annotations

import os
import platform
import socket
import time

import torch
import torch.distributed as dist

from pipeline.core.dist import DistContext

# environment variables that decide how NCCL/gloo find each other (printed when set)
NETWORK_ENV = ("MASTER_ADDR", "MASTER_PORT", "NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME",
               "NCCL_IB_DISABLE", "NCCL_IB_HCA", "NCCL_P2P_DISABLE", "NCCL_NET", "NCCL_DEBUG",
               "CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_PROCID")


def rank_info(ctx: DistContext) -> dict:
    """This rank's host, device and software."""
    info = {"rank": ctx.rank, "local_rank": ctx.local_rank, "host": socket.gethostname(),
            "pid": os.getpid(), "python": platform.python_version(), "torch": torch.__version__,
            "device": str(ctx.device), "cpu_threads": torch.get_num_threads(),
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count()}
    if ctx.device.type == "cuda":
        props = torch.cuda.get_device_properties(ctx.device)
        info.update(device_name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}",
                    multiprocessors=props.multi_processor_count, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(),
                    nccl=".".join(map(str, torch.cuda.nccl.version())),
                    devices_visible=torch.cuda.device_count(),
                    bf16_supported=torch.cuda.is_bf16_supported())
    else:
        info.update(device_name=platform.processor() or platform.machine(), cuda=None)
    try:
        info["interfaces"] = [name for _, name in socket.if_nameindex() if name != "lo"]
    except OSError:
        info["interfaces"] = []
    info["network_env"] = {k: os.environ[k] for k in NETWORK_ENV if k in os.environ}
    return info


def gather_info(ctx: DistContext) -> list[dict]:
    """Every rank's :func:`rank_info`, in rank order (a collective: every rank must call it)."""
    mine = rank_info(ctx)
    if not ctx.distributed:
        return [mine]
    everyone: list = [None] * ctx.world_size
    dist.all_gather_object(everyone, mine)
    return everyone


def check_devices(infos: list[dict]) -> list[str]:
    """Problems seen in the gathered infos: ranks sharing a GPU, mixed devices or software."""
    problems = []
    by_gpu: dict[tuple, list[int]] = {}
    for i in infos:
        if i["device"].startswith("cuda"):
            by_gpu.setdefault((i["host"], i["device"]), []).append(i["rank"])
    for (host, dev), ranks in by_gpu.items():
        if len(ranks) > 1:
            problems.append(f"ranks {ranks} share {dev} on {host}: start one process per GPU "
                            "(torchrun --nproc_per_node = GPUs per node) or check "
                            "CUDA_VISIBLE_DEVICES")
    kinds = {i["device"].split(":")[0] for i in infos}
    if len(kinds) > 1:
        cpu = [i["rank"] for i in infos if i["device"] == "cpu"]
        problems.append(f"ranks {cpu} have no GPU while others do: check that every node sees "
                        "its GPUs (nvidia-smi, CUDA_VISIBLE_DEVICES, the job's --gres)")
    for key in ("torch", "cuda", "nccl"):
        values = {i.get(key) for i in infos}
        if len(values) > 1:
            problems.append(f"ranks run different {key} versions {sorted(map(str, values))}: "
                            "use one environment (container) on every node")
    return problems


def allreduce_bandwidth(ctx: DistContext, megabytes: float, iterations: int) -> dict:
    """All-reduce of a float32 tensor of ``megabytes``: mean time and bus bandwidth (the
    nccl-tests definition: 2 (n-1)/n x bytes / time), after one warm-up."""
    if not ctx.distributed:
        return {"skipped": "one process: no collective to measure (run under torchrun)"}
    n = max(1, int(megabytes * 2**20 / 4))
    t = torch.ones(n, dtype=torch.float32, device=ctx.device)
    dist.all_reduce(t)  # warm-up, and the check that the sum is right
    _sync(ctx)
    correct = bool((t[:: max(1, n // 1024)] == ctx.world_size).all())
    start = time.perf_counter()
    for _ in range(iterations):
        dist.all_reduce(t)
    _sync(ctx)
    seconds = (time.perf_counter() - start) / iterations
    w = ctx.world_size
    bus = 2 * (w - 1) / w * n * 4 / seconds
    return {"megabytes": round(n * 4 / 2**20, 1), "iterations": iterations,
            "seconds": seconds, "algbw_gbps": n * 4 / seconds / 1e9,
            "busbw_gbps": bus / 1e9, "correct": correct, "backend": ctx.backend}


def _sync(ctx: DistContext) -> None:
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)


def diagnose(exc: BaseException, rank: int, host: str, backend: str | None) -> str:
    """One line for a failed rendezvous or collective: who, what, and the likely fix."""
    text = f"{type(exc).__name__}: {exc}".strip()
    low = text.lower()
    if "timed out" in low or "timeout" in low:
        fix = ("a rank did not arrive in time: check that every node started, that MASTER_ADDR/"
               "MASTER_PORT reach the first node through the firewall, and pick the interface "
               "NCCL/gloo use (NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME, e.g. =ib0 or =eth0)")
    elif "connection refused" in low or "connect" in low or "address" in low:
        fix = ("the rendezvous address is unreachable: MASTER_ADDR must be the first node's "
               "address seen from every node; set NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME to "
               "the interface of that network")
    elif "nccl" in low and ("unhandled system error" in low or "invalid usage" in low
                            or "internal error" in low):
        fix = ("NCCL failed: rerun with NCCL_DEBUG=INFO; on machines without InfiniBand try "
               "NCCL_IB_DISABLE=1, without peer-to-peer NCCL_P2P_DISABLE=1, and set "
               "NCCL_SOCKET_IFNAME to the right interface")
    elif "cuda" in low and ("out of memory" in low or "no cuda" in low or "invalid device" in low):
        fix = ("a rank has no usable GPU: one process per GPU (--nproc_per_node), and check "
               "CUDA_VISIBLE_DEVICES and nvidia-smi on that host")
    else:
        fix = "rerun with NCCL_DEBUG=INFO TORCH_DISTRIBUTED_DEBUG=DETAIL for details"
    return f"rank {rank} on {host} (backend {backend}): {text}. Likely fix: {fix}"
