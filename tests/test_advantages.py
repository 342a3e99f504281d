"""Advantage estimators: hand-computed cases, properties against loop references, contracts."""

from __future__ import annotations

import itertools
import math
import typing

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from components.advantages import (
    ESTIMATORS,
    AdvantageResult,
    Groups,
    compute_advantages,
    max_at_k_rewards,
    sample_simplex_weights,
    vpo_advantages,
)
from components.config import EstimatorConfig

EPS = 1e-6


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_batch(groups: int, size: int, m: int, k: int, seed: int = 0):
    g = _gen(seed)
    mask = torch.rand(groups * size, m, generator=g) > 0.25
    rewards = torch.rand(groups * size, m, k, generator=g) * mask[..., None]
    group_ids = torch.arange(groups).repeat_interleave(size)
    return rewards, mask, group_ids


# ----------------------------------------------------------------- loop references


def _reference_vpo(rewards, mask, group_ids, weights) -> tuple[np.ndarray, np.ndarray]:
    """VPO_SPEC §2 written as loops: raw_b = mean_j max_{s valid} w_j . r_s, then z-norm."""
    rewards, mask = np.asarray(rewards, float), np.asarray(mask, bool)
    ids = np.asarray(group_ids)
    raw = np.zeros(len(ids))
    adv = np.zeros(len(ids))
    for g_index, g in enumerate(np.unique(ids)):
        members = np.flatnonzero(ids == g)
        w = np.asarray(weights[g_index], float)
        for b in members:
            total = 0.0
            for w_j in w:
                scores = [w_j @ rewards[b, s] for s in range(rewards.shape[1]) if mask[b, s]]
                total += max(scores) if scores else 0.0
            raw[b] = total / len(w)
        mean, std = raw[members].mean(), raw[members].std()
        adv[members] = 0.0 if std < EPS else (raw[members] - mean) / (std + EPS)
    return adv, raw


def _reference_max_at_k(scalars: list[float], k: int) -> list[float]:
    """Mean over all k-subsets containing i of the subset's max."""
    n = len(scalars)
    out = []
    for i in range(n):
        subsets = [s for s in itertools.combinations(range(n), k) if i in s]
        out.append(sum(max(scalars[j] for j in s) for s in subsets) / len(subsets))
    return out


# ----------------------------------------------------------------- VPO by hand


def test_vpo_hand_computed_group():
    # Two weight vectors: the axes. Rollout 0 covers both axes with two answers,
    # rollout 1 has one balanced answer and a masked slot.
    rewards = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [0.0, 0.0]]])
    mask = torch.tensor([[True, True], [True, False]])
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    adv, raw = vpo_advantages(rewards, torch.tensor([7, 7]), weights=weights, mask=mask)
    assert raw.tolist() == pytest.approx([1.0, 0.5])
    expected = 0.25 / (0.25 + EPS)  # mean 0.75, population std 0.25
    assert adv.tolist() == pytest.approx([expected, -expected], rel=1e-6)


def test_vpo_three_rollouts_by_hand():
    # k = 2, weights (0.5, 0.5) and (0.9, 0.1); m = 2.
    rewards = torch.tensor(
        [
            [
                [1.0, 0.0],
                [0.0, 1.0],
            ],  # scores: w1 -> 0.5, 0.5 ; w2 -> 0.9, 0.1 -> raw (0.5+0.9)/2 = 0.7
            [[0.2, 0.2], [0.4, 0.0]],  # w1 -> 0.2, 0.2 ; w2 -> 0.2, 0.36 -> raw (0.2+0.36)/2 = 0.28
            [[0.0, 0.0], [0.0, 0.0]],  # raw 0
        ]
    )
    weights = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    adv, raw = vpo_advantages(rewards, torch.zeros(3, dtype=torch.long), weights=weights)
    assert raw.tolist() == pytest.approx([0.7, 0.28, 0.0], abs=1e-7)
    values = np.array([0.7, 0.28, 0.0])
    assert adv.numpy() == pytest.approx((values - values.mean()) / (values.std() + EPS), rel=1e-5)


