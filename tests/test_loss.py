"""PPO-clip with dual clip, low_var_kl and token-mean aggregation (VPO_SPEC §4)."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from components.training.loss import low_var_kl, policy_loss_sum, ppo_clip_terms, token_mean


def _one(logp: float, old: float, adv: float, **kw):
    t = ppo_clip_terms(torch.tensor([[logp]]), torch.tensor([[old]]), torch.tensor([adv]), torch.tensor([[True]]), **kw)
    return float(t.policy_loss), float(t.clipped)


def test_ratio_one_gives_minus_advantage():
    assert _one(-1.0, -1.0, 2.0) == (-2.0, 0.0)
    assert _one(-1.0, -1.0, -0.5) == (0.5, 0.0)


def test_clip_for_positive_advantage():
    # ratio 1.5 > 1.2: the clipped term (-A * 1.2) is the max -> gradient stops
    loss, clipped = _one(math.log(1.5), 0.0, 1.0)
    assert loss == torch.tensor(-1.2).item() and clipped == 1.0
    # ratio 0.5 < 0.8 with A > 0: unclipped (-0.5) is the max, not clipped
    loss, clipped = _one(math.log(0.5), 0.0, 1.0)
    assert abs(loss + 0.5) < 1e-6 and clipped == 0.0


def test_clip_for_negative_advantage_and_dual_clip():
    # ratio 0.5 with A < 0: clipped at 0.8 -> loss 0.8
    loss, clipped = _one(math.log(0.5), 0.0, -1.0)
    assert abs(loss - 0.8) < 1e-6 and clipped == 1.0
    # ratio 2 with A < 0: unclipped -A*r = 2 (below dual bound 3)
    loss, _ = _one(math.log(2.0), 0.0, -1.0)
    assert abs(loss - 2.0) < 1e-6
    # ratio 10 with A < 0: dual clip bounds the loss at -A * 3
    loss, _ = _one(math.log(10.0), 0.0, -1.0)
    assert abs(loss - 3.0) < 1e-6
    loss, _ = _one(math.log(10.0), 0.0, -1.0, dual_clip=None)
    assert abs(loss - 10.0) < 1e-4


def test_asymmetric_clip_bounds():
    loss, _ = _one(math.log(1.5), 0.0, 1.0, clip_low=0.2, clip_high=0.28)
    assert abs(loss + 1.28) < 1e-6


def test_masked_tokens_contribute_nothing():
    t = ppo_clip_terms(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([1.0, -1.0]),
                       torch.tensor([[True, True, False], [True, False, False]]))
    assert t.policy_loss.tolist() == [[-1.0, -1.0, 0.0], [1.0, 0.0, 0.0]]


def test_low_var_kl_formula_and_zero_at_equality():
    logp = torch.tensor([[-1.0, -2.0, -0.5]])
    ref = torch.tensor([[-1.0, -1.0, -3.0]])
    kl = low_var_kl(logp, ref, torch.ones_like(logp, dtype=torch.bool))
    d = ref - logp
    assert torch.allclose(kl, d.exp() - d - 1)
    assert kl[0, 0] == 0


@settings(max_examples=200, deadline=None)
@given(st.floats(-30, 30), st.floats(-30, 30))
def test_low_var_kl_is_non_negative_and_bounded(a, b):
    kl = low_var_kl(torch.tensor([[a]]), torch.tensor([[b]]), torch.tensor([[True]]))
    assert 0 <= float(kl) <= 10.0


def test_token_mean_weights_every_token_equally():
    values = torch.tensor([[1.0, 1.0, 1.0, 1.0], [5.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, True], [True, False, False, False]])
    # token-mean: (4 + 5) / 5, not the mean of per-sequence means (1 + 5) / 2
    assert abs(float(token_mean(values, mask)) - 9.0 / 5.0) < 1e-6


def test_policy_gradient_at_ratio_one_is_minus_advantage_per_token():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]], requires_grad=True)
    adv = torch.tensor([2.0, -1.0])
    mask = torch.tensor([[True, True], [True, False]])
    loss, sums = policy_loss_sum(logp, logp.detach(), adv, mask, clip_low=0.2, clip_high=0.2, dual_clip=3.0)
    loss.backward()
    assert logp.grad.tolist() == [[-2.0, -2.0], [1.0, 0.0]]
    assert float(sums["clipped"]) == 0.0


def test_kl_term_enters_the_loss_with_its_coefficient():
    logp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])
    mask = torch.ones_like(logp, dtype=torch.bool)
    base, _ = policy_loss_sum(logp, logp, torch.zeros(1), mask, clip_low=0.2, clip_high=0.2, dual_clip=3.0)
    with_kl, sums = policy_loss_sum(logp, logp, torch.zeros(1), mask, clip_low=0.2, clip_high=0.2, dual_clip=3.0,
                                    ref_logprobs=ref, kl_coef=0.1)
    assert torch.allclose(with_kl - base, 0.1 * sums["kl"])
    assert float(sums["kl"]) > 0
