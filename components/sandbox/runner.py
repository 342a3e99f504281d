"""In-sandbox fork server: runs untrusted programs, judged by a separate trusted process.

This file is self-contained (standard library only) because it runs inside the
sandbox image with nothing else installed. The host imports only its wire codec
(:func:`to_wire`, :func:`from_wire`); it starts the server as ``python3 -I -S runner.py``:

* DockerSandbox: as PID 1 of a long-lived worker container;
* ProcessSandbox: as a subprocess on the host (own session, scrubbed env).

Protocol: the server prints ``{"ready": ...}`` once, then answers each request
frame on stdin with one JSON response line on stdout. End of stdin means "stop
now", also in the middle of a program. A frame is one program::

    b"<n1> <n2>\n" + <n1 bytes: the public part> + <n2 bytes: the judged part>

public part (all a candidate's process may ever hold)::

    {"id": int, "program": str, "time_limit_s": float, "memory_mb": int,
     "output_limit": int,
     "tests": [{"mode": "stdin", "input": str} | {"mode": "judged"}, ...]}

judged part (JSON; n2 = 0 when no test is judged)::

    {"prelude": str, "entry_point": str|null,
     "tests": [null (a stdin test)
             | {"mode": "call", "fn_name": str, "class_name": str|null, "args": [wire values]}
             | {"mode": "eval", "setup": str, "expr": str}
             | {"mode": "exec", "setup": str, "stmt": str}, ...]}

response::

    {"id": int, "results": [
        {"status": "ok"|"wrong"|"error"|"timeout"|"memory"|"output_limit"|"compile_error",
         "value": wire value (call/eval, when ok), "stdout": str, "stderr": str,
         "duration_s": float}, ...]}

Processes of one program (all forked from the server, each in its own process group):

* the **candidate** process loads the program and then only answers calls:
  ``{"fn", "cls", "args", "kwargs"}`` in, ``{"value"}`` or ``{"error", "kind", "type"}``
  out, as wire values, over a socket that reaches the judge and nothing else;
* the **judge** process (trusted; never runs candidate code) holds the judged
  part, runs every test statement (setup, loops, helpers of the problem's
  ``prelude``, the comparison) in its own interpreter, where ``candidate`` and
  the entry point's name are proxies whose calls cross to the candidate's
  process, and reports each test's outcome to the server.

The judged part is read straight into a private anonymous mapping, never parsed
by the server, and unmapped in every candidate process before its first
instruction: no candidate process ever holds a test statement, of its own
program or of any other. Expected outputs of planned asserts, functional and
stdin tests are not even in the judged part: the host compares (see judge.py).
Values cross every pipe as tagged JSON of plain built-in types only (see
:func:`to_wire`), so an object with a custom ``__eq__`` cannot even be sent.

Judged tests run one after another against one candidate process (the program
is loaded once); stdin tests get one child each. A timeout, crash or early exit
ends the pair; the next test then starts with a fresh candidate and a fresh
judge, so every test gets its own verdict.
"""

from __future__ import annotations

import array
import builtins
import collections
import fcntl
import gc
import io
import json
import math
import mmap
import os
import resource
import select
import shutil
import signal
import socket
import sys
import termios
import time
import traceback

# Modules most programs import, loaded once in the server so each fork is cheap.
PRELOAD = (
    "collections", "itertools", "functools", "heapq", "bisect", "re", "string",
    "typing", "random", "fractions", "decimal", "statistics", "hashlib", "copy",
    "operator", "datetime", "array",
)
EXCERPT_BYTES = 2000
HOST_CHECK_S = 0.2
"""How often a handler checks, while a program runs, whether the host went away."""
CALLS_AHEAD_BYTES = 32 << 10
"""Most bytes of calls the judge sends ahead of their answers (well under a socket buffer)."""
JUDGE_GRACE_S = 0.2
"""When the judge stops early: how long to wait for the candidate's exit that caused it."""
EXIT_INPUT_CLOSED = 3
"""Handler exit code: stdin is at its end (the host closed it or died)."""
MAX_DEPTH = 100


# ---------------------------------------------------------------- wire values


class NotPlainValue(TypeError):
    """A value that is not made of plain built-in types (it cannot be judged)."""


