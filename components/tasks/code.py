"""Code tasks scored test by test in the sandbox: LiveCodeBench and HumanEval (VPO_SPEC §8).

Answers are m fenced python blocks separated by ``---``; an answer whose code
does not parse is missing, and two answers with the same AST
(``ast.dump`` of the module: comments, blank lines and parentheses do not
count) are duplicates. Each test is one reward dimension (1 = passed).

Reward width: a batch needs one k, but problems have different numbers of
tests. k = ``task.max_tests`` and a problem with n < k tests fills dimension j
with test ``j mod n`` (a cyclic tiling): every dimension is a real test, so
"all dimensions equal 1" is exactly "all tests pass", and the mean is the pass
fraction whenever n divides k (otherwise the first ``k mod n`` tests weigh
one repetition more).

Dataset rows carry the problem serialised: ``{"id", "problem":
CodeProblem.model_dump_json(), "solution": reference code or ""}``.
"""

from __future__ import annotations

import ast
from collections.abc import Hashable, Sequence
from functools import lru_cache
from typing import Any

import torch

from components.config import TaskConfig
from components.sandbox.problem import CodeProblem
from components.tasks import objective_names
from components.tasks.answers import (
    all_ones,
    apply_chat_template,
    drop_duplicates,
    format_code_blocks,
    parse_code_blocks,
    uniform_weights,
)
from components.tasks.base import Row, ScoredBatch


