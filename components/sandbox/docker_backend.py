"""DockerSandbox: a pool of long-lived, locked-down worker containers.

Each worker container runs the runner as PID 1 (``python3 -I -S
/opt/vpo/runner.py``) and is fed over its attached stdin/stdout (the Docker API
socket, no CLI). PID 1 cannot be killed from inside its PID namespace, sweeps
every other process after each program (``kill(-1, SIGKILL)``), and is
non-dumpable, so candidates cannot ptrace it or open its ``/proc`` files.

Container flags: ``--network none --read-only --tmpfs /tmp (noexec, size-capped)
--user 65534:65534 --cap-drop ALL --security-opt no-new-privileges
--pids-limit --memory = --memory-swap --cpus --ulimit nofile/fsize/core=0``,
labelled ``org.vpo.sandbox=worker`` (+ owner pid) for leak checks, and
``--rm`` with stdin-once: when this process dies, stdin closes, the runner exits
and Docker removes the container.
"""

from __future__ import annotations

import itertools
import logging
import os
import select
import socket
import struct
import time
import uuid

import docker
import docker.errors
from docker.types import Ulimit

from components.config import SandboxConfig
from components.sandbox.image import image_status
from components.sandbox.pool import (
    LineBuffer,
    PooledSandbox,
    SandboxUnavailable,
    Worker,
    WorkerDied,
)

log = logging.getLogger(__name__)

LABEL = "org.vpo.sandbox"
"""Every container we start carries ``org.vpo.sandbox=worker``."""
OWNER_LABEL = "org.vpo.sandbox.owner"
"""``<hostname>:<pid>`` of the process that started the container."""
INSTANCE_LABEL = "org.vpo.sandbox.instance"
"""Random id of the DockerSandbox that started the container."""
REMOVE_TIMEOUT_S = 15.0
SERVER_HEADROOM_MB = 128
"""Container memory = per-program limit + this, for the runner itself."""
_names = itertools.count()


def docker_client(timeout_s: float = 10.0) -> docker.DockerClient | None:
    """A client whose engine answers a ping, or None."""
    try:
        client = docker.from_env(timeout=timeout_s)
        client.ping()
        return client
    except (docker.errors.DockerException, OSError):
        return None


def _owner() -> str:
    return f"{os.uname().nodename}:{os.getpid()}"


def remove_stale_containers(client: docker.DockerClient) -> int:
    """Remove our containers whose owner process (on this host) is gone; returns the count."""
    removed = 0
    host = os.uname().nodename
    for c in client.api.containers(all=True, filters={"label": f"{LABEL}=worker"}):
        owner_host, _, pid = ((c.get("Labels") or {}).get(OWNER_LABEL) or "").rpartition(":")
        if owner_host == host and pid.isdigit() and os.path.exists(f"/proc/{pid}"):
            continue
        try:
            client.api.remove_container(c["Id"], force=True)
            removed += 1
        except docker.errors.APIError:
            pass
    return removed


