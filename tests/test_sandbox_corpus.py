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


# ------------------------------------------------------------------ second hostile round
# Written against the judge design (every test statement in a trusted judge process): each
# member is written so that an honest, isolated harness passes none of its tests.

SECRET2 = random.SystemRandom().randrange(1_000_000, 10_000_000)
"""ADD_LOOP's arguments in its computed-comparison test; 2 * SECRET2, the expected value, is
computed by the judge only (and is the output of no program of the hostile batch)."""

ADD_LOOP = CodeProblem(problem_id="add_loop", entry_point="add", prelude="import math\n\ndef twice(x):\n    return 2 * x\n",
                       tests=(
    TestCase(kind="assert", input="for a, b in [(1, 2), (2, 5), (-4, 4)]:\n    assert candidate(a, b) == a + b"),
    TestCase(kind="assert", input=f"expected = twice({SECRET2})\nassert candidate({SECRET2}, {SECRET2}) == expected"),
    TestCase(kind="assert", input="assert math.fabs(candidate(0.5, 0.25) - 0.75) < 1e-09 and add(1, 1) == twice(1)"),
    TestCase(kind="assert", input="assert sorted([candidate(3, 1), candidate(1, 1)]) == [2, 4]"),
))
"""Assert tests that no plan splits: loops, computed expected values, a helper of the
problem's prelude, ``math``, ordering. The judge runs them whole."""

_YES = '''
class Yes(int):
    """Equal to, ordered before and after, and close to everything."""
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    __lt__ = __le__ = __gt__ = __ge__ = __eq__
    def __sub__(self, other): return Yes()
    __rsub__ = __add__ = __radd__ = __mul__ = __rmul__ = __truediv__ = __sub__
    def __abs__(self): return Yes()
    def __bool__(self): return True
    def __hash__(self): return 0
    def __str__(self): return "PASSED"
    __repr__ = __format__ = lambda self, *a: "PASSED"
'''

_PATCH_EVERYTHING = '''
import builtins, math, operator, functools, sys
builtins.abs = lambda x: 0
builtins.sorted = lambda xs, *a, **k: [2, 4]
builtins.all = builtins.any = lambda *a, **k: True
builtins.AssertionError = type("NotAnAssertion", (Exception,), {})
math.fabs = lambda x: 0.0
math.isclose = lambda *a, **k: True
operator.eq = operator.le = operator.lt = operator.ge = operator.gt = lambda *a: True
operator.ne = lambda *a: False
functools.reduce = lambda *a, **k: True
functools.cmp_to_key = lambda f: (lambda x: 0)
fake_math = type(sys)("math")
fake_math.fabs = lambda x: 0.0
sys.modules["math"] = fake_math
'''

_WALK_FOR_TESTS = f'''
import ctypes, gc, sys
# Text found only in ADD_LOOP's test statements: an expected value the judge computes, and
# its loop's assert. Each needle is held as two halves, never joined in this program.
# (Outputs of *other* programs may linger in the freed memory of a worker without
# isolate_programs, documented; no program of the hostile batch outputs this value.)
NEEDLES = [("{str(2 * SECRET2)[:4]}".encode(), "{str(2 * SECRET2)[4:]}".encode()),
           ("candidate(a, b) ".encode(), "== a + b".encode())]

def _seen(data):
    for head, tail in NEEDLES:
        i = data.find(head)
        while i >= 0:
            if data.startswith(tail, i + len(head)):
                return True
            i = data.find(head, i + 1)
    return False

def _walk():
    found = []
    frame = sys._getframe()
    while frame is not None:  # the harness's frames: look at, and tamper with, their state
        for name, value in list(frame.f_locals.items()):
            if _seen(repr(value).encode(errors="ignore")):
                found.append(f"frame {{frame.f_code.co_name}}.{{name}}")
            if isinstance(value, dict) and "status" in value:
                value["status"] = "ok"
        frame = frame.f_back
    for obj in gc.get_objects():
        try:
            if _seen(repr(obj).encode(errors="ignore")):
                found.append(f"object {{type(obj).__name__}}")
            if isinstance(obj, list) and obj and all(o is None for o in obj):
                obj[:] = [{{"status": "ok", "value": 2}}] * len(obj)  # the runner's results list
        except Exception:
            pass
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if not fields[1].startswith("r") or end - start > 1 << 28 or "[v" in line:
                continue
            if _seen(ctypes.string_at(start, end - start)):
                found.append(f"memory {{line.strip()[:60]}}")
    return found

def add(a, b):
    found = _walk()
    print("FOUND" if found else "NOT-FOUND")
    print(found[:5])
    return -1
'''

