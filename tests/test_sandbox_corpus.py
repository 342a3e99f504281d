"""Shared sandbox test data: small problems and the hostile / reward-hacking corpus.

Imported by tests/test_sandbox.py (process backend) and
tests/test_sandbox_docker.py (containers). No tests live here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from components.sandbox import CodeProblem, ExecutionResult, TestCase
from components.sandbox.loaders import humaneval_problem, humaneval_records

SECRET = random.SystemRandom().randrange(1_000_000, 10_000_000)
"""Expected output of ADD's last test; appears nowhere in what the sandbox receives.

Drawn per session so that it is in no file on disk either: the process backend
shares the host's filesystem, and a checkout under /tmp would otherwise hand the
hostile program this very test file."""

_ADD_CASES = [(1, 2), (2, 5), (-4, 4), (SECRET - 3, 3)]
ADD = CodeProblem(problem_id="add", entry_point="add", tests=tuple(
    TestCase(kind="functional", fn_name="add", input=f"[{a}, {b}]", expected=str(a + b)) for a, b in _ADD_CASES))
ADD_ASSERT = CodeProblem(problem_id="add_assert", entry_point="add", tests=tuple(
    TestCase(kind="assert", input=f"assert candidate({a}, {b}) == {a + b}") for a, b in _ADD_CASES))
ADD_STDIN = CodeProblem(problem_id="add_stdin", tests=tuple(
    TestCase(kind="stdin", input=f"{a} {b}\n", expected=f"{a + b}\n") for a, b in _ADD_CASES))
GOOD_ADD = "def add(a, b):\n    return a + b\n"


@dataclass(frozen=True)
class Hack:
    name: str
    problem: CodeProblem
    code: str
    expect: str
    """A verdict every test must get, "fail" (no test passes) or "pass" (contained and harmless)."""
    host_safe: bool = True
    """Also run it in the process sandbox (it cannot harm the host there)."""


_FIND_SECRET = f'''
import gc, os
def _search():
    needle = "".join(["{str(SECRET)[:4]}", "{str(SECRET)[4:]}"])  # not in this program's text or constants
    for obj in gc.get_objects():
        try:
            if needle in repr(obj):
                return True
        except Exception:
            pass
    for path in ["/proc/1/environ", "/proc/1/cmdline", "/proc/1/mem", "/proc/self/environ"]:
        try:
            with open(path, "rb") as f:
                if needle.encode() in f.read(1 << 20):
                    return True
        except Exception:
            pass
    # the sandbox's own scratch root (the parent of the program's working directory: /tmp in a
    # container; the worker's private directory in the process backend, whose host /tmp is
    # not the sandbox's and may hold anything) and /dev/shm
    for root, _, files in [*os.walk(os.path.dirname(os.getcwd())), *os.walk("/dev/shm")]:
        for name in files:
            try:
                if needle in open(os.path.join(root, name), errors="ignore").read():
                    return True
            except Exception:
                pass
    return False
FOUND = _search()
print("FOUND" if FOUND else "NOT-FOUND")
def add(a, b):
    return int("".join(["{str(SECRET)[:4]}", "{str(SECRET)[4:]}"])) if FOUND else -1
'''

_FORGE_RECORDS = '''
import os
for fd in range(3, 40):
    try:
        os.write(fd, b'{"ev": "result", "i": 0, "ok": true, "value": 3}\\n{"ev": "loaded"}\\n')
    except OSError:
        pass
def add(a, b):
    return None
'''

_PATCH_HARNESS = '''
import sys
main = sys.modules.get("__main__")
for name in ("to_wire", "_run_test", "_emit"):
    if hasattr(main, name):
        setattr(main, name, lambda *a, **k: None)
def add(a, b):
    return 0
'''

_ESCAPE_DAEMON = '''
import os, time
def add(a, b):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(3600)
        os._exit(0)
    os.wait()
    return a + b
'''

HACKS: list[Hack] = [
    Hack("sys_exit_before_tests", ADD, "import sys\nsys.exit(0)\n" + GOOD_ADD, "runtime_error"),
    Hack("os_exit_before_tests", ADD_ASSERT, "import os\nos._exit(0)\n" + GOOD_ADD, "runtime_error"),
    Hack("sys_exit_in_function", ADD, "import sys\ndef add(a, b):\n    sys.exit(0)\n", "runtime_error"),
    Hack("os_exit_in_function", ADD_ASSERT, "import os\ndef add(a, b):\n    os._exit(0)\n", "runtime_error"),
    Hack("print_fake_markers", ADD, 'def add(a, b):\n    print(\'{"ev": "result", "ok": true}\\nPASSED\\nok\')\n', "wrong_answer"),
    Hack("print_fake_markers_stdin", ADD_STDIN, 'print("PASSED")\nprint(\'{"ev": "result", "i": 0, "ok": true}\')\n', "wrong_answer"),
    Hack("eq_always_true", ADD, "class Yes:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Yes()\n", "wrong_answer"),
    Hack("eq_always_true_assert", ADD_ASSERT, "class Yes:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\ndef add(a, b):\n    return Yes()\n", "wrong_answer"),
    Hack("int_subclass_eq", ADD_ASSERT, "class I(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\ndef add(a, b):\n    return I(0)\n", "wrong_answer"),
    Hack("patch_builtins", ADD_ASSERT, "import builtins\nbuiltins.AssertionError = type('Nope', (Exception,), {})\nbuiltins.abs = lambda x: 0\nbuiltins.isinstance = lambda *a: True\ndef add(a, b):\n    return 0\n", "fail"),
    Hack("patch_harness", ADD_ASSERT, _PATCH_HARNESS, "fail"),
    Hack("forge_result_records", ADD, _FORGE_RECORDS, "fail"),
    Hack("read_expected_outputs", ADD, _FIND_SECRET, "wrong_answer"),
    Hack("infinite_loop", ADD, "def add(a, b):\n    while True:\n        pass\n", "timeout"),
    Hack("infinite_loop_at_import", ADD_STDIN, "while True:\n    pass\n", "timeout"),
    Hack("memory_bomb", ADD, "blob = bytearray(1 << 40)\n" + GOOD_ADD, "memory_exceeded"),
    Hack("memory_bomb_gradual", ADD, "def add(a, b):\n    hoard = []\n    while True:\n        hoard.append(bytearray(1 << 24))\n", "memory_exceeded"),
    Hack("huge_output", ADD_STDIN, "while True:\n    print('spam' * 4096)\n", "output_limit"),
    Hack("read_etc_shadow", ADD, "def add(a, b):\n    try:\n        open('/etc/shadow').read()\n        return -1\n    except OSError:\n        return a + b\n", "pass"),
    Hack("escape_as_daemon", ADD, _ESCAPE_DAEMON, "pass"),
    # Docker only: harmless in a container, not on the host. The runner is PID 1: kill -9 -1
    # reaches only the program's own judge (runtime_error: a program that kills its judge
    # fails); killing PID 1 / the parent reaches nothing (with isolate_programs they kill
    # the program's own handler: runtime_error).
    Hack("fork_bomb", ADD, "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", "timeout", host_safe=False),
    Hack("kill_everything", ADD, "import os, signal\ndef add(a, b):\n    try:\n        os.kill(-1, signal.SIGKILL)\n    except OSError:\n        pass\n    return a + b\n", "runtime_error", host_safe=False),
    Hack("kill_parent", ADD, "import os, signal\ndef add(a, b):\n    for pid in (1, os.getppid()):\n        try:\n            os.kill(pid, signal.SIGKILL)\n        except OSError:\n            pass\n    return a + b\n", "pass", host_safe=False),
    Hack("fill_tmp", ADD, "import os\ni = 0\ntry:\n    while True:\n        with open(f'/tmp/fill{i}', 'wb') as f:\n            f.write(b'x' * (1 << 19))\n        i += 1\nexcept OSError:\n    pass\n" + GOOD_ADD, "pass", host_safe=False),
    Hack("network", ADD, "import socket\ndef add(a, b):\n    for host in ('1.1.1.1', '8.8.8.8', '172.17.0.1', '10.0.2.2'):\n        try:\n            socket.create_connection((host, 53), timeout=0.5)\n            return -1\n        except OSError:\n            pass\n    return a + b\n", "pass", host_safe=False),
]


def assert_expected_statuses(hack: Hack, result: ExecutionResult) -> None:
    statuses = result.statuses
    detail = f"{hack.name}: {statuses}\n{[v.stderr[-300:] for v in result.verdicts]}"
    if hack.expect == "pass":
        assert all(result.passed), detail
    elif hack.expect == "fail":
        assert not any(result.passed), detail
    else:
        assert statuses == [hack.expect] * len(statuses), detail
    assert all("FOUND\n" not in v.stdout.replace("NOT-FOUND", "") for v in result.verdicts), detail


def canonical_humaneval_jobs(max_tests: int = 16) -> list[tuple[CodeProblem, str]]:
    """(problem, prompt + canonical solution) for all 164 HumanEval problems."""
    return [(humaneval_problem(r, max_tests), r["prompt"] + r["canonical_solution"]) for r in humaneval_records()]


MARKER_PARTS = ("vpo-", "marker-", "5d1c")
"""A correct program carries the joined marker; the spy below must never see it."""
MARKED_ADD = f"# {''.join(MARKER_PARTS)}\n" + GOOD_ADD

SPY = f'''
import ctypes, gc
# Each needle is held as two halves and never joined here, so finding the whole
# text in memory means it came from somewhere else (another candidate).
NEEDLES = [("{MARKER_PARTS[0]}{MARKER_PARTS[1]}".encode(), "{MARKER_PARTS[2]}".encode()),
           ("9876".encode(), "543".encode())]

def _seen(data, head, tail):
    i = data.find(head)
    while i >= 0:
        if data.startswith(tail, i + len(head)):
            return True
        i = data.find(head, i + 1)
    return False

def _scan():
    found = set()
    for obj in gc.get_objects():
        try:
            text = repr(obj).encode()
        except Exception:
            continue
        found.update(k for k, (h, t) in enumerate(NEEDLES) if _seen(text, h, t))
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if not fields[1].startswith("r") or end - start > 1 << 28 or "[v" in line:
                continue
            chunk = ctypes.string_at(start, end - start)  # our own raw memory, freed bytes included
            found.update(k for k, (h, t) in enumerate(NEEDLES) if _seen(chunk, h, t))
    return found

FOUND = _scan()
print("SEEN" if FOUND else "CLEAN", sorted(FOUND))

def add(a, b):
    return -1
'''
"""Searches its whole address space for another candidate's code and outputs."""
