"""LiveCodeBench and HumanEval tasks: prompts, AST de-duplication, per-test scoring in the sandbox."""

from __future__ import annotations

import json

import pytest
import torch

from components.config import RunConfig, SandboxConfig
from components.sandbox import open_sandbox
from components.sandbox.loaders import humaneval_records, problem_from_record
from components.tasks import get_task
from components.tasks.code import problem_of, tiled_test_index, variant_programs


def humaneval_rows(n: int, max_tests: int = 16) -> list[dict]:
    rows = []
    for record in humaneval_records()[:n]:
        problem = problem_from_record(record, max_tests)
        rows.append({"id": problem.problem_id, "problem": problem.model_dump_json(),
                     "solution": record["prompt"] + record["canonical_solution"]})
    return rows


def lcb_rows() -> list[dict]:
    stdin = {
        "question_id": "sum2", "question_content": "Read two integers and print their sum.",
        "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
        "private_test_cases": json.dumps([{"input": f"{a} {a}\n", "output": f"{2 * a}\n", "testtype": "stdin"}
                                          for a in range(5)]),
        "metadata": "{}", "starter_code": "",
    }
    functional = {
        "question_id": "twice", "question_content": "Return twice the number.",
        "public_test_cases": json.dumps([{"input": f"{a}", "output": f"{2 * a}", "testtype": "functional"}
                                         for a in (1, 5, -3)]),
        "private_test_cases": "[]",
        "metadata": json.dumps({"func_name": "twice"}),
        "starter_code": "class Solution:\n    def twice(self, n: int) -> int:\n        ",
    }
    rows = []
    for record in (stdin, functional):
        problem = problem_from_record(record, 16)
        rows.append({"id": problem.problem_id, "problem": problem.model_dump_json(), "solution": ""})
    return rows


SUM_OK = "a, b = map(int, input().split())\nprint(a + b)"
SUM_SAME_AST = "a, b = map(int, input().split())  # parse\n\nprint((a + b))"
SUM_WRONG = "print(0)"
TWICE_OK = "class Solution:\n    def twice(self, n):\n        return 2 * n"
TWICE_HALF = "class Solution:\n    def twice(self, n):\n        return 2 * n if n > 0 else n"


@pytest.fixture(scope="module")
def sandbox():
    with open_sandbox(SandboxConfig(backend="process", workers=2, timeout_s=2.0)) as sb:
        yield sb


def test_humaneval_reference_solutions_pass_every_test(sandbox):
    cfg = RunConfig(task={"name": "humaneval", "num_answers": 2})
    task = get_task(cfg, sandbox)
    rows = humaneval_rows(8)
    answers = [task.parse_answers(task.format_answers(task.oracle_answers(r, 2), 2), 2) for r in rows]
    scored = task.score(rows, answers)
    assert scored.rewards.shape == (8, 2, 16)
    assert scored.mask.all()  # the rewrite has a different AST
    assert task.is_correct(scored.rewards).all()


def test_humaneval_wrong_solution_fails_per_test(sandbox):
    cfg = RunConfig(task={"name": "humaneval", "num_answers": 1, "max_tests": 4}, estimator={"name": "grpo"})
    task = get_task(cfg, sandbox)
    row = humaneval_rows(1, max_tests=4)[0]  # has_close_elements: 7 asserts, 4 kept
    wrong = "def has_close_elements(numbers, threshold):\n    return False"
    scored = task.score([row], [[wrong]])
    with pytest.raises(ValueError, match="more than k=4 tests"):
        task.score(humaneval_rows(1), [[wrong]])
    assert scored.rewards.shape == (1, 1, 4)
    statuses = scored.details[0][0]["statuses"]
    assert scored.rewards[0, 0].tolist() == [float(s == "passed") for s in statuses]
    assert 0 < scored.rewards.sum() < 4


