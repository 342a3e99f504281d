"""Sandbox: loaders, judging rules and the process backend (no Docker needed).

The Docker backend, the hostile corpus in containers and the leak checks after
crashes are in tests/test_sandbox_docker.py.
"""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from collections import OrderedDict

import pytest
from conftest import sandbox_leaks
from test_sandbox_corpus import (
    ADD,
    ADD_ASSERT,
    ADD_LOOP,
    ADD_STDIN,
    GOOD_ADD,
    HACKS,
    HACKS_ROUND2,
    WALKER_CONTROL,
    always_true_patching_jobs,
    assert_expected_statuses,
    canonical_humaneval_jobs,
    sleeper,
)
from typer.testing import CliRunner

from components.config import SandboxConfig
from components.sandbox import (
    CodeProblem,
    ProblemFormatError,
    ProcessSandbox,
    TestCase,
    Verdict,
    load_problems,
    open_sandbox,
)
from components.sandbox.judge import build_program, plan_problem, plan_test, stdout_matches
from components.sandbox.loaders import (
    decode_lcb_tests,
    humaneval_records,
    select_tests,
    split_check,
)

# ------------------------------------------------------------------ judging rules


@pytest.mark.parametrize(("actual", "expected", "ok"), [
    ("1 2 3\n", "1 2 3", True),
    ("  1   2 3  \n\n", "1 2 3\n", True),
    ("1.0\n", "1.00000", True),
    ("0.3333333\n", "0.333333333", True),
    ("0.5\n", "0.6", False),
    ("YES\n", "yes", False),
    ("1 2\n3", "1 2 3", False),
    ("a\nb\n", "a\n\nb", False),
    ("", "", True),
])
def test_stdout_comparison_follows_livecodebench(actual, expected, ok):
    assert stdout_matches(actual, expected) is ok


def test_assert_tests_keep_expected_values_out_of_the_sandbox():
    sentinel = "918273645"
    for stmt in (f"assert candidate(3) == {sentinel}", f"assert {sentinel} == candidate(3)",
                 f"assert abs(candidate(3) - {sentinel}.5) < 1e-6", f"assert candidate(3) == ({sentinel}, 2 * 3)",
                 f"assert tuple(candidate(3)) == tuple([{sentinel}])"):
        planned = plan_test(TestCase(kind="assert", input=stmt))
        assert planned.spec["mode"] in ("call", "eval"), stmt
        assert sentinel not in json.dumps(planned.spec), stmt
    func = plan_test(TestCase(kind="functional", input="[1, 2]", expected=sentinel, fn_name="f"))
    stdin = plan_test(TestCase(kind="stdin", input="1 2", expected=sentinel))
    assert sentinel not in json.dumps(func.spec) + json.dumps(stdin.spec)


def test_other_statements_run_whole_in_the_judge():
    for stmt in ("assert all(candidate(x) == 1 for x in range(3))", "assert (candidate(1) == 2) is True",
                 "assert candidate(1) == x"):
        assert plan_test(TestCase(kind="assert", input=stmt)).spec["mode"] == "exec"


def test_direct_calls_with_constant_arguments_are_sent_ahead():
    spec = plan_test(TestCase(kind="assert", input="import math\nassert candidate([1, 2], k=(3,)) == 1")).spec
    assert spec == {"mode": "call", "fn_name": None, "class_name": None, "args": [[1, 2]],
                    "kwargs": {"__dict__": [["k", {"__tuple__": [3]}]]}}
    for stmt in ("assert candidate(x) == 1", "assert sorted(candidate(1)) == [1]",
                 "candidate = abs\nassert candidate(-1) == 1", "def candidate(x):\n    return x\nassert candidate(1) == 1"):
        assert plan_test(TestCase(kind="assert", input=stmt)).spec["mode"] in ("eval", "exec"), stmt


