"""Synthetic code task: conflicting tests by construction, oracle programs checked in the sandbox."""

from __future__ import annotations

import json

import pytest
import torch

from components.config import RunConfig, SandboxConfig
from components.sandbox import open_sandbox
from components.tasks import get_task
from components.tasks.code import problem_of
from components.tasks.synthetic_code import GRAMMAR, generate_problems, program_of


def run_program(program: str, x: int) -> object:
    """Reference execution in this process (the programs are ours: oracle or grammar)."""
    scope: dict = {}
    exec(program, scope)  # noqa: S102
    return scope["f"](x)


def cases_of(row: dict) -> list[tuple[int, int]]:
    return [(json.loads(t.input)[0], json.loads(t.expected)) for t in problem_of(row["problem"]).tests]


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return generate_problems(1000, seed=7)


def test_no_single_oracle_program_passes_while_the_set_covers(rows):
    conflicting = 0
    for row in rows:
        cases = cases_of(row)
        passes = [[run_program(p, x) == y for x, y in cases] for p in json.loads(row["programs"])]
        assert all(any(col) for col in zip(*passes, strict=True)), "the oracle set covers every test"
        conflicting += not any(all(p) for p in passes)
    assert conflicting / len(rows) >= 0.8
    assert conflicting == len(rows)  # by construction, in fact every problem conflicts


def test_no_grammar_program_passes_every_test(rows):
    for row in rows[:200]:
        cases = cases_of(row)
        for expr in GRAMMAR:
            assert not all(eval(expr, {}, {"x": x}) == y for x, y in cases), (expr, cases)  # noqa: S307


def test_problem_shape_and_determinism(rows):
    assert len(GRAMMAR) == 185 and len(set(GRAMMAR)) == 185
    for row in rows[:50]:
        problem = problem_of(row["problem"])
        assert len(problem.tests) == 9
        assert all(t.kind == "functional" and t.fn_name == "f" for t in problem.tests)
        assert [json.loads(t.input)[0] for t in problem.tests] == [0, 1, 2] * 3
        outputs = [[y for _, y in cases_of(row)[i : i + 3]] for i in (0, 3, 6)]
        assert all(len({line[x] for line in outputs}) == 3 for x in range(3))  # 3 outputs per input
    again = generate_problems(20, seed=7)
    assert again == rows[:20]
    assert generate_problems(20, seed=8) != rows[:20]
    assert generate_problems(5, seed=7, first=3) == rows[3:8]
    wide = generate_problems(10, seed=1, targets=4, per_target=5)
    assert all(len(problem_of(r["problem"]).tests) == 20 for r in wide)


def test_oracle_programs_are_canonical(rows):
    """Each target is written as the first grammar expression with its outputs on the shown inputs."""
    for row in rows[:100]:
        cases = cases_of(row)
        for line, program in enumerate(json.loads(row["programs"])):
            shown = cases[3 * line : 3 * line + 3]
            first = next(e for e in GRAMMAR if all(eval(e, {}, {"x": x}) == y for x, y in shown))  # noqa: S307
            assert program == program_of(first)


def test_prompt_is_short_and_shows_the_pairs(rows):
    task = get_task(RunConfig(task={"name": "synthetic_code"}), sandbox=object())
    multi = task.build_prompt(rows[0], 3)
    lines = multi.split("\n")
    assert lines[0] == "Write f(x) with"
    for i in range(3):
        assert lines[1 + i] == " ".join(f"f({x})={y}" for x, y in cases_of(rows[0])[3 * i : 3 * i + 3])
    assert "3 different" in multi and "---" in multi and len(multi) < 220
    assert "different" not in task.build_prompt(rows[0], 1)
    answer = task.format_answers(task.oracle_answers(rows[0], 3), 3)
    assert len(answer) < 150 and answer.isascii()
    four = task.oracle_answers(rows[0], 4)  # more answers than targets: an AST-distinct rewrite
    assert four[3] != four[0] and "v1 = " in four[3]


def score_oracles(sandbox_cfg: SandboxConfig, rows: list[dict], m: int = 3):
    cfg = RunConfig(task={"name": "synthetic_code", "num_answers": m})
    with open_sandbox(sandbox_cfg) as sb:
        task = get_task(cfg, sb)
        answers = [task.parse_answers(task.format_answers(task.oracle_answers(r, m), m), m) for r in rows]
        return task, task.score(rows, answers)


def check_oracle_scores(task, scored, n_rows: int) -> None:
    assert scored.rewards.shape == (n_rows, 3, 9)
    assert scored.mask.all()
    block = torch.block_diag(*[torch.ones(1, 3)] * 3)  # answer i passes exactly line i
    assert torch.equal(scored.rewards, block.expand(n_rows, 3, 9))
    assert not task.is_correct(scored.rewards).any()  # no single program passes all ...
    assert torch.equal(scored.rewards.max(dim=1).values, torch.ones(n_rows, 9))  # ... the set covers all
    statuses = {s for row in scored.details for d in row for s in d["statuses"]}
    assert statuses == {"passed", "wrong_answer"}


def test_oracle_programs_pass_their_tests_in_the_process_sandbox(rows):
    task, scored = score_oracles(SandboxConfig(backend="process", workers=2), rows[:40])
    check_oracle_scores(task, scored, 40)


@pytest.mark.docker
def test_oracle_programs_pass_their_tests_in_docker(rows, sandbox_image):
    task, scored = score_oracles(SandboxConfig(backend="docker", workers=2, image=sandbox_image), rows[:40])
    check_oracle_scores(task, scored, 40)


def test_wrong_and_hostile_answers_score_zero(rows):
    cfg = RunConfig(task={"name": "synthetic_code"})
    with open_sandbox(SandboxConfig(backend="process", workers=1, timeout_s=0.25)) as sb:
        task = get_task(cfg, sb)
        programs = [
            "def f(x):\n    return 'x'",
            "def f(x):\n    while True:\n        pass",
            "def g(x):\n    return x",
        ]
        scored = task.score(rows[:1], [programs])
    assert scored.mask.all()
    assert scored.rewards.abs().sum() == 0
    assert scored.details[0][1]["statuses"][0] == "timeout"


def test_program_of_grammar_expression():
    assert program_of("x*3+1") == "def f(x):\n    return x*3+1"
    assert run_program(program_of("x//2+4"), 7) == 7
