"""Search metrics of an evaluation pool (VPO_SPEC §6): pass@k, best@k, diversity, coverage, Pareto.

Every function takes numpy arrays or torch tensors and answers in the same
kind (a numpy input gives numpy arrays or Python floats, a torch input gives
tensors or Python floats). Work is done in float64 torch, vectorised over
problems / pools; there is no Python loop over candidates or prompts.

Pool metrics (:func:`diversity`, :func:`union_coverage`, :func:`pareto_front`)
accept one pool (N, k) -> Python number, a batch of equal-size pools
(P, N, k) -> (P,), or a list of pools of different sizes [(N_i, k), ...] -> (P,).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor
Rng = np.random.Generator | torch.Generator | int | None

_DTYPE = torch.float64


# --------------------------------------------------------------------------- conversions


def _is_numpy(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return False
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], torch.Tensor):
        return False
    return True


def _to_tensor(x: Any, dtype: torch.dtype = _DTYPE) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def _out(x: torch.Tensor, numpy: bool) -> Any:
    """A 0-d result becomes a Python number; otherwise the caller's kind."""
    if x.dim() == 0:
        return x.item()
    return x.cpu().numpy() if numpy else x


def _pools(pools: Any) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """-> (values (P, N_max, k) float64, valid (P, N_max) bool, single_pool)."""
    if isinstance(pools, (list, tuple)):
        tensors = [_to_tensor(p) for p in pools]
        if not tensors or any(t.dim() != 2 for t in tensors):
            raise ValueError("a list of pools must hold (N_i, k) arrays, at least one")
        if len({t.shape[1] for t in tensors}) != 1:
            raise ValueError(f"pools disagree on k: {sorted({t.shape[1] for t in tensors})}")
        sizes = torch.tensor([t.shape[0] for t in tensors])
        values = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True)
        valid = torch.arange(values.shape[1])[None, :] < sizes[:, None]
        return values, valid.to(values.device), False
    values = _to_tensor(pools)
    if values.dim() not in (2, 3):
        raise ValueError(f"a pool is (N, k) and a batch (P, N, k); got shape {tuple(values.shape)}")
    single = values.dim() == 2
    values = values[None] if single else values
    valid = torch.ones(values.shape[:2], dtype=torch.bool, device=values.device)
    return values, valid, single


def _finalize(values: torch.Tensor, single: bool, numpy: bool) -> Any:
    return _out(values[0] if single else values, numpy)


# --------------------------------------------------------------------------- pass@k


def pass_at_k(num_samples: Any, num_correct: Any, k: int) -> Any:
    """Unbiased pass@k = 1 - C(n-c, k) / C(n, k) per problem (Chen et al. 2021).

    Computed as the product form C(n-c, k) / C(n, k) = prod_{i=n-c+1..n} (1 - k/i)
    in log space (sum of log1p terms, then 1 - exp(x) = -expm1(x)): relative error
    ~1e-13 against exact fractions for n up to 1000.
    ``num_samples`` / ``num_correct`` are ints or (P,) arrays; returns a float
    or a (P,) array of the same kind.

    Raises:
        ValueError: k < 1, k > n, c < 0 or c > n.
    """
    numpy = _is_numpy(num_samples) and _is_numpy(num_correct)
    n, c = torch.broadcast_tensors(_to_tensor(num_samples), _to_tensor(num_correct))
    if k < 1:
        raise ValueError(f"k must be >= 1 (got {k})")
    if (c < 0).any() or (c > n).any():
        raise ValueError("need 0 <= num_correct <= num_samples for every problem")
    if (n < k).any():
        raise ValueError(f"pass@{k} needs at least {k} samples; smallest pool has {int(n.min())}")
    return _out(_pass_at_k(n, c, torch.tensor(float(k), dtype=_DTYPE)), numpy)


