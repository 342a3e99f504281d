"""A pool of runner servers (containers or processes) shared by both sandbox backends.

A *worker* is one running :mod:`components.sandbox.runner` server reached
through a line-delimited JSON channel. The pool feeds jobs to ``cfg.workers``
workers from as many threads, sends ``cfg.batch_size``
programs per round trip, recycles a worker after ``cfg.programs_per_worker``
programs or on any anomaly (dead server, malformed or late response), and
retries a failed batch one program at a time on a fresh worker; a program that
fails twice alone is recorded as ``sandbox_error``.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import signal
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from components.config import SandboxConfig
from components.sandbox.judge import (
    PlannedTest,
    ProgramRequest,
    build_program,
    plan_problem,
    verdicts_of_program,
)
from components.sandbox.problem import CodeProblem, ExecutionResult, TestVerdict, Verdict

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""progress(n_done, n_total), called after each finished program."""

STARTUP_TIMEOUT_S = 60.0
PIPELINE_DEPTH = 2
"""Frames sent to a worker ahead of its answers (the one running + the next)."""
RESPONSE_SLACK_S = 15.0


class SandboxUnavailable(RuntimeError):
    """The requested backend cannot run here (no engine, missing or stale image, ...)."""


class WorkerDied(RuntimeError):
    """A worker stopped answering properly; it is discarded and replaced."""


class Worker(ABC):
    """One runner server behind a line channel."""

    def __init__(self) -> None:
        self.programs_done = 0
        self._next_id = 1

    @abstractmethod
    def send(self, data: bytes) -> None:
        """Write all of ``data`` to the runner's stdin; raises WorkerDied."""

    @abstractmethod
    def read_line(self, timeout_s: float) -> bytes:
        """One line (without the newline); raises WorkerDied on EOF or timeout."""

    @abstractmethod
    def close(self) -> None:
        """Stop the server and remove everything it owns. Idempotent, never raises."""

    def wait_ready(self) -> dict[str, Any]:
        ready = self._read_json(STARTUP_TIMEOUT_S)
        if not ready.get("ready"):
            raise WorkerDied(f"runner did not start: {ready!r}")
        return ready

    def run_programs(self, programs: list[ProgramRequest], timeout_s: float) -> list[dict[str, Any]]:
        """Send the programs as frames, at most PIPELINE_DEPTH unanswered; their responses, in order.

        Each frame is one program (:meth:`ProgramRequest.frame`; the runner reads
        exactly one per handler). A writer thread feeds stdin while we read stdout, so large
        requests and large answers cannot deadlock on full pipes. The small
        window keeps the runner busy without a round trip between programs, yet
        leaves at most one unread frame behind if this process dies, so the
        runner soon sees the end of its input and exits.
        """
        first_id = self._next_id
        self._next_id += len(programs)
        frames = [program.frame(first_id + offset) for offset, program in enumerate(programs)]
        window = threading.Semaphore(PIPELINE_DEPTH)
        stop = threading.Event()
        failures: list[BaseException] = []

        def write() -> None:
            try:
                for frame in frames:
                    while not window.acquire(timeout=0.5):
                        if stop.is_set():
                            return
                    if stop.is_set():
                        return
                    self.send(frame)
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        deadline = time.monotonic() + timeout_s
        responses = []
        try:
            for offset in range(len(programs)):
                response = self._read_json(max(0.0, deadline - time.monotonic()))
                if "handler_died" not in response and response.get("id") != first_id + offset:
                    raise WorkerDied("response out of order")
                responses.append(response)
                window.release()
        finally:
            stop.set()
            window.release()
        writer.join(timeout=5)
        if failures:
            raise WorkerDied(f"could not send to runner: {failures[0]}")
        return responses

    def _read_json(self, timeout_s: float) -> dict[str, Any]:
        line = self.read_line(timeout_s)
        try:
            data = json.loads(line)
        except ValueError:
            raise WorkerDied(f"malformed line from runner: {line[:200]!r}") from None
        if not isinstance(data, dict):
            raise WorkerDied("runner sent a non-object")
        return data


