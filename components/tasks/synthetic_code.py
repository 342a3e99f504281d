"""Synthetic code: tiny Python functions whose tests no single program passes.

A problem shows input/output pairs of ``f(x)`` drawn from T *target*
functions (``task.code_targets``, default 3), one line per target, each on the
inputs 0 .. t-1 (t = ``task.code_tests_per_target``, default 3)::

    Write f(x) with
    f(0)=9 f(1)=10 f(2)=11
    f(0)=7 f(1)=12 f(2)=17
    f(0)=1 f(1)=2 f(2)=5

Each pair is one reward dimension (a ``functional`` test of ``f``, run in the
sandbox), so k = T x t. The targets come from this grammar (A in 2..5,
B in 1..9)::

    program := "def f(x):\n    return " expr
    expr    := x*A+B | x*A-B | x*A | x+B | x-B | x*x+B | x*x | B-x | x%A+B | x//A+B

An instance is kept only if the T targets give T different outputs on every
input. So each target program passes exactly its own line, no program at all
passes every test (the same input asks for T different outputs), and the set
of T target programs covers them all: the code analogue of gold vs diamond.
The layout is chosen for a from-scratch character-level model: answer i is the
program of line i, the constant B of most expressions can be read off
``f(0)``, and the oracle writes each target as the *first* grammar expression
(in the order above) with its outputs, so equal lines get equal programs.

Rows: ``{"id", "problem": CodeProblem JSON, "programs": JSON list of the T
target programs}``; instance i depends only on (seed, stream, i).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from components.config import TaskConfig
from components.sandbox.problem import CodeProblem, TestCase
from components.tasks import objective_names
from components.tasks.answers import apply_chat_template
from components.tasks.base import Row
from components.tasks.code import SandboxCodeTask, problem_of, variant_programs

GENERATOR_VERSION = "synthetic-code-v2"
"""Version of the ``uniform`` layout's rows (unchanged since run 2: its datasets keep their hash)."""
GENERATOR_VERSIONS = {"uniform": GENERATOR_VERSION, "easy_first": "synthetic-code-v3-easy-first"}
"""Row-generator version per ``task.code_layout``."""
TIME_LIMIT_S = 2.0
"""Per-test wall-clock limit of synthetic problems (the config's sandbox.timeout_s caps it too)."""
_MAX_ATTEMPTS = 1000


def _grammar() -> list[str]:
    """Every expression of the grammar, simplest families first (the oracle's tie-break order)."""
    a_values, b_values = range(2, 6), range(1, 10)
    families = [
        [f"x+{b}" for b in b_values],
        [f"x-{b}" for b in b_values],
        [f"{b}-x" for b in b_values],
        [f"x*{a}" for a in a_values],
        [f"x*{a}+{b}" for a in a_values for b in b_values],
        [f"x*{a}-{b}" for a in a_values for b in b_values],
        ["x*x"],
        [f"x*x+{b}" for b in b_values],
        [f"x%{a}+{b}" for a in a_values for b in b_values],
        [f"x//{a}+{b}" for a in a_values for b in b_values],
    ]
    return [expr for family in families for expr in family]


GRAMMAR = tuple(_grammar())
EASY = 9
"""GRAMMAR[:EASY] is the family x+B: copy f(0) after ``x+``, nothing to infer (the ``easy_first`` line 1)."""


def program_of(expr: str) -> str:
    """The program text of a grammar expression."""
    return f"def f(x):\n    return {expr}"


@lru_cache(maxsize=8)
def _outputs(num_inputs: int) -> np.ndarray:
    """(len(GRAMMAR), num_inputs) int64: every expression on inputs 0..num_inputs-1."""
    x = np.arange(num_inputs, dtype=np.int64)
    # The expressions are ours (not candidate code), written in Python/numpy-compatible syntax.
    return np.stack([np.broadcast_to(eval(expr, {}, {"x": x}), x.shape) for expr in GRAMMAR])  # noqa: S307


def _candidate(rng: np.random.Generator, targets: int, per_target: int, layout: str = "uniform") -> np.ndarray | None:
    """(T,) grammar indices of the targets if they give T different outputs on every input.

    Each target is replaced by the first grammar expression with the same
    outputs on the shown inputs (``x+2`` rather than ``x%4+2`` on 0..2), so the
    oracle program is a function of the prompt. ``easy_first``: line 1 from
    GRAMMAR[:EASY] (x+B), the others from the rest, judged after that canonicalisation.
    """
    table = _outputs(per_target)
    if layout == "easy_first":
        chosen = np.concatenate([rng.choice(EASY, size=1), EASY + rng.choice(len(GRAMMAR) - EASY, size=targets - 1, replace=False)])
    else:
        chosen = rng.choice(len(GRAMMAR), size=targets, replace=False)
    outputs = table[chosen]  # (T, t)
    if not np.all(np.diff(np.sort(outputs, axis=0), axis=0) != 0):
        return None
    canonical = np.argmax((table[None, :, :] == outputs[:, None, :]).all(axis=2), axis=1)
    if layout == "easy_first" and (canonical[0] >= EASY or (canonical[1:] < EASY).any()):
        return None
    return canonical


