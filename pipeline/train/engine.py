"""The per-model training engines: one :class:`Engine` per model (G, D, SSB), over either DDP + a
torch optimizer (:class:`DDPEngine`) or a DeepSpeed engine with ZeRO 0-2
(:class:`DeepSpeedEngine`), chosen by ``dist.engine``. The training loop
(:mod:`pipeline.train.loop`) only talks to the :class:`Engine` interface.

Every engine is built with the run's :class:`~pipeline.core.dist.DistContext`: after each step it
broadcasts rank 0's buffers (:meth:`Engine.sync_buffers`) when that context is distributed. A
one-process engine inside a multi-rank job (each rank tuning its own sequences online) is built
with a one-process context on purpose.
"""

from __future__ import annotations

import abc
import contextlib
from typing import Any, ClassVar, Iterator

import torch
import torch.distributed as dist
from torch import nn

from pipeline.core.dist import DistConfig, DistContext


class Engine(abc.ABC):
    """One trainable model with its optimizer and scheduler.

    ``module`` is the plain model (for state dicts, frozen use and evaluation); ``__call__`` runs
    the wrapped model (gradient synchronisation). ``backward(loss)`` scales by the gradient
    accumulation; ``step()`` is called once per optimizer step, after ``accum`` backwards.
    """

    name: str
    module: nn.Module
    optimizer: Any                   # the torch optimizer (DeepSpeed: the one it wraps it in)
    scheduler: Any                   # an LR scheduler, or None
    ctx: DistContext                 # the process group this engine's model is replicated over
    accum: int                       # micro-batches per optimizer step
    saves_itself: ClassVar[bool] = False   # True: writes its own checkpoint folder (DeepSpeed)

    def __init__(self, name: str, module: nn.Module, optimizer: Any, scheduler: Any,
                 ctx: DistContext, accum: int = 1):
        if not isinstance(ctx, DistContext):
            raise TypeError(f"engine {name!r} needs the run's DistContext, got {ctx!r}: without "
                            "it its buffers (BatchNorm statistics) cannot be synced across ranks")
        self.name, self.module, self.optimizer, self.scheduler = name, module, optimizer, scheduler
        self.ctx, self.accum = ctx, int(accum)

    @abc.abstractmethod
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    @abc.abstractmethod
    def no_sync(self, skip: bool) -> contextlib.AbstractContextManager: ...

    @abc.abstractmethod
    def backward(self, loss: torch.Tensor) -> None: ...

    @abc.abstractmethod
    def step(self) -> None: ...

    @abc.abstractmethod
    def zero_grad(self) -> None: ...

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @abc.abstractmethod
    def state_dict(self) -> dict:
        """Model/optimizer/scheduler state kept in ``shared.pt`` (DDP); DeepSpeed saves its own."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict) -> None: ...

    def sync_buffers(self) -> None:
        """Rank 0's buffers (BatchNorm running statistics) to every rank. DDP only broadcasts them
        at its own forwards, so forwards of the plain module (D frozen inside G's update) leave
        ranks with different statistics - used later in eval mode, and not what the rank-0
        checkpoint holds. Called by the loop after every step; nothing to do when ``ctx`` is a
        one-process context."""
        if not self.ctx.distributed:
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
        super().__init__(name, module, optimizer, scheduler, ctx, accum)
        if ctx.distributed and any(p.requires_grad for p in module.parameters()):
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            # DDP re-buckets the gradients after a process's first backward (in the order they
            # became ready), and with more than 2 ranks an allreduce's rounding depends on where
            # a gradient sits in its bucket: the first step after a resume would differ in the
            # last bits from the uninterrupted run's. find_unused_parameters keeps the first
            # buckets for good (at one walk of the autograd graph per step; torch warns once).
            keep_buckets = cfg.find_unused_parameters or ctx.world_size > 2
            self.wrapped: nn.Module = nn.parallel.DistributedDataParallel(
                module, device_ids=ids, find_unused_parameters=keep_buckets)
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

    saves_itself: ClassVar[bool] = True

    def __init__(self, name: str, module: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Any, ctx: DistContext, cfg: DistConfig, micro_batch: int,
                 accum: int = 1):
        import deepspeed  # imported here: DDP-only users never pay for it

        super().__init__(name, module, optimizer, scheduler, ctx, accum)
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

    def state_dict(self) -> dict:
        return {"scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])

    def save_checkpoint(self, folder: str, tag: str) -> None:
        self.engine.save_checkpoint(folder, tag=tag)

    def load_checkpoint(self, folder: str, tag: str):
        return self.engine.load_checkpoint(folder, tag=tag)