def to_wire(value, depth=0):
    """Encode a plain value as JSON-able data, tagging tuples/sets/dicts/bytes.

    Exact type checks: subclasses (e.g. an ``int`` with a custom ``__eq__``) are
    rejected, so what the host compares is what the program really returned.
    """
    if depth > MAX_DEPTH:
        raise NotPlainValue("value nested too deeply")
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is str or kind is float:
        return value
    if kind is list:
        return [to_wire(v, depth + 1) for v in value]
    if kind is tuple:
        return {"__tuple__": [to_wire(v, depth + 1) for v in value]}
    if kind is set or kind is frozenset:
        return {"__set__": [to_wire(v, depth + 1) for v in value]}
    if kind is dict:
        return {"__dict__": [[to_wire(k, depth + 1), to_wire(v, depth + 1)] for k, v in value.items()]}
    if kind is bytes:
        return {"__bytes__": value.hex()}
    if kind is complex:
        return {"__complex__": [value.real, value.imag]}
    raise NotPlainValue(f"returned a {kind.__name__}, not a plain built-in value")


def from_wire(data, depth=0):
    """Decode :func:`to_wire` output (used for call arguments inside the child)."""
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if isinstance(data, list):
        return [from_wire(v, depth + 1) for v in data]
    if isinstance(data, dict):
        if len(data) != 1:
            raise ValueError("malformed wire value")
        (tag, body), = data.items()
        if tag == "__tuple__":
            return tuple(from_wire(v, depth + 1) for v in body)
        if tag == "__set__":
            return {from_wire(v, depth + 1) for v in body}
        if tag == "__dict__":
            return {from_wire(k, depth + 1): from_wire(v, depth + 1) for k, v in body}
        if tag == "__bytes__":
            return bytes.fromhex(body)
        if tag == "__complex__":
            return complex(body[0], body[1])
        raise ValueError(f"unknown wire tag {tag!r}")
    return data


# ---------------------------------------------------------------- the processes of a program


def _write_all(fd, data):
    while data:
        n = os.write(fd, data)
        data = data[n:]


_STREAMS = []  # the child's own stdout/stderr objects (a candidate may rebind sys.stdout)


_HARNESS_PID = [0]  # the process the harness runs in; forked copies stay silent


def _emit(fd, record):
    if os.getpid() != _HARNESS_PID[0]:
        os._exit(0)  # a fork of the candidate returned into the harness: it may not report
    _flush_streams()
    _write_all(fd, (json.dumps(record) + "\n").encode())


def _flush_streams():
    for stream in _STREAMS:
        try:
            stream.flush()
        except BaseException:
            pass


def _error_text(exc):
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return "".join(lines)[-EXCERPT_BYTES:]


def _error_kind(exc):
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, NotPlainValue):
        return "wrong"  # a value the host cannot compare is a wrong answer, not a crash
    return "error"


def _load(req, ns, report_fd):
    """Compile and run the program in ``ns``; False (after reporting why) when it failed."""
    try:
        code = compile(req["program"], "<candidate>", "exec")
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError) as exc:
        _emit(report_fd, {"ev": "compile_error", "error": _error_text(exc)})
        return False
    try:
        exec(code, ns)
    except SystemExit as exc:
        if not (ns["__name__"] == "__main__" and exc.code in (None, 0)):
            _emit(report_fd, {"ev": "load_error", "kind": "error", "error": _error_text(exc)})
            return False
    except BaseException as exc:
        _emit(report_fd, {"ev": "load_error", "kind": _error_kind(exc), "error": _error_text(exc)})
        return False
    return True


def stdin_main(req, first, report_fd):
    """A stdin test: the program reads the test's input, its stdout is judged on the host."""
    ns = {"__name__": "__main__", "__builtins__": builtins}
    if _load(req, ns, report_fd):
        _emit(report_fd, {"ev": "result", "i": first, "ok": True})


def _call_target(ns, fn, cls):
    if cls:
        return getattr(ns[cls](), fn)
    if fn not in ns:
        raise NameError(f"function {fn!r} is not defined")
    return ns[fn]


def candidate_main(req, chan_fd):
    """The candidate's process: load the program, then answer calls from the judge.

    Each line on ``chan_fd`` is ``{"fn", "cls", "args", "kwargs"}`` (wire values);
    each answer ``{"value": wire}`` or ``{"error", "kind", "type"}``. Nothing
    else reaches this process: no test statement, no expected value.
    """
    ns = {"__name__": "__candidate__", "__builtins__": builtins}
    if not _load(req, ns, chan_fd):
        return
    _emit(chan_fd, {"ev": "loaded"})
    calls = open(chan_fd, "rb", closefd=False)  # noqa: SIM115 - lives until exit
    while True:
        line = calls.readline()
        if not line:
            return
        try:
            call = json.loads(line)
            target = _call_target(ns, call["fn"], call.get("cls"))
            kwargs = from_wire(call["kwargs"]) if call.get("kwargs") else {}
            value = target(*from_wire(call["args"]), **kwargs)
            reply = {"value": to_wire(value)}
        except BaseException as exc:
            reply = {"error": _error_text(exc), "kind": _error_kind(exc), "type": type(exc).__name__}
        _flush_streams()
        try:
            reply["out"] = os.lseek(1, 0, os.SEEK_CUR)  # stdout so far: each test's excerpt is its own
        except OSError:
            pass
        try:
            _emit(chan_fd, reply)
        except (ValueError, OverflowError, RecursionError) as exc:  # unencodable value
            _emit(chan_fd, {"error": _error_text(exc), "kind": "wrong", "type": "ValueError"})


