"""verl integration: our estimators in verl's own registry, on verl's own batch type.

verl is installed without its dependency pins (see docs/integrations.md); when it
is missing these tests skip and say so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("verl.trainer.ppo.core_algos", reason="verl is not installed (make setup installs it)")

from omegaconf import OmegaConf  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo.core_algos import get_adv_estimator_fn  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage  # noqa: E402

from components.advantages import (  # noqa: E402
    compute_advantages,
    sample_simplex_weights,
    vpo_advantages,
)
from components.config import EstimatorConfig  # noqa: E402
from components.integrations.verl import ESTIMATOR_NAMES, vpo_score, weight_seed  # noqa: E402

B, M, K, T, GROUPS = 12, 3, 4, 7, 4


def synthetic_batch(seed: int = 0, as_lists: bool = False) -> tuple[DataProto, torch.Tensor, torch.Tensor]:
    """A DataProto as verl's trainer holds it before the advantage step, plus (rewards, group ids).

    Groups are interleaved; the uids first appear in sorted order, so any consistent
    uid -> group numbering (first appearance or sorted) gives ``group_ids``.
    """
    gen = torch.Generator().manual_seed(seed)
    group_ids = torch.tensor([0, 1, 2, 3, 1, 0, 2, 3, 3, 2, 1, 0])
    rewards = (torch.rand(B, M, K, generator=gen) * 4).floor() / 4  # ties and constant rows happen
    rewards[3, 2] = 0.0  # a missing answer: zero row
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    response_mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    token_level_rewards = torch.zeros(B, T)
    token_level_rewards[torch.arange(B), lengths - 1] = torch.tensor(
        [vpo_score(r.tolist())["score"] for r in rewards]
    )
    matrices = [vpo_score(r.tolist())["vpo_rewards"] for r in rewards]
    extra = np.empty(B, dtype=object)
    extra[:] = matrices
    data = DataProto.from_dict(
        tensors={"token_level_rewards": token_level_rewards, "response_mask": response_mask},
        non_tensors={
            "uid": np.array([f"uid-{g}" for g in group_ids.tolist()], dtype=object),
            # the legacy trainer stores reward_extra_info as np.array(list): (B, m, k) floats
            "vpo_rewards": extra if as_lists else np.array(matrices),
        },
    )
    return data, rewards, group_ids


def call_registered(name: str, data: DataProto, config=None) -> tuple[torch.Tensor, torch.Tensor]:
    """verl's dispatch for a registered estimator, with the kwargs compute_advantage builds for gdpo."""
    fn = get_adv_estimator_fn(name)
    return fn(
        token_level_rewards=data.batch["token_level_rewards"],
        response_mask=data.batch["response_mask"],
        config=config,
        index=data.non_tensor_batch["uid"],
        non_tensor_batch=data.non_tensor_batch,
        batch=data.batch,
    )


@pytest.mark.parametrize("as_lists", [False, True])
def test_vpo_through_verl_registry_equals_vpo_advantages(as_lists):
    data, rewards, group_ids = synthetic_batch(as_lists=as_lists)
    advantages, returns = call_registered("vpo", data)
    seed = weight_seed(data.non_tensor_batch["uid"])
    weights = sample_simplex_weights(GROUPS, 100, K, generator=torch.Generator().manual_seed(seed))
    expected, _ = vpo_advantages(rewards, group_ids, weights=weights)
    assert expected.abs().max() > 0.5
    mask = data.batch["response_mask"]
    assert advantages.shape == (B, T) and advantages.dtype == torch.float32
    torch.testing.assert_close(advantages, expected[:, None] * mask, atol=1e-6, rtol=0)
    torch.testing.assert_close(returns, advantages)
    assert (advantages[mask == 0] == 0).all()


def test_settings_come_from_algorithm_vpo():
    data, rewards, group_ids = synthetic_batch(seed=1)
    config = OmegaConf.create(
        {"adv_estimator": "vpo", "vpo": {"num_weights": 16, "sampler": "sobol", "seed": 5}}
    )
    advantages, _ = call_registered("vpo", data, config)
    seed = weight_seed(data.non_tensor_batch["uid"], seed=5)
    weights = sample_simplex_weights(
        GROUPS, 16, K, sampler="sobol", generator=torch.Generator().manual_seed(seed)
    )
    expected, _ = vpo_advantages(rewards, group_ids, weights=weights)
    torch.testing.assert_close(advantages, expected[:, None] * data.batch["response_mask"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["multi_rlvr", "max_at_k", "vpo_single"])
def test_other_estimators_match_ours(name):
    data, rewards, group_ids = synthetic_batch(seed=2)
    fixed = [0.4, 0.3, 0.2, 0.1]
    config = OmegaConf.create({"vpo": {"fixed_weights": fixed, "max_at_k": 2}})
    advantages, _ = call_registered(name, data, config)
    seed = weight_seed(data.non_tensor_batch["uid"])
    expected = compute_advantages(
        name, rewards, None, group_ids, torch.tensor(fixed), EstimatorConfig(name=name, max_at_k=2),
        generator=torch.Generator().manual_seed(seed),
    ).advantages
    assert expected.abs().max() > 0.5
    torch.testing.assert_close(advantages, expected[:, None] * data.batch["response_mask"], atol=1e-6, rtol=0)


def test_verl_091_compute_advantage_does_not_forward_reward_vectors():
    """verl's own compute_advantage reaches our estimator, which says why it cannot run."""
    data, _, _ = synthetic_batch()
    with pytest.raises(ValueError, match="forwards it to 'gdpo' only"):
        compute_advantage(data, adv_estimator="vpo", config=OmegaConf.create({"adv_estimator": "vpo"}))


def test_bad_reward_data_is_a_clear_error():
    data, _, _ = synthetic_batch()
    data.non_tensor_batch.pop("vpo_rewards")
    with pytest.raises(ValueError, match="no 'vpo_rewards'.*vpo_score"):
        call_registered("vpo", data)
    data, _, _ = synthetic_batch()
    data.non_tensor_batch["vpo_rewards"] = data.non_tensor_batch["vpo_rewards"] * 2
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        call_registered("vpo", data)
    with pytest.raises(ValueError, match=r"\(m, k\)"):
        vpo_score([])


def test_vpo_score_is_what_compute_score_returns():
    out = vpo_score([[1.0, 0.0], [0.5, 0.5], [0.0, 0.0]], fixed_weights=[0.25, 0.75])
    assert out == {"score": 0.5, "vpo_rewards": [[1.0, 0.0], [0.5, 0.5], [0.0, 0.0]]}


def test_import_verl_registers_the_estimators_through_the_plugin_entry_point():
    code = (
        "import json, sys; import verl; from verl.trainer.ppo import core_algos; "
        "print(json.dumps(['components.integrations.verl' in sys.modules, sorted(core_algos.ADV_ESTIMATOR_REGISTRY)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    loaded, registry = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded and set(ESTIMATOR_NAMES) <= set(registry)
