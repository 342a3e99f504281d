"""Search metrics against exact combinatorics and hand examples."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from components.metrics import (
    best_at_k_curve,
    diversity,
    pareto_front,
    pass_at_k,
    pass_at_k_curve,
    union_coverage,
)


def _exact_pass_at_k(n: int, c: int, k: int) -> float:
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


# ----------------------------------------------------------------- pass@k


@pytest.mark.parametrize(
    "n, c, k",
    [
        (1, 0, 1),
        (1, 1, 1),
        (10, 3, 2),
        (30, 0, 30),
        (30, 1, 30),
        (30, 29, 1),
        (200, 7, 50),
        (1000, 1, 1),
        (1000, 1, 500),
        (1000, 3, 10),
        (1000, 500, 100),
        (1000, 999, 1000),
        (1000, 0, 1000),
        (1000, 17, 999),
    ],
)
def test_pass_at_k_matches_exact_combinatorics(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(_exact_pass_at_k(n, c, k), rel=1e-12, abs=1e-15)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 1000).flatmap(
        lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))
    )
)
def test_pass_at_k_property(nck):
    n, c, k = nck
    assert pass_at_k(n, c, k) == pytest.approx(_exact_pass_at_k(n, c, k), rel=1e-12, abs=1e-15)


def test_pass_at_k_is_vectorised_and_keeps_the_input_kind():
    n = np.array([1000, 1000, 500, 30])
    c = np.array([1, 999, 0, 30])
    out = pass_at_k(n, c, 10)
    assert isinstance(out, np.ndarray) and out.shape == (4,)
    expected = [_exact_pass_at_k(int(a), int(b), 10) for a, b in zip(n, c, strict=True)]
    assert out == pytest.approx(expected, rel=1e-9)
    assert out[2] == 0.0 and not np.signbit(out[2])
    out_t = pass_at_k(torch.tensor(n), torch.tensor(c), 10)
    assert isinstance(out_t, torch.Tensor) and torch.allclose(
        out_t, torch.tensor(expected, dtype=out_t.dtype)
    )


def test_pass_at_k_curve_is_mean_of_pass_at_k():
    n, c = np.array([30, 30, 30]), np.array([0, 1, 12])
    curve = pass_at_k_curve(n, c, 30)
    assert curve.shape == (30,)
    for k in (1, 5, 30):
        assert curve[k - 1] == pytest.approx(np.mean([_exact_pass_at_k(30, int(x), k) for x in c]))
    assert np.all(np.diff(curve) >= -1e-12)


def test_pass_at_k_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 5 samples"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="num_correct"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="k must be"):
        pass_at_k(4, 1, 0)


# ----------------------------------------------------------------- best@k


def test_best_at_k_hand_example_without_shuffle():
    pools = np.array([[0.1, 0.5, 0.3], [0.2, 0.2, 0.9]])
    curve = best_at_k_curve(pools, shuffle=False)
    assert curve.tolist() == pytest.approx([0.15, 0.35, 0.7])


def test_best_at_k_uneven_pools_carry_their_max_forward():
    pools = [np.array([0.1, 0.5]), np.array([0.2, 0.2, 0.9])]
    curve = best_at_k_curve(pools, max_k=5, shuffle=False)
    assert curve.tolist() == pytest.approx([0.15, 0.35, 0.7, 0.7, 0.7])


@settings(max_examples=40, deadline=None)
@given(
    pools=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
        elements=st.floats(0, 1),
    ),
    seed=st.integers(0, 2**31),
)
def test_best_at_k_is_monotone_and_ends_at_the_mean_max(pools, seed):
    curve = best_at_k_curve(pools, rng=seed)
    assert np.all(np.diff(curve) >= 0)
    assert curve[-1] == pytest.approx(pools.max(axis=1).mean())
    # the first point is the mean of one uniformly chosen candidate per pool: within range
    assert pools.min(axis=1).mean() - 1e-12 <= curve[0] <= pools.max(axis=1).mean() + 1e-12


def test_best_at_k_shuffle_is_reproducible_and_unbiased():
    pools = np.tile(np.arange(10) / 10, (2000, 1))
    a = best_at_k_curve(pools, rng=np.random.default_rng(3))
    b = best_at_k_curve(pools, rng=np.random.default_rng(3))
    assert np.array_equal(a, b)
    # E[max of k draws without replacement from {0, .1, ..., .9}]
    for k in (1, 3, 10):
        exact = sum(max(s) for s in itertools.combinations(range(10), k)) / math.comb(10, k) / 10
        assert a[k - 1] == pytest.approx(exact, abs=0.02)
    t = best_at_k_curve(torch.tensor(pools), rng=torch.Generator().manual_seed(3))
    assert isinstance(t, torch.Tensor) and t.shape == (10,)


def test_best_at_k_rejects_empty_or_non_finite_pools():
    with pytest.raises(ValueError, match="empty"):
        best_at_k_curve([np.array([0.5]), np.array([])])
    with pytest.raises(ValueError, match="finite"):
        best_at_k_curve(np.array([[0.5, np.nan]]))


# ----------------------------------------------------------------- pool metrics


def test_diversity_hand_example_and_identical_vectors():
    pool = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    assert diversity(pool) == pytest.approx((2 + 1 + 1) / 3)
    assert diversity(np.tile([0.3, 0.7, 1.0], (30, 1))) == 0.0
    assert diversity(np.array([[0.5, 0.5]])) == 0.0


def test_diversity_batches_and_uneven_pools():
    g = torch.Generator().manual_seed(0)
    pools = [torch.rand(n, 4, generator=g) for n in (2, 5, 9)]
    out = diversity(pools)
    assert isinstance(out, torch.Tensor) and out.shape == (3,)
    for value, pool in zip(out, pools, strict=True):
        pairs = list(itertools.combinations(range(len(pool)), 2))
        ref = sum(float((pool[i] - pool[j]).abs().sum()) for i, j in pairs) / len(pairs)
        assert float(value) == pytest.approx(ref)
    same = torch.stack([pools[1], pools[1]])
    assert torch.allclose(diversity(same), out[1].expand(2))


def test_union_coverage():
    pool = np.array([[1.0, 0.0, 0.2], [0.0, 0.5, 0.2], [0.3, 0.3, 0.1]])
    assert union_coverage(pool) == pytest.approx(1.7)
    assert union_coverage([pool, pool[:1]]).tolist() == pytest.approx([1.7, 1.2])


def test_pareto_front_hand_example():
    pool = np.array(
        [
            [1.0, 0.0],  # front
            [0.0, 1.0],  # front
            [0.5, 0.5],  # front
            [0.4, 0.4],  # dominated by [0.5, 0.5]
            [1.0, 0.0],  # duplicate of a front point
            [0.5, 0.0],  # dominated (weakly: equal in one dimension)
        ]
    )
    front = pareto_front(pool)
    assert front.size == 3
    assert front.fraction == pytest.approx(3 / 5)  # 5 distinct vectors
    assert front.mask.tolist() == [True, True, True, False, True, False]


def test_pareto_front_collapsed_pool_and_batches():
    collapsed = pareto_front(np.tile([0.5, 0.5], (30, 1)))
    assert (collapsed.size, collapsed.fraction) == (1, 1.0)
    batch = pareto_front(torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, 1.0]]]))
    assert batch.size.tolist() == [2, 1] and batch.fraction.tolist() == [1.0, 0.5]


@settings(max_examples=30, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 10), st.integers(1, 3)),
        elements=st.sampled_from([0.0, 0.5, 1.0]),
    )
)
def test_pareto_front_matches_loop_reference(pool):
    def dominates(a, b):
        return np.all(a >= b) and np.any(a > b)

    mask = [
        not any(dominates(pool[j], pool[i]) for j in range(len(pool))) for i in range(len(pool))
    ]
    distinct = {tuple(v) for v in pool}
    front = {tuple(v) for v, keep in zip(pool, mask, strict=True) if keep}
    result = pareto_front(pool)
    assert result.mask.tolist() == mask
    assert result.size == len(front)
    assert result.fraction == pytest.approx(len(front) / len(distinct))


def test_empty_pools_score_zero():
    empty = torch.zeros(0, 3)
    assert diversity(empty) == 0.0 and union_coverage(empty) == 0.0
    assert pareto_front(empty).size == 0
    mixed = [empty, torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]])]
    assert diversity(mixed).tolist() == [0.0, 2.0]
    assert union_coverage(mixed).tolist() == [0.0, 2.5]
    assert union_coverage([empty, empty]).tolist() == [0.0, 0.0]
    assert pareto_front(mixed).size.tolist() == [0, 2]
