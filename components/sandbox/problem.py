"""Typed code problems, test cases and per-test verdicts.

A :class:`CodeProblem` is what the sandbox executes candidates against; each of
its tests is one reward dimension (VPO_SPEC §8). An :class:`ExecutionResult`
holds one :class:`TestVerdict` per test, in the problem's test order: every test
runs, even after an earlier one fails.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Verdict(StrEnum):
    """Outcome of one test. Only ``passed`` scores 1."""

    passed = "passed"
    wrong_answer = "wrong_answer"
    timeout = "timeout"
    runtime_error = "runtime_error"
    memory_exceeded = "memory_exceeded"
    output_limit = "output_limit"
    compile_error = "compile_error"
    sandbox_error = "sandbox_error"


class TestCase(BaseModel):
    """One test = one reward dimension.

    kinds:
      * ``stdin``: run the program with ``input`` on stdin; compare stdout with
        ``expected`` token-wise (whitespace-normalised, float tolerance).
      * ``functional``: call ``fn_name`` (a top-level function, or a method of
        ``class Solution`` when ``class_name`` is set) with the JSON list of
        arguments in ``input``; compare the return value with JSON ``expected``.
      * ``assert``: the Python statement(s) ``input`` (e.g. ``assert
        candidate(1) == 2``), run by the trusted judge process with the
        problem's ``prelude``; ``candidate`` (and the entry point's name) calls
        the candidate's ``entry_point`` across the sandbox as plain values;
        passes when it raises nothing.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    __test__ = False  # not a pytest class

    kind: Literal["stdin", "functional", "assert"]
    input: str = ""
    expected: str = ""
    fn_name: str | None = None
    class_name: str | None = None


class CodeProblem(BaseModel):
    """A programming problem with its tests (at most ``max_tests`` are kept)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    problem_id: str
    prompt: str = ""
    tests: tuple[TestCase, ...] = Field(min_length=1)
    entry_point: str | None = None
    """Function bound to ``candidate`` for ``assert`` tests (HumanEval)."""
    prelude: str = ""
    """Trusted code of the problem (imports, helpers the tests call; HumanEval: the prompt
    minus the entry point's stub): run before the candidate's code in its process, and by
    the judge before the tests. Never candidate-controlled."""
    time_limit_s: float = Field(6.0, gt=0)
    memory_limit_mb: int = Field(512, ge=32)


class TestVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    __test__ = False

    status: Verdict
    duration_s: float = 0.0
    stdout: str = ""
    """Capped excerpt of the program's output."""
    stderr: str = ""
    """Capped excerpt of the error output / traceback."""


class ExecutionResult(BaseModel):
    """All verdicts of one candidate program on one problem."""

    model_config = ConfigDict(extra="forbid")

    problem_id: str
    candidate_index: int
    verdicts: list[TestVerdict]

    @property
    def passed(self) -> list[bool]:
        return [v.status == Verdict.passed for v in self.verdicts]

    @property
    def statuses(self) -> list[str]:
        return [v.status.value for v in self.verdicts]