def test_identical_rollouts_give_zero_advantages():
    one = torch.rand(1, 3, 5, generator=_gen())
    rewards = one.repeat(8, 1, 1)
    adv, raw = vpo_advantages(rewards, torch.zeros(8, dtype=torch.long), generator=_gen(1))
    assert torch.all(adv == 0)
    assert torch.allclose(raw, raw[0].expand(8))


def test_single_answer_with_many_weights_matches_grpo_of_mean_reward():
    rewards = torch.rand(8, 1, 4, generator=_gen(3))
    ids = torch.zeros(8, dtype=torch.long)
    adv, raw = vpo_advantages(rewards, ids, num_weights=4096, sampler="sobol", generator=_gen(4))
    mean_reward = rewards[:, 0].mean(-1)
    grpo = (mean_reward - mean_reward.mean()) / (mean_reward.std(correction=0) + EPS)
    assert torch.allclose(raw, mean_reward, atol=5e-3)
    assert torch.allclose(adv, grpo, atol=5e-2)


def test_masked_answers_never_change_the_max():
    rewards, mask, ids = _random_batch(groups=3, size=4, m=2, k=3, seed=5)
    weights = sample_simplex_weights(3, 16, 3, generator=_gen(6))
    base_adv, base_raw = vpo_advantages(rewards, ids, weights=weights, mask=mask)
    # Extra answer slots: zero rows, and masked rows holding large values.
    zero_pad = torch.cat([rewards, torch.zeros(12, 2, 3)], dim=1)
    loud_pad = torch.cat([rewards, torch.ones(12, 2, 3)], dim=1)
    extended_mask = torch.cat([mask, torch.zeros(12, 2, dtype=torch.bool)], dim=1)
    for padded in (zero_pad, loud_pad):
        adv, raw = vpo_advantages(padded, ids, weights=weights, mask=extended_mask)
        assert torch.allclose(raw, base_raw) and torch.allclose(adv, base_adv)


def test_rollout_without_any_valid_answer_scores_zero():
    rewards = torch.ones(2, 2, 2)
    mask = torch.tensor([[False, False], [True, False]])
    _, raw = vpo_advantages(
        rewards, torch.zeros(2, dtype=torch.long), weights=torch.eye(2), mask=mask
    )
    assert raw.tolist() == [0.0, 1.0]


def test_permutation_within_group_permutes_advantages():
    rewards, mask, ids = _random_batch(groups=2, size=5, m=3, k=4, seed=8)
    weights = sample_simplex_weights(2, 32, 4, generator=_gen(9))
    adv, _ = vpo_advantages(rewards, ids, weights=weights, mask=mask)
    perm = torch.cat(
        [torch.randperm(5, generator=_gen(10)), 5 + torch.randperm(5, generator=_gen(11))]
    )
    adv_perm, _ = vpo_advantages(rewards[perm], ids[perm], weights=weights, mask=mask[perm])
    assert torch.allclose(adv_perm, adv[perm], atol=1e-5)


def test_groups_follow_unique_order_and_may_interleave():
    rewards, mask, ids = _random_batch(groups=3, size=3, m=2, k=3, seed=12)
    ids = torch.tensor([42, 5, 9, 5, 42, 9, 9, 5, 42])  # interleaved, non-contiguous ids
    weights = sample_simplex_weights(3, 8, 3, generator=_gen(13))  # order: 5, 9, 42
    adv, raw = vpo_advantages(rewards, ids, weights=weights, mask=mask)
    ref_adv, ref_raw = _reference_vpo(rewards, mask, ids, weights)
    assert raw.numpy() == pytest.approx(ref_raw, abs=1e-6)
    assert adv.numpy() == pytest.approx(ref_adv, abs=1e-4)


