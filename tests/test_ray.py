"""Sandbox scoring fanned out over a real local Ray cluster (prefect-ray's RayTaskRunner)."""

from __future__ import annotations

import pytest

from components.config import SandboxConfig
from components.sandbox.problem import CodeProblem, TestCase
from flows.scoring import score, shard_bounds

pytest.importorskip("prefect_ray")
pytest.importorskip("components.sandbox", reason="the sandbox package is not there yet")


@pytest.fixture(scope="module", autouse=True)
def prefect_api():
    """A real temporary Prefect API for this module, stopped while pytest still captures output."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


def test_shard_bounds_cover_every_job_once():
    for jobs in range(0, 12):
        for shards in range(1, 6):
            bounds = shard_bounds(jobs, shards)
            covered = [i for a, b in bounds for i in range(a, b)]
            assert covered == list(range(jobs))
            assert len(bounds) <= max(1, min(shards, jobs))


def _problem(i: int) -> CodeProblem:
    return CodeProblem(
        problem_id=f"add-{i}",
        tests=tuple(TestCase(kind="stdin", input=f"{a} {i}\n", expected=str(a + i)) for a in range(3)),
        time_limit_s=5.0,
    )


@pytest.mark.slow
def test_scoring_on_a_local_ray_cluster_matches_the_sandbox():
    problems = [_problem(i) for i in range(6)]
    good = "a, b = map(int, input().split())\nprint(a + b)\n"
    wrong = "a, b = map(int, input().split())\nprint(a - b)\n"  # right only when b == 0
    codes = [good if i % 2 == 0 else wrong for i in range(6)]
    sandbox = SandboxConfig(backend="process", workers=1, timeout_s=5.0)
    results = score(sandbox, problems, codes, shards=2, ray_address="local")
    assert [r.problem_id for r in results] == [p.problem_id for p in problems]
    assert [r.candidate_index for r in results] == list(range(6))
    for i, r in enumerate(results):
        expected = [True] * 3 if i % 2 == 0 else [i == 0] * 3
        assert r.passed == expected, (i, r.statuses)
