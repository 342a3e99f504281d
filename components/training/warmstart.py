"""Supervised warm start: teach a from-scratch model the answer format before RL.

Each step samples ``training.warmup_batch_size`` training rows (seeded), builds
the task prompt for ``m = task.num_answers`` answers and the target completion
``task.format_answers(task.oracle_answers(row, m), m) + EOS``, and minimises the
token-mean cross-entropy on completion tokens only (the prompt is context).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from components.config import RunConfig
from components.tasks.base import Task
from components.training.distributed import DistContext, all_reduce_sum, no_sync
from components.training.forward import SequenceBatch
from components.training.seeding import generator


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], completions: Sequence[str], append_eos: bool = True
) -> SequenceBatch:
    """Tokenize prompt/completion pairs into the rollout layout (left-padded prompts, right-padded completions)."""
    pad = tokenizer.pad_token_id
    prompt_enc = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    completion_enc = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    if append_eos:
        completion_enc = [ids + [tokenizer.eos_token_id] for ids in completion_enc]
    p = max(len(ids) for ids in prompt_enc)
    c = max(len(ids) for ids in completion_enc)
    prompt_ids = torch.tensor([[pad] * (p - len(ids)) + ids for ids in prompt_enc], dtype=torch.long)
    completion_ids = torch.tensor([ids + [pad] * (c - len(ids)) for ids in completion_enc], dtype=torch.long)
    prompt_mask = torch.arange(p)[None, :] >= torch.tensor([p - len(ids) for ids in prompt_enc])[:, None]
    completion_mask = torch.arange(c)[None, :] < torch.tensor([len(ids) for ids in completion_enc])[:, None]
    return SequenceBatch(prompt_ids, prompt_mask, completion_ids, completion_mask)


def oracle_batch(
    task: Task, tokenizer: PreTrainedTokenizerBase, rows: Sequence[dict[str, Any]], m: int
) -> SequenceBatch:
    """Prompts and oracle completions (``m`` answers in the task's multi-answer format) of ``rows``."""
    prompts = [task.build_prompt(row, m, tokenizer) for row in rows]
    completions = [task.format_answers(task.oracle_answers(row, m), m) for row in rows]
    return encode_pairs(tokenizer, prompts, completions)


def warm_start(
    policy: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    rows: Sequence[dict[str, Any]],
    cfg: RunConfig,
    ctx: DistContext,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Run ``cfg.training.warmup_steps`` SFT steps on ``policy`` (a possibly DDP-wrapped
    :class:`~components.training.forward.TokenLogprobs`); returns the last step's metrics.
    """
    tc = cfg.training
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.warmup_lr, betas=tc.betas, weight_decay=tc.weight_decay)
    device = next(policy.parameters()).device
    policy.train()
    metrics: dict[str, float] = {}
    for step in range(1, tc.warmup_steps + 1):
        picks = torch.randint(len(rows), (tc.warmup_batch_size,), generator=generator(tc.seed, "warmstart", step))
        local = picks[ctx.shard(len(picks))] if ctx.enabled else picks
        batch = oracle_batch(task, tokenizer, [rows[i] for i in local.tolist()], cfg.task.num_answers)
        total_tokens = all_reduce_sum(batch.completion_mask.sum(), ctx).item()
        micro = list(range(0, len(batch), tc.micro_batch_size))
        loss_sum = torch.zeros(())
        for i, start in enumerate(micro):
            part = batch.select(slice(start, start + tc.micro_batch_size)).to(device)
            with no_sync(policy, sync=i == len(micro) - 1):
                logprobs, _ = policy(part, with_entropy=False)
                nll = -(logprobs * part.completion_mask).sum()
                (nll * ctx.world_size / total_tokens).backward()
            loss_sum += nll.detach().cpu()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        metrics = {
            "warmstart/loss": all_reduce_sum(loss_sum, ctx).item() / total_tokens,
            "warmstart/grad_norm": float(grad_norm),
        }
        if on_step is not None:
            on_step(step, metrics)
    return metrics
