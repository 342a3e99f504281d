"""The host's half of the harness: what is sent into the sandbox, and how it is judged.

No test statement ever runs in the candidate's process. In the sandbox
(:mod:`components.sandbox.runner`) a trusted *judge* process runs every test
statement (setup, loops, the problem's helpers) and calls the candidate's
functions across a channel, as plain wire values; the candidate's process only
answers calls. What each test reports is judged here:

* ``stdin``: the program's stdout, compared here (:func:`stdout_matches`);
* ``functional``: the call's return value, compared here with JSON ``expected``;
* ``assert``: *planned* when the statement is ``assert <expr> == <literal>``
  (either order), ``is True|False|None``, ``!= <literal>``, ``abs(<expr> -
  <literal>) < <tol>`` (``<=``, ``math.fabs``), ``assert <expr>`` or ``assert not
  <expr>``: the judge evaluates only ``<expr>`` and the comparison is applied
  here, so the expected value never enters the sandbox. Any other statement
  (loops, comparisons with computed values) runs whole in the judge, which
  reports whether it raised.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from components.sandbox.problem import CodeProblem, TestCase, TestVerdict, Verdict
from components.sandbox.runner import NotPlainValue, from_wire, to_wire

FLOAT_TOLERANCE = 1e-6
"""stdin tests: numeric tokens match when equal as decimals or within this (abs or rel)."""

STATUS_TO_VERDICT = {
    "timeout": Verdict.timeout,
    "memory": Verdict.memory_exceeded,
    "output_limit": Verdict.output_limit,
    "compile_error": Verdict.compile_error,
    "error": Verdict.runtime_error,
    "wrong": Verdict.wrong_answer,
}

Judge = Callable[[dict[str, Any]], bool]
"""Host-side check of one ``ok`` result entry from the sandbox."""


@dataclass(frozen=True)
class PlannedTest:
    spec: dict[str, Any]
    """What the sandbox receives for this test: ``stdin`` specs go to the candidate's
    process, every other spec only to the judge process (see runner.py)."""
    judge: Judge
    """Decides pass/fail from the sandbox's result entry."""


# ------------------------------------------------------------ output comparison


def _as_number(token: str) -> Decimal | None:
    try:
        value = Decimal(token)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _tokens_match(actual: str, expected: str) -> bool:
    if actual == expected:
        return True
    a, e = _as_number(actual), _as_number(expected)
    if a is None or e is None:
        return False
    if a == e:
        return True
    diff = abs(float(a) - float(e))
    return diff <= FLOAT_TOLERANCE or diff <= FLOAT_TOLERANCE * abs(float(e))


def stdout_matches(actual: str, expected: str) -> bool:
    """LiveCodeBench-style comparison of a program's stdout with the expected output.

    Both are stripped, split into lines (each stripped), the line counts must be
    equal, and each line pair must match token-wise (whitespace-separated);
    numeric tokens match when equal as decimals (``1.0`` == ``1.00``) or within
    :data:`FLOAT_TOLERANCE` absolute or relative.
    """
    actual_lines = [line.strip() for line in actual.strip().split("\n")]
    expected_lines = [line.strip() for line in expected.strip().split("\n")]
    if len(actual_lines) != len(expected_lines):
        return False
    for a_line, e_line in zip(actual_lines, expected_lines, strict=True):
        if a_line == e_line:
            continue
        a_tokens, e_tokens = a_line.split(), e_line.split()
        if len(a_tokens) != len(e_tokens):
            return False
        if not all(_tokens_match(a, e) for a, e in zip(a_tokens, e_tokens, strict=True)):
            return False
    return True


def _decoded(entry: dict[str, Any]) -> tuple[bool, Any]:
    """Decode the wire value of a result entry; (False, None) when malformed."""
    try:
        return True, from_wire(entry.get("value"))
    except (ValueError, TypeError, KeyError, IndexError, RecursionError):
        return False, None