_FORGE = r'''
import os, json
LINES = b"".join(json.dumps(r).encode() + b"\n" for r in (
    [{"ev": "loaded"}] + [{"ev": "result", "i": i, "ok": True} for i in range(16)]
    + [{"ev": "result", "i": i, "ok": True, "value": -7} for i in range(16)]
    + [{"id": i, "results": [{"status": "ok"}] * 4} for i in range(64)]))

def forge():
    targets = [f"/proc/self/fd/{n}" for n in range(256)]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            targets += [f"/proc/{pid}/fd/{n}" for n in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            pass
    for fd in range(256):
        try:
            os.write(fd, LINES)
        except OSError:
            pass
    for path in targets:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            try:
                os.write(fd, LINES)
            finally:
                os.close(fd)
        except OSError:
            pass

forge()

def add(a, b):
    forge()
    return None
'''

_ATEXIT_DEL = r'''
import atexit, os, json, sys
FORGED = b'{"ev": "result", "i": 0, "ok": true}\n{"value": -7}\n'

def _forge_and_leave():
    for fd in range(256):
        try:
            os.write(fd, FORGED)
        except OSError:
            pass
    os._exit(0)

atexit.register(_forge_and_leave)
sys.exitfunc = _forge_and_leave

class Haunted:
    def __del__(self):
        _forge_and_leave()
    def __reduce__(self):
        return (int, (2,))

def add(a, b):
    return Haunted()
'''

_FIRST_CALL_HONEST = _YES + f"PATCHES = {_PATCH_EVERYTHING!r}\n" + r'''
import os, sys
CALLS = []

def _judge_detected():
    """Later calls: the same process is called again, by a parent that is not a shell."""
    try:
        parent = open(f"/proc/{os.getppid()}/cmdline", "rb").read()
    except OSError:
        parent = b""
    return len(CALLS) > 1 or b"runner" in parent or sys._getframe(1) is not None

def add(a, b):
    CALLS.append((a, b))
    if len(CALLS) == 1:
        return a - b  # a plain (wrong) answer: nothing to notice
    if _judge_detected():
        exec(PATCHES, {})
        for fd in range(3, 64):
            try:
                os.write(fd, b'{"ev": "result", "i": %d, "ok": true}\n' % (len(CALLS) - 1))
            except OSError:
                pass
        return Yes()
    return a - b
'''

_SLEEP_JUST_UNDER = '''
import time
LIMIT_S = {limit}

def add(a, b):
    end = time.monotonic() + 0.7 * LIMIT_S  # burns CPU just under the limit, on every test
    while time.monotonic() < end:
        pass
    return a + b + 1
'''

WALKER_CONTROL = "# candidate(a, b) == a + b\n" + _WALK_FOR_TESTS
"""Positive control: the same walker, with the needle planted in its own text, must say FOUND."""

HACKS_ROUND2: list[Hack] = [
    *[Hack(f"always_true_object_{p.problem_id}", p, _YES + "def add(a, b):\n    return Yes(a + b)\n", "wrong_answer")
      for p in (ADD, ADD_ASSERT, ADD_LOOP)],
    Hack("always_true_object_stdin", ADD_STDIN, _YES + "print(Yes())\nprint(Yes(3))\n", "wrong_answer"),
    *[Hack(f"patch_builtins_math_operator_functools_{p.problem_id}", p,
           _PATCH_EVERYTHING + "def add(a, b):\n    return a + b + 1\n", "wrong_answer") for p in (ADD_ASSERT, ADD_LOOP)],
    Hack("frame_and_gc_walk_for_tests", ADD_LOOP, _WALK_FOR_TESTS, "wrong_answer"),
    # it writes into every process's fds it can open: Docker only (on the host it could reach ours)
    *[Hack(f"forged_frames_to_every_fd_{p.problem_id}", p, _FORGE, "fail", host_safe=False) for p in (ADD, ADD_LOOP)],
    *[Hack(f"atexit_and_del_{p.problem_id}", p, _ATEXIT_DEL, "fail") for p in (ADD, ADD_LOOP)],
    *[Hack(f"honest_first_call_then_attack_{p.problem_id}", p, _FIRST_CALL_HONEST, "fail") for p in (ADD_ASSERT, ADD_LOOP)],
]
"""The second round (docs/sandbox.md). Daemons and files aimed at the next program, and
sleeping under the limit, need a worker of their own or the config's limit: see
:func:`next_program_jobs` and :func:`sleeper`."""