def test_weights_are_shared_within_and_fresh_across_groups():
    w = sample_simplex_weights(4, 10, 3, generator=_gen(14))
    assert not torch.allclose(w[0], w[1])
    # Two groups with identical rollouts get different raw scores only through fresh weights.
    rewards = torch.rand(3, 2, 3, generator=_gen(15)).repeat(2, 1, 1)
    ids = torch.tensor([0, 0, 0, 1, 1, 1])
    _, raw = vpo_advantages(rewards, ids, num_weights=5, generator=_gen(16))
    assert not torch.allclose(raw[:3], raw[3:])


def test_generator_makes_draws_reproducible():
    rewards, mask, ids = _random_batch(groups=4, size=4, m=3, k=5, seed=17)
    for sampler in ("iid", "sobol"):
        a = vpo_advantages(rewards, ids, sampler=sampler, generator=_gen(3), mask=mask)
        b = vpo_advantages(rewards, ids, sampler=sampler, generator=_gen(3), mask=mask)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    sizes=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    m=st.integers(1, 3),
    k=st.integers(1, 4),
    num_weights=st.integers(1, 6),
)
def test_vpo_matches_loop_reference(data, sizes, m, k, num_weights):
    batch = sum(sizes)
    unit = st.floats(0.0, 1.0, allow_nan=False, width=32)
    rewards = torch.from_numpy(data.draw(hnp.arrays(np.float32, (batch, m, k), elements=unit)))
    mask = torch.from_numpy(data.draw(hnp.arrays(np.bool_, (batch, m))))
    rewards = rewards * mask[..., None]
    ids = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    ids = ids[torch.from_numpy(np.array(data.draw(st.permutations(range(batch)))))]
    weights = sample_simplex_weights(len(sizes), num_weights, k, generator=_gen(batch))
    adv, raw = vpo_advantages(rewards, ids, weights=weights, mask=mask)
    ref_adv, ref_raw = _reference_vpo(rewards, mask, ids, weights)
    assert raw.numpy() == pytest.approx(ref_raw, abs=1e-6)
    # Scores are float32: compare z-scores where the group's spread dwarfs that rounding.
    stds = {int(g): ref_raw[ids.numpy() == int(g)].std() for g in ids.unique()}
    spread = np.array([stds[int(g)] > 1e-3 for g in ids])
    assert adv.numpy()[spread] == pytest.approx(ref_adv[spread], abs=1e-3)
    assert np.isfinite(adv.numpy()).all()


# ----------------------------------------------------------------- weights


@pytest.mark.parametrize("sampler", ["iid", "sobol"])
@pytest.mark.parametrize("dim", [1, 2, 5, 16])
def test_weights_lie_on_the_simplex(sampler, dim):
    w = sample_simplex_weights(7, 33, dim, sampler=sampler, generator=_gen(dim))
    assert w.shape == (7, 33, dim) and w.dtype == torch.float32
    assert torch.all(w >= 0)
    assert torch.allclose(w.sum(-1), torch.ones(7, 33), atol=1e-6)


@pytest.mark.parametrize("alpha", [0.3, 1.0, 2.5])
def test_dirichlet_moments(alpha):
    k = 3
    w = sample_simplex_weights(400, 100, k, alpha=alpha, generator=_gen(20)).reshape(-1, k)
    a0 = alpha * k
    expected_var = alpha * (a0 - alpha) / (a0**2 * (a0 + 1))
    assert torch.allclose(w.mean(0), torch.full((k,), 1 / k, dtype=w.dtype), atol=5e-3)
    assert torch.allclose(w.var(0), torch.full((k,), expected_var, dtype=w.dtype), rtol=0.05)


def test_sobol_points_are_uniform_on_the_simplex_and_lower_variance():
    w = sample_simplex_weights(200, 64, 3, sampler="sobol", generator=_gen(21)).reshape(-1, 3)
    assert torch.allclose(w.mean(0), torch.full((3,), 1 / 3, dtype=w.dtype), atol=5e-3)
    assert torch.allclose(w.var(0), torch.full((3,), 1 / 18, dtype=w.dtype), rtol=0.05)
    # QMC weights estimate E_w[max] with less noise than i.i.d. weights.
    rewards = torch.rand(1, 3, 4, generator=_gen(22)).repeat(300, 1, 1)
    ids = torch.arange(300)  # 300 one-rollout groups = 300 independent estimates
    spread = {
        s: vpo_advantages(rewards, ids, num_weights=64, sampler=s, generator=_gen(23))[1].std()
        for s in ("iid", "sobol")
    }
    assert spread["sobol"] < spread["iid"] / 2