def test_no_test_statement_in_the_public_part():
    """What a candidate's process may hold: its code, limits and stdin inputs; never a test."""
    sentinel = "918273645"
    problem = CodeProblem(problem_id="p", entry_point="f", prelude="import math", tests=(
        TestCase(kind="assert", input=f"for x in [1]:\n    assert candidate(x) == {sentinel}"),
        TestCase(kind="assert", input=f"assert candidate(1) == {sentinel}"),
        TestCase(kind="functional", fn_name="f", input="[1]", expected=sentinel),
        TestCase(kind="stdin", input="1\n", expected=sentinel)))
    request = build_program(problem, "def f(x):\n    return x\n", plan_problem(problem),
                            time_limit_s=1, memory_mb=64, output_limit=1000)
    assert sentinel not in json.dumps(request.public)
    assert [t["mode"] for t in request.public["tests"]] == ["judged"] * 3 + ["stdin"]
    assert sentinel in json.dumps(request.judged) and request.judged["tests"][3] is None
    header, rest = request.frame(7).split(b"\n", 1)
    n_public, n_judged = map(int, header.split())
    assert json.loads(rest[:n_public])["id"] == 7 and json.loads(rest[n_public:]) == request.judged
    assert n_public + n_judged == len(rest)


# ------------------------------------------------------------------ loaders


def test_split_check_one_test_per_assert():
    src = '''
METADATA = {"author": "x"}

def check(candidate):
    import math
    assert candidate(
        1,
        2) == 3
    assert True
    xs = [1, 2]
    for x in xs:
        assert candidate(x, 0) == x
    assert abs(candidate(0.5, 0.25) - 0.75) < 1e-6, "float"
'''
    tests = split_check(src)
    assert len(tests) == 3
    assert all(t.startswith("METADATA = ") and "import math" in t for t in tests)
    assert "xs = [1, 2]" not in tests[0] and "xs = [1, 2]" in tests[1]
    assert tests[1].rstrip().endswith("assert candidate(x, 0) == x")


def test_humaneval_loader():
    problems = load_problems("humaneval")
    assert len(problems) == 164
    assert all(1 <= len(p.tests) <= 16 and p.entry_point for p in problems)
    assert problems == load_problems("humaneval")  # deterministic
    few = load_problems("humaneval", max_tests=3)
    assert all(len(p.tests) <= 3 for p in few)


def test_select_tests_is_deterministic_and_keeps_order():
    tests = [TestCase(kind="stdin", input=str(i), expected=str(i)) for i in range(40)]
    chosen = select_tests(tests, 16, "p1")
    assert chosen == select_tests(tests, 16, "p1") and len(chosen) == 16
    assert [int(t.input) for t in chosen] == sorted(int(t.input) for t in chosen)
    assert chosen != select_tests(tests, 16, "p2")


def _compress(obj) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(obj))).decode()


def test_livecodebench_loader(tmp_path):
    private = [{"input": "3\n", "output": "6\n", "testtype": "stdin"}]
    records = [
        {"question_id": "abc1", "question_content": "double it", "starter_code": "",
         "public_test_cases": json.dumps([{"input": "2\n", "output": "4\n", "testtype": "stdin"}]),
         "private_test_cases": _compress(json.dumps(private)), "metadata": "{}"},
        {"question_id": "lc1", "question_content": "two sum", "starter_code": "class Solution:\n    def twoSum(self, nums, target):",
         "public_test_cases": json.dumps([{"input": "[2,7,11,15]\n9", "output": "[0, 1]", "testtype": "functional"}]),
         "private_test_cases": json.dumps([]), "metadata": json.dumps({"func_name": "twoSum"})},
    ]
    path = tmp_path / "lcb.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    stdin_problem, func_problem = load_problems(path)
    assert [t.input for t in stdin_problem.tests] == ["2\n", "3\n"]
    (test,) = func_problem.tests
    assert (test.kind, test.fn_name, test.class_name, json.loads(test.input)) == (
        "functional", "twoSum", "Solution", [[2, 7, 11, 15], 9])


def test_livecodebench_private_tests_never_unpickle_objects():
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        decode_lcb_tests(_compress(OrderedDict(a=1)))


def test_our_jsonl_schema_and_errors(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text(json.dumps(ADD.model_dump(mode="json")) + "\n")
    assert load_problems(good) == [ADD]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ADD.model_dump(mode="json")) + "\n" + json.dumps({"problem_id": "x", "tests": []}) + "\n")
    with pytest.raises(ProblemFormatError, match="record 2"):
        load_problems(bad)


# ------------------------------------------------------------------ process backend


PROCESS_CFG = SandboxConfig(backend="process", timeout_s=1.5, memory_mb=128, workers=2)


@pytest.fixture(scope="module")
def process_sandbox():
    with ProcessSandbox(PROCESS_CFG) as sb:
        yield sb


