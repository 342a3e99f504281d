"""Evolutionary search as an evaluation: OpenEvolve driving our policy (VPO_SPEC §6).

For each hard held-out code problem (best@30 = 0 for the checkpoints compared),
OpenEvolve runs ``iterations`` mutation steps. Its LLM is our policy, served on
127.0.0.1 by :class:`~components.evolve.server.PolicyServer`; its evaluator is
``sandbox_evaluator.py``, which scores a program with our sandbox. The measure
is the number of problems solved (all tests pass) after i iterations,
i = 0..iterations, per checkpoint.

Prompting: OpenEvolve's own prompt (current program, metrics, "rewrite it")
suits an instruction model (``prompt_mode="chat"``: the tokenizer's chat
template). The tiny model only knows our task prompt, so ``prompt_mode="task"``
serves each problem's task prompt (the served model name is the problem id) and
returns one of the generation's parsed answers, picked at random, as the
rewritten program. In task mode the parent program does not condition the
mutation: the search is sampling plus OpenEvolve's selection and archive.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from components.config import SandboxConfig
from components.evolve.server import (
    Completion,
    CompletionParams,
    Messages,
    PolicyServer,
    Sampler,
    chat_template_prompt,
    engine_sampler,
)
from components.sandbox.problem import CodeProblem

EVALUATOR_FILE = Path(__file__).with_name("sandbox_evaluator.py")
STUB_PROGRAM = "# EVOLVE-BLOCK-START\npass\n# EVOLVE-BLOCK-END\n"
"""Initial program of every search: solves nothing, so iteration 0 scores 0 on a hard problem."""


class ProblemSearch(BaseModel):
    """Outcome of evolutionary search on one problem."""

    problem_id: str
    iterations: int
    """Iterations OpenEvolve ran (fewer than asked when it stopped at a solution)."""
    solved_at: int | None
    """First iteration whose child passed every test (0 = the initial program); None = unsolved."""
    best_score: float
    """Best fraction of tests passed by any program of the search."""
    children: int
    """Iterations that produced a program (the others failed to parse / evaluate)."""
    best_by_iteration: list[float] = []
    """Best fraction of tests passed within i iterations, i = 0..iterations asked."""


class EvolveReport(BaseModel):
    """Solved-vs-iterations of one checkpoint."""

    checkpoint_uri: str
    iterations: int
    problem_ids: list[str]
    solved_curve: list[int]
    """solved_curve[i] = problems solved within i iterations, i = 0..iterations."""
    mean_best_curve: list[float]
    """Mean over problems of the best fraction of tests passed within i iterations."""
    selection: str = ""
    """How the problems were chosen (e.g. best@30 = 0 for every checkpoint)."""
    searches: list[ProblemSearch]


def solved_curve(searches: Sequence[ProblemSearch], iterations: int) -> list[int]:
    """Problems solved within i iterations, for i = 0..iterations."""
    solved = [s.solved_at for s in searches if s.solved_at is not None]
    return [sum(1 for at in solved if at <= i) for i in range(iterations + 1)]


def mean_best_curve(searches: Sequence[ProblemSearch], iterations: int) -> list[float]:
    """Mean over problems of the best score found within i iterations, i = 0..iterations."""
    if not searches:
        return [0.0] * (iterations + 1)
    return [sum(s.best_by_iteration[i] for s in searches) / len(searches) for i in range(iterations + 1)]


def _openevolve_config(
    *, model_name: str, base_url: str, iterations: int, problem: CodeProblem, sandbox: SandboxConfig,
    trace_path: Path, seed: int, temperature: float, max_tokens: int,
) -> Any:
    from openevolve.config import Config

    return Config.from_dict(
        {
            "max_iterations": iterations,
            "checkpoint_interval": iterations + 1,
            "log_level": "WARNING",
            "random_seed": seed,
            "language": "python",
            "diff_based_evolution": False,  # full rewrites: a policy answer is a whole program
            "max_tasks_per_child": 1_000_000,  # set => worker processes are spawned, not forked
            "llm": {
                "api_base": base_url,
                "api_key": "none",
                "models": [{"name": model_name, "weight": 1.0}],
                "temperature": temperature,
                "max_tokens": max_tokens,
                "timeout": 600,
                "retries": 0,
                "retry_delay": 1,
            },
            "database": {
                "num_islands": 1,
                "population_size": max(10, iterations + 1),
                "archive_size": max(5, iterations // 2),
                "random_seed": seed,
            },
            "evaluator": {
                "timeout": int(60 + sandbox.timeout_s * len(problem.tests)),
                "max_retries": 0,
                "cascade_evaluation": False,
                "parallel_evaluations": 1,
                "evaluator_args": {
                    "problem_json": problem.model_dump_json(),
                    "sandbox_json": sandbox.model_dump_json(),
                },
            },
            "evolution_trace": {
                "enabled": True,
                "format": "jsonl",
                "output_path": str(trace_path),
                "include_prompts": False,
                "include_failures": True,
                "buffer_size": 1,
            },
        }
    )


def _child_scores(trace_path: Path) -> list[tuple[int, float, bool]]:
    """(iteration, fraction of tests passed, all passed) of every child in an OpenEvolve trace."""
    children = []
    if trace_path.exists():
        for line in trace_path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                metrics = record.get("child_metrics") or {}
                children.append((int(record.get("iteration", 0)), float(metrics.get("combined_score", 0.0)),
                                 float(metrics.get("all_passed", 0.0)) >= 1.0))
    return children


def _best_by_iteration(initial: float, children: Sequence[tuple[int, float, bool]], iterations: int,
                       solved_at: int | None) -> list[float]:
    best = [initial] * (iterations + 1)
    for iteration, score, _ in children:
        for i in range(min(iteration, iterations), iterations + 1):
            best[i] = max(best[i], score)
    if solved_at is not None:  # the search stopped at the solution
        best[solved_at:] = [1.0] * (iterations + 1 - solved_at)
    return best


def evolve_problem(
    problem: CodeProblem,
    *,
    base_url: str,
    model_name: str,
    iterations: int,
    sandbox: SandboxConfig,
    workdir: Path,
    seed: int = 0,
    temperature: float = 1.0,
    max_tokens: int = 256,
    initial_program: str = STUB_PROGRAM,
) -> ProblemSearch:
    """Run OpenEvolve on one problem against the endpoint at ``base_url``; stop once solved."""
    from openevolve.api import run_evolution

    from components.evolve.sandbox_evaluator import score_program

    workdir.mkdir(parents=True, exist_ok=True)
    trace_path = workdir / "trace.jsonl"
    config = _openevolve_config(
        model_name=model_name, base_url=base_url, iterations=iterations, problem=problem,
        sandbox=sandbox, trace_path=trace_path, seed=seed, temperature=temperature,
        max_tokens=max_tokens,
    )
    initial = score_program(initial_program, problem, sandbox)
    if initial["all_passed"] >= 1.0:
        return ProblemSearch(problem_id=problem.problem_id, iterations=0, solved_at=0, best_score=1.0,
                             children=0, best_by_iteration=[1.0] * (iterations + 1))
    with _root_logging_restored():
        logging.getLogger("openevolve").setLevel(logging.WARNING)
        run_evolution(
            initial_program=initial_program,
            evaluator=str(EVALUATOR_FILE),
            config=config,
            iterations=iterations,
            output_dir=str(workdir / "openevolve"),
            cleanup=False,
            target_score=1.0,
        )
    children = _child_scores(trace_path)
    solved = [iteration for iteration, _, passed in children if passed]
    solved_at = min(solved) if solved else None
    best = _best_by_iteration(initial["combined_score"], children, iterations, solved_at)
    return ProblemSearch(
        problem_id=problem.problem_id,
        iterations=iterations if solved_at is None else solved_at,
        solved_at=solved_at,
        best_score=best[-1],
        children=len(children),
        best_by_iteration=best,
    )


@contextmanager
def _root_logging_restored() -> Iterator[None]:
    """Undo what each OpenEvolve controller does to the root logger (a level, a file and a
    console handler per run, never removed): without this, handlers pile up per problem and
    outlive the stream they were bound to."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)


