"""Execute untrusted candidate programs against per-test checks: one verdict per test.

    from components.sandbox import open_sandbox
    with open_sandbox(cfg.sandbox) as sb:
        results = sb.run([(problem, code), ...], progress=None)   # list[ExecutionResult]

Backends: ``docker`` (default when an engine answers and the image is current)
and ``process`` (weaker isolation, announced with a WARNING). See docs/sandbox.md.
"""

from __future__ import annotations

import logging

from components.config import SandboxConfig
from components.sandbox.docker_backend import DockerSandbox, docker_client
from components.sandbox.image import image_status
from components.sandbox.loaders import ProblemFormatError, load_problems
from components.sandbox.pool import PooledSandbox, Progress, SandboxUnavailable
from components.sandbox.problem import CodeProblem, ExecutionResult, TestCase, TestVerdict, Verdict
from components.sandbox.process import ProcessSandbox

log = logging.getLogger(__name__)

__all__ = [
    "CodeProblem", "DockerSandbox", "ExecutionResult", "PooledSandbox", "ProblemFormatError",
    "ProcessSandbox", "Progress", "SandboxUnavailable", "TestCase", "TestVerdict", "Verdict",
    "docker_unavailable_reason", "load_problems", "open_sandbox",
]


def docker_unavailable_reason(image: str) -> str | None:
    """None when the Docker backend can run ``image`` here; otherwise why not."""
    client = docker_client()
    if client is None:
        return "no Docker engine answers (start dockerd, or set DOCKER_HOST)"
    try:
        return image_status(client, image)
    finally:
        client.close()


def open_sandbox(cfg: SandboxConfig) -> PooledSandbox:
    """The configured backend; ``auto`` = Docker when usable, else ProcessSandbox with a WARNING.

    Raises:
        SandboxUnavailable: ``backend="docker"`` but no engine or no current image.
    """
    if cfg.backend == "process":
        return ProcessSandbox(cfg)
    if cfg.backend == "docker":
        return DockerSandbox(cfg)
    reason = docker_unavailable_reason(cfg.image)
    if reason is None:
        return DockerSandbox(cfg)
    log.warning("sandbox: Docker backend unavailable (%s); FALLING BACK to the process sandbox", reason)
    return ProcessSandbox(cfg)