class CandidateFault(BaseException):
    """The candidate's answer to a call cannot be judged (not plain, malformed, too large).

    A BaseException, so that test code catching ``Exception`` cannot turn it into a pass.
    """

    def __init__(self, kind, why):
        super().__init__(why)
        self.kind = kind


class Link:
    """The judge's end of the candidate's channel: calls out, plain values back."""

    def __init__(self, fd, max_line):
        self.fd = fd
        self.max_line = max_line
        self.replies = open(fd, "rb", closefd=False)  # noqa: SIM115
        self.raised = {}  # id(exception rebuilt from the candidate's error) -> its kind
        self.out = None  # the candidate's stdout size after its latest answer

    def receive(self):
        """The candidate's next message; the judge exits quietly when the candidate is gone."""
        line = self.replies.readline(self.max_line)
        if not line:
            os._exit(0)  # the server records the candidate's own death for this test
        if not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # drop the rest of the oversized line
                line = self.replies.readline(self.max_line)
            raise CandidateFault("output_limit", "the candidate's answer is too large")
        try:
            message = json.loads(line)
        except ValueError:
            raise CandidateFault("error", "malformed answer from the candidate's process") from None
        if not isinstance(message, dict):
            raise CandidateFault("error", "malformed answer from the candidate's process")
        return message

    def send(self, fn, cls, args, kwargs):
        """Send one call; returns its size in bytes (the answer is read by :meth:`answer`)."""
        try:
            wire_args, wire_kwargs = to_wire(list(args)), to_wire(dict(kwargs)) if kwargs else None
        except NotPlainValue as exc:
            raise TypeError(f"the test passes a non-plain argument to the candidate: {exc}") from None
        return self.send_wire(fn, cls, wire_args, wire_kwargs)

    def send_wire(self, fn, cls, args, kwargs):
        """:meth:`send` with arguments already encoded (a ``call`` test's own)."""
        data = (json.dumps({"fn": fn, "cls": cls, "args": args, "kwargs": kwargs}) + "\n").encode()
        try:
            _write_all(self.fd, data)
        except OSError:
            os._exit(0)  # the candidate is gone
        return len(data)

    def answer(self):
        """The plain value of the oldest unanswered call, or the candidate's error raised here."""
        reply = self.receive()
        if isinstance(reply.get("out"), int):
            self.out = reply["out"]
        if "value" in reply:
            try:
                return from_wire(reply["value"])
            except (ValueError, TypeError, KeyError, IndexError, RecursionError) as exc:
                raise CandidateFault("wrong", f"undecodable value: {exc}") from None
        kind = reply.get("kind") if reply.get("kind") in ("error", "memory", "wrong") else "error"
        text = str(reply.get("error", ""))[-EXCERPT_BYTES:]
        if kind == "wrong":
            raise CandidateFault("wrong", text)
        exc_type = getattr(builtins, str(reply.get("type")), None)
        if not (isinstance(exc_type, type) and issubclass(exc_type, Exception)):
            exc_type = RuntimeError
        try:
            exc = exc_type(f"raised in the candidate's process:\n{text}")
        except Exception:
            exc = RuntimeError(f"raised in the candidate's process:\n{text}")
        self.raised[id(exc)] = (exc, kind)
        raise exc

    def call(self, fn, cls, args, kwargs):
        self.send(fn, cls, args, kwargs)
        return self.answer()

    def kind_of(self, exc):
        """Verdict kind of an exception that ended a test."""
        if isinstance(exc, CandidateFault):
            return exc.kind
        seen = self.raised.get(id(exc))
        if seen is not None and seen[0] is exc:
            return seen[1]
        if isinstance(exc, AssertionError | NotPlainValue):
            return "wrong"
        return "memory" if isinstance(exc, MemoryError) else "error"


class Remote:
    """Stands, in the judge, for a function of the candidate's program."""

    def __init__(self, link, fn, cls=None):
        self._link, self._fn, self._cls = link, fn, cls

    def __call__(self, *args, **kwargs):
        return self._link.call(self._fn, self._cls, args, kwargs)

    def __repr__(self):
        return f"<candidate function {self._fn}>"