def _jsonish(value: Any) -> Any:
    """Tuples -> lists, recursively (functional tests compare with JSON data)."""
    if isinstance(value, tuple | list):
        return [_jsonish(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonish(v) for k, v in value.items()}
    return value


def _safe_compare(check: Callable[[], bool]) -> bool:
    try:
        return bool(check())
    except Exception:  # e.g. comparing unorderable plain values
        return False


# ------------------------------------------------------------ planning tests


def _plan_stdin(test: TestCase) -> PlannedTest:
    expected = test.expected
    return PlannedTest({"mode": "stdin", "input": test.input},
                       lambda entry: stdout_matches(entry.get("stdout", ""), expected))


def _plan_functional(test: TestCase) -> PlannedTest:
    try:
        args = json.loads(test.input) if test.input.strip() else []
        expected = json.loads(test.expected)
    except json.JSONDecodeError as exc:
        raise ValueError(f"functional test: input/expected must be JSON ({exc})") from None
    if not isinstance(args, list):
        raise ValueError("functional test: input must be a JSON list of arguments")
    if not test.fn_name:
        raise ValueError("functional test: fn_name is required")

    def judge(entry: dict[str, Any]) -> bool:
        ok, value = _decoded(entry)
        return ok and _safe_compare(lambda: _jsonish(value) == expected)

    spec = {"mode": "call", "fn_name": test.fn_name, "class_name": test.class_name, "args": to_wire(args)}
    return PlannedTest(spec, judge)


_CONSTANT_BUILTINS = {f.__name__: f for f in (tuple, list, set, frozenset, sorted, str, int, float,
                                              abs, len, min, max, sum, round)}
_CONSTANT_NODES = (ast.Expression, ast.Constant, ast.Tuple, ast.List, ast.Set, ast.Dict, ast.BinOp,
                   ast.UnaryOp, ast.Call, ast.Name, ast.Load, ast.operator, ast.unaryop)


def _literal(node: ast.expr) -> tuple[bool, Any]:
    """(True, value) when ``node`` is a constant expression of the test itself.

    Literals, arithmetic on them (no ``**``) and calls of a few pure builtins
    (``tuple([1, 2])``, ``2.0 / 3.0``); no other names, attributes or subscripts.
    Evaluated on the host: it is test data, not candidate output.
    """
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    tree = ast.Expression(body=node)
    for sub in ast.walk(tree):
        if not isinstance(sub, _CONSTANT_NODES) or isinstance(sub, ast.Pow):
            return False, None
        if isinstance(sub, ast.Name) and sub.id not in _CONSTANT_BUILTINS:
            return False, None
        if isinstance(sub, ast.Call) and (not isinstance(sub.func, ast.Name) or sub.keywords):
            return False, None
    try:
        code = compile(ast.fix_missing_locations(tree), "<expected>", "eval")
        return True, eval(code, {"__builtins__": _CONSTANT_BUILTINS})
    except Exception:
        return False, None


def _is_abs_call(node: ast.expr) -> bool:
    if not isinstance(node, ast.Call) or len(node.args) != 1 or node.keywords:
        return False
    func = node.func
    return (isinstance(func, ast.Name) and func.id == "abs") or (
        isinstance(func, ast.Attribute) and func.attr == "fabs"
        and isinstance(func.value, ast.Name) and func.value.id == "math")


def _split_assert(test: ast.expr) -> tuple[ast.expr, Callable[[Any], bool]] | None:
    """(expression for the judge to evaluate, host-side predicate on its value) or None.

    The expression must not compare anything itself (no ``==``/``and``/... inside):
    such a statement is run whole by the judge instead (its constants are then
    expected values, which a split would carry into the sandbox anyway).
    """
    split = _split_assert_parts(test)
    if split is None:
        return None
    if any(isinstance(node, ast.Compare | ast.BoolOp) for node in ast.walk(split[0])):
        return None
    return split


def _split_assert_parts(test: ast.expr) -> tuple[ast.expr, Callable[[Any], bool]] | None:
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        if _literal(test.operand)[0]:
            return None
        return test.operand, lambda v: not v
    if not isinstance(test, ast.Compare):
        if _literal(test)[0]:
            return None
        return test, lambda v: bool(v)
    if len(test.ops) != 1:
        return None
    op, left, right = test.ops[0], test.left, test.comparators[0]
    left_lit, left_val = _literal(left)
    right_lit, right_val = _literal(right)
    if isinstance(op, ast.Eq | ast.NotEq | ast.Is | ast.IsNot) and left_lit != right_lit:
        expr, expected = (right, left_val) if left_lit else (left, right_val)
        if isinstance(op, ast.Eq):
            return expr, lambda v: v == expected
        if isinstance(op, ast.NotEq):
            return expr, lambda v: v != expected
        if expected is not None and not isinstance(expected, bool):
            return None  # `is` with a non-singleton literal: leave it to Python
        if isinstance(op, ast.Is):
            return expr, lambda v: v is expected
        return expr, lambda v: v is not expected
    if isinstance(op, ast.Lt | ast.LtE) and right_lit and _is_abs_call(left):
        diff = left.args[0]
        if isinstance(diff, ast.BinOp) and isinstance(diff.op, ast.Sub):
            a_lit, a_val = _literal(diff.left)
            b_lit, b_val = _literal(diff.right)
            if a_lit != b_lit:
                expr, target = (diff.right, a_val) if a_lit else (diff.left, b_val)
                tol, strict = right_val, isinstance(op, ast.Lt)
                return expr, lambda v: (abs(v - target) < tol) if strict else (abs(v - target) <= tol)
    return None


def _binds_candidate(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return node.id == "candidate" and not isinstance(node.ctx, ast.Load)
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return node.name == "candidate"
    if isinstance(node, ast.alias):
        return (node.asname or node.name) == "candidate"
    return False


def _direct_call(expr: ast.expr, setup: list[ast.stmt]) -> dict[str, Any] | None:
    """``candidate(<constants>)`` as a ``call`` spec (the entry point's), else None.

    Its value is the same whatever the setup did (constant arguments; the setup
    cannot rebind ``candidate``, checked), so the judge can send it ahead.
    """
    if not (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "candidate"):
        return None
    if any(_binds_candidate(node) for stmt in setup for node in ast.walk(stmt)):
        return None  # the setup rebinds `candidate`: leave it to the judge's interpreter
    args, kwargs = [], {}
    for node in expr.args:
        ok, value = (False, None) if isinstance(node, ast.Starred) else _literal(node)
        if not ok:
            return None
        args.append(value)
    for keyword in expr.keywords:
        ok, value = (False, None) if keyword.arg is None else _literal(keyword.value)
        if not ok:
            return None
        kwargs[keyword.arg] = value
    try:
        return {"mode": "call", "fn_name": None, "class_name": None, "args": to_wire(args),
                "kwargs": to_wire(kwargs) if kwargs else None}
    except NotPlainValue:
        return None


def _plan_assert(test: TestCase) -> PlannedTest:
    try:
        body = ast.parse(test.input).body
    except SyntaxError as exc:
        raise ValueError(f"assert test is not valid Python: {exc}") from None
    if not body:
        raise ValueError("assert test is empty")
    setup = ast.unparse(body[:-1]) if len(body) > 1 else ""
    last = body[-1]
    split = _split_assert(last.test) if isinstance(last, ast.Assert) else None
    if split is None:  # run whole by the judge process (never by the candidate's)
        spec = {"mode": "exec", "setup": setup, "stmt": ast.unparse(last)}
        return PlannedTest(spec, lambda entry: True)
    expr, predicate = split

    def judge(entry: dict[str, Any]) -> bool:
        ok, value = _decoded(entry)
        return ok and _safe_compare(lambda: predicate(value))

    spec = _direct_call(expr, body[:-1]) or {"mode": "eval", "setup": setup, "expr": ast.unparse(expr)}
    return PlannedTest(spec, judge)


def plan_test(test: TestCase) -> PlannedTest:
    """Split one test into what the sandbox runs and how the host judges it."""
    if test.kind == "stdin":
        return _plan_stdin(test)
    if test.kind == "functional":
        return _plan_functional(test)
    return _plan_assert(test)


def plan_problem(problem: CodeProblem) -> list[PlannedTest]:
    return [plan_test(t) for t in problem.tests]


# ------------------------------------------------------------ requests and verdicts


@dataclass(frozen=True)
class ProgramRequest:
    """One program as the runner receives it: a public part and a judged part.

    ``public`` is all a candidate's process may hold (its code, limits, stdin
    inputs); ``judged`` (the problem's prelude and every non-stdin test spec)
    reaches only the judge process.
    """

    public: dict[str, Any]
    judged: dict[str, Any]

    @property
    def n_tests(self) -> int:
        return len(self.public["tests"])

    def frame(self, request_id: int) -> bytes:
        """``<n1> <n2>\\n`` + public JSON + judged JSON (empty when no test is judged)."""
        public = json.dumps({"id": request_id, **self.public}).encode()
        judged = json.dumps(self.judged).encode() if any(self.judged["tests"]) else b""
        return b"%d %d\n" % (len(public), len(judged)) + public + judged


def build_program(problem: CodeProblem, code: str, planned: list[PlannedTest], *,
                  time_limit_s: float, memory_mb: int, output_limit: int) -> ProgramRequest:
    """What the runner receives for one candidate program."""
    program = f"{problem.prelude}\n{code}" if problem.prelude else code
    stdin = [p.spec["mode"] == "stdin" for p in planned]
    public = {
        "program": program,
        "time_limit_s": min(problem.time_limit_s, time_limit_s),
        "memory_mb": min(problem.memory_limit_mb, memory_mb),
        "output_limit": output_limit,
        "tests": [p.spec if is_stdin else {"mode": "judged"} for p, is_stdin in zip(planned, stdin, strict=True)],
    }
    judged = {
        "prelude": problem.prelude,
        "entry_point": problem.entry_point,
        "tests": [None if is_stdin else p.spec for p, is_stdin in zip(planned, stdin, strict=True)],
    }
    return ProgramRequest(public, judged)


def verdict_of(entry: Any, planned: PlannedTest) -> TestVerdict:
    """Turn one (untrusted) result entry from the sandbox into a verdict."""
    if not isinstance(entry, dict) or not isinstance(entry.get("status"), str):
        return TestVerdict(status=Verdict.sandbox_error, stderr="malformed result from sandbox")
    stdout, stderr = str(entry.get("stdout", "")), str(entry.get("stderr", ""))
    duration = entry.get("duration_s", 0.0)
    duration = float(duration) if isinstance(duration, int | float) and math.isfinite(duration) else 0.0
    status = entry["status"]
    if status == "ok":
        status_out = Verdict.passed if planned.judge(entry) else Verdict.wrong_answer
    else:
        status_out = STATUS_TO_VERDICT.get(status, Verdict.sandbox_error)
    return TestVerdict(status=status_out, duration_s=duration, stdout=stdout[:2000], stderr=stderr[-2000:])


def verdicts_of_program(entry: Any, planned: list[PlannedTest]) -> list[TestVerdict]:
    """Verdicts from one program's (untrusted) response line from the runner."""
    if isinstance(entry, dict) and "handler_died" in entry:  # the program killed its own harness
        why = f"the program killed the sandbox harness ({str(entry['handler_died'])[:200]})"
        return [TestVerdict(status=Verdict.runtime_error, stderr=why) for _ in planned]
    results = entry.get("results") if isinstance(entry, dict) else None
    if not isinstance(results, list) or len(results) != len(planned):
        return [TestVerdict(status=Verdict.sandbox_error, stderr="malformed response from sandbox")
                for _ in planned]
    return [verdict_of(entry, p) for entry, p in zip(results, planned, strict=True)]
