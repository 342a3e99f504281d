"""VPO estimators in verl's advantage-estimator registry.

Importing this module registers ``vpo``, ``vpo_single``, ``multi_rlvr`` and
``max_at_k`` with ``verl.trainer.ppo.core_algos.register_adv_est``. verl imports it
by itself once vpo-pipeline is installed: ``pyproject.toml`` declares it as a
``verl.plugins`` entry point, which ``import verl`` loads (or name it in
``VERL_USE_EXTERNAL_MODULES``). A verl user then sets ``algorithm.adv_estimator=vpo``.

Where the reward vectors come from: verl's reward managers call
``compute_score(data_source, solution_str, ground_truth, extra_info)``; when it
returns a dict, ``"score"`` is the scalar reward and every other key becomes
per-sample ``reward_extra_info``, which the trainer puts into
``DataProto.non_tensor_batch``. The compute_score returns :func:`vpo_score` of the
(m, k) reward matrix of its answers, so ``non_tensor_batch["vpo_rewards"]`` holds
one (m, k) matrix per response. The estimators follow the contract of verl's own
``gdpo`` estimator: keyword arguments ``token_level_rewards`` (B, T),
``response_mask`` (B, T), ``index`` (B,) uids (one group per prompt),
``config`` (``algorithm``) and ``non_tensor_batch``; they return
(advantages, returns), both the per-response advantage broadcast over the
response tokens (zero on padding).

verl 0.9.1 limitation: ``ray_trainer.compute_advantage`` forwards
``non_tensor_batch`` to ``gdpo`` only (by name; verl-project/verl PR #7473 makes it
generic) and the v1 trainer does not fetch reward-extra fields for the advantage
step at all. Called without ``non_tensor_batch`` the estimators raise a
ValueError saying so, instead of training on something else.

Settings: ``algorithm.vpo`` (optional, e.g. ``+algorithm.vpo.num_weights=64``) takes
the fields of :class:`components.config.EstimatorConfig` (``num_weights``,
``alpha``, ``sampler``, ``std``, ``max_at_k``, ``eps``) plus ``reward_key``
(default ``vpo_rewards``), ``fixed_weights`` (default: the plain mean; used by
``multi_rlvr`` and ``max_at_k``) and ``seed``. Weights are drawn from a
generator seeded by :func:`weight_seed` of the batch's uids: fresh every step
(verl draws new uids), reproducible from the batch alone.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from verl.trainer.ppo.core_algos import get_adv_estimator_fn, register_adv_est
from verl.utils import as_torch_index

from components.advantages import compute_advantages
from components.config import EstimatorConfig

REWARD_KEY = "vpo_rewards"
"""Default ``compute_score`` dict key (-> ``non_tensor_batch``) of the (m, k) reward matrix."""

ESTIMATOR_NAMES = ("vpo", "vpo_single", "multi_rlvr", "max_at_k")
"""The names registered in verl's ``ADV_ESTIMATOR_REGISTRY``."""

_OWN_SETTINGS = ("reward_key", "fixed_weights", "seed")


def vpo_score(rewards: Sequence[Sequence[float]], fixed_weights: Sequence[float] | None = None) -> dict[str, Any]:
    """What a verl ``compute_score`` returns for one response with m scored answers.

    ``rewards``: (m, k) in [0, 1], one row per answer (missing or duplicate answers:
    zero rows). Returns ``{"score": best answer's fixed scalar, "vpo_rewards": rewards}``;
    verl logs and stores ``score`` as the scalar reward, the estimators read the matrix.
    """
    matrix = np.asarray(rewards, dtype=np.float64)
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise ValueError(f"rewards must be a non-empty (m, k) matrix; got shape {matrix.shape}")
    k = matrix.shape[1]
    weights = np.full(k, 1.0 / k) if fixed_weights is None else np.asarray(fixed_weights, dtype=np.float64)
    return {"score": float((matrix @ weights).max()), REWARD_KEY: matrix.tolist()}


def weight_seed(index: Sequence[Any], seed: int = 0) -> int:
    """Seed of a batch's weight draws: CRC32 of its sorted distinct uids, offset by ``seed``."""
    uids = ",".join(sorted({str(uid) for uid in index}))
    return seed * 2**32 + zlib.crc32(uids.encode())


def estimator_settings(config: Any) -> tuple[EstimatorConfig, dict[str, Any]]:
    """(EstimatorConfig, our own settings) from ``algorithm.vpo`` of a verl config (or None)."""
    raw = config.get("vpo", None) if config is not None else None
    values = dict(raw.items()) if hasattr(raw, "items") else {}  # dict, DictConfig
    own = {key: values.pop(key) for key in _OWN_SETTINGS if key in values}
    return EstimatorConfig(**values), own


def _reward_matrices(non_tensor_batch: Mapping[str, Any] | None, key: str, batch: int) -> torch.Tensor:
    """(B, m, k) float32 from the per-sample reward matrices verl keeps in non_tensor_batch."""
    if non_tensor_batch is None:
        raise ValueError(
            "the VPO estimators read the reward vectors from non_tensor_batch, which this caller did "
            "not pass; verl 0.9.1's compute_advantage forwards it to 'gdpo' only "
            "(verl-project/verl PR #7473 forwards it to every estimator that accepts it)"
        )
    if key not in non_tensor_batch:
        raise ValueError(
            f"non_tensor_batch has no {key!r}: make compute_score return vpo_score(...) "
            f"(available keys: {sorted(non_tensor_batch)})"
        )
    rows = [np.asarray(row, dtype=np.float32) for row in non_tensor_batch[key]]
    shapes = {row.shape for row in rows}
    if len(rows) != batch or len(shapes) != 1 or next(iter(shapes)) == () or len(next(iter(shapes))) > 2:
        raise ValueError(
            f"non_tensor_batch[{key!r}] must hold {batch} reward matrices of one shape (m, k) "
            f"(or (k,) for single-answer methods); got {len(rows)} of shapes {sorted(shapes)}"
        )
    matrices = torch.from_numpy(np.stack(rows))
    return matrices if matrices.dim() == 3 else matrices[:, None, :]


def _make_estimator(name: str):
    def estimator(
        token_level_rewards: torch.Tensor,
        response_mask: torch.Tensor,
        index: np.ndarray,
        config: Any = None,
        non_tensor_batch: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, own = estimator_settings(config)
        cfg = cfg.model_copy(update={"name": name})
        rewards = _reward_matrices(non_tensor_batch, own.get("reward_key", REWARD_KEY), len(index))
        k = rewards.shape[-1]
        fixed = torch.tensor([float(w) for w in own.get("fixed_weights") or [1.0 / k] * k])
        generator = torch.Generator().manual_seed(weight_seed(index, int(own.get("seed", 0))))
        result = compute_advantages(
            name, rewards, None, as_torch_index(index, device="cpu"), fixed, cfg, generator=generator
        )
        advantages = result.advantages.to(response_mask.device)[:, None] * response_mask
        advantages = advantages.to(token_level_rewards.dtype)
        return advantages, advantages

    estimator.__name__ = estimator.__qualname__ = f"compute_{name}_outcome_advantage"
    estimator.__doc__ = f"verl advantage estimator {name!r}: components.advantages.ESTIMATORS[{name!r}]."
    return estimator


_ESTIMATORS = {name: _make_estimator(name) for name in ESTIMATOR_NAMES}


def register() -> None:
    """Register every estimator of :data:`ESTIMATOR_NAMES` with verl (idempotent)."""
    for name, fn in _ESTIMATORS.items():
        register_adv_est(name)(fn)
        assert get_adv_estimator_fn(name) is fn


register()