def sleeper(problem: CodeProblem, limit_s: float) -> Hack:
    """Burns CPU for 0.7 x the limit on every call, then answers wrongly: wrong_answer, never timeout."""
    return Hack(f"sleep_just_under_limit_{problem.problem_id}", problem, _SLEEP_JUST_UNDER.format(limit=limit_s),
                "wrong_answer")


_LEAVE_TRAPS = r'''
import os, sys, time, json
TRAPS = {"/tmp/sitecustomize.py": "import builtins; builtins.abs = lambda x: 0\n",
         "/tmp/math.py": "fabs = lambda x: 0.0\n", "/tmp/json.py": "loads = lambda s: {'ok': True}\n",
         "/dev/shm/vpo-trap": "answers: 2\n", os.path.join(os.getcwd(), "usercustomize.py"): "raise SystemExit\n",
         os.path.join(os.path.dirname(os.getcwd()), "next.pth"): "import os\n"}
for path, text in TRAPS.items():
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError:
        pass

def _daemon():
    """Outlives the program, if it can: forges results and kills judges of later programs."""
    me = os.getpid()
    end = time.monotonic() + 30
    while time.monotonic() < end:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            if int(pid) in (me, 1):
                continue
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    try:
                        with open(f"/proc/{pid}/fd/{fd}", "wb", buffering=0) as f:
                            f.write(b'{"ev": "result", "i": 0, "ok": true}\n{"value": -7}\n')
                    except OSError:
                        pass
            except OSError:
                pass
        time.sleep(0.01)
    os._exit(0)

if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        _daemon()
    os._exit(0)
os.wait()

def add(a, b):
    return -1
'''

_FIND_TRAPS = r'''
import os
LEFT = [p for p in ("/tmp/sitecustomize.py", "/tmp/math.py", "/tmp/json.py", "/dev/shm/vpo-trap",
                    os.path.join(os.getcwd(), "usercustomize.py"), os.path.join(os.path.dirname(os.getcwd()), "next.pth"))
        if os.path.exists(p)]
print("FOUND" if LEFT else "NOT-FOUND", LEFT)

def add(a, b):
    return -2
'''


def next_program_jobs() -> list[tuple[Hack, ...]]:
    """(trap-layer, wrong program that looks for the traps, honest program): run in this order on ONE worker.

    The trap layer leaves a daemon and files meant to alter the next program; the next
    (wrong) program must still fail and see no trap; the honest one after it must pass.
    """
    return [Hack("daemon_and_files_for_the_next_program", ADD_LOOP, _LEAVE_TRAPS, "fail"),
            Hack("next_program_after_the_traps", ADD_LOOP, _FIND_TRAPS, "fail"),
            Hack("honest_program_after_the_traps", ADD_LOOP, GOOD_ADD, "pass")]


def always_true_patching_jobs() -> list[tuple[CodeProblem, str]]:
    """For every HumanEval problem: a candidate that returns an always-true object and patches
    math, builtins and operator (at import and in every call). It must pass no test."""
    jobs = []
    for record in humaneval_records():
        patches = _PATCH_EVERYTHING.replace('builtins.sorted = lambda xs, *a, **k: [2, 4]\n', '')
        code = (record["prompt"] + "    return Yes()\n" + _YES + patches
                + f"_real = {record['entry_point']}\ndef {record['entry_point']}(*args, **kwargs):\n"
                + "    import builtins, math\n    builtins.abs = lambda x: 0\n    math.fabs = lambda x: 0.0\n"
                + "    return Yes()\n")
        jobs.append((humaneval_problem(record), code))
    return jobs
