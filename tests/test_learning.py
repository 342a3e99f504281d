"""RL provably learns: the analogue of overfitting one batch, for the policy-gradient loop.

A toy task whose reward is trivially learnable — the share of lower-case letters in
each answer — trained from a from-scratch tiny model, with no warm start. The
trainer must take the objective its estimator climbs (``reward/fixed/mean`` for
GRPO, ``vpo/own_set_expected_max`` for VPO with m = 2 answers) from its starting
level (about 0.1: 26 of the 260 token ids are lower-case letters) to near its
maximum (1.0) within a fixed number of steps, and must *not* when the sign of the
advantages is flipped (the registered estimator negated through the registry).
"""

from __future__ import annotations

import string
from collections.abc import Hashable, Sequence

import pytest
import torch

from components.advantages import ESTIMATORS
from components.config import load_config
from components.tasks.base import ScoredBatch
from components.training import train_on_task

ANSWER_CHARS = 6
"""Characters per answer: answer i is characters [6i, 6i + 6) of the completion."""
LOWER = frozenset(string.ascii_lowercase)
STEPS = 40


class LowercaseTask:
    """k = 1: the share of an answer's characters that are lower-case ASCII letters."""

    name = "lowercase"
    objective_names = ("lowercase",)

    @property
    def fixed_weights(self) -> torch.Tensor:
        return torch.ones(1)

    def build_prompt(self, row, m, tokenizer=None) -> str:
        return f"#{row['id']}:"

    def parse_answers(self, text: str, m: int) -> list[str | None]:
        chunks = [text[i * ANSWER_CHARS : (i + 1) * ANSWER_CHARS] for i in range(m)]
        return [c if c else None for c in chunks]

    def dedup_key(self, answer: str) -> Hashable:
        return answer

    def score(self, rows, answers: Sequence[Sequence[str | None]]) -> ScoredBatch:
        m = len(answers[0])
        rewards = torch.zeros(len(rows), m, 1)
        mask = torch.zeros(len(rows), m, dtype=torch.bool)
        for b, row_answers in enumerate(answers):
            seen: set[str] = set()
            for i, a in enumerate(row_answers):
                if a is None or a in seen:
                    continue
                seen.add(a)
                rewards[b, i, 0] = sum(ch in LOWER for ch in a) / ANSWER_CHARS
                mask[b, i] = True
        return ScoredBatch(rewards, mask)

    def is_correct(self, reward: torch.Tensor) -> torch.Tensor:
        return (reward == 1).all(-1)

    def oracle_answers(self, row, m: int) -> list[str]:
        return ["abcdef"] * m

    def format_answers(self, answers, m: int) -> str:
        return "".join(answers)


ROWS = [{"id": f"{i:02d}"} for i in range(8)]

pytestmark = pytest.mark.usefixtures("tiny_model_env")


class Curve:
    """Collects the climbed objective of every RL step."""

    def __init__(self, key: str):
        self.key, self.values = key, []

    def on_step(self, step, metrics, samples):
        if "train/loss" in metrics:
            self.values.append(metrics[self.key])

    def on_checkpoint(self, step, uri):
        pass


def run(tmp_path, estimator: str, m: int) -> list[float]:
    cfg = load_config(None, [
        f"storage.root=file://{tmp_path}/runs", f"name=learn-{estimator}", f"task.num_answers={m}",
        f"estimator.name={estimator}", "estimator.num_weights=16",
        "model.tiny.hidden_size=32", "model.tiny.intermediate_size=64", "model.tiny.num_attention_heads=2",
        "model.tiny.num_key_value_heads=1",
        f"training.steps={STEPS}", "training.prompts_per_step=4", "rollout.group_size=8",
        f"rollout.max_new_tokens={ANSWER_CHARS * m}", "training.micro_batch_size=32",
        "training.lr=1e-2", "training.kl_coef=0", "training.warmup_steps=0",
        f"training.checkpoint_every={STEPS}", f"tracking.log_rollouts_every={STEPS}",
    ])
    curve = Curve("vpo/own_set_expected_max" if estimator == "vpo" else "reward/fixed/mean")
    train_on_task(cfg, LowercaseTask(), ROWS, callback=curve, resume=False)
    return curve.values


def negated(estimator):
    def flipped(batch, cfg, generator):
        advantages, signal, best_own = estimator(batch, cfg, generator)
        return -advantages, signal, best_own

    return flipped


@pytest.mark.parametrize("estimator,m", [("grpo", 1), ("vpo", 2)])
def test_rl_climbs_a_trivially_learnable_reward_to_near_its_maximum(tmp_path, estimator, m):
    values = run(tmp_path, estimator, m)
    start, end = sum(values[:5]) / 5, sum(values[-5:]) / 5
    assert start < 0.4, values
    assert end > 0.9, values


@pytest.mark.parametrize("estimator,m", [("grpo", 1), ("vpo", 2)])
def test_flipped_advantage_sign_does_not_learn(tmp_path, monkeypatch, estimator, m):
    monkeypatch.setitem(ESTIMATORS, estimator, negated(ESTIMATORS[estimator]))
    values = run(tmp_path, estimator, m)
    start, end = sum(values[:5]) / 5, sum(values[-5:]) / 5
    assert end < 0.4 and end <= start + 0.05, values
