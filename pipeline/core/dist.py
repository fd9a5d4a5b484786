"""Process groups, devices, seeding and the per-model training engines (DDP or DeepSpeed).

Every launcher runs the same way under ``python``, ``torchrun`` (one node or many, c10d
rendezvous) and ``deepspeed``: the launcher sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
``MASTER_ADDR``/``MASTER_PORT`` and :func:`init_distributed` reads them.

* Backend: ``nccl`` when the device is CUDA, ``gloo`` on the CPU (``dist.backend: auto``).
* Collective timeout: generous for the first step (compilation, first shard reads, DeepSpeed op
  builds), then :func:`shorten_timeout` sets ``dist.timeout_s`` so a hung rank fails the job in
  minutes instead of holding every GPU for half an hour. A rank whose collective timed out
  prints the step and the ranks that did not arrive (:mod:`pipeline.core.timeouts`) before it fails;
  the launcher then stops the others (torchrun: SIGTERM, SIGKILL 30 s later).
* One :class:`Engine` per model (G, D, SSB): ``forward``/``backward``/``step``/``zero_grad`` over
  either DDP + a torch optimizer (:class:`DDPEngine`) or a DeepSpeed engine with ZeRO 0-2
  (:class:`DeepSpeedEngine`), chosen by ``dist.engine``. The training loop only talks to this
  interface.
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
    find_unused_parameters: bool = False
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


class Engine:
    """One trainable model with its optimizer and scheduler.

    ``module`` is the plain model (for state dicts, frozen use and evaluation); ``__call__`` runs
    the wrapped model (gradient synchronisation). ``backward(loss)`` scales by the gradient
    accumulation; ``step()`` is called once per optimizer step, after ``accum`` backwards.
    """

    name: str
    module: nn.Module
    accum: int

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def no_sync(self, skip: bool):
        raise NotImplementedError

    def backward(self, loss: torch.Tensor) -> None:
        raise NotImplementedError

    def step(self) -> None:
        raise NotImplementedError

    def zero_grad(self) -> None:
        raise NotImplementedError

    def lr(self) -> float:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Model/optimizer/scheduler state kept in ``shared.pt`` (DDP); DeepSpeed saves its own."""
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError

    @property
    def saves_itself(self) -> bool:
        return False

    def sync_buffers(self) -> None:
        """Rank 0's buffers (BatchNorm running statistics) to every rank. DDP only broadcasts them
        at its own forwards, so forwards of the plain module (D frozen inside G's update) leave
        ranks with different statistics - used later in eval mode, and not what the rank-0
        checkpoint holds. Called by the loop after every step.

        An engine without a distributed context (``ctx``) is a one-process engine: nothing to
        sync, by design. On a run of several ranks such an engine is an error, not a skip."""
        ctx = getattr(self, "ctx", None)
        if ctx is None:
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                raise RuntimeError(
                    f"engine {getattr(self, 'name', type(self).__name__)!r} has no distributed "
                    f"context (ctx) on a run of {dist.get_world_size()} ranks: its buffers "
                    "(BatchNorm statistics) cannot be synced")
            return
        if not ctx.distributed:
            return
        buffers = [b for b in self.module.buffers() if b.numel()]
        if buffers:
            flat = torch.cat([b.detach().reshape(-1).to(torch.float64) for b in buffers])
            dist.broadcast(flat, src=0)
            offset = 0
            with torch.no_grad():
                for b in buffers:
                    n = b.numel()
                    b.copy_(flat[offset:offset + n].view_as(b).to(b.dtype))
                    offset += n

    def train(self, mode: bool = True) -> None:
        self.module.train(mode)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[nn.Module]:
        """The plain module with ``requires_grad`` off (e.g. D during G's backward): no gradient
        reaches it and no DDP/ZeRO hook fires."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            yield self.module
        finally:
            for p in params:
                p.requires_grad_(True)


class DDPEngine(Engine):
    def __init__(self, name: str, module: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Any, ctx: DistContext, cfg: DistConfig, accum: int = 1):
        self.name, self.module, self.optimizer, self.scheduler = name, module, optimizer, scheduler
        self.accum = accum
        self.ctx = ctx
        if ctx.distributed and any(p.requires_grad for p in module.parameters()):
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.wrapped: nn.Module = nn.parallel.DistributedDataParallel(
                module, device_ids=ids, find_unused_parameters=cfg.find_unused_parameters)
        else:
            self.wrapped = module
        if cfg.compile:
            self.wrapped = torch.compile(self.wrapped)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.wrapped(*args, **kwargs)

    def no_sync(self, skip: bool):
        inner = getattr(self.wrapped, "_orig_mod", self.wrapped)
        if skip and isinstance(inner, nn.parallel.DistributedDataParallel):
            return inner.no_sync()
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.accum if self.accum > 1 else loss).backward()

    def step(self) -> None:
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])


class DeepSpeedEngine(Engine):
    """A ``deepspeed.initialize`` engine (ZeRO 0-2) around one model and its torch optimizer.
    DeepSpeed owns gradient accumulation (``gradient_accumulation_steps``), loss scaling and the
    checkpoint of its partitioned optimizer state (:attr:`saves_itself`)."""

    def __init__(self, name: str, module: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Any, ctx: DistContext, cfg: DistConfig, micro_batch: int,
                 accum: int = 1):
        import deepspeed  # imported here: DDP-only users never pay for it

        ds_config: dict[str, Any] = {
            "train_micro_batch_size_per_gpu": micro_batch,
            "gradient_accumulation_steps": accum,
            "train_batch_size": micro_batch * accum * ctx.world_size,
            "zero_optimization": {"stage": cfg.zero_stage},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        if cfg.precision == "bf16":
            ds_config["bf16"] = {"enabled": True}
        self.name, self.module, self.accum = name, module, accum
        self.scheduler, self.ctx = scheduler, ctx
        engine, opt, _, _ = deepspeed.initialize(model=module, optimizer=optimizer,
                                                 config=ds_config, dist_init_required=False)
        self.engine, self.optimizer = engine, opt
        self.module = engine.module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.engine(*args, **kwargs)

    def no_sync(self, skip: bool):
        return contextlib.nullcontext()  # DeepSpeed syncs at its accumulation boundary

    def backward(self, loss: torch.Tensor) -> None:
        # DeepSpeed counts micro-steps itself: engine.step() after every backward only updates
        # the weights at the accumulation boundary (and zeroes the gradients then).
        self.engine.backward(loss)
        self.engine.step()

    def step(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step()

    def zero_grad(self) -> None:
        pass  # DeepSpeed zeroes after its own step

    def lr(self) -> float:
        return float(self.engine.optimizer.param_groups[0]["lr"])

    @property
    def saves_itself(self) -> bool:
        return True

    def state_dict(self) -> dict:
        return {"scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])

    def save_checkpoint(self, folder: str, tag: str) -> None:
        self.engine.save_checkpoint(folder, tag=tag)

    def load_checkpoint(self, folder: str, tag: str):
        return self.engine.load_checkpoint(folder, tag=tag)