def _pass_at_k(n: torch.Tensor, c: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Broadcast n, c, k (float64): C(n-c, k) / C(n, k) = prod_{i=n-c+1..n} (1 - k/i), summed
    as log1p terms on a (..., max c) grid masked to each problem's c terms."""
    n, c, k = torch.broadcast_tensors(n, c, k)
    some_all_wrong = n - c >= k  # otherwise every k-subset holds a correct sample
    steps = torch.arange(int(c.max()) if c.numel() else 0, dtype=_DTYPE, device=n.device)
    terms = torch.log1p(-k[..., None] / (n[..., None] - steps))  # i = n, n-1, ..., n-c_max+1
    use = (steps < c[..., None]) & some_all_wrong[..., None]
    log_ratio = torch.where(use, terms, 0.0).sum(dim=-1)
    return torch.where(some_all_wrong, 0.0 - torch.expm1(log_ratio), torch.ones_like(log_ratio))


def pass_at_k_curve(num_samples: Any, num_correct: Any, max_k: int) -> Any:
    """Mean over problems of pass@k for k = 1..max_k -> (max_k,) array of the input kind."""
    numpy = _is_numpy(num_samples) and _is_numpy(num_correct)
    n, c = torch.broadcast_tensors(_to_tensor(num_samples), _to_tensor(num_correct))
    n, c = n.reshape(-1, 1), c.reshape(-1, 1)
    if max_k < 1 or (n < max_k).any():
        raise ValueError(f"pass@k curve to k={max_k} needs max_k >= 1 and every pool >= max_k")
    if (c < 0).any() or (c > n).any():
        raise ValueError("need 0 <= num_correct <= num_samples for every problem")
    ks = torch.arange(1, max_k + 1, dtype=_DTYPE)[None, :]
    return _out(_pass_at_k(n, c, ks).mean(0), numpy)


# --------------------------------------------------------------------------- best@k


def best_at_k_curve(
    pools: Any, max_k: int | None = None, *, rng: Rng = None, shuffle: bool = True
) -> Any:
    """best@k for k = 1..max_k: mean over prompts of the running max of the pool's scores.

    Args:
        pools: per-candidate fixed scalars, (P, N) or a list of P 1-D pools of any sizes.
        max_k: curve length (default: the largest pool). A pool shorter than k
            contributes its overall max (its running max is carried forward).
        rng: the one shuffle of each pool: a numpy Generator, a torch Generator,
            or an int seed (None = seed 0), so the curve is reproducible.
        shuffle: False keeps the pools in the given (generation) order.

    Returns (max_k,) array of the input kind. Raises ValueError for an empty pool
    or non-finite scores.
    """
    numpy = _is_numpy(pools)
    if isinstance(pools, (list, tuple)):
        tensors = [_to_tensor(p).reshape(-1) for p in pools]
        if not tensors:
            raise ValueError("best@k needs at least one pool")
        scores = torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True)
        sizes = torch.tensor([t.numel() for t in tensors], device=scores.device)
    else:
        scores = _to_tensor(pools)
        if scores.dim() != 2:
            raise ValueError(
                f"pools must be (P, N) or a list of 1-D pools; got {tuple(scores.shape)}"
            )
        sizes = torch.full((scores.shape[0],), scores.shape[1], device=scores.device)
    if (sizes == 0).any():
        raise ValueError("best@k is undefined for an empty pool")
    valid = torch.arange(scores.shape[1], device=scores.device)[None, :] < sizes[:, None]
    if not torch.isfinite(scores[valid]).all():
        raise ValueError("best@k scores must be finite")

    keys = _uniform_keys(scores.shape, rng).to(scores.device) if shuffle else None
    if keys is None:
        keys = torch.arange(scores.shape[1], dtype=_DTYPE, device=scores.device).expand(
            scores.shape
        )
    keys = keys.masked_fill(~valid, float("inf"))  # empty slots sort last
    order = keys.argsort(dim=1)
    shuffled = scores.gather(1, order).masked_fill(~valid.gather(1, order), float("-inf"))
    running = shuffled.cummax(dim=1).values  # -inf slots carry the last real max forward
    length = max_k if max_k is not None else scores.shape[1]
    if length < 1:
        raise ValueError(f"max_k must be >= 1 (got {length})")
    if length > running.shape[1]:
        running = torch.cat([running, running[:, -1:].expand(-1, length - running.shape[1])], dim=1)
    return _out(running[:, :length].mean(dim=0), numpy)