class CallQueue:
    """Keeps the calls of upcoming ``call`` tests in flight, so the candidate answers them
    back to back instead of one round trip per test.

    Only a run of consecutive ``call`` tests starting at the current one is sent
    ahead, so the candidate sees its calls in test order, exactly as if they were
    made one by one; at most :data:`CALLS_AHEAD_BYTES` are unanswered, so a write
    never blocks (the socket buffer holds them) and neither side can deadlock.
    """

    def __init__(self, link, tests, entry, last):
        self.link, self.tests, self.entry, self.last = link, tests, entry, last
        self.next = 0  # first test whose call is not sent yet
        self.sizes = collections.deque()  # bytes of each unanswered call, oldest first

    def value(self, i):
        """The answer to test ``i``'s call (sent now, with the ones after it, if not yet)."""
        self.next = max(self.next, i)
        while self.next < self.last and self.tests[self.next]["mode"] == "call" \
                and (not self.sizes or sum(self.sizes) < CALLS_AHEAD_BYTES):
            test = self.tests[self.next]
            self.sizes.append(self.link.send_wire(test.get("fn_name") or self.entry, test.get("class_name"),
                                                  test["args"], test.get("kwargs")))
            self.next += 1
        self.sizes.popleft()
        return self.link.answer()


_COMPILED = {}


def _compiled(source, mode):
    code = _COMPILED.get((source, mode))
    if code is None:
        code = _COMPILED[(source, mode)] = compile(source, "<test>", mode)
    return code


def _judge_test(test, base):
    """Run one eval/exec test in the judge's interpreter; returns the value it reports."""
    ns = dict(base)
    if test.get("setup"):
        exec(_compiled(test["setup"], "exec"), ns)
    if test["mode"] == "eval":
        return eval(_compiled(test["expr"], "eval"), ns)
    exec(_compiled(test["stmt"], "exec"), ns)
    return None


def judge_main(judged, first, last, chan_fd, report_fd, max_line):
    """The judge's process: runs tests[first:last] against the candidate behind ``chan_fd``.

    Test code sees the problem's trusted ``prelude`` (its imports and helpers) and
    ``candidate`` (and the entry point's name) as :class:`Remote` proxies; it never
    sees an object of the candidate's process.
    """
    spec = json.loads(bytes(judged))
    link = Link(chan_fd, max_line)
    base = {"__name__": "__judge__", "__builtins__": builtins}
    try:
        if spec.get("prelude"):
            exec(compile(spec["prelude"], "<problem>", "exec"), base)
    except BaseException as exc:
        why = "the problem's prelude failed in the judge:\n" + _error_text(exc)
        _emit(report_fd, {"ev": "load_error", "kind": "error", "error": why})
        return
    entry = spec.get("entry_point")
    if entry:
        base["candidate"] = base[entry] = Remote(link, entry)
    try:
        status = link.receive()  # the candidate's load status
    except CandidateFault as exc:
        _emit(report_fd, {"ev": "load_error", "kind": exc.kind, "error": str(exc)})
        return
    ev = status.get("ev")
    if ev in ("compile_error", "load_error"):
        kind = status.get("kind") if status.get("kind") in ("error", "memory") else "error"
        _emit(report_fd, {"ev": ev, "kind": kind, "error": str(status.get("error", ""))[-EXCERPT_BYTES:]})
        return
    if ev != "loaded":
        _emit(report_fd, {"ev": "load_error", "kind": "error", "error": "protocol violation by the program"})
        return
    _emit(report_fd, {"ev": "loaded"})
    calls = CallQueue(link, spec["tests"], entry, last)
    for i in range(first, last):
        test = spec["tests"][i]
        try:
            value = calls.value(i) if test["mode"] == "call" else _judge_test(test, base)
            record = {"ev": "result", "i": i, "ok": True}
            if test["mode"] != "exec":
                record["value"] = to_wire(value)
        except BaseException as exc:
            record = {"ev": "result", "i": i, "ok": False, "kind": link.kind_of(exc), "error": _error_text(exc)}
        if link.out is not None:
            record["out"] = link.out
        link.raised.clear()
        _emit(report_fd, record)


def _set_limits(memory_mb, cpu_s, output_limit, nproc):
    mb = 1 << 20
    limits = [(resource.RLIMIT_NPROC, nproc)] if nproc else []
    limits += [
        (resource.RLIMIT_AS, memory_mb * mb),
        (resource.RLIMIT_CPU, cpu_s),
        (resource.RLIMIT_FSIZE, output_limit),
        (resource.RLIMIT_NOFILE, 64),
        (resource.RLIMIT_CORE, 0),
    ]
    for which, value in limits:
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))


