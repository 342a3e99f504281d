"""The policy loss of VPO_SPEC §4: PPO-clip with dual clip, low_var_kl, token-mean.

All functions are pure tensor maths on (B, T) token tensors with a boolean
``mask`` marking response tokens; advantages are per rollout (B,) and are
broadcast over every response token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOG_RATIO_CLAMP = 20.0
"""|log pi - log pi_old| is clamped here before exp (guards against inf ratios)."""
KL_CLAMP = 10.0
"""low_var_kl per token is clamped to [0, KL_CLAMP] (it is >= 0 in exact arithmetic)."""


@dataclass(frozen=True)
class PPOTerms:
    """Per-token terms of the loss, all (B, T); zero where the mask is False."""

    policy_loss: torch.Tensor
    clipped: torch.Tensor
    """float: 1 where the clip bound was active (for clip_frac)."""
    ratio: torch.Tensor


def ppo_clip_terms(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = 3.0,
) -> PPOTerms:
    """Per-token PPO-clip loss with dual clip (Ye et al., 2020).

    loss_t = max(-A r_t, -A clip(r_t, 1 - clip_low, 1 + clip_high)) and, for A < 0,
    additionally min(that, -A * dual_clip), which bounds the loss when r_t is huge.
    ``advantages`` is (B,) or (B, T).
    """
    if advantages.dim() == 1:
        advantages = advantages[:, None]
    log_ratio = (logprobs - old_logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    clip_active = (clipped > unclipped).float()
    if dual_clip is not None:
        dual = -advantages * dual_clip
        loss = torch.where(advantages < 0, torch.minimum(loss, dual), loss)
    zero = torch.zeros((), dtype=loss.dtype, device=loss.device)
    return PPOTerms(
        policy_loss=torch.where(mask, loss, zero),
        clipped=torch.where(mask, clip_active, zero),
        ratio=torch.where(mask, ratio, zero),
    )


def low_var_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || pi_ref): exp(ref - logp) - (ref - logp) - 1, clamped.

    Non-negative, unbiased for the KL under samples from pi, zero where the mask is False.
    """
    delta = (ref_logprobs - logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    # expm1 keeps exp(d) - 1 - d accurate (and >= 0) for tiny d in float32.
    kl = (torch.expm1(delta) - delta).clamp(0.0, KL_CLAMP)
    return torch.where(mask, kl, torch.zeros((), dtype=kl.dtype, device=kl.device))


def token_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over masked tokens (a 0-dim tensor)."""
    return (values * mask).sum()


def token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over masked tokens of the whole batch ("token-mean" aggregation)."""
    return token_sum(values, mask) / mask.sum().clamp(min=1)


def policy_loss_sum(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float,
    clip_high: float,
    dual_clip: float | None,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token-*sum* of the full per-token objective, plus token sums of its parts.

    Divide by the number of response tokens of the whole mini-batch (across
    micro-batches and ranks) to get the token-mean loss; summing first makes
    gradient accumulation and data parallelism exact.

    Returns ``(loss_sum, sums)`` with sums of ``pg_loss``, ``kl``, ``clipped``,
    ``entropy`` (detached).
    """
    terms = ppo_clip_terms(logprobs, old_logprobs, advantages, mask, clip_low, clip_high, dual_clip)
    per_token = terms.policy_loss
    sums = {"pg_loss": token_sum(terms.policy_loss, mask).detach(), "clipped": token_sum(terms.clipped, mask)}
    if ref_logprobs is not None:
        kl = low_var_kl(logprobs, ref_logprobs, mask)
        per_token = per_token + kl_coef * kl
        sums["kl"] = token_sum(kl, mask).detach()
    if entropy is not None:
        if entropy_coef > 0:
            per_token = per_token - entropy_coef * entropy
        sums["entropy"] = token_sum(entropy, mask).detach()
    return token_sum(per_token, mask), sums