def test_sobol_rejects_other_alphas():
    with pytest.raises(ValueError, match="alpha"):
        sample_simplex_weights(2, 4, 3, alpha=0.5, sampler="sobol")


def test_explicit_weights_must_fit():
    rewards = torch.rand(4, 2, 3, generator=_gen())
    with pytest.raises(ValueError, match="weights must be"):
        vpo_advantages(rewards, torch.zeros(4, dtype=torch.long), weights=torch.ones(5, 2))
    with pytest.raises(ValueError, match="weights must be"):
        vpo_advantages(rewards, torch.tensor([0, 0, 1, 1]), weights=torch.ones(3, 5, 3) / 3)


# ----------------------------------------------------------------- registry


def test_registry_covers_every_configurable_name():
    names = typing.get_args(EstimatorConfig.model_fields["name"].annotation)
    assert set(names) == set(ESTIMATORS)


def _run(name, rewards, mask, ids, seed=0, **cfg_fields) -> AdvantageResult:
    k = rewards.shape[-1]
    cfg = EstimatorConfig(name=name, **cfg_fields)
    return compute_advantages(name, rewards, mask, ids, torch.full((k,), 1 / k), cfg, _gen(seed))


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_every_estimator_contract(name):
    m = 3 if name in {"vpo", "multi_rlvr"} else 1
    rewards, mask, ids = _random_batch(groups=6, size=8, m=m, k=4, seed=30)
    result = _run(name, rewards, mask, ids)
    assert result.advantages.shape == (48,) and result.advantages.dtype == torch.float32
    assert torch.isfinite(result.advantages).all()
    assert result.advantages.abs().sum() > 0
    assert set(result.diagnostics) == {
        "group_std_mean",
        "zero_std_group_frac",
        "own_set_expected_max",
        "pool_expected_best",
        "advantage_abs_mean",
    }
    assert all(math.isfinite(v) for v in result.diagnostics.values())
    assert result.diagnostics["pool_expected_best"] >= result.diagnostics["own_set_expected_max"]

    # All-equal groups -> 0 (one group of identical rollouts inside a mixed batch). The
    # vectors are constant across dimensions so that random_weight_grpo's per-rollout
    # weights see equal scalars too.
    constant, mask_c = rewards.clone(), mask.clone()
    constant[:8], mask_c[:8] = 0.625, True
    assert torch.all(_run(name, constant, mask_c, ids).advantages[:8] == 0)

    # Groups of one -> 0, also when mixed with real groups.
    singletons = torch.arange(48)
    assert torch.all(_run(name, rewards, mask, singletons).advantages == 0)
    mixed = ids.clone()
    mixed[0] = 99
    assert _run(name, rewards, mask, mixed).advantages[0] == 0


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_every_estimator_rejects_rewards_outside_unit_interval(name):
    rewards, mask, ids = _random_batch(groups=2, size=4, m=1, k=3)
    bad = rewards.clone()
    bad[0, 0, 0] = 1.5
    with pytest.raises(ValueError, match=r"\[0, 1\].*max=1\.5"):
        _run(name, bad, mask, ids)
    bad[0, 0, 0] = -0.25
    with pytest.raises(ValueError, match=r"min=-0\.25"):
        _run(name, bad, mask, ids)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        _run(name, bad, mask, ids)