def test_process_backend_runs_humaneval_canonical(process_sandbox):
    jobs = canonical_humaneval_jobs()
    seen = []
    results = process_sandbox.run(jobs, progress=lambda done, total: seen.append((done, total)))
    assert [r.problem_id for r in results] == [p.problem_id for p, _ in jobs]
    failing = {r.problem_id: r.statuses for r in results if not all(r.passed)}
    assert not failing
    assert seen[-1] == (len(jobs), len(jobs))
    assert [done for done, _ in seen] == sorted({done for done, _ in seen})  # strictly increasing


def test_process_backend_verdict_kinds(process_sandbox):
    jobs = [
        (ADD, "def add(a, b):\n    return a + b\n"),
        (ADD, "def add(a, b):\n    return a - b if a == 2 else a + b\n"),
        (ADD, "def add(a, b):\n    while True:\n        pass\n"),
        (ADD, "def add(a, b):\n    return [0] * (10 ** 10)\n"),
        (ADD, "def add(a, b):\n    raise ValueError('nope')\n"),
        (ADD, "def add(a, b)\n    return a + b\n"),
        (ADD, "def add(a, b):\n    while True:\n        print('x' * 10000)\n"),
        (ADD_STDIN, "a, b = map(int, input().split())\nprint(a + b)\n"),
        (ADD_STDIN, "import sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b + (a == 2))\n"),
    ]
    results = process_sandbox.run(jobs)
    n = len(ADD.tests)
    assert results[0].statuses == ["passed"] * n
    assert results[1].statuses == ["wrong_answer" if t.input.startswith("[2,") else "passed" for t in ADD.tests]
    assert results[2].statuses == ["timeout"] * n
    assert results[3].statuses == ["memory_exceeded"] * n
    assert results[4].statuses == ["runtime_error"] * n and "ValueError: nope" in results[4].verdicts[0].stderr
    assert results[5].statuses == ["compile_error"] * n
    assert results[6].statuses == ["output_limit"] * n
    assert results[7].statuses == ["passed"] * len(ADD_STDIN.tests)
    assert results[8].statuses == ["wrong_answer" if t.input.startswith("2 ") else "passed" for t in ADD_STDIN.tests]
    assert [r.candidate_index for r in results] == list(range(len(jobs)))


HOST_SAFE_HACKS = [h for h in HACKS + HACKS_ROUND2 if h.host_safe] + [sleeper(ADD_ASSERT, PROCESS_CFG.timeout_s)]


@pytest.fixture(scope="module")
def hack_results(process_sandbox):
    results = process_sandbox.run([(h.problem, h.code) for h in HOST_SAFE_HACKS])
    return dict(zip((h.name for h in HOST_SAFE_HACKS), results, strict=True))


@pytest.mark.parametrize("hack", HOST_SAFE_HACKS, ids=lambda h: h.name)
def test_process_backend_contains_hostile_programs(hack_results, hack):
    assert_expected_statuses(hack, hack_results[hack.name])


def test_process_backend_judges_every_assert_outside_the_candidate(process_sandbox):
    """Positive control for the second round: an honest program passes the tests it attacks."""
    results = process_sandbox.run([(ADD_LOOP, GOOD_ADD), (ADD_ASSERT, GOOD_ADD), (ADD_LOOP, "def add(a, b):\n    return a - b\n")])
    assert all(results[0].passed) and all(results[1].passed), [r.statuses for r in results]
    assert results[2].statuses == ["wrong_answer"] * len(ADD_LOOP.tests)


def test_each_test_keeps_its_own_stdout_with_calls_sent_ahead(process_sandbox):
    code = "def add(a, b):\n    print('call', a, b)\n    return a + b\n"
    for result, problem in zip(process_sandbox.run([(ADD_ASSERT, code), (ADD, code)]), (ADD_ASSERT, ADD), strict=True):
        assert all(result.passed)
        expected = [f"call {t.input.split('(')[1].split(')')[0].replace(',', '')}\n" for t in ADD_ASSERT.tests]
        assert [v.stdout for v in result.verdicts] == expected, problem.problem_id


def test_process_backend_always_true_and_patching_passes_no_humaneval_test(process_sandbox):
    results = process_sandbox.run(always_true_patching_jobs())
    assert len(results) == 164
    passing = {r.problem_id: r.statuses for r in results if any(r.passed)}
    assert not passing


