"""Training-side forward: per-token log-probs (and entropy) of completions given prompts.

Sequences are laid out as in :class:`components.policy.rollout.Rollouts`: a
left-padded prompt block (B, P) followed by a right-padded completion block
(B, C); position ids count real tokens only, exactly as during sampling, so the
log-probs match the sampling pass up to float rounding.

The LM head is applied only at completion positions and in chunks of
``chunk_tokens`` rows: with a 152k vocabulary the full (B, T, V) float32 logits
of a long batch would not fit. Under autograd each chunk is recomputed in
backward (activation checkpointing), so at most one chunk of logits is alive.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel


@dataclass
class SequenceBatch:
    """Prompt + completion token blocks of B sequences (see module docstring)."""

    prompt_ids: torch.Tensor
    """(B, P) long, left-padded."""
    prompt_mask: torch.Tensor
    """(B, P) bool."""
    completion_ids: torch.Tensor
    """(B, C) long, right-padded."""
    completion_mask: torch.Tensor
    """(B, C) bool."""

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def select(self, index: torch.Tensor | slice) -> SequenceBatch:
        """Rows ``index``, with columns that are padding in every selected row trimmed."""
        prompt_mask = self.prompt_mask[index]
        completion_mask = self.completion_mask[index]
        left = int((~prompt_mask).all(0).long().cumprod(0).sum())
        right = int(completion_mask.any(0).nonzero().max()) + 1 if completion_mask.any() else 1
        return SequenceBatch(
            prompt_ids=self.prompt_ids[index][:, left:],
            prompt_mask=prompt_mask[:, left:],
            completion_ids=self.completion_ids[index][:, :right],
            completion_mask=completion_mask[:, :right],
        )

    def to(self, device: torch.device) -> SequenceBatch:
        return SequenceBatch(*(t.to(device) for t in (self.prompt_ids, self.prompt_mask, self.completion_ids, self.completion_mask)))


def _chunk_logprobs(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
    temperature: float, with_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, H) hidden states -> (log p(target), entropy) under softmax(lm_head(h) / temperature)."""
    logits = nn.functional.linear(hidden, weight, bias).float() / temperature
    log_norm = torch.logsumexp(logits, dim=-1)
    logprobs = logits.gather(-1, targets[:, None]).squeeze(-1) - log_norm
    if not with_entropy:
        return logprobs, torch.zeros_like(logprobs)
    probs = torch.softmax(logits, dim=-1)
    entropy = log_norm - (probs * logits).sum(-1)
    return logprobs, entropy


class TokenLogprobs(nn.Module):
    """``forward(batch) -> (logprobs (B, C), entropy (B, C))`` for a causal LM, zero on padding.

    Wrapping the model in this module lets DDP/FSDP see one ``forward`` that
    covers the whole computation. Works for decoder-only LMs whose logits are
    ``lm_head(last_hidden_state)`` (Qwen2, Llama, Mistral, ...).

    Args:
        model: the causal LM.
        temperature: logits are divided by this (the rollout temperature; see rollout.py).
        chunk_tokens: response tokens per LM-head chunk.
        entropy_grad: let gradients flow through the entropy (only when its coefficient is > 0).
    """

    def __init__(self, model: PreTrainedModel, temperature: float = 1.0, chunk_tokens: int = 4096,
                 entropy_grad: bool = False):
        super().__init__()
        self.model = model
        self.temperature = temperature
        self.chunk_tokens = chunk_tokens
        self.entropy_grad = entropy_grad

    def forward(self, batch: SequenceBatch, with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        p = batch.prompt_ids.shape[1]
        input_ids = torch.cat([batch.prompt_ids, batch.completion_ids], dim=1)
        mask = torch.cat([batch.prompt_mask, batch.completion_mask], dim=1)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = self.model.get_decoder()(
            input_ids=input_ids, attention_mask=mask.long(), position_ids=positions, use_cache=False
        ).last_hidden_state
        # hidden at position t predicts token t+1: completion token j is predicted at p - 1 + j.
        hidden = hidden[:, p - 1 : p - 1 + batch.completion_ids.shape[1]]
        selected = batch.completion_mask
        flat_hidden = hidden[selected]
        flat_targets = batch.completion_ids[selected]
        head = self.model.get_output_embeddings()
        pieces_lp, pieces_ent = [], []
        for start in range(0, flat_hidden.shape[0], self.chunk_tokens):
            h = flat_hidden[start : start + self.chunk_tokens]
            t = flat_targets[start : start + self.chunk_tokens]
            lp, ent = self._head(h, head.weight, head.bias, t, with_entropy)
            pieces_lp.append(lp)
            pieces_ent.append(ent)
        out_lp = hidden.new_zeros(selected.shape, dtype=torch.float32)
        out_ent = hidden.new_zeros(selected.shape, dtype=torch.float32)
        if pieces_lp:
            out_lp = out_lp.masked_scatter(selected, torch.cat(pieces_lp))
            out_ent = out_ent.masked_scatter(selected, torch.cat(pieces_ent))
        return out_lp, out_ent

    def _head(self, h, weight, bias, targets, with_entropy):
        if not torch.is_grad_enabled():
            return _chunk_logprobs(h, weight, bias, targets, self.temperature, with_entropy)
        logprobs, entropy = checkpoint(
            _chunk_logprobs, h, weight, bias, targets, self.temperature, with_entropy and self.entropy_grad,
            use_reentrant=False,
        )
        if with_entropy and not self.entropy_grad:
            with torch.no_grad():
                _, entropy = _chunk_logprobs(h.detach(), weight.detach(), None if bias is None else bias.detach(),
                                             targets, self.temperature, True)
        return logprobs, entropy