def test_bad_shapes_and_names_are_clear_errors():
    rewards, mask, ids = _random_batch(groups=2, size=2, m=2, k=3)
    with pytest.raises(ValueError, match="unknown estimator"):
        compute_advantages("ppo", rewards, mask, ids, torch.ones(3) / 3, EstimatorConfig())
    with pytest.raises(ValueError, match=r"\(B, m, k\)"):
        vpo_advantages(rewards[:, 0], ids)
    with pytest.raises(ValueError, match="mask"):
        vpo_advantages(rewards, ids, mask=mask[:, :1])
    with pytest.raises(ValueError, match="group_ids"):
        vpo_advantages(rewards, ids.float())
    with pytest.raises(ValueError, match="fixed_weights"):
        compute_advantages("grpo", rewards, mask, ids, torch.ones(2), EstimatorConfig())


def test_vpo_registry_entry_matches_public_api():
    rewards, mask, ids = _random_batch(groups=3, size=4, m=3, k=4, seed=31)
    result = _run("vpo", rewards, mask, ids, seed=5, num_weights=20)
    adv, raw = vpo_advantages(rewards, ids, num_weights=20, generator=_gen(5), mask=mask)
    assert torch.equal(result.advantages, adv)
    assert result.diagnostics["own_set_expected_max"] == pytest.approx(float(raw.mean()), rel=1e-6)


def test_grpo_std_kinds():
    rewards = torch.tensor([0.0, 0.5, 1.0, 1.0]).view(4, 1, 1)
    ids = torch.zeros(4, dtype=torch.long)
    x = np.array([0.0, 0.5, 1.0, 1.0])
    for std, scale in (("population", x.std()), ("unbiased", x.std(ddof=1)), ("none", None)):
        adv = _run("grpo", rewards, None, ids, std=std).advantages.numpy()
        expected = x - x.mean() if scale is None else (x - x.mean()) / (scale + EPS)
        assert adv == pytest.approx(expected, rel=1e-5)


def test_grpo_uses_fixed_weights_on_answer_zero():
    rewards = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    ids = torch.zeros(2, dtype=torch.long)
    cfg = EstimatorConfig(name="grpo")
    adv = compute_advantages("grpo", rewards, None, ids, torch.tensor([0.75, 0.25]), cfg).advantages
    assert adv.tolist() == pytest.approx([1.0, -1.0], rel=1e-5)


