"""DockerSandbox, for real: HumanEval, mutants, the hostile corpus, hardening, leaks and crashes.

Needs a Docker engine and a current ``vpo-sandbox:local`` image (``vpo sandbox
build-image``); every test here is skipped, with the reason, otherwise.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

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
    Hack,
    always_true_patching_jobs,
    assert_expected_statuses,
    canonical_humaneval_jobs,
    next_program_jobs,
    sleeper,
)

from components.config import SandboxConfig
from components.sandbox import CodeProblem, DockerSandbox, TestCase, open_sandbox
from components.sandbox.docker_backend import OWNER_LABEL, SERVER_HEADROOM_MB, docker_client

pytestmark = pytest.mark.docker
REPO = Path(__file__).resolve().parents[1]
HOSTILE_CFG = SandboxConfig(backend="docker", timeout_s=1.5, memory_mb=128, workers=2)
ALL_HACKS = HACKS + HACKS_ROUND2 + [sleeper(ADD, HOSTILE_CFG.timeout_s), sleeper(ADD_ASSERT, HOSTILE_CFG.timeout_s)]


@pytest.fixture(scope="module")
def sandbox():
    with DockerSandbox(SandboxConfig(backend="docker", workers=2)) as sb:
        yield sb


@pytest.fixture(scope="module")
def hostile_sandbox():
    with DockerSandbox(HOSTILE_CFG) as sb:
        yield sb


# ------------------------------------------------------------------ correctness


def test_open_sandbox_auto_picks_docker():
    with open_sandbox(SandboxConfig()) as sb:
        assert sb.backend_name == "docker"


def test_humaneval_canonical_solutions_pass_every_test(sandbox):
    jobs = canonical_humaneval_jobs()
    results = sandbox.run(jobs)
    assert len(results) == 164
    failing = {r.problem_id: list(zip(r.statuses, (v.stderr[-200:] for v in r.verdicts), strict=True))
               for r in results if not all(r.passed)}
    assert not failing
    assert sum(len(r.passed) for r in results) == sum(len(p.tests) for p, _ in jobs)


class _Alarm(Exception):
    pass


def _reference_vector(problem: CodeProblem, code: str, limit_s: int = 2) -> list[bool] | None:
    """Per-test outcome by plain in-process Python (our own benign mutants only); None = unclear."""

    def on_alarm(*_):
        raise _Alarm

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit_s)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            ns: dict = {"__name__": "__candidate__"}
            try:
                exec(problem.prelude + "\n" + code, ns)
                ns["candidate"] = ns[problem.entry_point]
            except _Alarm:
                return None
            except Exception:
                return [False] * len(problem.tests)
            outcome = []
            for test in problem.tests:
                try:
                    exec(test.input, ns)
                    outcome.append(True)
                except (_Alarm, RecursionError, MemoryError):
                    return None
                except Exception:
                    outcome.append(False)
            return outcome
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Lt: ast.LtE, ast.LtE: ast.Lt,
          ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}


def _mutation_sites(func: ast.FunctionDef) -> list[ast.AST]:
    sites = []
    for node in ast.walk(func):
        if isinstance(node, ast.BinOp) and type(node.op) in _SWAPS:
            sites.append(node)
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _SWAPS:
            sites.append(node)
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            sites.append(node)
    return sites


def _mutant(code: str, entry_point: str, k: int) -> str | None:
    tree = ast.parse(code)
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == entry_point]
    sites = _mutation_sites(funcs[0]) if funcs else []
    if k >= len(sites):
        return None
    node = sites[k]
    if isinstance(node, ast.BinOp):
        node.op = _SWAPS[type(node.op)]()
    elif isinstance(node, ast.Compare):
        node.ops = [_SWAPS[type(node.ops[0])]()]
    else:
        node.value += 1
    return ast.unparse(tree)


def test_mutated_solutions_fail_exactly_the_right_tests(sandbox):
    jobs, expected = [], []
    for problem, code in canonical_humaneval_jobs()[::3]:
        if "random" in "".join(t.input for t in problem.tests):
            continue  # unseeded random tests: no fixed ground truth
        for k in range(12):
            mutant = _mutant(code, problem.entry_point, k)
            if mutant is None:
                break
            vector = _reference_vector(problem, mutant)
            if vector is not None and not all(vector):
                jobs.append((problem, mutant))
                expected.append(vector)
                break
    assert len(jobs) >= 35
    assert sum(any(v) for v in expected) >= 15  # many mutants fail only some tests
    results = sandbox.run(jobs)
    mismatches = {p.problem_id: (r.statuses, e) for (p, _), r, e in zip(jobs, results, expected, strict=True)
                  if r.passed != e}
    assert not mismatches


# ------------------------------------------------------------------ hostile corpus


@pytest.fixture(scope="module")
def hostile_results(hostile_sandbox):
    hostile_sandbox.warm_up()
    before = set(hostile_sandbox.containers())
    assert len(before) == HOSTILE_CFG.workers
    results = hostile_sandbox.run([(h.problem, h.code) for h in ALL_HACKS])
    return dict(zip((h.name for h in ALL_HACKS), results, strict=True)), before


@pytest.mark.parametrize("hack", ALL_HACKS, ids=lambda h: h.name)
def test_hostile_program_is_contained_and_recorded(hostile_results, hack: Hack):
    results, _ = hostile_results
    assert_expected_statuses(hack, results[hack.name])


def test_sandbox_serves_normally_after_the_hostile_batch(hostile_sandbox, hostile_results):
    _, before = hostile_results
    results = hostile_sandbox.run([(ADD, GOOD_ADD)] * 6 + [(ADD_STDIN, "a, b = map(int, input().split())\nprint(a + b)\n")] * 2)
    assert all(all(r.passed) for r in results)
    # PID 1 survived kill -9 -1, fork bombs and OOM: the same containers still serve.
    assert set(hostile_sandbox.containers()) == before
    _assert_only_runners_left(before)


def _assert_only_runners_left(container_ids) -> None:
    client = docker_client()
    for container_id in container_ids:
        top = client.api.top(container_id, ps_args="-o pid,comm")["Processes"]
        # the runner and its idle handler (waiting for the next frame): no program process left
        assert len(top) <= 2 and all(comm == "python3" for _, comm in top), top


def test_every_assert_is_judged_outside_the_candidate(sandbox):
    """Positive controls for the second round: honest programs pass what it attacks; the
    memory walker does find its needle when it is really there."""
    results = sandbox.run([(ADD_LOOP, GOOD_ADD), (ADD_ASSERT, GOOD_ADD), (ADD_LOOP, "def add(a, b):\n    return a - b\n"),
                           (ADD_LOOP, WALKER_CONTROL)])
    assert all(results[0].passed) and all(results[1].passed), [r.statuses for r in results]
    assert results[2].statuses == ["wrong_answer"] * len(ADD_LOOP.tests)
    assert results[3].verdicts[0].stdout.startswith("FOUND\n"), results[3].verdicts[0].stdout


def test_always_true_object_and_patching_passes_no_humaneval_test(sandbox):
    results = sandbox.run(always_true_patching_jobs())
    assert len(results) == 164
    passing = {r.problem_id: r.statuses for r in results if any(r.passed)}
    assert not passing
    assert sum(len(r.passed) for r in results) == sum(len(p.tests) for p, _ in canonical_humaneval_jobs())


def test_daemons_and_files_cannot_alter_the_next_program():
    traps, after, honest = next_program_jobs()
    with DockerSandbox(SandboxConfig(backend="docker", workers=1, timeout_s=1.5)) as sb:
        results = sb.run([(h.problem, h.code) for h in (traps, after, honest)])
        for hack, result in zip((traps, after, honest), results, strict=True):
            assert_expected_statuses(hack, result)
        assert results[1].verdicts[0].stdout.startswith("NOT-FOUND"), results[1].verdicts[0].stdout
        _assert_only_runners_left(sb.containers())


def test_container_hardening(hostile_sandbox, tmp_path, monkeypatch):
    canary = tmp_path / "host-secret.txt"
    canary.write_text("host secret")
    monkeypatch.setenv("VPO_HOST_CANARY", "host-env-secret")
    probe = textwrap.dedent(f'''
        import os, subprocess
        def facts():
            status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
            out = {{"uid": os.getuid(), "gid": os.getgid(), "cap_eff": status["CapEff"].strip(),
                   "no_new_privs": status["NoNewPrivs"].strip(), "seccomp": status["Seccomp"].strip()}}
            try:
                open("/etc/owned", "w")
                out["root_writable"] = True
            except OSError:
                out["root_writable"] = False
            with open("/tmp/x.sh", "w") as f:
                f.write("#!/bin/sh\\necho hi\\n")
            os.chmod("/tmp/x.sh", 0o755)
            try:
                subprocess.run(["/tmp/x.sh"])
                out["tmp_exec"] = True
            except OSError:
                out["tmp_exec"] = False
            out["interfaces"] = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:])
            out["host_env"] = "VPO_HOST_CANARY" in os.environ
            out["host_file"] = os.path.exists({str(canary)!r})
            out["pids_max"] = open("/sys/fs/cgroup/pids/pids.max").read().strip()
            out["memory_limit"] = int(open("/sys/fs/cgroup/memory/memory.limit_in_bytes").read())
            out["runner_writable"] = os.access("/opt/vpo/runner.py", os.W_OK)
            print(out)
            return out
    ''')
    expected = {"uid": 65534, "gid": 65534, "cap_eff": "0000000000000000", "no_new_privs": "1", "seccomp": "2",
                "root_writable": False, "tmp_exec": False, "interfaces": ["lo"], "host_env": False,
                "host_file": False, "pids_max": str(HOSTILE_CFG.pids_limit),
                "memory_limit": (HOSTILE_CFG.memory_mb + SERVER_HEADROOM_MB) << 20, "runner_writable": False}
    problem = CodeProblem(problem_id="probe", tests=(
        TestCase(kind="functional", fn_name="facts", input="[]", expected=json.dumps(expected)),))
    (result,) = hostile_sandbox.run([(problem, probe)])
    assert result.passed == [True], (result.verdicts[0].stdout, result.verdicts[0].stderr)


def test_workers_are_recycled_after_programs_per_worker():
    cfg = SandboxConfig(backend="docker", workers=1, programs_per_worker=3)
    with DockerSandbox(cfg) as sb:
        seen = set()
        for _ in range(3):
            assert all(all(r.passed) for r in sb.run([(ADD, GOOD_ADD)] * 2))
            seen |= set(sb.containers())
        assert len(seen) >= 2
    assert sb.containers() == []


# ------------------------------------------------------------------ cleanup


def _our_containers(owner_pid: int) -> list[str]:
    client = docker_client()
    owner = f"{os.uname().nodename}:{owner_pid}"
    return [c["Id"] for c in client.api.containers(all=True, filters={"label": f"{OWNER_LABEL}={owner}"})]


CHILD = """
import sys, time
from components.config import SandboxConfig
from components.sandbox import DockerSandbox, load_problems
sb = DockerSandbox(SandboxConfig(backend="docker", workers=2, timeout_s=1))
sb.__enter__()
sb.warm_up()
print("ready", flush=True)
problem = load_problems(sys.argv[1])[0]
sb.run([(problem, "import time\\ndef add(a, b):\\n    time.sleep(60)\\n")] * 4)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_no_container_survives_its_owner(tmp_path, sig):
    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps(ADD.model_dump(mode="json")) + "\n")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(problems)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        assert len(_our_containers(child.pid)) == 2
        time.sleep(0.5)  # the run is in flight: candidates are sleeping inside the containers
        child.send_signal(sig)
        child.wait(timeout=30)
        deadline = time.monotonic() + 20
        while _our_containers(child.pid) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert _our_containers(child.pid) == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_closing_leaves_no_container_or_process():
    with open_sandbox(SandboxConfig(backend="docker")) as sb:
        sb.warm_up()
        assert len(sb.containers()) == 2
        sb.run([(ADD, GOOD_ADD)])
    assert sb.containers() == []
    assert [leak for leak in sandbox_leaks() if "runner process" in leak] == []


