"""VPO for TRL's ``GRPOTrainer``: multi-answer rewards, our advantage, TRL's everything else.

:class:`VPOGRPOTrainer` is ``GRPOTrainer`` with two methods wrapped, each calling
TRL's own implementation (TRL has no advantage hook; these are the narrowest
seams. Tested on TRL 1.16.0):

1. ``_calculate_rewards(inputs, prompts, completions, completion_ids)``: every
   completion is parsed into ``num_answers`` = m answers (default: the
   ``<response_i>`` tags :func:`multi_answer_prompt` asks for), duplicates within a
   completion are dropped, and TRL's own reward machinery (sync, async and
   reward-model functions, gathering across processes) scores every answer with
   every reward function. Reward function j is reward dimension j, so each
   completion gets an (m, k) matrix. TRL receives the mean over the m rows (missing
   answers count as zero rows) for its ``rewards/<func>`` logs.
2. ``_generate_and_score_completions``: after TRL built the batch, its
   ``advantages`` are replaced by :func:`components.advantages.compute_advantages`
   on the gathered (B, m, k) rewards, one group per prompt (TRL's sampler puts each
   prompt's ``num_generations`` completions next to each other), the process's
   slice kept. TRL's own normalisation (``scale_rewards``, unbiased std + 1e-4,
   ``multi_objective_aggregation``) is computed by TRL and discarded, so it never
   applies on top. ``estimator.std`` (population by default) is ours.

Generation is untouched, so every TRL generation backend (transformers, vLLM
colocate or server) works: only text reaches this module.

Weights: the K Dirichlet weight vectors per group come from a generator seeded
with :func:`weight_seed` ``(args.seed, state.global_step)``, so every process draws
the same weights without communicating and a step can be recomputed exactly.
``reward_weights`` (TRL's fixed scalarisation, default all ones) are the task's
fixed weights f used by ``multi_rlvr`` and the single-answer baselines.

Every reward must lie in [0, 1] (VPO_SPEC §2); ``None`` from a reward function
means "not scored": 0 in that dimension, and an answer no function scored is masked.
Estimator diagnostics go to TRL's logged metrics as ``vpo/<key>``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import torch
from trl import GRPOTrainer

from components.advantages import compute_advantages
from components.config import EstimatorConfig
from components.integrations.multi_answer import (
    AnswerParser,
    multi_answer_prompt,
    parse_responses,
)
from components.tasks.answers import drop_duplicates

__all__ = [
    "ScoredGeneration",
    "VPOGRPOTrainer",
    "multi_answer_prompt",
    "parse_responses",
    "weight_seed",
]

SINGLE_ANSWER_ESTIMATORS = frozenset(
    {"vpo_single", "grpo", "max_at_k", "random_weight_grpo", "gdpo", "rloo"}
)
"""Estimators that read answer row 0 only (num_answers must be 1), as RunConfig insists."""


def weight_seed(seed: int, step: int) -> int:
    """Seed of the generator that draws a step's VPO weights (same on every process)."""
    return seed * 1_000_003 + step


@dataclass(frozen=True)
class ScoredGeneration:
    """What the last advantage computation saw (all processes, TRL's batch order)."""

    rewards: torch.Tensor
    """(B, m, k) float32 in [0, 1]; zero rows where ``mask`` is False."""
    mask: torch.Tensor
    """(B, m) bool: answer present, parsed, not a duplicate, scored."""
    group_ids: torch.Tensor
    """(B,) long: ``arange(B) // num_generations``."""
    seed: int
    """:func:`weight_seed` of the step."""
    advantages: torch.Tensor
    """(B,) float32, the advantages TRL trains on (each process keeps its slice)."""


# --------------------------------------------------------------------------- trainer


class VPOGRPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer`` trained on VPO (or Multi-RLVR, ...) advantages.

    Args (beyond ``GRPOTrainer``'s, all keyword-only):
        num_answers: m, answers per completion (>= 2 for ``vpo``/``multi_rlvr``,
            1 for the single-answer estimators).
        estimator: an estimator name (``vpo``, ``multi_rlvr``, ``vpo_single``, any key
            of ``components.advantages.ESTIMATORS``) or a full ``EstimatorConfig``
            (K = ``num_weights``, ``alpha``, ``sampler``, ``std``, ...).
        answer_parser: ``parser(text, m)`` -> m answers or None; default
            :func:`parse_responses`.
        dedup_key: answers of one completion with equal keys are duplicates (the
            later ones are dropped); default: the answer text itself.

    ``reward_funcs`` are TRL reward functions called with one answer per
    "completion" (``completion_ids`` still hold the whole completion's tokens);
    each one is one reward dimension and must return values in [0, 1].
    """

    def __init__(
        self,
        *args: Any,
        num_answers: int,
        estimator: EstimatorConfig | str = "vpo",
        answer_parser: AnswerParser = parse_responses,
        dedup_key: Callable[[str], Hashable] = lambda answer: answer,
        **kwargs: Any,
    ) -> None:
        cfg = estimator if isinstance(estimator, EstimatorConfig) else EstimatorConfig(name=estimator)
        if cfg.name in SINGLE_ANSWER_ESTIMATORS and num_answers != 1:
            raise ValueError(f"estimator {cfg.name!r} is a single-answer method: num_answers must be 1")
        if cfg.name not in SINGLE_ANSWER_ESTIMATORS and num_answers < 2:
            raise ValueError(f"estimator {cfg.name!r} needs num_answers >= 2 (use vpo_single for m = 1)")
        super().__init__(*args, **kwargs)
        if getattr(self, "environment_factories", None) is not None:
            raise ValueError("environment_factory is not supported: its rewards score whole completions, not answers")
        self.num_answers = num_answers
        self.estimator = cfg
        self.answer_parser = answer_parser
        self.dedup_key = dedup_key
        self.last_scored: ScoredGeneration | None = None
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- 1. score every answer with every reward function

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        m = self.num_answers
        answers = [self._parse(completion) for completion in completions]  # N x m
        per_answer = super()._calculate_rewards(  # (all processes' N*m, k), NaN = not scored
            [x for x in inputs for _ in range(m)],
            [p for p in prompts for _ in range(m)],
            # a missing answer is scored as "" and masked below
            [_like(c, a or "") for c, row in zip(completions, answers, strict=True) for a in row],
            [ids for ids in completion_ids_list for _ in range(m)],
        )
        present = torch.tensor([[a is not None for a in row] for row in answers], device=per_answer.device)
        present = self.accelerator.gather(present)
        rewards = per_answer.view(-1, m, per_answer.shape[-1])
        mask = present & ~torch.isnan(rewards).all(dim=-1)
        rewards = torch.nan_to_num(rewards, nan=0.0).masked_fill(~mask[..., None], 0.0)
        self._check_range(rewards)
        self._pending = (rewards, mask)
        return rewards.mean(dim=1)  # what TRL logs as rewards/<func>/mean

    # -- 2. replace TRL's advantages with ours

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self._pending is None:
            raise RuntimeError("TRL built a batch without calling _calculate_rewards: unsupported TRL version")
        rewards, mask = self._pending
        self._pending = None
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        group_ids = torch.arange(rewards.shape[0], device=rewards.device) // group_size
        seed = weight_seed(self.args.seed, self.state.global_step)
        result = compute_advantages(
            self.estimator.name,
            rewards,
            mask,
            group_ids,
            self.reward_weights.to(rewards.device),
            self.estimator,
            generator=torch.Generator(device="cpu").manual_seed(seed),
        )
        local = output["advantages"].shape[0]
        start = self.accelerator.process_index * local
        output["advantages"] = result.advantages[start : start + local].to(output["advantages"])
        self.last_scored = ScoredGeneration(rewards, mask, group_ids, seed, result.advantages)
        for key, value in result.diagnostics.items():
            self._metrics[mode][f"vpo/{key}"].append(value)
        self._metrics[mode]["vpo/valid_answer_frac"].append(float(mask.float().mean()))
        self._replace_logged_advantages(result.advantages)
        return output

    # -- helpers

    def _parse(self, completion: str | list[dict[str, Any]]) -> list[str | None]:
        text = completion if isinstance(completion, str) else completion[-1]["content"]
        answers = self.answer_parser(text, self.num_answers)
        if len(answers) != self.num_answers:
            raise ValueError(
                f"answer_parser returned {len(answers)} answers; expected num_answers={self.num_answers}"
            )
        return drop_duplicates(answers, self.dedup_key)

    def _check_range(self, rewards: torch.Tensor) -> None:
        low, high = rewards.amin(dim=(0, 1)), rewards.amax(dim=(0, 1))
        bad = ((low < 0) | (high > 1)).nonzero().flatten().tolist()
        if bad:
            j = bad[0]
            raise ValueError(
                f"VPO needs rewards in [0, 1]: reward function {self.reward_func_names[j]!r} "
                f"returned values in [{float(low[j]):g}, {float(high[j]):g}]"
            )

    def _replace_logged_advantages(self, advantages: torch.Tensor) -> None:
        """TRL's completions table logs its own advantages; show the ones it trains on."""
        logged = getattr(self, "_logs", {}).get("advantages")
        if logged is None or len(logged) < advantages.numel():
            return
        for _ in range(advantages.numel()):
            logged.pop()
        logged.extend(advantages.tolist())


def _like(completion: str | list[dict[str, Any]], answer: str):
    """``answer`` in the completion's format: text, or one assistant message."""
    if isinstance(completion, str):
        return answer
    return [{**completion[-1], "content": answer}]