def test_lcb_stdin_and_functional_scoring_with_tiling(sandbox):
    cfg = RunConfig(task={"name": "livecodebench", "max_tests": 8})
    task = get_task(cfg, sandbox)
    rows = lcb_rows()
    answers = [[SUM_OK, SUM_SAME_AST, SUM_WRONG], [TWICE_OK, TWICE_HALF, None]]
    scored = task.score(rows, answers)
    assert scored.mask.tolist() == [[True, False, True], [True, True, False]]
    assert scored.rewards[0, 0].tolist() == [1.0] * 8
    assert scored.rewards[0, 2].tolist() == [0, 1, 0, 0, 0, 0, 0, 1]  # "print(0)" passes "0 0" (tiled twice)
    # 3 functional tests tiled over 8 dimensions: j -> test j % 3; the half solution fails n = -3
    assert scored.rewards[1, 1].tolist() == [1, 1, 0, 1, 1, 0, 1, 1]
    assert task.is_correct(scored.rewards).tolist() == [[True, False, False], [True, False, False]]


def test_zero_input_case_counts(sandbox):
    task = get_task(RunConfig(task={"name": "livecodebench", "max_tests": 6}), sandbox)
    scored = task.score(lcb_rows()[:1], [["print(0)", None, None]])
    # tests: "1 2"->3, then "0 0"->0 .. "4 4"->8: only "0 0" passes
    assert scored.rewards[0, 0].tolist() == [0, 1, 0, 0, 0, 0]


def test_tiled_test_index():
    assert tiled_test_index(3, 8).tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert tiled_test_index(16, 16).tolist() == list(range(16))


def test_prompts_plain_and_chat_template(sandbox):
    from components.policy.tiny import build_char_tokenizer

    task = get_task(RunConfig(task={"name": "livecodebench"}), sandbox)
    stdin_row, functional_row = lcb_rows()
    prompt = task.build_prompt(stdin_row, 3)
    assert prompt.startswith("Read two integers") and "standard input" in prompt
    assert "3 genuinely different" in prompt and "---" in prompt
    assert "method `twice` of `class Solution`" in task.build_prompt(functional_row, 1)
    he = get_task(RunConfig(task={"name": "humaneval"}), sandbox)
    row = humaneval_rows(1)[0]
    assert "def has_close_elements" in he.build_prompt(row, 1)

    tokenizer = build_char_tokenizer()
    assert not getattr(tokenizer, "chat_template", None)
    assert task.build_prompt(stdin_row, 3, tokenizer) == prompt  # no template: plain text
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    chat = task.build_prompt(stdin_row, 3, tokenizer)
    assert chat == f"<|user|>{prompt}\n<|assistant|>"


def test_lcb_has_no_oracle_and_variants_are_distinct():
    task = get_task(RunConfig(task={"name": "livecodebench"}), sandbox=object())
    with pytest.raises(ValueError, match="no reference solution"):
        task.oracle_answers(lcb_rows()[0], 3)
    programs = variant_programs(["def f(x):\n    return x+1"], 3)
    assert len({task.dedup_key(p) for p in programs}) == 3


def test_code_tasks_need_a_sandbox():
    with pytest.raises(ValueError, match="sandbox"):
        get_task(RunConfig(task={"name": "humaneval"}))


@pytest.mark.docker
def test_lcb_scoring_in_docker(sandbox_image):
    with open_sandbox(SandboxConfig(backend="docker", workers=1, image=sandbox_image)) as sb:
        task = get_task(RunConfig(task={"name": "livecodebench", "max_tests": 6}), sb)
        scored = task.score(lcb_rows(), [[SUM_OK, SUM_WRONG], [TWICE_OK, TWICE_HALF]])
    assert scored.rewards[0, 0].sum() == 6 and scored.rewards[1, 0].sum() == 6
    assert torch.all(scored.rewards[1, 1] == torch.tensor([1.0, 1, 0, 1, 1, 0]))
    assert problem_of(lcb_rows()[0]["problem"]).problem_id == "sum2"