def _uniform_keys(shape: torch.Size, rng: Rng) -> torch.Tensor:
    if isinstance(rng, np.random.Generator):
        return torch.from_numpy(rng.random(tuple(shape)))
    generator = rng if isinstance(rng, torch.Generator) else torch.Generator().manual_seed(rng or 0)
    return torch.rand(tuple(shape), generator=generator, dtype=_DTYPE, device=generator.device)


# --------------------------------------------------------------------------- pool metrics


def diversity(pools: Any) -> Any:
    """Mean pairwise L1 distance between the pool's reward vectors (0 for pools of < 2)."""
    numpy = _is_numpy(pools)
    values, valid, single = _pools(pools)
    distances = torch.cdist(values, values, p=1.0)  # (P, N, N)
    pair = valid[:, :, None] & valid[:, None, :]
    n = valid.sum(dim=1).to(_DTYPE)
    total = (distances * pair).sum(dim=(1, 2))  # each unordered pair counted twice
    mean = torch.where(n > 1, total / (n * (n - 1)).clamp(min=1), torch.zeros_like(total))
    return _finalize(mean, single, numpy)


def union_coverage(pools: Any) -> Any:
    """sum_j max_i R_ij: how much of every objective the pool covers at best (0 for empty)."""
    numpy = _is_numpy(pools)
    values, valid, single = _pools(pools)
    if values.shape[1] == 0:  # every pool is empty
        return _finalize(values.new_zeros(values.shape[0]), single, numpy)
    best = values.masked_fill(~valid[..., None], float("-inf")).amax(dim=1)  # (P, k)
    best = torch.where(torch.isneginf(best), torch.zeros_like(best), best)
    return _finalize(best.sum(dim=-1), single, numpy)


@dataclass(frozen=True)
class ParetoFront:
    """Non-dominated part of a pool (higher is better in every dimension)."""

    size: Any
    """Number of distinct non-dominated reward vectors (int, or (P,) for a batch)."""
    fraction: Any
    """size / number of distinct reward vectors in the pool (float, or (P,))."""
    mask: Any
    """(N,) or (P, N_max) bool: the candidate is non-dominated (duplicates all True)."""


def pareto_front(pools: Any) -> ParetoFront:
    """Pareto front of reward vectors: i is dominated when some j has R_j >= R_i in every
    dimension and R_j > R_i in at least one. Equal vectors do not dominate each other and
    count once in ``size``. All comparisons are one (P, N, N, k) broadcast."""
    numpy = _is_numpy(pools)
    values, valid, single = _pools(pools)
    other, me = values[:, None, :, :], values[:, :, None, :]  # [p, i, j] compares j against i
    pair = valid[:, :, None] & valid[:, None, :]
    dominated = (((other >= me).all(-1) & (other > me).any(-1)) & pair).any(dim=2)
    on_front = valid & ~dominated
    equal = (other == me).all(-1) & pair
    earlier = torch.ones_like(equal[0]).tril(diagonal=-1)  # j < i
    first_copy = valid & ~(equal & earlier).any(dim=2)
    size = (on_front & first_copy).sum(dim=1)
    distinct = first_copy.sum(dim=1)
    fraction = torch.where(
        distinct > 0, size.to(_DTYPE) / distinct.clamp(min=1), torch.zeros_like(size, dtype=_DTYPE)
    )
    if single:
        return ParetoFront(int(size[0]), float(fraction[0]), _out(on_front[0], numpy))
    return ParetoFront(_out(size, numpy), _out(fraction, numpy), _out(on_front, numpy))
