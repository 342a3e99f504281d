"""Data parallelism with PyTorch's own engine: torchrun + DDP (or FSDP2 for big models).

The trainer runs unchanged on one process or under ``torchrun --nproc-per-node N``:

* every rank generates and scores its own shard of the step's prompts (whole
  prompt groups, so a group never straddles ranks);
* reward matrices are all-gathered, and every rank computes the advantages of
  the *whole* batch with the same seeded generator (batch-level estimators such
  as GDPO see the global batch), then keeps its rows;
* the loss is a token *sum* divided by the global response-token count
  (all-reduced) and multiplied by the world size, so DDP's gradient averaging
  yields exactly the single-process token-mean gradient;
* rank 0 alone writes checkpoints and reports metrics.

Backend: NCCL on CUDA, gloo on CPU (the 2-process test in tests/test_distributed.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job; ``world_size == 1`` means no process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` items (``n`` must divide evenly)."""
        if n % self.world_size:
            raise ValueError(f"{n} items cannot be split evenly over {self.world_size} ranks")
        size = n // self.world_size
        return slice(self.rank * size, (self.rank + 1) * size)


def init_distributed() -> DistContext:
    """Join the process group torchrun describes in the environment (no-op for one process).

    Uses NCCL when CUDA is available (and pins ``LOCAL_RANK``'s GPU), else gloo.
    """
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistContext()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl")
    else:
        dist.init_process_group(backend="gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank)


def all_reduce_sum(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of ``x`` over ranks (a new tensor; ``x`` itself is untouched)."""
    x = x.detach().clone()
    if ctx.enabled:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def all_gather_rows(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate every rank's ``x`` along dim 0 in rank order (same shape on every rank)."""
    if not ctx.enabled:
        return x
    parts = [torch.empty_like(x) for _ in range(ctx.world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def wrap_for_training(module: nn.Module, ctx: DistContext, strategy: str = "ddp") -> nn.Module:
    """Wrap the training module for data parallelism; identity for one process.

    ``ddp``: DistributedDataParallel (a full replica per rank). ``fsdp``: FSDP2
    ``fully_shard`` per decoder layer and on the root (parameters, gradients and
    optimizer state sharded; create the optimizer *after* wrapping). Under FSDP the
    inner model is only usable inside :func:`root_unsharded` outside the root's forward.
    """
    if not ctx.enabled:
        return module
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in _decoder_layers(module):
            fully_shard(layer)
        fully_shard(module)
        return module
    device_ids = [ctx.local_rank] if torch.cuda.is_available() else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def no_sync(module: nn.Module, sync: bool) -> AbstractContextManager:
    """Skip DDP's gradient all-reduce on accumulation micro-batches (``sync=False``)."""
    if sync or not isinstance(module, nn.parallel.DistributedDataParallel):
        return nullcontext()
    return module.no_sync()


def is_fsdp(module: nn.Module) -> bool:
    return hasattr(module, "reshard") and hasattr(module, "unshard")


@contextmanager
def root_unsharded(module: nn.Module) -> Iterator[None]:
    """FSDP2: keep the root unit's own parameters (embeddings, final norm, head) gathered.

    Generation and no-grad forwards call the inner model directly, which bypasses the
    root's forward hooks; decoder layers still gather themselves. No-op otherwise.
    """
    if not is_fsdp(module):
        yield
        return
    # The root must be initialised as root before any inner unit runs forward on its own
    # (FSDP2 otherwise makes the first decoder layer a root); a forward through the root
    # does this implicitly, generation does not.
    module._get_fsdp_state()._lazy_init()
    module.unshard()
    try:
        yield
    finally:
        module.reshard()


def full_state_dicts(
    module: nn.Module, optimizer: torch.optim.Optimizer | None
) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any] | None]:
    """Full (unsharded, CPU) model and optimizer state dicts of an FSDP2 module — a collective:
    every rank must call it. Model keys are those of the inner causal LM (``model.`` stripped).
    Returns ``(None, None)`` for modules that are not FSDP-sharded.
    """
    if not is_fsdp(module):
        return None, None
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(module, options=options)
    model_state = {k.removeprefix("model."): v for k, v in model_state.items()}
    optim_state = get_optimizer_state_dict(module, optimizer, options=options) if optimizer is not None else None
    return model_state, optim_state


def load_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a checkpoint's optimizer state (a full state dict under FSDP2)."""
    if not is_fsdp(module):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(module, optimizer, state, options=StateDictOptions(full_state_dict=True))


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (FSDP2 shards in place: returned as is)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def _decoder_layers(module: nn.Module) -> list[nn.Module]:
    """Transformer blocks (``model.layers`` in Qwen2/Llama-style models) to shard one by one."""
    for name, child in module.named_modules():
        if name.split(".")[-1] == "layers" and isinstance(child, nn.ModuleList):
            return list(child)
    return []


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()