def evolve_problems(
    problems: Sequence[CodeProblem],
    *,
    base_url: str,
    model_name_for: Callable[[CodeProblem], str],
    iterations: int,
    sandbox: SandboxConfig,
    workdir: Path,
    seed: int = 0,
    temperature: float = 1.0,
    max_tokens: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> list[ProblemSearch]:
    """:func:`evolve_problem` over ``problems`` in order; ``progress(done, total)`` after each."""
    searches = []
    for index, problem in enumerate(problems):
        searches.append(
            evolve_problem(
                problem, base_url=base_url, model_name=model_name_for(problem),
                iterations=iterations, sandbox=sandbox,
                workdir=workdir / f"{index:03d}-{_safe_name(problem.problem_id)}",
                seed=seed + index, temperature=temperature, max_tokens=max_tokens,
            )
        )
        if progress is not None:
            progress(index + 1, len(problems))
    return searches


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:60]


# ---- our policy as the LLM ------------------------------------------------------------------


class TaskPromptAdapter:
    """Task-mode adapters: model name = problem id -> that problem's task prompt; the reply is
    one parsed answer of the generation (chosen at random), fenced as a python block."""

    def __init__(self, task: Any, rows_by_id: dict[str, dict], num_answers: int,
                 tokenizer: Any = None, seed: int = 0) -> None:
        self.task, self.rows_by_id, self.m, self.tokenizer = task, rows_by_id, num_answers, tokenizer
        self.rng = random.Random(seed)

    def prompt(self, model: str, messages: Messages) -> str:
        if model not in self.rows_by_id:
            raise KeyError(f"unknown problem id {model!r} (task mode serves one model per problem)")
        return self.task.build_prompt(self.rows_by_id[model], self.m, self.tokenizer)

    def response(self, model: str, text: str) -> str:
        answers = [a for a in self.task.parse_answers(text, self.m) if a is not None]
        if not answers:
            return text  # OpenEvolve falls back to the raw text, which fails its tests
        return f"```python\n{self.rng.choice(answers)}\n```"


def serve_policy(
    sampler: Sampler,
    *,
    prompt_mode: Literal["task", "chat"],
    model_names: Sequence[str],
    task_adapter: TaskPromptAdapter | None = None,
    tokenizer: Any = None,
    max_tokens: int = 256,
) -> PolicyServer:
    """A not-yet-started :class:`PolicyServer` for ``prompt_mode`` (see the module docstring)."""
    if prompt_mode == "task":
        if task_adapter is None:
            raise ValueError("prompt_mode='task' needs a task_adapter")
        return PolicyServer(sampler, model_names=tuple(model_names), prompt_adapter=task_adapter.prompt,
                            response_adapter=task_adapter.response, max_tokens=max_tokens,
                            max_tokens_cap=max_tokens)
    return PolicyServer(sampler, model_names=tuple(model_names),
                        prompt_adapter=chat_template_prompt(tokenizer), max_tokens=max_tokens,
                        max_tokens_cap=max_tokens)


__all__ = [
    "Completion",
    "CompletionParams",
    "EvolveReport",
    "PolicyServer",
    "ProblemSearch",
    "TaskPromptAdapter",
    "engine_sampler",
    "evolve_problem",
    "evolve_problems",
    "mean_best_curve",
    "serve_policy",
    "solved_curve",
]
