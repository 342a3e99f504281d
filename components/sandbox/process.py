"""ProcessSandbox: the runner as local subprocesses (fallback when no Docker engine answers).

Isolation is WEAKER than Docker: candidates share the host's kernel view,
filesystem (read access wherever their uid may read) and network. What it does:
own session and process group per program, rlimits (address space, CPU, file
size, open files, no core files), a scratch directory removed after each program,
a scrubbed environment, and - when started as root - a dedicated unprivileged
uid per worker (``PROCESS_UID_BASE + slot``, ``RLIMIT_NPROC`` 64), so a
candidate cannot signal anything but its own worker's processes. Not as root,
programs run as the calling user, with ``RLIMIT_NPROC`` = that user's processes
at worker start + 128.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

from components.config import SandboxConfig
from components.sandbox.pool import LineBuffer, PooledSandbox, Worker, WorkerDied

log = logging.getLogger(__name__)

RUNNER_PATH = Path(__file__).with_name("runner.py")
PROCESS_UID_BASE = 64000
"""When run as root, worker ``slot`` executes candidates as uid/gid ``PROCESS_UID_BASE + slot``."""
NPROC_OWN_UID = 64
"""RLIMIT_NPROC of programs running under a worker's own uid (root start)."""
NPROC_MARGIN = 128
"""Otherwise: RLIMIT_NPROC = processes of our uid at worker start + this."""
SCRUBBED_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


def _processes_of_uid(uid: int) -> int:
    count = 0
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and os.stat(f"/proc/{name}").st_uid == uid:
                count += 1
        except OSError:
            pass
    return count


class _ProcessWorker(Worker):
    def __init__(self, slot: int, root: Path, cfg: SandboxConfig) -> None:
        super().__init__()
        self._scratch = Path(tempfile.mkdtemp(prefix=f"worker{slot}-", dir=root))
        os.chmod(self._scratch, 0o711)
        cmd = [sys.executable, "-I", "-S", str(RUNNER_PATH), "--scratch-root", str(self._scratch)]
        if cfg.isolate_programs:
            cmd.append("--fresh-handler")
        if os.geteuid() == 0:
            cmd += ["--uid", str(PROCESS_UID_BASE + slot), "--nproc", str(NPROC_OWN_UID)]
        else:  # programs share our uid: allow what we already run plus a margin
            cmd += ["--nproc", str(_processes_of_uid(os.geteuid()) + NPROC_MARGIN)]
        self._log = root / f"runner-{slot}-{self._scratch.name}.log"  # outside the wiped scratch dir
        self._stderr = open(self._log, "wb")  # noqa: SIM115 - closed in close()
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            env={**SCRUBBED_ENV, "HOME": str(self._scratch)}, cwd=self._scratch,
            start_new_session=True, close_fds=True,
        )
        self._lines = LineBuffer(max_line=1 << 30)

    def send(self, data: bytes) -> None:
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(data)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise WorkerDied(f"runner stdin closed: {exc}") from None

    def read_line(self, timeout_s: float) -> bytes:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while (line := self._lines.pop_line()) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerDied(f"no answer from runner within {timeout_s:.0f}s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise WorkerDied(f"runner exited (code {self._proc.poll()}): {self._log_tail()}")
                self._lines.feed(chunk)
        return line

    def _log_tail(self) -> str:
        try:
            return self._log.read_text(errors="replace")[-500:]
        except OSError:
            return ""

    def close(self) -> None:
        proc = self._proc
        try:
            if proc.stdin is not None:
                proc.stdin.close()  # the runner sweeps its children and exits on EOF
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, 9)
            except OSError:
                pass
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        self._stderr.close()
        self._log.unlink(missing_ok=True)
        shutil.rmtree(self._scratch, ignore_errors=True)


class ProcessSandbox(PooledSandbox):
    """Runner servers as local subprocesses. Weaker isolation; said loudly on open."""

    backend_name = "process"

    def __init__(self, cfg: SandboxConfig) -> None:
        log.warning(
            "ProcessSandbox: candidate programs run on THIS machine with rlimits only "
            "(no container: weaker isolation; no network or filesystem isolation). "
            "Use the Docker sandbox for untrusted code: `vpo sandbox build-image`."
        )
        self._root = Path(tempfile.mkdtemp(prefix="vpo-sandbox-"))
        os.chmod(self._root, 0o711)
        # removed on close(), and also if the sandbox is dropped without being closed
        self._remove_root = weakref.finalize(self, shutil.rmtree, self._root, True)
        super().__init__(cfg)

    def _start_worker(self, slot: int) -> Worker:
        return _ProcessWorker(slot, self._root, self.cfg)

    def _on_close(self) -> None:
        self._remove_root()
