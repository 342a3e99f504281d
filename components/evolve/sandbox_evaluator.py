"""OpenEvolve's evaluator file: score one program on one code problem in our sandbox.

OpenEvolve loads this file by path in its worker processes and calls
``evaluate(program_path, **evaluator_args)``; ``components.evolve`` passes the
problem and the sandbox settings as JSON strings through
``config.evaluator.evaluator_args``. Every test runs (one reward dimension each).

Returned metrics: ``combined_score`` = fraction of tests passed (the task's fixed
scalar), ``all_passed`` = 1.0 when every test passed (the problem is solved),
``tests_passed`` = count.
"""

from __future__ import annotations

from pathlib import Path

from components.config import SandboxConfig
from components.sandbox import open_sandbox
from components.sandbox.problem import CodeProblem


def score_program(code: str, problem: CodeProblem, sandbox: SandboxConfig) -> dict[str, float]:
    """Run ``code`` on every test of ``problem``; return the metrics above."""
    with open_sandbox(sandbox) as sb:
        [result] = sb.run([(problem, code)])
    passed = result.passed
    return {
        "combined_score": sum(passed) / len(passed),
        "all_passed": float(all(passed)),
        "tests_passed": float(sum(passed)),
    }


def evaluate(program_path: str, problem_json: str, sandbox_json: str) -> dict[str, float]:
    """OpenEvolve entry point (see module docstring)."""
    problem = CodeProblem.model_validate_json(problem_json)
    sandbox = SandboxConfig.model_validate_json(sandbox_json)
    return score_program(Path(program_path).read_text(), problem, sandbox)