def ast_key(code: str) -> str | None:
    """``ast.dump`` of the parsed module, or None when the code does not parse."""
    try:
        return ast.dump(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def parse_programs(text: str, m: int) -> list[str | None]:
    """The first m fenced blocks that parse as Python (None for missing or unparseable ones)."""
    return [None if b is None or ast_key(b) is None else b for b in parse_code_blocks(text, m)]


@lru_cache(maxsize=4096)
def problem_of(problem_json: str) -> CodeProblem:
    """The CodeProblem of a row's ``problem`` column (cached: the sandbox plans once per object)."""
    return CodeProblem.model_validate_json(problem_json)


def tiled_test_index(n_tests: int, k: int) -> torch.Tensor:
    """(k,) test index of each reward dimension: ``j mod n_tests``."""
    return torch.arange(k) % n_tests


def score_in_sandbox(
    sandbox: Any,
    problems: Sequence[CodeProblem],
    answers: Sequence[Sequence[str | None]],
    k: int,
) -> ScoredBatch:
    """Run every distinct (problem, AST) once in the sandbox and scatter verdicts into (B, m, k).

    Duplicates inside one generation are dropped (zero row, mask False); the
    same program in different generations of the same problem is run once.
    """
    too_wide = sorted({p.problem_id for p in problems if len(p.tests) > k})
    if too_wide:
        raise ValueError(f"problems {too_wide[:5]} have more than k={k} tests: prep them with the same task.max_tests")
    m = max((len(a) for a in answers), default=0)
    rewards = torch.zeros(len(problems), m, k, dtype=torch.float32)
    mask = torch.zeros(len(problems), m, dtype=torch.bool)
    details: list[list[dict[str, Any]]] = [[{} for _ in range(m)] for _ in problems]
    job_of: dict[tuple[str, str], int] = {}
    jobs: list[tuple[CodeProblem, str]] = []
    slots: list[tuple[int, int, int]] = []
    for b, (problem, row_answers) in enumerate(zip(problems, answers, strict=True)):
        for i, code in enumerate(drop_duplicates(list(row_answers), ast_key)):
            if code is None:
                continue
            key = (problem.problem_id, ast_key(code) or "")
            if key not in job_of:
                job_of[key] = len(jobs)
                jobs.append((problem, code))
            slots.append((b, i, job_of[key]))
    results = sandbox.run(jobs) if jobs else []
    for b, i, j in slots:
        passed = torch.tensor(results[j].passed, dtype=torch.float32)
        if passed.numel() == 0:
            continue
        rewards[b, i] = passed[tiled_test_index(passed.numel(), k)]
        mask[b, i] = True
        details[b][i] = {"statuses": results[j].statuses}
    return ScoredBatch(rewards=rewards, mask=mask, details=details)


def variant_programs(programs: Sequence[str], m: int) -> list[str]:
    """m programs: the given ones, then behaviour-preserving rewrites with a different AST.

    A rewrite binds the last ``return`` expression to a local (``v1 = ...;
    return v1``). Programs without a top-level ``return`` line are repeated.
    """
    out = list(programs[:m])
    rewrite = 1
    while len(out) < m:
        for program in programs:
            if len(out) == m:
                break
            lines = program.rstrip().split("\n")
            last = lines[-1]
            stripped = last.lstrip()
            if stripped.startswith("return "):
                indent = last[: len(last) - len(stripped)]
                name = f"v{rewrite}"
                lines[-1:] = [f"{indent}{name} = {stripped[7:]}", f"{indent}return {name}"]
            rewritten = "\n".join(lines)
            out.append(rewritten if ast_key(rewritten) is not None else program)
        rewrite += 1
    return out


class SandboxCodeTask:
    """What every code task shares: fenced-block answers, AST de-duplication, one reward
    dimension per test run in the sandbox, correct = every test passes. Subclasses set
    ``name``, ``k`` and ``objective_names`` and write their own prompts and oracle."""

    name: str
    k: int
    objective_names: tuple[str, ...]

    def __init__(self, sandbox: Any):
        self.sandbox = sandbox

    @property
    def fixed_weights(self) -> torch.Tensor:
        return uniform_weights(self.k)

    def parse_answers(self, text: str, m: int) -> list[str | None]:
        return parse_programs(text, m)

    def dedup_key(self, answer: str) -> Hashable:
        return ast_key(answer)

    def problems(self, rows: Sequence[Row]) -> list[CodeProblem]:
        """The rows' problems (a subclass may check them against its k)."""
        return [problem_of(r["problem"]) for r in rows]

    def score(self, rows: Sequence[Row], answers: Sequence[Sequence[str | None]]) -> ScoredBatch:
        if len(rows) != len(answers):
            raise ValueError(f"score: {len(rows)} rows but {len(answers)} answer lists")
        return score_in_sandbox(self.sandbox, self.problems(rows), answers, self.k)

    def is_correct(self, reward: torch.Tensor) -> torch.Tensor:
        return all_ones(reward)

    def format_answers(self, answers: Sequence[str], m: int) -> str:
        return format_code_blocks(answers, m)


class CodeTask(SandboxCodeTask):
    """LiveCodeBench / HumanEval: one reward dimension per test (k = task.max_tests, tiled)."""

    def __init__(self, name: str, sandbox: Any, cfg: TaskConfig):
        super().__init__(sandbox)
        self.name = name
        self.k = cfg.max_tests
        self.objective_names = objective_names(cfg)

    def build_prompt(self, row: Row, m: int, tokenizer: Any | None = None) -> str:
        problem = problem_of(row["problem"])
        if problem.tests[0].kind == "assert":
            body = f"Complete this Python function:\n```python\n{problem.prompt.rstrip()}\n```\n"
        else:
            test = problem.tests[0]
            if test.kind == "functional":
                where = f"method `{test.fn_name}` of `class {test.class_name}`" if test.class_name else f"function `{test.fn_name}`"
                io = f"Implement it as the {where}."
            else:
                io = "Read the input from standard input and print the answer to standard output."
            body = f"{problem.prompt.strip()}\n\n{io}\n"
        if m == 1:
            ask = "Write the solution in one ```python code block."
        else:
            ask = (
                f"Think briefly, then write {m} genuinely different solutions: {m} ```python code blocks "
                "separated by a line ---."
            )
        return apply_chat_template(body + ask, tokenizer)

    def oracle_answers(self, row: Row, m: int) -> list[str]:
        """The reference solution (HumanEval) and AST-distinct rewrites of it; LCB has none."""
        solution = row.get("solution") or ""
        if not solution:
            raise ValueError(f"{self.name} row {row.get('id')!r} has no reference solution")
        return variant_programs([solution], m)
