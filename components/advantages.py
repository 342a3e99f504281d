"""Advantage estimators: VPO and the scalar baselines it is compared with.

Every estimator maps one batch of scored rollouts to one scalar advantage per
rollout (broadcast over its response tokens by the trainer). Formulas follow
VPO_SPEC.md §2 and §5; docs/estimators.md restates each one as implemented.

Shapes: B rollouts, m answers per rollout, k reward dimensions, G groups
(one group = the rollouts of one prompt), K weight vectors per group.

* ``rewards``   (B, m, k) float in [0, 1]; masked answers are zero rows.
* ``mask``      (B, m) bool: the answer exists, parsed and is not a duplicate.
* ``group_ids`` (B,) int: rollouts with equal ids share a prompt. Any ints
  work; groups are numbered in ``torch.unique(group_ids)`` order.
* ``fixed_weights`` (k,): the task's fixed scalarisation (VPO_SPEC §5).

Everything is vectorised over the whole batch: rollouts are laid out in a
padded (G, n_max, ...) tensor by :class:`Groups` (from
``torch.unique(return_inverse=True)``), and per-group statistics are
``index_add_`` segment sums over the group index. No Python loop runs over
groups or rollouts. Weight vectors and the scores w . r are float32 (the
hot path), group statistics float64; advantages come back as float32 and never
contain NaN.

Switch estimators by name through :data:`ESTIMATORS` / :func:`compute_advantages`
(``EstimatorConfig.name``); :func:`vpo_advantages` is the stand-alone VPO API.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from components.config import EstimatorConfig

StdKind = Literal["population", "unbiased", "none"]
Sampler = Literal["iid", "sobol"]

_COMPUTE_DTYPE = torch.float64
"""Group statistics, z-scores and combinatorics."""
_SCORE_DTYPE = torch.float32
"""Weights and scalarised scores w . r: the (G, K, n*m) hot path, where float32 halves the time."""
_DIAGNOSTIC_SEED = 0
"""Seed of the private generator that draws weights for the set diagnostics of
non-VPO estimators (so diagnostics never consume the caller's random stream)."""


@dataclass(frozen=True)
class AdvantageResult:
    """Output of every estimator."""

    advantages: torch.Tensor
    """(B,) float32, one scalar per rollout."""
    diagnostics: dict[str, float]
    """``group_std_mean``: mean over groups of the population std of the signal the
    estimator centres (VPO: raw set scores; GRPO: fixed scalar; ...).
    ``zero_std_group_frac``: share of groups whose signal std < eps (groups of one included).
    ``own_set_expected_max``: mean over rollouts of E_w max over the rollout's own answers.
    ``pool_expected_best``: mean over groups of E_w max over all answers of the group.
    ``advantage_abs_mean``: mean |A|."""


# --------------------------------------------------------------------------- groups


@dataclass(frozen=True)
class Groups:
    """Segment layout of a batch: which group each rollout is in and where.

    ``index[b]`` is the group of rollout b (0..G-1, ``torch.unique`` order) and
    ``position[b]`` its slot among its group's rollouts (batch order), so
    ``pad`` / ``unpad`` move between (B, ...) and (G, n_max, ...) layouts.
    """

    index: torch.Tensor
    """(B,) long group number."""
    position: torch.Tensor
    """(B,) long slot of the rollout inside its group."""
    counts: torch.Tensor
    """(G,) long group sizes."""
    max_size: int

    @classmethod
    def from_ids(cls, group_ids: torch.Tensor) -> Groups:
        _, index = torch.unique(group_ids, return_inverse=True)
        counts = torch.bincount(index)
        order = torch.argsort(index, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        position = torch.empty_like(index)
        position[order] = torch.arange(index.numel(), device=index.device) - starts[index[order]]
        return cls(index=index, position=position, counts=counts, max_size=int(counts.max()))

    @property
    def num_groups(self) -> int:
        return self.counts.numel()

    def pad(self, values: torch.Tensor, fill: float | bool = 0) -> torch.Tensor:
        """(B, ...) -> (G, n_max, ...) with ``fill`` in the empty slots."""
        out = values.new_full((self.num_groups, self.max_size, *values.shape[1:]), fill)
        out[self.index, self.position] = values
        return out

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """(G, n_max, ...) -> (B, ...)."""
        return padded[self.index, self.position]

    def valid(self) -> torch.Tensor:
        """(G, n_max) bool: the slot holds a rollout."""
        slots = torch.arange(self.max_size, device=self.counts.device)
        return slots[None, :] < self.counts[:, None]

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """(B, ...) -> (G, ...) per-group mean."""
        sums = values.new_zeros((self.num_groups, *values.shape[1:])).index_add_(
            0, self.index, values
        )
        return sums / self.counts.view(-1, *([1] * (values.dim() - 1))).to(values.dtype)

    def std(self, values: torch.Tensor, *, unbiased: bool = False) -> torch.Tensor:
        """(B, ...) -> (G, ...) per-group std (population by default; 0 for groups of one)."""
        centred = values - self.mean(values)[self.index]
        sq = values.new_zeros((self.num_groups, *values.shape[1:])).index_add_(
            0, self.index, centred**2
        )
        denom = (self.counts - 1 if unbiased else self.counts).clamp(min=1).to(values.dtype)
        return (sq / denom.view(-1, *([1] * (values.dim() - 1)))).sqrt()


def group_zscore(
    values: torch.Tensor, groups: Groups, *, std: StdKind = "population", eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre (and scale) ``values`` (B, ...) within each group.

    A = (x - mean_g) / (std_g + eps) for ``std`` = population / unbiased,
    A = x - mean_g for ``none``. Where the group's population std < eps
    (constant groups, groups of one) every A is exactly 0.

    Returns (advantages (B, ...), population std per group (G, ...)).
    """
    mean = groups.mean(values)
    population_std = groups.std(values)
    centred = values - mean[groups.index]
    if std == "none":
        scaled = centred
    else:
        scale = population_std if std == "population" else groups.std(values, unbiased=True)
        scaled = centred / (scale[groups.index] + eps)
    flat = population_std[groups.index] < eps
    return torch.where(flat, torch.zeros_like(scaled), scaled), population_std


# --------------------------------------------------------------------------- weights


def sample_simplex_weights(
    num_groups: int,
    num_weights: int,
    dim: int,
    *,
    alpha: float = 1.0,
    sampler: Sampler = "iid",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw (num_groups, num_weights, dim) float32 weight vectors on the simplex.

    ``iid``: w ~ Dirichlet(alpha) as normalised Gamma(alpha) draws: alpha = 1
    uses Exp(1) = -log U; other alphas Marsaglia–Tsang in float64, normalised in
    log space (see :func:`_log_standard_gamma`). Every draw comes from
    ``generator``, so a seeded generator reproduces the weights exactly.

    ``sobol``: (alpha = 1 only) one scrambled Sobol point set of ``num_weights``
    points in [0,1)^(dim-1) seeded from ``generator``, given an independent
    random digital shift per group (XOR of the binary digits with a fresh mask:
    fresh weights per group, each point uniform on the 2^-30 grid, net structure
    kept), then mapped to the simplex by the spacings of the sorted coordinates
    (uniform on the simplex = Dir(1)). Best with K a power of two.
    """
    if num_groups < 0 or num_weights < 1 or dim < 1:
        raise ValueError(f"need num_weights >= 1 and dim >= 1 (got K={num_weights}, k={dim})")
    if alpha <= 0:
        raise ValueError(f"Dirichlet alpha must be > 0 (got {alpha})")
    gen_device = generator.device if generator is not None else torch.device(device or "cpu")
    shape = (num_groups, num_weights, dim)
    if sampler not in ("iid", "sobol"):
        raise ValueError(f"unknown weight sampler {sampler!r}: expected 'iid' or 'sobol'")
    if dim == 1:
        weights = torch.ones(shape, dtype=_SCORE_DTYPE, device=gen_device)
    elif sampler == "sobol":
        if alpha != 1.0:
            raise ValueError(
                f"sampler='sobol' maps uniform points to Dirichlet(1) only; got alpha={alpha} "
                "(use sampler='iid' for other concentrations)"
            )
        weights = _sobol_simplex(shape, generator, gen_device)
    elif alpha == 1.0:
        uniform = torch.rand(shape, generator=generator, device=gen_device, dtype=_SCORE_DTYPE)
        exponential = (-torch.log1p(-uniform)).clamp_min(torch.finfo(_SCORE_DTYPE).tiny)
        weights = exponential / exponential.sum(dim=-1, keepdim=True)
    else:
        weights = torch.softmax(_log_standard_gamma(shape, alpha, generator, gen_device), dim=-1)
    return weights.to(device=device or gen_device, dtype=_SCORE_DTYPE)


def _uniform_open(
    shape: tuple[int, ...], generator: torch.Generator | None, device
) -> torch.Tensor:
    """U(0, 1] float64 (never exactly 0, so log() is finite)."""
    return 1.0 - torch.rand(shape, generator=generator, device=device, dtype=_COMPUTE_DTYPE)


def _log_standard_gamma(
    shape: tuple[int, ...], alpha: float, generator: torch.Generator | None, device
) -> torch.Tensor:
    """log of Gamma(alpha, 1) draws (float64), reproducible from ``generator``.

    Marsaglia & Tsang (2000): for a >= 1,
    d = a - 1/3, c = 1/sqrt(9d), propose v = (1 + c x)^3 with x ~ N(0,1), accept
    when log U < x²/2 + d - d v + d log v; the sample is d v. For alpha < 1 draw
    with a = alpha + 1 and multiply by U^(1/alpha) (added in log space, so tiny
    alphas cannot underflow). Rejection runs in vectorised rounds over the
    still-rejected entries (acceptance > 95% per round).
    """
    a = alpha + 1.0 if alpha < 1.0 else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    n = math.prod(shape)
    out = torch.empty(n, dtype=_COMPUTE_DTYPE, device=device)
    todo = torch.arange(n, device=device)
    while todo.numel():
        x = torch.randn(todo.numel(), generator=generator, device=device, dtype=_COMPUTE_DTYPE)
        v = (1.0 + c * x) ** 3
        log_u = torch.log(_uniform_open((todo.numel(),), generator, device))
        positive = v > 0
        log_v = torch.log(torch.where(positive, v, torch.ones_like(v)))
        accept = positive & (log_u < 0.5 * x**2 + d - d * v + d * log_v)
        out[todo[accept]] = math.log(d) + log_v[accept]
        todo = todo[~accept]
    if alpha < 1.0:
        out = out + torch.log(_uniform_open((n,), generator, device)) / alpha
    return out.view(shape)


_SOBOL_BITS = 30
"""torch's SobolEngine emits multiples of 2**-30."""


def _sobol_simplex(
    shape: tuple[int, int, int], generator: torch.Generator | None, device
) -> torch.Tensor:
    num_groups, num_weights, dim = shape
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())
    engine = torch.quasirandom.SobolEngine(dim - 1, scramble=True, seed=seed)
    points = engine.draw(num_weights, dtype=_COMPUTE_DTYPE).to(device)  # (K, k-1)
    # Random digital shift per group: XOR the 30-bit expansion with a fresh mask. Unlike a
    # modular shift this keeps the net structure of the point set (2x lower variance).
    digits = (points * 2**_SOBOL_BITS).long()
    masks = torch.randint(
        0, 2**_SOBOL_BITS, (num_groups, 1, dim - 1), generator=generator, device=device
    )
    uniforms = ((digits[None] ^ masks).to(_COMPUTE_DTYPE) + 0.5) / 2**_SOBOL_BITS
    uniforms = uniforms.sort(dim=-1).values
    zeros = uniforms.new_zeros((num_groups, num_weights, 1))
    ones = uniforms.new_ones((num_groups, num_weights, 1))
    return torch.diff(torch.cat([zeros, uniforms, ones], dim=-1), dim=-1)


# --------------------------------------------------------------------------- VPO core


def _best_own_scores(
    rewards: torch.Tensor, mask: torch.Tensor, groups: Groups, weights: torch.Tensor
) -> torch.Tensor:
    """(G, n_max, K): max over each rollout's valid answers of w_j . r_s (0 when it has none).

    Masked answers (and empty slots) get the reward row -1, so their score is
    -sum(w) <= 0 <= any valid answer's score (weights are >= 0, rewards >= 0):
    they can never win the max, and the final clamp at 0 scores a rollout with
    no valid answer as 0. One batched matmul (G, m*n, k) @ (G, k, K) does the
    work; answers are laid out answer-major so the max over them is an
    elementwise max of contiguous (n, K) slabs.
    """
    filled = rewards.to(_SCORE_DTYPE).masked_fill(~mask[..., None], -1.0)
    padded = groups.pad(filled, fill=-1.0).transpose(1, 2)  # (G, m, n, k)
    g, m, n, k = padded.shape
    scores = torch.bmm(padded.reshape(g, m * n, k), weights.transpose(1, 2))  # (G, m*n, K)
    return scores.view(g, m, n, -1).amax(dim=1).clamp_min_(0.0)


def _expected_own_max(best_own: torch.Tensor, groups: Groups) -> torch.Tensor:
    """raw_b = (1/K) sum_j max_{s valid in b} w_j . r_s -> (B,) float64."""
    return groups.unpad(best_own.mean(dim=2).to(_COMPUTE_DTYPE))


def _expected_pool_max(best_own: torch.Tensor) -> torch.Tensor:
    """Per group, E_w of the max over all answers of all its rollouts -> (G,) float64."""
    return best_own.amax(dim=1).mean(dim=1).to(_COMPUTE_DTYPE)


def _resolve_weights(
    weights: torch.Tensor | None,
    groups: Groups,
    num_weights: int,
    dim: int,
    *,
    alpha: float,
    sampler: Sampler,
    generator: torch.Generator | None,
    device: torch.device,
) -> torch.Tensor:
    """(G, K, k) float32: the given weights (broadcast when (K, k)) or fresh draws."""
    if weights is None:
        return sample_simplex_weights(
            groups.num_groups,
            num_weights,
            dim,
            alpha=alpha,
            sampler=sampler,
            generator=generator,
            device=device,
        )
    weights = torch.as_tensor(weights).to(device=device, dtype=_SCORE_DTYPE)
    if weights.dim() == 2:
        weights = weights.expand(groups.num_groups, *weights.shape)
    if weights.dim() != 3 or weights.shape[0] != groups.num_groups or weights.shape[2] != dim:
        raise ValueError(
            f"weights must be (K, {dim}) or ({groups.num_groups}, K, {dim}) "
            f"(groups in torch.unique(group_ids) order); got {tuple(weights.shape)}"
        )
    low, high = torch.aminmax(weights)  # one pass; NaN fails both tests
    if not (low >= 0 and high < math.inf):
        raise ValueError(
            f"weights must be finite and non-negative; found min={low:g}, max={high:g}"
        )
    return weights.contiguous()


def vpo_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    *,
    num_weights: int = 100,
    alpha: float = 1.0,
    sampler: Sampler = "iid",
    generator: torch.Generator | None = None,
    weights: torch.Tensor | None = None,
    eps: float = 1e-6,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """VPO advantages (VPO_SPEC §2).

    raw_b = (1/K) sum_j max_{s in answers of b} w_j . r_s with K weight vectors
    drawn once per group and shared by the group's rollouts, then
    A_b = (raw_b - mean_g) / (std_g + eps), population std, A = 0 where std_g < eps.

    Args:
        rewards: (B, m, k) in [0, 1].
        group_ids: (B,) ints; rollouts of one prompt share an id.
        num_weights: K, when ``weights`` is not given.
        alpha, sampler, generator: how weights are drawn (:func:`sample_simplex_weights`).
        weights: explicit weights, (K, k) shared by all groups or (G, K, k) with
            groups in ``torch.unique(group_ids)`` order.
        mask: (B, m) bool; False answers never take part in the max. Default: all True.

    Returns:
        (advantages (B,), raw (B,)), both float32.
    """
    rewards, mask, group_ids = _validate(rewards, mask, group_ids)
    groups = Groups.from_ids(group_ids)
    w = _resolve_weights(
        weights,
        groups,
        num_weights,
        rewards.shape[-1],
        alpha=alpha,
        sampler=sampler,
        generator=generator,
        device=rewards.device,
    )
    raw = _expected_own_max(_best_own_scores(rewards, mask, groups, w), groups)
    advantages, _ = group_zscore(raw, groups, std="population", eps=eps)
    return advantages.float(), raw.float()


# --------------------------------------------------------------------------- max@k


def _binom(n: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """C(n, r) elementwise in float64 (0 where r < 0 or r > n)."""
    n, r = torch.broadcast_tensors(n.to(_COMPUTE_DTYPE), r.to(_COMPUTE_DTYPE))
    ok = (r >= 0) & (r <= n) & (n >= 0)
    n_, r_ = torch.where(ok, n, 0.0), torch.where(ok, r, 0.0)
    log_c = torch.lgamma(n_ + 1) - torch.lgamma(r_ + 1) - torch.lgamma(n_ - r_ + 1)
    return torch.where(ok, torch.exp(log_c), 0.0)


def max_at_k_rewards(scalar: torch.Tensor, groups: Groups, k: int | None) -> torch.Tensor:
    """Max@k reward transform of Bagirov et al., "The Best of N Worlds" (arXiv 2510.23393, eq. 9).

    The unbiased on-policy gradient of max@k = E[max of k samples] from a group
    of n rollouts is sum_i r~_i grad log pi(y_i) with r~_i the mean, over all
    k-subsets of the group that contain i, of the subset's max reward. With the
    group sorted ascending r_(1) <= ... <= r_(n) and k_g = min(k, n)
    (k = None: max(2, n // 2)), the rollout at rank i gets

        r~_i = [C(i-1, k-1) r_(i) + sum_{j>i} C(j-2, k-2) r_(j)] / C(n-1, k-1)

    (the paper divides by C(n, k); ours is n/k times that, a per-group constant
    that keeps r~ in reward units and vanishes under z-scoring). k = 1 gives
    r~ = r. Ties are harmless: r~_i is a subset average of the max, which does
    not depend on how equal rewards are ordered. Returns (B,) float64.
    """
    n_max = groups.max_size
    valid = groups.valid()
    padded = groups.pad(scalar).masked_fill(~valid, float("inf"))
    sorted_r, order = padded.sort(dim=1)  # valid slots come first
    sorted_r = sorted_r.masked_fill(~valid, 0.0)

    n = groups.counts.to(_COMPUTE_DTYPE)[:, None]  # (G, 1)
    target = (
        torch.full_like(n, float(k)) if k is not None else torch.clamp(torch.floor(n / 2), min=2)
    )
    kk = torch.minimum(target, n)  # (G, 1)
    rank = torch.arange(1, n_max + 1, device=scalar.device, dtype=_COMPUTE_DTYPE)
    rank = rank[None, :]  # (1, n_max), 1-based

    as_max = _binom(rank - 1, kk - 1) * sorted_r  # subsets whose max is i itself
    weighted = _binom(rank - 2, kk - 2) * sorted_r  # per j: subsets holding i and max j > i
    above = torch.flip(torch.cumsum(torch.flip(weighted, [1]), 1), [1]) - weighted  # sum_{j>i}
    transformed_sorted = torch.where(valid, (as_max + above) / _binom(n - 1, kk - 1), 0.0)
    transformed = torch.empty_like(transformed_sorted).scatter_(1, order, transformed_sorted)
    return groups.unpad(transformed)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class _Batch:
    rewards: torch.Tensor  # (B, m, k) float64
    mask: torch.Tensor  # (B, m) bool
    groups: Groups
    fixed_weights: torch.Tensor  # (k,) float64

    def first_answer(self) -> torch.Tensor:
        """(B, k) reward vector of answer row 0 (single-answer methods)."""
        return self.rewards[:, 0]

    def fixed_scalar(self) -> torch.Tensor:
        """(B,) fixed scalar of answer row 0."""
        return self.first_answer() @ self.fixed_weights


_EstimatorOutput = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
"""(advantages (B,), signal (B,) whose group spread is reported, VPO best-own scores
(G, n_max, K) from :func:`_best_own_scores` or None for non-VPO estimators)."""
EstimatorFn = Callable[[_Batch, EstimatorConfig, "torch.Generator | None"], _EstimatorOutput]


def _vpo(batch: _Batch, cfg: EstimatorConfig, generator) -> _EstimatorOutput:
    weights = sample_simplex_weights(
        batch.groups.num_groups,
        cfg.num_weights,
        batch.rewards.shape[-1],
        alpha=cfg.alpha,
        sampler=cfg.sampler,
        generator=generator,
        device=batch.rewards.device,
    )
    best_own = _best_own_scores(batch.rewards, batch.mask, batch.groups, weights)
    raw = _expected_own_max(best_own, batch.groups)
    advantages, _ = group_zscore(raw, batch.groups, std=cfg.std, eps=cfg.eps)
    return advantages, raw, best_own


def _vpo_single(batch: _Batch, cfg: EstimatorConfig, generator) -> _EstimatorOutput:
    single = _Batch(batch.rewards[:, :1], batch.mask[:, :1], batch.groups, batch.fixed_weights)
    return _vpo(single, cfg, generator)


def _grpo(batch: _Batch, cfg: EstimatorConfig, generator) -> _EstimatorOutput:
    scalar = batch.fixed_scalar()
    return group_zscore(scalar, batch.groups, std=cfg.std, eps=cfg.eps)[0], scalar, None


def _multi_rlvr(batch: _Batch, cfg: EstimatorConfig, generator) -> _EstimatorOutput:
    per_answer = (batch.rewards @ batch.fixed_weights) * batch.mask
    total = per_answer.sum(dim=1)
    return group_zscore(total, batch.groups, std=cfg.std, eps=cfg.eps)[0], total, None


def _max_at_k(batch: _Batch, cfg: EstimatorConfig, generator) -> _EstimatorOutput:
    transformed = max_at_k_rewards(batch.fixed_scalar(), batch.groups, cfg.max_at_k)
    return group_zscore(transformed, batch.groups, std=cfg.std, eps=cfg.eps)[0], transformed, None


def _random_weight_grpo(batch: _Batch, cfg: EstimatorConfig, generator) -> _EstimatorOutput:
    r = batch.first_answer()
    w = sample_simplex_weights(
        r.shape[0],
        1,
        r.shape[1],
        alpha=cfg.alpha,
        sampler="iid",
        generator=generator,
        device=r.device,
    )[:, 0]
    scalar = (w * r).sum(dim=-1)
    return group_zscore(scalar, batch.groups, std=cfg.std, eps=cfg.eps)[0], scalar, None


def _gdpo(batch: _Batch, cfg: EstimatorConfig, generator) -> _EstimatorOutput:
    per_dim, _ = group_zscore(batch.first_answer(), batch.groups, std=cfg.std, eps=cfg.eps)
    summed = per_dim.sum(dim=-1)
    # Each group's z-scores sum to 0, so the batch mean is 0: whitening is a rescale.
    batch_std = summed.std(correction=0)
    advantages = torch.zeros_like(summed) if batch_std < cfg.eps else summed / (batch_std + cfg.eps)
    return advantages, summed, None


def _rloo(batch: _Batch, cfg: EstimatorConfig, generator) -> _EstimatorOutput:
    scalar = batch.fixed_scalar()
    n = batch.groups.counts.to(scalar.dtype)[batch.groups.index]
    centred, _ = group_zscore(scalar, batch.groups, std="none", eps=cfg.eps)
    return torch.where(n > 1, centred * n / (n - 1).clamp(min=1), 0.0), scalar, None


ESTIMATORS: dict[str, EstimatorFn] = {
    "vpo": _vpo,
    "vpo_single": _vpo_single,
    "grpo": _grpo,
    "multi_rlvr": _multi_rlvr,
    "max_at_k": _max_at_k,
    "random_weight_grpo": _random_weight_grpo,
    "gdpo": _gdpo,
    "rloo": _rloo,
}
"""Estimator name (``EstimatorConfig.name``) -> function. Single-answer methods
(vpo_single, grpo, max_at_k, random_weight_grpo, gdpo, rloo) read answer row 0."""


def compute_advantages(
    name: str,
    rewards: torch.Tensor,
    mask: torch.Tensor | None,
    group_ids: torch.Tensor,
    fixed_weights: torch.Tensor,
    cfg: EstimatorConfig,
    generator: torch.Generator | None = None,
) -> AdvantageResult:
    """Advantages of one batch with the estimator registered as ``name``.

    Raises:
        ValueError: unknown name, bad shapes, or rewards that are NaN or outside [0, 1].
    """
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; registered: {', '.join(sorted(ESTIMATORS))}")
    rewards, mask, group_ids = _validate(rewards, mask, group_ids)
    fixed = torch.as_tensor(fixed_weights).to(device=rewards.device, dtype=_COMPUTE_DTYPE)
    if fixed.shape != (rewards.shape[-1],) or not torch.isfinite(fixed).all() or (fixed < 0).any():
        raise ValueError(
            f"fixed_weights must be ({rewards.shape[-1]},) finite and non-negative; "
            f"got shape {tuple(fixed.shape)}"
        )
    batch = _Batch(rewards.to(_COMPUTE_DTYPE), mask, Groups.from_ids(group_ids), fixed)
    advantages, signal, best_own = ESTIMATORS[name](batch, cfg, generator)
    advantages = torch.nan_to_num(advantages, nan=0.0, posinf=0.0, neginf=0.0)
    return AdvantageResult(
        advantages.float(), _diagnostics(batch, cfg, advantages, signal, best_own)
    )


def _diagnostics(
    batch: _Batch,
    cfg: EstimatorConfig,
    advantages: torch.Tensor,
    signal: torch.Tensor,
    best_own: torch.Tensor | None,
) -> dict[str, float]:
    if best_own is None:  # non-VPO estimator: set statistics from a private, fixed-seed draw
        gen_device = batch.rewards.device if batch.rewards.device.type == "cuda" else "cpu"
        private = torch.Generator(device=gen_device).manual_seed(_DIAGNOSTIC_SEED)
        weights = sample_simplex_weights(
            batch.groups.num_groups,
            cfg.num_weights,
            batch.rewards.shape[-1],
            generator=private,
            device=batch.rewards.device,
        )
        best_own = _best_own_scores(batch.rewards, batch.mask, batch.groups, weights)
    group_std = batch.groups.std(signal)
    return {
        "group_std_mean": float(group_std.mean()),
        "zero_std_group_frac": float((group_std < cfg.eps).to(_COMPUTE_DTYPE).mean()),
        "own_set_expected_max": float(_expected_own_max(best_own, batch.groups).mean()),
        "pool_expected_best": float(_expected_pool_max(best_own).mean()),
        "advantage_abs_mean": float(advantages.abs().mean()),
    }


# --------------------------------------------------------------------------- validation


def _validate(
    rewards: torch.Tensor, mask: torch.Tensor | None, group_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check shapes and ranges; return (rewards floating, mask bool, group_ids long)."""
    rewards = torch.as_tensor(rewards)
    if rewards.dim() != 3 or 0 in rewards.shape:
        raise ValueError(
            f"rewards must be a non-empty (B, m, k) tensor; got shape {tuple(rewards.shape)}"
        )
    if rewards.is_complex():
        raise ValueError(f"rewards must be real-valued; got {rewards.dtype}")
    if not rewards.is_floating_point():
        rewards = rewards.to(_SCORE_DTYPE)
    low, high = (float(x) for x in torch.aminmax(rewards))  # one pass; NaN propagates
    if math.isnan(low) or math.isnan(high):
        nan_count = int(torch.isnan(rewards).sum())
        raise ValueError(
            f"rewards contain {nan_count} NaN entries; every reward must lie in [0, 1]"
        )
    if low < 0.0 or high > 1.0:
        raise ValueError(f"rewards must lie in [0, 1]; found min={low:g}, max={high:g}")
    batch, answers = rewards.shape[:2]
    if mask is None:
        mask = torch.ones((batch, answers), dtype=torch.bool, device=rewards.device)
    mask = torch.as_tensor(mask, device=rewards.device)
    if mask.shape != (batch, answers):
        raise ValueError(f"mask must be (B, m) = ({batch}, {answers}); got {tuple(mask.shape)}")
    group_ids = torch.as_tensor(group_ids, device=rewards.device)
    if group_ids.shape != (batch,) or group_ids.is_floating_point() or group_ids.is_complex():
        raise ValueError(
            f"group_ids must be a ({batch},) integer tensor; got {tuple(group_ids.shape)} {group_ids.dtype}"
        )
    return rewards, mask.to(torch.bool), group_ids.long()
