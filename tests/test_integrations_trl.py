"""TRL integration: TRL's real GRPOTrainer trains the tiny model on our advantages.

The captured batch is the dict ``_generate_and_score_completions`` hands to TRL's
``_prepare_inputs`` (which shuffles and splits it into the loss batches). The test
re-derives the (B, m, k) rewards from the completion tokens itself (decode, parse,
score) and checks TRL's advantages against ``vpo_advantages`` / the Multi-RLVR formula.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from trl import GRPOConfig  # noqa: E402

from components.advantages import sample_simplex_weights, vpo_advantages  # noqa: E402
from components.config import EstimatorConfig, load_config  # noqa: E402
from components.integrations.trl import (  # noqa: E402
    VPOGRPOTrainer,
    multi_answer_prompt,
    parse_responses,
    weight_seed,
)
from components.policy import load_policy  # noqa: E402

pytestmark = pytest.mark.usefixtures("tiny_model_env")

M, GROUP, PROMPTS, NEW_TOKENS, K_WEIGHTS = 3, 4, 3, 18, 64
FIXED = [0.7, 0.3]


def vowels(completions, **_):
    return [sum(c in "aeiouAEIOU" for c in a) / max(len(a), 1) for a in completions]


def printable(completions, **_):
    return [sum(c.isascii() and c.isprintable() for c in a) / max(len(a), 1) for a in completions]


def chunks(text: str, m: int) -> list[str | None]:
    size = max(len(text) // m, 1)
    return [text[i * size : (i + 1) * size] or None for i in range(m)]


class Capturing(VPOGRPOTrainer):
    """Records every batch TRL builds, and the advantages each loss call sees."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches: list[tuple[int, dict]] = []
        self.loss_advantages: list[torch.Tensor] = []

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        self.batches.append((self.state.global_step, {k: v for k, v in out.items()}))
        return out

    def compute_loss(self, model, inputs, *args, **kwargs):
        self.loss_advantages.append(inputs["advantages"].detach().clone())
        return super().compute_loss(model, inputs, *args, **kwargs)


def train(tmp_path, estimator: str, steps: int = 2) -> Capturing:
    model, tokenizer = load_policy(load_config(None, []))
    prompts = [multi_answer_prompt(f"Question {i}: name some vowels.", M) for i in range(PROMPTS * steps)]
    config = GRPOConfig(
        output_dir=str(tmp_path / "trl"), per_device_train_batch_size=PROMPTS * GROUP,
        num_generations=GROUP, max_completion_length=NEW_TOKENS, max_steps=steps, learning_rate=1e-3,
        beta=0.0, scale_rewards="group", reward_weights=FIXED, logging_steps=1, save_strategy="no",
        report_to=[], use_cpu=True, bf16=False, seed=3, disable_tqdm=True, shuffle_dataset=False,
    )
    trainer = Capturing(
        model=model, processing_class=tokenizer, reward_funcs=[vowels, printable], args=config,
        train_dataset=Dataset.from_dict({"prompt": prompts}), num_answers=M,
        estimator=EstimatorConfig(name=estimator, num_weights=K_WEIGHTS), answer_parser=chunks,
    )
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    return trainer


def rederive(trainer: Capturing, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rewards (B, m, k), mask (B, m), group_ids (B,)) from the batch's tokens, independently."""
    texts = [
        trainer.processing_class.decode(ids[mask.bool()], skip_special_tokens=True)
        for ids, mask in zip(batch["completion_ids"], batch["completion_mask"], strict=True)
    ]
    answers = [chunks(t, M) for t in texts]
    rewards = torch.zeros(len(texts), M, 2)
    mask = torch.zeros(len(texts), M, dtype=torch.bool)
    for b, row in enumerate(answers):
        seen = set()
        for s, a in enumerate(row):
            if a is None or a in seen:
                continue
            seen.add(a)
            mask[b, s] = True
            rewards[b, s] = torch.tensor([vowels([a])[0], printable([a])[0]])
    group_ids = torch.arange(len(texts)) // GROUP
    prompt_rows = [tuple(p[m.bool()].tolist()) for p, m in zip(batch["prompt_ids"], batch["prompt_mask"], strict=True)]
    for g in range(PROMPTS):  # TRL's sampler: each prompt's completions are contiguous
        assert len(set(prompt_rows[g * GROUP : (g + 1) * GROUP])) == 1
    return rewards, mask, group_ids


