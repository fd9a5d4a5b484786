"""Process groups, devices, collectives, seeding and autocast.

Every launcher runs the same way under ``python``, ``torchrun`` (one node or many, c10d
rendezvous) and ``deepspeed``: the launcher sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
``MASTER_ADDR``/``MASTER_PORT`` and :func:`init_distributed` reads them.

* Backend: ``nccl`` when the device is CUDA, ``gloo`` on the CPU (``dist.backend: auto``).
* Collective timeout: generous for the first step (compilation, first shard reads, DeepSpeed op
  builds), then :func:`shorten_timeout` sets ``dist.timeout_s`` so a hung rank fails the job in
  minutes instead of holding every GPU for half an hour. A rank whose collective timed out
  prints the step and the ranks that did not arrive (:mod:`pipeline.core.timeouts`) before it fails;
  the launcher then stops the others (torchrun: SIGTERM, SIGKILL 30 s later).
* Collectives on a :class:`DistContext` (:func:`barrier`, :func:`all_reduce_mean`,
  :func:`any_rank`) are no-ops in a one-process context. The per-model training engines (DDP or
  DeepSpeed) are :mod:`pipeline.train.engine`'s.
* GPU options by config: ``sync_bn`` (per-GPU batches are 1-3), ``precision: bf16`` (autocast),
  ``channels_last``, ``compile``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import random
from dataclasses import dataclass
from typing import Any, Iterator, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pipeline.core.config import ConfigError


@dataclass
class DistConfig:
    backend: Literal["auto", "gloo", "nccl"] = "auto"   # auto: nccl on CUDA, gloo on the CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"      # auto: cuda when available
    engine: Literal["ddp", "deepspeed"] = "ddp"
    zero_stage: Literal[0, 1, 2] = 0                     # DeepSpeed ZeRO stage (engine: deepspeed)
    sync_bn: bool = False                                # SyncBatchNorm in G and D (CUDA only)
    precision: Literal["fp32", "bf16"] = "fp32"          # bf16: autocast on the device
    channels_last: bool = False                          # NHWC memory format (GPUs)
    compile: bool = False                                # torch.compile the models
    find_unused_parameters: bool = False                 # on by itself above 2 ranks (DDPEngine)
    first_step_timeout_s: float = 1800.0                 # collectives until the first step is done
    timeout_s: float = 300.0                             # afterwards: hangs fail fast
    deterministic: bool = False                          # torch.use_deterministic_algorithms
    check_replicas_every: int = 0                        # steps between replica checks (0: off)
    flush_denormal: bool = True                          # CPU: denormal floats as 0 (a random-init
                                                         # STCNN step was 30x slower without it)


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None        # None: a single process without a process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def resolve_device(cfg: DistConfig, local_rank: int) -> torch.device:
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("dist.device=cuda but no CUDA device is visible; "
                              "use dist.device=cpu (or auto)")
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_gpu_options(cfg: DistConfig, device: torch.device) -> None:
    if cfg.sync_bn and device.type != "cuda":
        raise ConfigError("dist.sync_bn=true needs CUDA devices (SyncBatchNorm refuses CPU "
                          "modules); on the CPU use per-rank batches >= 2 or frozen BatchNorm")
    if cfg.backend == "nccl" and device.type != "cuda":
        raise ConfigError("dist.backend=nccl needs CUDA devices; use gloo (or auto) on the CPU")


def _elastic_attempt_store(world: int, timeout: _dt.timedelta) -> "dist.Store | None":
    """Under torchrun's elastic agent, the store for this attempt's process group: the agent's
    rendezvous TCPStore (``TORCHELASTIC_USE_AGENT_STORE=True``) prefixed with
    ``TORCHELASTIC_RESTART_COUNT``. The agent keeps one store for all attempts and torch no longer
    prefixes worker keys per attempt, so workers restarted by ``--max-restarts`` read the gloo/nccl
    addresses the killed attempt left there (connection refused, or a hang); with the prefix each
    attempt starts from empty keys. None (the launcher's ``env://`` default) otherwise."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or attempt is None:
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=False, timeout=timeout)
    return dist.PrefixStore(f"/worker/attempt_{attempt}", store)


def init_distributed(cfg: DistConfig) -> DistContext:
    """Join the process group the launcher described (or run alone without one)."""
    world = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    device = resolve_device(cfg, local_rank)
    check_gpu_options(cfg, device)
    torch.set_flush_denormal(cfg.flush_denormal)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if world <= 1 and not dist.is_initialized():
        return DistContext(0, 1, local_rank, device, None)
    backend = cfg.backend if cfg.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if not dist.is_initialized():
        timeout = _dt.timedelta(seconds=cfg.first_step_timeout_s)
        kwargs: dict[str, Any] = dict(backend=backend, timeout=timeout)
        if device.type == "cuda":
            kwargs["device_id"] = device
        store = _elastic_attempt_store(world, timeout)
        if store is not None:
            kwargs.update(store=store, rank=_env_int("RANK", 0), world_size=world)
        dist.init_process_group(**kwargs)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


def shorten_timeout(cfg: DistConfig, ctx: DistContext) -> None:
    """After the first step: later collectives time out after ``dist.timeout_s``."""
    if ctx.distributed and dist.is_initialized():
        dist.set_timeout(_dt.timedelta(seconds=cfg.timeout_s))


def destroy() -> None:
    """Leave the process group. DDP wrappers still alive at that point (kept by reference cycles
    between the loop, its hooks and the phase) made about one 2-rank gloo run in three abort at
    exit ("terminate called without an active exception"): collect them first."""
    if dist.is_initialized():
        import gc

        gc.collect()
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_mean(values: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Means over ranks of scalar metrics (for logging: rank 0 reports what every rank saw)."""
    if not ctx.distributed or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    t /= ctx.world_size
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def default_group_context() -> DistContext:
    """The context of the default process group as it is initialised (by :func:`init_distributed`,
    or by a caller's own ``init_process_group``), else of a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext(0, 1, 0, torch.device("cpu"), None)
    backend = dist.get_backend()
    device = (torch.device("cuda", torch.cuda.current_device()) if backend == "nccl"
              else torch.device("cpu"))
    return DistContext(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), device,
                       backend)


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every rank when ``flag`` is true on any (a collective)."""
    if not ctx.distributed:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32,
                     device=ctx.device if ctx.backend == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed python, numpy and torch for this rank (model init uses :func:`seed_model_init`)."""
    s = (int(seed) * 1_000_003 + int(rank)) % (2**31 - 1)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
    return s


@contextlib.contextmanager
def seed_model_init(seed: int) -> Iterator[None]:
    """Build models under the same seed on every rank (DDP also broadcasts rank 0's weights),
    leaving the per-rank global RNG state as it was."""
    state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def autocast(cfg: DistConfig, device: torch.device):
    if cfg.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_module(module: nn.Module, cfg: DistConfig, ctx: DistContext, *,
                   sync_bn: bool = False) -> nn.Module:
    """Device, memory format and SyncBatchNorm for one model (before wrapping it)."""
    if sync_bn and cfg.sync_bn and ctx.distributed:
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    module = module.to(ctx.device)
    if cfg.channels_last:
        module = module.to(memory_format=torch.channels_last)
    return module