class _ContainerWorker(Worker):
    def __init__(self, client: docker.DockerClient, cfg: SandboxConfig, slot: int, instance: str) -> None:
        super().__init__()
        self._api = client.api
        mem = f"{cfg.memory_mb + SERVER_HEADROOM_MB}m"
        tmpfs_bytes = cfg.tmpfs_mb << 20
        host_config = self._api.create_host_config(
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,noexec,size={cfg.tmpfs_mb}m,mode=1777"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            pids_limit=cfg.pids_limit,
            mem_limit=mem,
            memswap_limit=mem,
            nano_cpus=int(cfg.cpus * 1e9),
            ulimits=[Ulimit(name="nofile", soft=256, hard=256),
                     Ulimit(name="fsize", soft=tmpfs_bytes, hard=tmpfs_bytes),
                     Ulimit(name="core", soft=0, hard=0)],
            auto_remove=True,
        )
        name = f"vpo-sandbox-{os.getpid()}-{slot}-{next(_names)}"
        self._id = self._api.create_container(
            cfg.image,
            command=["python3", "-I", "-S", "/opt/vpo/runner.py", "--scratch-root", "/tmp"]
            + (["--fresh-handler"] if cfg.isolate_programs else []),
            user="65534:65534", working_dir="/tmp", stdin_open=True, detach=False, tty=False,
            environment={"LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"},
            labels={LABEL: "worker", OWNER_LABEL: _owner(), INSTANCE_LABEL: instance}, name=name,
            host_config=host_config, network_disabled=True,
        )["Id"]
        try:
            raw = self._api.attach_socket(self._id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            self._sock: socket.socket = getattr(raw, "_sock", raw)
            self._raw = raw
            self._sock.setblocking(True)
            self._api.start(self._id)
        except BaseException:
            self.close()
            raise
        self._frames = bytearray()
        self._lines = LineBuffer(max_line=1 << 30)
        self._stderr_tail = b""

    def send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise WorkerDied(f"container stdin closed: {exc}") from None

    def _demux(self) -> None:
        """Move complete frames (8-byte header: stream, 0, 0, 0, size) into the line buffer."""
        while len(self._frames) >= 8:
            stream, size = struct.unpack(">BxxxL", self._frames[:8])
            if len(self._frames) < 8 + size:
                return
            payload = bytes(self._frames[8: 8 + size])
            del self._frames[: 8 + size]
            if stream == 1:
                self._lines.feed(payload)
            else:
                self._stderr_tail = (self._stderr_tail + payload)[-2000:]

    def read_line(self, timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        while (line := self._lines.pop_line()) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerDied(f"no answer from container within {timeout_s:.0f}s")
            ready, _, _ = select.select([self._sock], [], [], remaining)
            if not ready:
                continue
            try:
                chunk = self._sock.recv(1 << 20)
            except OSError as exc:
                raise WorkerDied(f"container stream error: {exc}") from None
            if not chunk:
                raise WorkerDied(f"container exited: {self._stderr_tail.decode(errors='replace')[-500:]}")
            self._frames += chunk
            self._demux()
        return line

    def close(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass
        try:
            self._api.remove_container(self._id, force=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:  # "removal already in progress" (auto-remove)
            if "in progress" not in str(exc):
                log.warning("could not remove sandbox container %s: %s", self._id[:12], exc)
        deadline = time.monotonic() + REMOVE_TIMEOUT_S
        while time.monotonic() < deadline:  # return only once it is really gone
            try:
                self._api.inspect_container(self._id)
            except docker.errors.NotFound:
                return
            time.sleep(0.05)
        log.warning("sandbox container %s still present after %.0fs", self._id[:12], REMOVE_TIMEOUT_S)


class DockerSandbox(PooledSandbox):
    """Worker containers from ``cfg.image``; candidate code never runs on the host."""

    backend_name = "docker"

    def __init__(self, cfg: SandboxConfig, client: docker.DockerClient | None = None) -> None:
        client = client or docker_client()
        if client is None:
            raise SandboxUnavailable("no Docker engine answers (is dockerd running? DOCKER_HOST?)")
        problem = image_status(client, cfg.image)
        if problem is not None:
            raise SandboxUnavailable(problem)
        self._client = client
        self._instance = uuid.uuid4().hex
        n = remove_stale_containers(client)
        if n:
            log.warning("removed %d sandbox container(s) left by dead processes", n)
        super().__init__(cfg)

    def _start_worker(self, slot: int) -> Worker:
        try:
            return _ContainerWorker(self._client, self.cfg, slot, self._instance)
        except docker.errors.DockerException as exc:
            raise SandboxUnavailable(f"cannot start a sandbox container: {exc}") from exc

    def containers(self) -> list[str]:
        """Ids of this sandbox's worker containers, running or not (for diagnostics and tests)."""
        found = self._client.api.containers(all=True, filters={"label": f"{INSTANCE_LABEL}={self._instance}"})
        return [c["Id"] for c in found]
