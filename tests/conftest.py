"""Shared test helpers and fixtures.

Docker:
  * ``docker_skip_reason(image=None)``: None when a Docker engine answers (and,
    when ``image`` is given, that image exists and is current); else the reason.
  * tests marked ``@pytest.mark.docker`` are skipped, with that reason printed
    (``-ra``), when the engine or the sandbox image is missing;
  * fixture ``sandbox_image``: the name of a current sandbox image (or skip).

Leak check: when the session ends, no sandbox container started by this
process and no sandbox runner/candidate process may be left
(:func:`sandbox_leaks`; tests/test_sandbox_docker.py also checks it mid-run).
"""

from __future__ import annotations

import os
from functools import cache

import pytest

# Prefect configures its console log handler on first import, binding it to the
# sys.stderr of that moment. Importing it here binds it to pytest's session-wide
# stream; a first import inside a CliRunner invocation would bind it to a stream
# that is closed afterwards, and every later flow would fail writing its logs.
import prefect  # noqa: E402,F401  isort: skip

SANDBOX_IMAGE = "vpo-sandbox:local"


@cache
def docker_skip_reason(image: str | None = None) -> str | None:
    """Why Docker tests cannot run here (None = they can). Cached per session."""
    from components.sandbox import docker_unavailable_reason
    from components.sandbox.docker_backend import docker_client

    if image is not None:
        return docker_unavailable_reason(image)
    return None if docker_client() is not None else "no Docker engine answers"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("docker") is not None:
        reason = docker_skip_reason(SANDBOX_IMAGE)
        if reason is not None:
            pytest.skip(f"docker: {reason}")


@pytest.fixture(scope="session")
def sandbox_image() -> str:
    reason = docker_skip_reason(SANDBOX_IMAGE)
    if reason is not None:
        pytest.skip(f"docker: {reason}")
    return SANDBOX_IMAGE


def sandbox_leaks() -> list[str]:
    """Sandbox containers owned by this process, and runner/candidate processes still alive."""
    from components.sandbox.docker_backend import OWNER_LABEL, docker_client
    from components.sandbox.process import PROCESS_UID_BASE, RUNNER_PATH

    leaks = []
    client = docker_client()
    if client is not None:
        owner = f"{os.uname().nodename}:{os.getpid()}"
        for c in client.api.containers(all=True, filters={"label": f"{OWNER_LABEL}={owner}"}):
            leaks.append(f"container {c['Names']} ({c['Status']})")
        client.close()
    for pid, cmdline, uid in _descendants(os.getpid()):
        if str(RUNNER_PATH) in cmdline:
            leaks.append(f"runner process {pid}: {cmdline[:120]}")
        elif PROCESS_UID_BASE <= uid < PROCESS_UID_BASE + 1000:
            leaks.append(f"candidate process {pid} (uid {uid}): {cmdline[:120]}")
    return leaks


def _descendants(root: int) -> list[tuple[int, str, int]]:
    """(pid, cmdline, uid) of every live descendant of ``root`` (other sessions' tests are ignored)."""
    parent, info = {}, {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            uid = os.stat(f"/proc/{name}").st_uid
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] == "Z":
            continue
        parent[int(name)] = int(fields[1])
        info[int(name)] = (cmdline, uid)
    found = []
    for pid in parent:
        ancestor = parent.get(pid)
        while ancestor and ancestor != root:
            ancestor = parent.get(ancestor)
        if ancestor == root:
            found.append((pid, *info[pid]))
    return found


@pytest.fixture(scope="session", autouse=True)
def _no_sandbox_leaks_after_session():
    yield
    leaks = sandbox_leaks()
    assert not leaks, "sandbox leaked after the test session:\n" + "\n".join(leaks)


@pytest.fixture(scope="module")
def tiny_model_env(tmp_path_factory):
    """A private tiny-model cache ($VPO_CACHE_DIR) and one torch thread for the module.

    Two torch threads on the 2 shared cores of CI are ~10x slower than one.
    """
    import torch

    old, old_threads = os.environ.get("VPO_CACHE_DIR"), torch.get_num_threads()
    os.environ["VPO_CACHE_DIR"] = str(tmp_path_factory.mktemp("vpo-cache"))
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old_threads)
    if old is None:
        os.environ.pop("VPO_CACHE_DIR", None)
    else:
        os.environ["VPO_CACHE_DIR"] = old
