"""VPO in verl on CPU: verl's reward manager and estimator registry on tiny-model rollouts.

    .venv/bin/python examples/verl_vpo.py                      # vpo, ~30 s (most of it importing verl)
    .venv/bin/python examples/verl_vpo.py --estimator multi_rlvr

verl's PPO trainer needs Ray workers and a vLLM/SGLang rollout server, so this
example runs on CPU exactly the part VPO changes, with verl's own code:

1. the tiny from-scratch model samples ``--group`` responses to each multi-answer prompt;
2. verl's ``NaiveRewardManager`` calls our ``compute_score``, which parses m answers,
   scores each one (k = 2 dimensions) and returns ``vpo_score(matrix)``: ``"score"`` is the
   scalar reward, ``"vpo_rewards"`` arrives in ``reward_extra_info``;
3. as verl's trainer does before its advantage step, the extra info goes into
   ``non_tensor_batch`` and the estimator named by ``algorithm.adv_estimator`` is taken from
   verl's registry (``get_adv_estimator_fn``) and called with the ``gdpo`` keyword contract.

As in examples/trl_vpo.py, the untrained model writes no ``<response_i>`` tags, so the
completion is split into m equal chunks.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from omegaconf import OmegaConf  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo.core_algos import get_adv_estimator_fn  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_response_mask  # noqa: E402
from verl.workers.reward_manager.naive import NaiveRewardManager  # noqa: E402

import components.integrations.verl  # noqa: E402,F401  registers vpo & co. (the entry point does too)
from components.config import load_config  # noqa: E402
from components.integrations.multi_answer import multi_answer_prompt  # noqa: E402
from components.integrations.verl import vpo_score  # noqa: E402
from components.policy import load_policy  # noqa: E402
from components.tasks.answers import drop_duplicates  # noqa: E402

M = 3


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **_):
    """verl's compute_score contract: m answers x (share of letters, share of digits)."""
    size = max(len(solution_str) // M, 1)
    answers = drop_duplicates([solution_str[i * size : (i + 1) * size] or None for i in range(M)], str)
    rows = [
        [sum(c.isascii() and c.isalpha() for c in a) / len(a), sum(c.isdigit() for c in a) / len(a)]
        if a else [0.0, 0.0]
        for a in answers
    ]
    return vpo_score(rows)


def rollouts(model, tokenizer, prompts: list[str], group: int, new_tokens: int) -> DataProto:
    """A DataProto laid out like verl's rollout output: left-padded prompts, right-padded responses."""
    repeated = [p for p in prompts for _ in range(group)]
    enc = tokenizer(repeated, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=True, top_k=0, max_new_tokens=new_tokens,
                             pad_token_id=tokenizer.pad_token_id)
    responses = out[:, enc.input_ids.shape[1]:]
    eos = responses == tokenizer.eos_token_id
    after_eos = (eos.long().cumsum(1) - eos.long()) > 0
    responses = responses.masked_fill(after_eos, tokenizer.pad_token_id)
    return DataProto.from_dict(
        tensors={
            "prompts": enc.input_ids, "responses": responses,
            "attention_mask": torch.cat([enc.attention_mask, (~after_eos).long()], dim=1),
        },
        non_tensors={
            "data_source": np.array(["toy"] * len(repeated), dtype=object),
            "reward_model": np.array([{"ground_truth": None}] * len(repeated), dtype=object),
            "uid": np.array([f"prompt-{i // group}" for i in range(len(repeated))], dtype=object),
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--estimator", default="vpo", choices=("vpo", "multi_rlvr"))
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=24)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    model, tokenizer = load_policy(load_config(None, []))
    prompts = [multi_answer_prompt(f"Write {i} letters and {i} digits.", M) for i in range(1, 4)]
    data = rollouts(model, tokenizer, prompts, args.group, args.new_tokens)

    # verl's reward manager: compute_score dicts -> reward tensor + reward_extra_info
    scored = NaiveRewardManager(tokenizer, num_examine=0, compute_score=compute_score)(data, return_dict=True)
    # what verl's trainer does before the advantage step (ray_trainer.fit, "adv")
    data.batch["token_level_scores"] = scored["reward_tensor"]
    data.non_tensor_batch.update({k: np.array(v) for k, v in scored["reward_extra_info"].items()})
    data.batch["token_level_rewards"] = data.batch["token_level_scores"]
    data.batch["response_mask"] = compute_response_mask(data)

    algorithm = OmegaConf.create({"adv_estimator": args.estimator, "vpo": {"num_weights": 100}})
    estimator = get_adv_estimator_fn(algorithm.adv_estimator)
    advantages, _ = estimator(
        token_level_rewards=data.batch["token_level_rewards"], response_mask=data.batch["response_mask"],
        index=data.non_tensor_batch["uid"], config=algorithm, non_tensor_batch=data.non_tensor_batch,
    )
    per_response = advantages[:, 0]  # the same value on every response token
    print(f"verl estimator {algorithm.adv_estimator!r} -> {estimator.__name__}; "
          f"non_tensor_batch['vpo_rewards'] {data.non_tensor_batch['vpo_rewards'].shape} (B, m, k)")
    for b, uid in enumerate(data.non_tensor_batch["uid"]):
        print(f"{uid}  score {data.non_tensor_batch['score'][b]:.3f}  advantage {per_response[b]:+.3f}")


if __name__ == "__main__":
    main()