def test_process_backend_serves_after_hostile_programs(process_sandbox, hack_results):
    results = process_sandbox.run([(ADD, "def add(a, b):\n    return a + b\n")] * 4)
    assert all(all(r.passed) for r in results)
    (control,) = process_sandbox.run([(ADD_LOOP, WALKER_CONTROL)])  # after the corpus: it plants the needle
    assert control.verdicts[0].stdout.startswith("FOUND\n"), control.verdicts[0].stdout


def test_process_programs_never_see_other_programs_code_or_outputs():
    from test_sandbox_corpus import MARKED_ADD, SPY

    with ProcessSandbox(SandboxConfig(backend="process", workers=1, batch_size=8, isolate_programs=True)) as sb:
        # positive control: the spy does see the marker in its own program text
        results = sb.run([(ADD, MARKED_ADD)] * 3 + [(ADD, SPY), (ADD, MARKED_ADD + SPY)])
    assert "SEEN [0]" in results[4].verdicts[0].stdout, results[4].verdicts[0].stdout
    assert all(all(r.passed) for r in results[:3])
    assert results[3].statuses == ["wrong_answer"] * len(ADD.tests)
    assert "CLEAN" in results[3].verdicts[0].stdout, results[3].verdicts[0].stdout


def test_process_backend_functional_class_solution(process_sandbox):
    problem = CodeProblem(problem_id="cls", tests=(
        TestCase(kind="functional", input="[[3, 1, 2]]", expected="[1, 2, 3]", fn_name="sortIt", class_name="Solution"),
        TestCase(kind="functional", input="[[]]", expected="[]", fn_name="sortIt", class_name="Solution"),
    ))
    code = "class Solution:\n    def sortIt(self, xs):\n        return tuple(sorted(xs))\n"
    (result,) = process_sandbox.run([(problem, code)])
    assert result.passed == [True, True]
    keys = CodeProblem(problem_id="keys", tests=(
        TestCase(kind="functional", input='[{"b": 1, "a": [2]}]', expected='["a", "b"]', fn_name="keys"),
        TestCase(kind="functional", input='[{"__tuple__": 1}]', expected='["__tuple__"]', fn_name="keys"),
    ))
    (result,) = process_sandbox.run([(keys, "def keys(d):\n    return sorted(d)\n")])
    assert result.passed == [True, True]


def test_process_sandbox_leaves_nothing_behind():
    cfg = SandboxConfig(backend="process", timeout_s=1.0, programs_per_worker=2)
    sb = open_sandbox(cfg)
    try:
        assert sb.backend_name == "process"
        results = sb.run([(ADD, "import os\nos.fork()\ndef add(a, b):\n    return a + b\n")] * 5)
        assert all(all(r.passed) for r in results)
    finally:
        sb.close()
    root = sb._root
    assert not root.exists()
    assert [leak for leak in sandbox_leaks() if str(root) in leak] == []


# ------------------------------------------------------------------ CLI


def test_cli_run_process_backend(tmp_path):
    from flows.cli import app

    records = {r["task_id"]: r for r in humaneval_records()[:3]}
    cands = tmp_path / "c.jsonl"
    rows = [{"problem_id": tid, "code": r["prompt"] + r["canonical_solution"]} for tid, r in records.items()]
    rows.append({"problem_id": "HumanEval/0", "code": "def has_close_elements(numbers, threshold):\n    return True\n"})
    cands.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(app, ["sandbox", "run", "--problems", "humaneval", "--candidates", str(cands),
                                      "--backend", "process", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["candidate_index"] for r in lines] == [0, 1, 2, 3]
    assert all(all(r["passed"]) for r in lines[:3])
    assert set(lines[3]["statuses"]) == {"passed", "wrong_answer"}
    assert len(lines[3]["passed"]) == len(lines[3]["statuses"])
    bad = CliRunner().invoke(app, ["sandbox", "run", "--problems", "humaneval", "--candidates", str(out),
                                   "--backend", "process", "--out", str(tmp_path / "x.jsonl")])
    assert bad.exit_code == 2


def test_open_sandbox_process_backend_warns(caplog):
    with caplog.at_level("WARNING"), open_sandbox(SandboxConfig(backend="process")) as sb:
        assert sb.backend_name == "process"
    assert "weaker isolation" in caplog.text
    assert Verdict.passed == "passed"