def _confine(fds, keep):
    """Own process group, default signals, ``fds`` as 0/1/2, every other fd but ``keep`` closed."""
    os.setpgid(0, 0)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    for src, dst in zip(fds, (0, 1, 2), strict=True):
        os.dup2(src, dst)
    keep = sorted({0, 1, 2, *keep})
    max_fd = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 1 << 16)
    for low, high in zip(keep, keep[1:] + [max_fd], strict=True):
        os.closerange(low + 1, high)
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass


def _enter_candidate(req, judged, first, last, chan_fd, scratch, stdin_path, uid, nproc):
    """In the forked candidate process: isolate, limit, redirect, run. Never returns.

    ``chan_fd`` reaches the server (a stdin test) or the judge (judged tests).
    """
    code = 0
    try:
        if judged is not None:
            judged.close()  # unmapped before any candidate code: no test statement in this process
        in_fd = os.open(stdin_path, os.O_RDONLY)
        out_fd = os.open(os.path.join(scratch, ".stdout"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        err_fd = os.open(os.path.join(scratch, ".stderr"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        if uid is not None:
            os.fchown(out_fd, uid, uid)
            os.fchown(err_fd, uid, uid)
        _confine((in_fd, out_fd, err_fd), (chan_fd,))
        os.chdir(scratch)
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        limit = req["time_limit_s"]
        # NPROC counts per uid system-wide, so it is set only in process mode (see --nproc);
        # containers (all uid 65534) are capped by their pids limit instead.
        _set_limits(req["memory_mb"], int(math.ceil(limit * (last - first + 1))) + 1, req["output_limit"], nproc)
        sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8")
        sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), encoding="utf-8")
        sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)), encoding="utf-8")
        _STREAMS[:] = [sys.stdout, sys.stderr]
        _HARNESS_PID[0] = os.getpid()
        sys.argv = ["main.py"]
        if req["tests"][first]["mode"] == "stdin":
            stdin_main(req, first, chan_fd)
        else:
            candidate_main(req, chan_fd)
        _flush_streams()
    except BaseException:
        code = 70
    os._exit(code)


def _enter_judge(req, judged, first, last, chan_fd, report_fd):
    """In the forked judge process: limit, silence, judge. Never returns.

    Keeps the server's uid (in the process backend as root, candidates cannot
    even signal it); non-dumpable like the server, so no candidate can read its memory.
    """
    code = 0
    try:
        null = os.open(os.devnull, os.O_RDWR)
        _confine((null, null, null), (chan_fd, report_fd))
        _set_limits(req["memory_mb"], int(math.ceil(req["time_limit_s"] * (last - first + 1))) + 1,
                    req["output_limit"], 0)
        sys.stdin = sys.stdout = sys.stderr = open(os.devnull, "r+")  # noqa: SIM115 - until exit
        _HARNESS_PID[0] = os.getpid()
        judge_main(judged, first, last, chan_fd, report_fd, int(req["output_limit"]) + (1 << 16))
    except BaseException:
        code = 70
    os._exit(code)


# ---------------------------------------------------------------- the server


def _read_exact(fd, size, into=None):
    """``size`` bytes from ``fd`` (into the writable buffer ``into`` when given); None at end of input."""
    if into is not None:
        view, got = memoryview(into), 0
        try:
            while got < size:
                n = os.readv(fd, [view[got:size]])
                if not n:
                    return None
                got += n
        finally:
            view.release()
        return into
    body = bytearray()
    while len(body) < size:
        chunk = os.read(fd, size - len(body))
        if not chunk:
            return None
        body += chunk
    return bytes(body)


def read_request(fd):
    """One request frame: (public part as bytes, judged part as a private mapping or None).

    None at end of input. Reads exactly one frame and nothing beyond it: the next
    (pipelined) requests stay in the pipe, out of this process's memory. The
    judged part goes straight from the pipe into an anonymous mapping that this
    process never parses and every candidate process unmaps first thing.
    """
    header = b""
    while not header.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            return None
        header += byte
        if len(header) > 40:
            raise ValueError("bad frame header")
    public_size, judged_size = (int(n) for n in header.split())
    public = _read_exact(fd, public_size)
    if public is None:
        return None
    if not judged_size:
        return public, None
    judged = mmap.mmap(-1, judged_size, flags=mmap.MAP_PRIVATE)
    if _read_exact(fd, judged_size, into=judged) is None:
        judged.close()
        return None
    return public, judged


