"""The task protocol: what turns a prompt row and a generation into a reward matrix.

Every task (maze, synthetic code, LiveCodeBench, HumanEval) implements
:class:`Task`. A dataset row is a plain dict (``{"id": str, ...task fields}``)
read from the prep stage's parquet; tasks never see tokens, only text.

Shapes: B rows in a batch, m answers per generation, k objectives.
``score`` returns rewards (B, m, k) in [0, 1] and an answer mask (B, m):
missing, unparseable and duplicate answers are zero rows with mask False.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

Row = dict[str, Any]


@dataclass(frozen=True)
class ScoredBatch:
    """Reward matrices of a batch of generations."""

    rewards: torch.Tensor
    """(B, m, k) float32 in [0, 1]; zero rows where ``mask`` is False."""
    mask: torch.Tensor
    """(B, m) bool: the answer was present, parsed and not a duplicate."""
    details: list[list[dict[str, Any]]] | None = None
    """Optional per-answer diagnostics (e.g. sandbox verdicts), B x m."""


@runtime_checkable
class Task(Protocol):
    name: str
    objective_names: tuple[str, ...]
    """Names of the k reward dimensions (MLflow: reward/<name>/mean)."""

    @property
    def fixed_weights(self) -> torch.Tensor:
        """(k,) weights of the task's fixed scalar (non-negative, summing to 1)."""

    def build_prompt(self, row: Row, m: int, tokenizer: Any | None = None) -> str:
        """The prompt text: single-answer when m == 1, the numbered multi-answer rewrite when m > 1."""

    def parse_answers(self, text: str, m: int) -> list[str | None]:
        """Exactly m entries: the i-th parsed answer or None when missing/unparseable."""

    def dedup_key(self, answer: str) -> Hashable:
        """Answers with equal keys are duplicates (maze: move list; code: AST dump)."""

    def score(self, rows: Sequence[Row], answers: Sequence[Sequence[str | None]]) -> ScoredBatch:
        """Score a batch: answers[b] has m entries for rows[b]; duplicates are dropped here."""

    def is_correct(self, reward: torch.Tensor) -> torch.Tensor:
        """(..., k) -> (...) bool: every reward dimension equals 1."""

    def oracle_answers(self, row: Row, m: int) -> list[str]:
        """m valid, preferably different answers, for supervised warm start."""

    def format_answers(self, answers: Sequence[str], m: int) -> str:
        """The completion text that ``parse_answers(·, m)`` reads back as ``answers``."""
