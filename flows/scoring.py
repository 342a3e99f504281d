"""Sandbox scoring fanned out over a task runner (threads, or a Ray cluster).

Candidate programs are split into contiguous shards; each shard is one Prefect
task that opens its own sandbox (Docker containers or processes on whichever
machine runs it) and returns its verdicts. Results come back in job order, the
same as one ``sandbox.run(jobs)`` call would give.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from components.config import SandboxConfig
from components.sandbox.problem import CodeProblem, ExecutionResult
from flows.runtime import RETRIES, RETRY_DELAYS, retry_if_transient, task_runner


def shard_bounds(num_jobs: int, num_shards: int) -> list[tuple[int, int]]:
    """``num_shards`` (at most ``num_jobs``) contiguous [start, stop) ranges of near-equal size."""
    shards = max(1, min(num_shards, num_jobs))
    edges = [round(i * num_jobs / shards) for i in range(shards + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:], strict=False) if b > a]


@task(name="score-shard", cache_policy=NO_CACHE, retries=RETRIES, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_if_transient)
def score_shard(sandbox: SandboxConfig, problems: list[CodeProblem], codes: list[str],
                first_index: int) -> list[ExecutionResult]:
    """Run one shard in a sandbox opened where this task runs; candidate indices are global."""
    from components.sandbox import open_sandbox

    with open_sandbox(sandbox) as sb:
        results = sb.run(list(zip(problems, codes, strict=True)))
    return [r.model_copy(update={"candidate_index": first_index + i}) for i, r in enumerate(results)]


@flow(name="vpo-score", log_prints=True)
def score_flow(sandbox: SandboxConfig, problems: list[CodeProblem], codes: list[str],
               shards: int = 2) -> list[ExecutionResult]:
    """Score ``codes[i]`` against ``problems[i]`` for every i, ``shards`` shards at a time."""
    if len(problems) != len(codes):
        raise ValueError(f"{len(problems)} problems but {len(codes)} candidates: one problem per candidate")
    futures = [score_shard.submit(sandbox, problems[a:b], codes[a:b], a)
               for a, b in shard_bounds(len(codes), shards)]
    return [r for f in futures for r in f.result()]


def score(sandbox: SandboxConfig, problems: list[CodeProblem], codes: list[str], *, shards: int = 2,
          ray_address: str | None = None) -> list[ExecutionResult]:
    """:func:`score_flow` on threads or on Ray (``"local"`` or a cluster address)."""
    runner = task_runner(ray_address, num_cpus=shards)
    return score_flow.with_options(task_runner=runner)(sandbox, problems, codes, shards)