def input_closed(fd):
    """True when ``fd`` (a pipe) is at end of input; consumes nothing."""
    ready, _, _ = select.select([fd], [], [], 0)
    if not ready:
        return False
    pending = array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.FIONREAD, pending, True)
    except OSError:
        return False
    return pending[0] == 0


class Server:
    """Runs one program per request frame; kills every process and wipes scratch after each.

    Every frame is read alone (pipelined frames wait in the pipe, outside this
    process), so a program's child inherits only its own request. See
    :meth:`serve` for ``fresh_handler``.

    End of stdin means "stop now": the host closes it to shut the server down,
    and it closes by itself when the host process dies (Docker's stdin-once), so
    a program still running is killed rather than finished.
    """

    def __init__(self, scratch_root, uid, nproc=0, fresh_handler=False):
        self.scratch_root = scratch_root
        self.uid = uid
        self.nproc = nproc
        self.fresh_handler = fresh_handler

    # -- process hygiene
    def sweep(self):
        """Kill every process a candidate left behind, then reap them all.

        In a container we are PID 1: ``kill(-1)`` reaches everything but us.
        On the host we are a child subreaper: orphans of candidates become our
        children, so killing our children until none is left gets them all.
        """
        for _ in range(10000):
            if os.getpid() == 1:
                try:
                    os.kill(-1, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            else:
                for pid in self._children():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            self._reap()
            if not self._children():
                return
            time.sleep(0.001)

    def _children(self):
        me = str(os.getpid())
        try:
            with open(f"/proc/self/task/{me}/children") as f:
                return [int(pid) for pid in f.read().split()]
        except OSError:
            pass
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if fields[1] == me and fields[0] != "Z":
                found.append(int(name))
        return found

    @staticmethod
    def _reap():
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    # -- one program
    def run(self, req, judged):
        """Run one program on all its tests; returns its ``{"results": [...]}`` entry."""
        tests = req["tests"]
        results = [None] * len(tests)
        scratch = os.path.join(self.scratch_root, "run")
        os.mkdir(scratch, 0o700)
        if self.uid is not None:
            os.chown(scratch, self.uid, self.uid)
        i = 0
        while i < len(tests):
            last = i + 1
            if tests[i]["mode"] != "stdin":
                while last < len(tests) and tests[last]["mode"] != "stdin":
                    last += 1
            i = self.run_segment(req, judged, i, last, scratch, results)
        return {"id": req["id"], "results": results}

    def wipe(self):
        """Delete every file programs could have left for the next one (no state between programs)."""
        roots = [self.scratch_root] + (["/dev/shm"] if os.getpid() == 1 else [])
        for root in roots:
            try:
                entries = list(os.scandir(root))
            except OSError:
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    try:
                        os.unlink(entry.path)
                    except OSError:
                        pass

    def run_segment(self, req, judged, first, last, scratch, results):
        """Run tests[first:last] with fresh processes; fill ``results`` from what is reported.

        A stdin test: one candidate process reporting to us. Judged tests: a
        candidate process and a judge process joined by a socket pair; only the
        judge reports to us. Returns the index of the first test still to run. A
        test's clock starts when the previous one reported (or the program
        finished loading).
        """
        tests = req["tests"]
        limit = float(req["time_limit_s"])
        out_limit = int(req["output_limit"])
        stdout_path = os.path.join(scratch, ".stdout")
        stdin_mode = tests[first]["mode"] == "stdin"
        stdin_path = os.devnull
        if stdin_mode:
            stdin_path = os.path.join(scratch, ".stdin")
            with open(stdin_path, "w") as f:
                f.write(tests[first]["input"])
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        if stdin_mode:
            chan_fd, judge_end = write_fd, None
        else:
            chan_fd, judge_end = (end.detach() for end in socket.socketpair())
        pid = os.fork()
        if pid == 0:
            _enter_candidate(req, judged, first, last, chan_fd, scratch, stdin_path, self.uid, self.nproc)
        pids = [pid]
        if judge_end is not None:
            os.close(chan_fd)
            judge_pid = os.fork()
            if judge_pid == 0:
                _enter_judge(req, judged, first, last, judge_end, write_fd)
            os.close(judge_end)
            pids.append(judge_pid)
        os.close(write_fd)
        for p in pids:
            try:
                os.setpgid(p, p)
            except OSError:
                pass
        loaded = stdin_mode  # a stdin program's load is its test
        current = first  # the test the child is working on
        clock = time.monotonic()  # when the current test's time started
        out_from = 0  # stdout size when the current test started
        raw = []  # (index, status, duration, stdout from, stdout to, error, record)
        failure = None  # (status, why) when the child ended without reporting the current test
        ended = False  # the reporting process closed its channel
        buf = b""
        max_buf = out_limit + (1 << 16)
        exits = {}  # pid -> wait status
        candidate_ended = None  # judged tests: the candidate's status if it ended before the judge
        try:
            while current < last and failure is None:
                remaining = clock + limit - time.monotonic()
                if remaining <= 0:
                    failure = ("timeout", f"time limit {limit:g}s exceeded")
                    break
                ready, _, _ = select.select([read_fd], [], [], min(remaining, HOST_CHECK_S))
                if input_closed(0):
                    self._host_gone(pids)
                if not ready:
                    continue
                chunk = os.read(read_fd, 1 << 16)
                if not chunk:
                    ended = True
                    break  # the child exited (or closed the channel) without finishing
                buf += chunk
                if len(buf) > max_buf:
                    failure = ("output_limit", "result too large")
                    break
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    try:
                        rec = json.loads(line)
                        ev = rec["ev"]
                    except (ValueError, KeyError, TypeError):
                        ev, rec = None, {}
                    now = time.monotonic()
                    if ev in ("compile_error", "load_error") and current == first and (not loaded or stdin_mode):
                        status = "compile_error" if ev == "compile_error" else rec.get("kind", "error")
                        why, out_to = str(rec.get("error", "")), self._size(stdout_path)
                        for j in range(first, last):  # the program never reached its tests
                            raw.append((j, status, now - clock, 0, out_to, why, None))
                        current = last
                        break
                    if ev == "loaded" and not loaded:
                        loaded, clock = True, now
                    elif ev == "result" and rec.get("i") == current and loaded:
                        out_to = self._size(stdout_path)
                        if type(rec.get("out")) is int:  # calls run ahead: the output up to this answer
                            out_to = min(max(rec["out"], out_from), out_to)
                        raw.append((current, "ok", now - clock, out_from, out_to, "", rec))
                        current, clock, out_from = current + 1, now, out_to
                    else:  # out of order or forged: stop trusting this child
                        failure = ("error", "the program wrote to the harness channel (protocol violation)")
                        break
        finally:
            os.close(read_fd)
            if ended and len(pids) > 1:  # the judge stopped: did the candidate end first?
                candidate_ended = exits[pid] = self._exit_within(pid, JUDGE_GRACE_S)
            for p in pids:
                try:
                    os.killpg(p, signal.SIGKILL)
                except OSError:
                    pass
                if exits.get(p) is None:
                    exits[p] = os.waitpid(p, 0)[1]
        duration = time.monotonic() - clock
        if current < last:
            if failure is None and len(pids) > 1 and candidate_ended is None:
                failure = ("error", "the judge process ended before reporting (killed by the program?)")
            status, why = failure or self._death(exits[pid])
            if not loaded:  # program load failed: it can never reach any test
                out_to = self._size(stdout_path)
                raw += [(j, status, duration, 0, out_to, why, None) for j in range(first, last)]
                current = last
            else:
                raw.append((current, status, duration, out_from, self._size(stdout_path), why, None))
                current += 1
        self._fill(results, raw, tests, scratch, out_limit)
        return current

    @staticmethod
    def _exit_within(pid, seconds):
        """The wait status of ``pid`` if it exits within ``seconds``, else None (still running)."""
        deadline = time.monotonic() + seconds
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            if time.monotonic() > deadline:
                return None
            time.sleep(0.001)

    @staticmethod
    def _death(exit_status):
        """(status, why) for a child that ended without reporting."""
        if os.WIFSIGNALED(exit_status):
            sig = os.WTERMSIG(exit_status)
            status = {signal.SIGKILL: "memory", signal.SIGXCPU: "timeout",
                      signal.SIGXFSZ: "output_limit"}.get(sig, "error")
            return status, f"killed by signal {signal.Signals(sig).name}"
        return "error", f"exited with code {os.WEXITSTATUS(exit_status)} before reporting a result"

    def _host_gone(self, pids):
        """Our stdin closed mid-program (the host process died): kill everything, stop now."""
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        self.sweep()
        self.wipe()
        os._exit(EXIT_INPUT_CLOSED)

    # -- building result entries
    @staticmethod
    def _size(path):
        try:
            return os.stat(path).st_size
        except OSError:
            return 0

    @staticmethod
    def _read(path, size):
        try:
            with open(path, "rb") as f:
                return f.read(size)
        except OSError:
            return b""

    def _fill(self, results, raw, tests, scratch, out_limit):
        """Turn the segment's raw outcomes into result entries (reads the output files once)."""
        stdout = self._read(os.path.join(scratch, ".stdout"), out_limit)
        stderr = self._read(os.path.join(scratch, ".stderr"), 1 << 20)[-EXCERPT_BYTES:].decode("utf-8", "replace")
        for index, status, duration, out_from, out_to, why, rec in raw:
            value = None
            if rec is not None and not rec.get("ok"):
                status = rec.get("kind") if rec.get("kind") in ("memory", "wrong", "output_limit") else "error"
                why = str(rec.get("error", ""))
            elif rec is not None:
                value = rec.get("value")
            if out_to >= out_limit:
                status, why = "output_limit", f"output limit ({out_limit} bytes) exceeded\n{why}"
            if status != "ok" and stderr:
                why = f"{why}\n{stderr}"
            mode = tests[index]["mode"]
            text = stdout if (status == "ok" and mode == "stdin") else stdout[out_from:out_to][:EXCERPT_BYTES]
            entry = {"status": status, "duration_s": round(duration, 6),
                     "stdout": text.decode("utf-8", "replace"), "stderr": why[-EXCERPT_BYTES:]}
            if status == "ok" and rec is not None and "value" in rec:
                entry["value"] = value
            results[index] = entry

    # -- main loop
    def handle_one(self):
        """Read one frame, run it, sweep, answer; returns an exit code (EXIT_INPUT_CLOSED at the end)."""
        request = read_request(0)
        if request is None:
            return EXIT_INPUT_CLOSED
        public, judged = request
        try:
            response = self.run(json.loads(public), judged)
        finally:
            if judged is not None:
                judged.close()  # unmapped: no later candidate process can inherit it
        self.sweep()  # nothing of the program may outlive its answer
        _write_all(1, (json.dumps(response) + "\n").encode())
        return 0

    def serve(self):
        """Answer frames until the end of input.

        With ``fresh_handler`` each frame is handled in a fresh fork of this
        process, which never reads a request itself: a program then inherits
        no byte of any earlier program (code, inputs, outputs), not even in freed
        memory. Otherwise (faster) the server handles frames itself; earlier
        programs' objects are gone, but their bytes may linger in freed memory.
        """
        _write_all(1, (json.dumps({"ready": True, "python": sys.version.split()[0]}) + "\n").encode())
        while True:
            if self.fresh_handler:
                pid = os.fork()
                if pid == 0:
                    code = 70
                    try:
                        _prctl(PR_SET_CHILD_SUBREAPER, 1)  # the program's orphans stay ours
                        code = self.handle_one()
                    finally:
                        os._exit(code)
                _, status = os.waitpid(pid, 0)
            else:
                status = self.handle_one() << 8  # as a wait status
            self.sweep()
            self.wipe()
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_INPUT_CLOSED:
                return
            if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
                # The program killed its own handler (e.g. kill -9 -1): the frame was
                # consumed but never answered. Say so, in order, for the host to record.
                _write_all(1, (json.dumps({"handler_died": _describe(status)}) + "\n").encode())


def _describe(status):
    if os.WIFSIGNALED(status):
        return f"killed by signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with code {os.WEXITSTATUS(status)}"


PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36


_LIBC = []


def _prctl(option, value):
    try:
        if not _LIBC:
            import ctypes

            _LIBC.append(ctypes.CDLL(None, use_errno=True))
        _LIBC[0].prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError, ImportError):
        pass


def _harden_server():
    """Non-dumpable (programs of the same uid cannot ptrace us or open /proc/<pid>/*,
    inherited by handlers and children); child subreaper (orphans come back to us)."""
    _prctl(PR_SET_DUMPABLE, 0)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def main(argv):
    scratch_root = "/tmp"
    uid = None
    nproc = 0
    fresh_handler = False
    args = list(argv)
    while args:
        flag = args.pop(0)
        if flag == "--scratch-root":
            scratch_root = args.pop(0)
        elif flag == "--uid":
            uid = int(args.pop(0))
        elif flag == "--nproc":
            nproc = int(args.pop(0))
        elif flag == "--fresh-handler":
            fresh_handler = True
        else:
            raise SystemExit(f"unknown argument {flag!r}")
    sys.set_int_max_str_digits(0)
    _harden_server()
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    gc.freeze()  # the collector of a forked child leaves these objects' pages shared (fewer copies)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the host ends us by closing stdin
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    for name in ("exit", "quit"):  # normally added by `site`, which -S skips
        setattr(builtins, name, sys.exit)
    Server(scratch_root, uid, nproc, fresh_handler).serve()


if __name__ == "__main__":
    main(sys.argv[1:])