def test_multi_rlvr_sums_fixed_scalar_over_valid_answers():
    rewards = torch.tensor([[[1.0, 1.0], [1.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
    mask = torch.tensor([[True, True], [True, False]])  # rollout 1's second answer is a duplicate
    result = _run("multi_rlvr", rewards, mask, torch.zeros(2, dtype=torch.long))
    # totals 1.5 and 1.0 -> z-scores +1, -1
    assert result.advantages.tolist() == pytest.approx([1.0, -1.0], rel=1e-5)


def test_rloo_is_leave_one_out():
    x = torch.tensor([0.0, 0.25, 1.0, 0.5])
    result = _run("rloo", x.view(4, 1, 1), None, torch.zeros(4, dtype=torch.long))
    expected = [float(x[i] - (x.sum() - x[i]) / 3) for i in range(4)]
    assert result.advantages.tolist() == pytest.approx(expected, abs=1e-7)


def test_gdpo_normalises_each_dimension_then_whitens():
    rewards, _, ids = _random_batch(groups=3, size=4, m=1, k=3, seed=33)
    r = rewards[:, 0].double().numpy()
    summed = np.zeros(12)
    for g in range(3):
        block = r[4 * g : 4 * g + 4]
        summed[4 * g : 4 * g + 4] = ((block - block.mean(0)) / (block.std(0) + EPS)).sum(1)
    expected = (summed - summed.mean()) / (summed.std() + EPS)
    assert _run("gdpo", rewards, None, ids).advantages.numpy() == pytest.approx(expected, abs=1e-5)
    # A dimension with a tiny spread counts as much as one with a large spread.
    rewards = torch.tensor([[1.0, 0.51], [0.0, 0.50], [0.0, 0.50], [1.0, 0.51]]).view(4, 1, 2)
    adv = _run("gdpo", rewards, None, torch.tensor([0, 0, 1, 1])).advantages
    assert adv.tolist() == pytest.approx([1.0, -1.0, -1.0, 1.0], rel=1e-4)


def test_random_weight_grpo_draws_one_weight_per_rollout():
    rewards = torch.tensor([[1.0, 0.0]]).repeat(8, 1).view(8, 1, 2)  # identical rollouts
    ids = torch.zeros(8, dtype=torch.long)
    a = _run("random_weight_grpo", rewards, None, ids, seed=1).advantages
    b = _run("random_weight_grpo", rewards, None, ids, seed=1).advantages
    assert torch.equal(a, b)
    assert a.abs().sum() > 0  # different weights per rollout break the tie


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
def test_max_at_k_transform_matches_subset_enumeration(k):
    scalars = [0.3, 0.9, 0.1, 0.5, 0.5, 0.7, 0.2, 0.0]
    ids = torch.tensor([3, 1, 3, 1, 3, 1, 3, 3])  # groups of 5 (id 3) and 3 (id 1)
    out = max_at_k_rewards(torch.tensor(scalars, dtype=torch.float64), Groups.from_ids(ids), k)
    for g in (1, 3):
        members = [i for i in range(8) if int(ids[i]) == g]
        ref = _reference_max_at_k([scalars[i] for i in members], min(k, len(members)))
        assert out[members].tolist() == pytest.approx(ref, abs=1e-12)


def test_max_at_k_default_k_and_advantages():
    x = torch.tensor([0.1, 0.9, 0.4, 0.4, 0.0, 0.7, 0.2, 0.3])
    result = _run("max_at_k", x.view(8, 1, 1), None, torch.zeros(8, dtype=torch.long))
    transformed = np.array(_reference_max_at_k(x.tolist(), 4))  # k = max(2, 8 // 2)
    expected = (transformed - transformed.mean()) / (transformed.std() + EPS)
    assert result.advantages.numpy() == pytest.approx(expected, abs=1e-5)
    # max@k rewards the best rollout more than GRPO and spreads less among the weak ones
    assert int(result.advantages.argmax()) == 1


def test_diagnostics_by_hand():
    rewards = torch.tensor(
        [[[1.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.5, 0.5], [0.0, 0.0]]]
    )
    rewards = torch.cat([rewards, rewards[2:]])  # group 1 = two identical rollouts
    ids = torch.tensor([0, 0, 1, 1])
    cfg = EstimatorConfig(name="vpo", num_weights=1024, sampler="sobol")
    d = compute_advantages(
        "vpo", rewards, None, ids, torch.full((2,), 0.5), cfg, _gen()
    ).diagnostics
    # raw: E max(w1, w2) = 3/4 for w ~ Dir(1, 1); 0; 1/2; 1/2
    assert d["own_set_expected_max"] == pytest.approx((0.75 + 0 + 0.5 + 0.5) / 4, abs=2e-3)
    assert d["pool_expected_best"] == pytest.approx((0.75 + 0.5) / 2, abs=2e-3)
    assert d["group_std_mean"] == pytest.approx((0.375 + 0.0) / 2, abs=2e-3)
    assert d["zero_std_group_frac"] == 0.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu():
    rewards, mask, ids = _random_batch(groups=16, size=8, m=3, k=8, seed=40)
    weights = sample_simplex_weights(16, 50, 8, generator=_gen(41))
    cpu = vpo_advantages(rewards, ids, weights=weights, mask=mask)
    gpu = vpo_advantages(rewards.cuda(), ids.cuda(), weights=weights.cuda(), mask=mask.cuda())
    assert torch.allclose(cpu[0], gpu[0].cpu(), atol=1e-5)
    for name in ESTIMATORS:
        m = 3 if name in {"vpo", "multi_rlvr"} else 1
        k = rewards.shape[-1]
        cfg = EstimatorConfig(name=name)
        result = compute_advantages(
            name,
            rewards[:, :m].cuda(),
            mask[:, :m].cuda(),
            ids.cuda(),
            torch.full((k,), 1 / k),
            cfg,
            torch.Generator(device="cuda").manual_seed(0),
        )
        assert result.advantages.is_cuda and torch.isfinite(result.advantages).all()