def make_problem(problem_id: str, exprs: Sequence[str], per_target: int) -> CodeProblem:
    """The CodeProblem whose tests are each target's pairs on inputs 0..per_target-1, target by target."""
    table = _outputs(per_target)
    index = {e: i for i, e in enumerate(GRAMMAR)}
    tests = [
        TestCase(kind="functional", input=json.dumps([x]), expected=json.dumps(int(table[index[e], x])), fn_name="f")
        for e in exprs
        for x in range(per_target)
    ]
    return CodeProblem(problem_id=problem_id, prompt="", tests=tuple(tests), time_limit_s=TIME_LIMIT_S)


def generate_problems(
    count: int, seed: int, targets: int = 3, per_target: int = 3, stream: int = 0, first: int = 0,
    layout: str = "uniform",
) -> list[Row]:
    """Rows of instances ``first .. first+count-1``; instance i depends only on (seed, stream, i, layout)."""
    rows = []
    for i in range(first, first + count):
        for attempt in range(_MAX_ATTEMPTS):
            found = _candidate(np.random.default_rng([seed, stream, i, attempt]), targets, per_target, layout)
            if found is not None:
                break
        else:
            raise RuntimeError(f"no valid synthetic code problem after {_MAX_ATTEMPTS} attempts (instance {i})")
        exprs = [GRAMMAR[j] for j in found]
        row_id = f"code-{seed}-{stream}-{i:06d}"
        rows.append({
            "id": row_id,
            "problem": make_problem(row_id, exprs, per_target).model_dump_json(),
            "programs": json.dumps([program_of(e) for e in exprs]),
        })
    return rows


def pairs_text(problem: CodeProblem) -> str:
    """``f(0)=9 f(1)=10 ...`` in test order, a new line at each input 0 (one line per target)."""
    pairs = [(json.loads(t.input)[0], json.loads(t.expected)) for t in problem.tests]
    return "".join(("\n" if x == 0 and i else " " if i else "") + f"f({x})={y}" for i, (x, y) in enumerate(pairs))


class SyntheticCodeTask(SandboxCodeTask):
    """Answers are short ``def f(x)`` programs in fenced blocks; k = targets x tests_per_target."""

    name = "synthetic_code"

    def __init__(self, sandbox: Any, cfg: TaskConfig):
        super().__init__(sandbox)
        self.k = cfg.code_targets * cfg.code_tests_per_target
        self.objective_names = objective_names(cfg)
        self.cfg = cfg

    @property
    def fixed_weights(self) -> torch.Tensor:
        """Each line's ``code_target_weights`` share split evenly over its tests (plain mean when unset)."""
        line = torch.tensor(self.cfg.code_target_weights or [1.0] * self.cfg.code_targets, dtype=torch.float32)
        return (line / line.sum()).repeat_interleave(self.cfg.code_tests_per_target) / self.cfg.code_tests_per_target

    def build_prompt(self, row: Row, m: int, tokenizer: Any | None = None) -> str:
        head = f"Write f(x) with\n{pairs_text(problem_of(row['problem']))}\n"
        if m == 1:
            ask = "Answer in one ```python block."
        else:
            ask = f"No single f fits all: give {m} different f, each in a ```python block, separated by ---."
        return apply_chat_template(head + ask + "\n", tokenizer)

    def problems(self, rows: Sequence[Row]) -> list[CodeProblem]:
        problems = super().problems(rows)
        widths = {len(p.tests) for p in problems}
        if widths - {self.k}:
            raise ValueError(f"rows have {sorted(widths)} tests; this task (config) expects {self.k}")
        return problems

    def oracle_answers(self, row: Row, m: int) -> list[str]:
        """The target programs (first m), then AST-distinct rewrites of them up to m.

        ``easy_first`` rows: a single answer is the program of line ``hash(id) % T`` (the
        warm start shows every line, RL picks), and a ``code_duplicate_share`` of the
        multi-answer sets are line 1's program plus its rewrites (:func:`_row_fraction`).
        """
        programs = json.loads(row["programs"])
        if self.cfg.code_layout == "easy_first":
            if m == 1:
                return [programs[int(_row_fraction(row, "line") * len(programs))]]
            if _row_fraction(row, "duplicates") < self.cfg.code_duplicate_share:
                return variant_programs(programs[:1], m)
        return variant_programs(programs, m)


def _row_fraction(row: Row, purpose: str) -> float:
    """A deterministic number in [0, 1) from a row's id and a purpose (stable across processes)."""
    digest = hashlib.sha256(f"{purpose}:{row['id']}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def generator_version(cfg: TaskConfig) -> str:
    """The row-generator version of ``cfg.code_layout`` (part of the dataset hash)."""
    return GENERATOR_VERSIONS[cfg.code_layout]


def hashed_params(cfg: TaskConfig) -> dict[str, Any]:
    """The synthetic-code fields that determine the rows (the layout only when not the original one)."""
    params: dict[str, Any] = {"code_targets": cfg.code_targets, "code_tests_per_target": cfg.code_tests_per_target}
    if cfg.code_layout != "uniform":
        params["code_layout"] = cfg.code_layout
    return params