def check_trl_trained_on(trainer: Capturing, batch: dict) -> None:
    """The loss saw exactly the captured advantages (TRL shuffles rows, never changes them)."""
    seen = torch.cat(trainer.loss_advantages[: len(trainer.batches)])
    torch.testing.assert_close(seen.sort().values, torch.cat([b["advantages"] for _, b in trainer.batches]).sort().values)


def test_trl_trains_on_vpo_advantages(tmp_path):
    trainer = train(tmp_path, "vpo")
    step, batch = trainer.batches[-1]
    rewards, mask, group_ids = rederive(trainer, batch)
    assert mask.any() and rewards.std() > 0, "degenerate rewards would make the check vacuous"
    torch.testing.assert_close(rewards, trainer.last_scored.rewards, atol=1e-6, rtol=0)
    weights = sample_simplex_weights(
        PROMPTS, K_WEIGHTS, 2, generator=torch.Generator().manual_seed(weight_seed(3, step))
    )
    expected, _ = vpo_advantages(rewards, group_ids, weights=weights, mask=mask)
    assert expected.abs().max() > 0.5
    torch.testing.assert_close(batch["advantages"], expected, atol=1e-6, rtol=0)
    check_trl_trained_on(trainer, batch)
    logged = [e for e in trainer.state.log_history if "vpo/advantage_abs_mean" in e]
    assert len(logged) == 2 and {"vpo/pool_expected_best", "vpo/zero_std_group_frac"} <= logged[-1].keys()
    assert logged[-1]["vpo/advantage_abs_mean"] == pytest.approx(float(expected.abs().mean()), abs=1e-6)


def test_trl_trains_on_multi_rlvr_advantages(tmp_path):
    trainer = train(tmp_path, "multi_rlvr", steps=1)
    _, batch = trainer.batches[-1]
    rewards, mask, group_ids = rederive(trainer, batch)
    # Multi-RLVR (VPO_SPEC §5): sum over de-duplicated answers of the fixed scalar, group z-score
    total = ((rewards.double() @ torch.tensor(FIXED, dtype=torch.float64)) * mask).sum(dim=1)
    grouped = total.view(-1, GROUP)
    std = grouped.std(dim=1, correction=0, keepdim=True)
    expected = torch.where(std < 1e-6, 0.0, (grouped - grouped.mean(dim=1, keepdim=True)) / (std + 1e-6))
    assert expected.abs().max() > 0.5
    torch.testing.assert_close(batch["advantages"], expected.flatten().float(), atol=1e-6, rtol=0)
    check_trl_trained_on(trainer, batch)


def test_multi_answer_prompt_and_default_parser():
    text = multi_answer_prompt("Name a colour.", 3)
    assert text.startswith("Name a colour.") and "<response_1>...</response_1>" in text
    assert "<response_3>...</response_3>" in text
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    rewritten = multi_answer_prompt(chat, 2)
    assert rewritten[0] == chat[0] and "<response_2>" in rewritten[1]["content"]
    assert chat[1]["content"] == "Name a colour."  # input untouched
    assert "<response>...</response>" in multi_answer_prompt("Q", 1)
    completion = "hmm <response_2> blue </response_2><response_1>red</response_1> <response_3>gre"
    assert parse_responses(completion, 3) == ["red", "blue", None]


def test_bad_configurations_fail_before_training(tmp_path):
    model, tokenizer = load_policy(load_config(None, []))
    common = dict(
        model=model, processing_class=tokenizer, reward_funcs=[vowels],
        args=GRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], num_generations=2,
                        per_device_train_batch_size=2),
        train_dataset=Dataset.from_dict({"prompt": ["a", "b"]}),
    )
    with pytest.raises(ValueError, match="single-answer"):
        VPOGRPOTrainer(**common, num_answers=3, estimator="vpo_single")
    with pytest.raises(ValueError, match="num_answers >= 2"):
        VPOGRPOTrainer(**common, num_answers=1, estimator="vpo")


def test_rewards_outside_unit_interval_name_the_function(tmp_path):
    model, tokenizer = load_policy(load_config(None, []))

    def minus_one(completions, **_):
        return [-1.0] * len(completions)

    trainer = VPOGRPOTrainer(
        model=model, processing_class=tokenizer, reward_funcs=[vowels, minus_one],
        args=GRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], num_generations=2,
                        per_device_train_batch_size=2, max_completion_length=6, max_steps=1,
                        save_strategy="no", disable_tqdm=True),
        train_dataset=Dataset.from_dict({"prompt": ["a", "b"]}), num_answers=2, answer_parser=chunks,
    )
    with pytest.raises(ValueError, match=r"'minus_one' returned values in \[-1, -1\]"):
        trainer.train()