class LineBuffer:
    """Splits a byte stream into lines (used by both channel kinds)."""

    def __init__(self, max_line: int) -> None:
        self._buf = bytearray()
        self._max_line = max_line

    def feed(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > self._max_line and b"\n" not in self._buf:
            raise WorkerDied("runner line too long")

    def pop_line(self) -> bytes | None:
        end = self._buf.find(b"\n")
        if end < 0:
            return None
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        return line


_OPEN_SANDBOXES: weakref.WeakSet[PooledSandbox] = weakref.WeakSet()


def _close_all_open() -> None:
    for sandbox in list(_OPEN_SANDBOXES):
        sandbox.close()


atexit.register(_close_all_open)


class PooledSandbox(ABC):
    """Runs (problem, code) jobs on a pool of workers; use as a context manager."""

    backend_name: str = ""

    def __init__(self, cfg: SandboxConfig) -> None:
        self.cfg = cfg
        self._workers: list[Worker | None] = [None] * cfg.workers
        self._lock = threading.Lock()
        self._closed = False
        self._previous_sigterm: Any = None
        _OPEN_SANDBOXES.add(self)
        self._install_sigterm()

    # -- subclass hooks
    @abstractmethod
    def _start_worker(self, slot: int) -> Worker: ...

    def _on_close(self) -> None:  # noqa: B027 - optional hook
        """Backend-specific cleanup after every worker is closed."""

    # -- lifecycle
    def __enter__(self) -> PooledSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every worker and remove its containers/processes/files. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers, self._workers = self._workers, [None] * len(self._workers)
        closers = [threading.Thread(target=w.close) for w in workers if w is not None]
        for t in closers:
            t.start()
        for t in closers:
            t.join()
        self._on_close()
        self._restore_sigterm()
        _OPEN_SANDBOXES.discard(self)

    def _install_sigterm(self) -> None:
        """Turn SIGTERM into SystemExit so ``with`` blocks (and atexit) clean up."""
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def on_sigterm(signum: int, frame: Any) -> None:
            raise SystemExit(128 + signum)

        self._previous_sigterm = signal.SIG_DFL
        signal.signal(signal.SIGTERM, on_sigterm)

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is None or threading.current_thread() is not threading.main_thread():
            return
        if not any(s is not self and s._previous_sigterm is not None for s in _OPEN_SANDBOXES):
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        self._previous_sigterm = None

    # -- workers
    def _worker(self, slot: int) -> Worker:
        worker = self._workers[slot]
        if worker is not None and worker.programs_done >= self.cfg.programs_per_worker:
            self._discard(slot)
            worker = None
        if worker is None:
            if self._closed:
                raise SandboxUnavailable("sandbox is closed")
            worker = self._start_worker(slot)
            try:
                worker.wait_ready()
            except BaseException:
                worker.close()
                raise
            with self._lock:
                if self._closed:
                    worker.close()
                    raise SandboxUnavailable("sandbox is closed")
                self._workers[slot] = worker
        return worker

    def _discard(self, slot: int) -> None:
        with self._lock:
            worker, self._workers[slot] = self._workers[slot], None
        if worker is not None:
            worker.close()

    def warm_up(self) -> None:
        """Start every worker now (in parallel) instead of on first use."""
        threads = [threading.Thread(target=self._worker, args=(slot,)) for slot in range(len(self._workers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    # -- running
    def run(self, jobs: Sequence[tuple[CodeProblem, str]], progress: Progress | None = None
            ) -> list[ExecutionResult]:
        """Run every (problem, code) job; results in job order, one verdict per test."""
        if self._closed:
            raise SandboxUnavailable("sandbox is closed")
        plans: dict[int, list[PlannedTest]] = {}
        for problem, _ in jobs:
            if id(problem) not in plans:
                plans[id(problem)] = plan_problem(problem)
        results: list[ExecutionResult | None] = [None] * len(jobs)
        pending: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(len(jobs)):
            pending.put(index)
        n_threads = min(len(self._workers), len(jobs))
        done = [0]
        errors: list[BaseException] = []

        def take() -> list[int]:
            """Up to batch_size jobs, fewer near the end so that every worker stays busy."""
            size = max(1, min(self.cfg.batch_size, pending.qsize() // n_threads))
            batch = []
            while len(batch) < size:
                try:
                    batch.append(pending.get_nowait())
                except queue.Empty:
                    break
            return batch

        def serve(slot: int) -> None:
            while not errors and (batch := take()):
                try:
                    verdicts = self._run_batch(slot, [(jobs[i][0], jobs[i][1], plans[id(jobs[i][0])]) for i in batch])
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                    errors.append(exc)
                    return
                for index, program_verdicts in zip(batch, verdicts, strict=True):
                    results[index] = ExecutionResult(problem_id=jobs[index][0].problem_id,
                                                     candidate_index=index, verdicts=program_verdicts)
                with self._lock:
                    done[0] += len(batch)
                    n_done = done[0]
                if progress is not None:
                    progress(n_done, len(jobs))

        threads = [threading.Thread(target=serve, args=(slot,), daemon=True) for slot in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)  # short joins keep Ctrl-C responsive
        if errors:
            raise errors[0]
        return [r for r in results if r is not None]

    def _run_batch(self, slot: int, batch: list[tuple[CodeProblem, str, list[PlannedTest]]]
                   ) -> list[list[TestVerdict]]:
        """Verdicts of each program of the batch, in order, from one round trip to a worker.

        If the worker fails, it is replaced and each program is retried alone (so one
        program that breaks a worker cannot cost its neighbours their verdicts); a
        program that fails twice alone gets ``sandbox_error`` on every test.
        """
        programs = [build_program(problem, code, planned, time_limit_s=self.cfg.timeout_s,
                                  memory_mb=self.cfg.memory_mb, output_limit=self.cfg.output_limit_bytes)
                    for problem, code, planned in batch]
        budget = sum((p.n_tests + 1) * (p.public["time_limit_s"] + 1.0) for p in programs) + RESPONSE_SLACK_S
        attempts = 1 if len(batch) > 1 else 2
        last_error = ""
        for attempt in range(attempts):
            worker = self._worker(slot)
            started = time.monotonic()
            try:
                entries = worker.run_programs(programs, budget)
                worker.programs_done += len(batch)
                return [verdicts_of_program(entry, planned)
                        for entry, (_, _, planned) in zip(entries, batch, strict=True)]
            except WorkerDied as exc:
                last_error = str(exc)
                log.warning("sandbox worker %d failed after %.1fs (%d program(s), attempt %d): %s",
                            slot, time.monotonic() - started, len(batch), attempt + 1, exc)
                self._discard(slot)
        if len(batch) > 1:
            return [self._run_batch(slot, [job])[0] for job in batch]
        return [[TestVerdict(status=Verdict.sandbox_error, stderr=f"sandbox worker failed twice: {last_error}")
                 for _ in batch[0][2]]]
