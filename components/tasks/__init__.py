"""Tasks: what turns a dataset row and a generation into a reward matrix (see base.py).

``get_task(cfg, sandbox=None)`` picks the task named by ``cfg.task.name``; code
tasks need a sandbox from ``components.sandbox.open_sandbox``.
"""

from __future__ import annotations

from typing import Any

from components.config import RunConfig, TaskConfig
from components.tasks.base import Row, ScoredBatch, Task

__all__ = ["Row", "ScoredBatch", "Task", "get_task", "objective_names"]


def objective_names(task: TaskConfig) -> tuple[str, ...]:
    """The k reward-dimension names of a task config (no sandbox needed)."""
    if task.name == "maze":
        from components.tasks.maze import OBJECTIVES

        return OBJECTIVES
    if task.name == "synthetic_code":
        return tuple(f"test_{j}" for j in range(task.code_targets * task.code_tests_per_target))
    return tuple(f"test_{j:02d}" for j in range(task.max_tests))


def get_task(cfg: RunConfig, sandbox: Any | None = None) -> Task:
    """The task of ``cfg.task.name``. Code tasks raise ValueError without a sandbox."""
    name = cfg.task.name
    if name == "maze":
        from components.tasks.maze import MazeTask

        return MazeTask()
    if name == "synthetic_code":
        from components.tasks.synthetic_code import SyntheticCodeTask

        return SyntheticCodeTask(_require(sandbox, name), cfg.task)
    if name in ("livecodebench", "humaneval"):
        from components.tasks.code import CodeTask

        return CodeTask(name, _require(sandbox, name), cfg.task)
    raise ValueError(f"unknown task {name!r}")


def _require(sandbox: Any | None, name: str) -> Any:
    if sandbox is None:
        raise ValueError(f"task {name!r} runs answers in a sandbox: pass get_task(cfg, sandbox=...)")
    return sandbox