def test_build_image_is_idempotent(sandbox_image):
    from components.sandbox.image import build_image, inputs_hash

    lines: list[str] = []
    assert build_image(sandbox_image, log=lines.append) == f"vpo-sandbox:{inputs_hash()}"
    assert any("up to date" in line for line in lines)


def test_cli_run_docker_backend(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    jobs = canonical_humaneval_jobs()[:4]
    cands = tmp_path / "c.jsonl"
    cands.write_text("".join(json.dumps({"problem_id": p.problem_id, "code": c}) + "\n" for p, c in jobs))
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(app, ["sandbox", "run", "--problems", "humaneval", "--candidates", str(cands),
                                      "--backend", "docker", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["problem_id"] for r in lines] == [p.problem_id for p, _ in jobs]
    assert all(all(r["passed"]) and len(r["passed"]) == len(p.tests) for r, (p, _) in zip(lines, jobs, strict=True))


def test_programs_never_see_other_programs_code_or_outputs():
    from test_sandbox_corpus import MARKED_ADD, SPY

    with DockerSandbox(SandboxConfig(backend="docker", workers=1, batch_size=8, isolate_programs=True)) as sb:
        # positive control: the spy does see the marker in its own program text
        results = sb.run([(ADD, MARKED_ADD)] * 3 + [(ADD, SPY), (ADD, MARKED_ADD + SPY)])
    assert "SEEN [0]" in results[4].verdicts[0].stdout, results[4].verdicts[0].stdout
    assert all(all(r.passed) for r in results[:3])
    spy = results[3]
    assert spy.statuses == ["wrong_answer"] * len(ADD.tests)
    assert "CLEAN" in spy.verdicts[0].stdout, spy.verdicts[0].stdout


def test_isolated_programs_killing_their_handler_are_recorded():
    kill_all = next(h for h in HACKS if h.name == "kill_everything")
    with DockerSandbox(SandboxConfig(backend="docker", workers=1, isolate_programs=True)) as sb:
        results = sb.run([(ADD, GOOD_ADD), (kill_all.problem, kill_all.code), (ADD, GOOD_ADD)])
    assert [r.statuses for r in results] == [["passed"] * 4, ["runtime_error"] * 4, ["passed"] * 4]
    assert "killed the sandbox harness" in results[1].verdicts[0].stderr
