"""How flows run: environment overrides, which failures are retried, the task runner.

* ``$VPO_STORAGE_ROOT`` (set by the compose stack) replaces ``cfg.storage.root`` in
  every flow, so one deployment parameter set works against MinIO/S3 or local disk.
* Transient failures (network, storage, tracking server) are retried with
  exponential backoff; a bug (ValueError, shape error, ...) fails at once.
* ``task_runner(ray_address)``: Prefect's thread pool, or a Ray cluster
  (``"local"`` starts a small one in-process, anything else is a cluster address).
"""

from __future__ import annotations

import os
from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from components.config import RunConfig
from components.storage import ChecksumError, StorageError

STORAGE_ROOT_ENV = "VPO_STORAGE_ROOT"
RETRIES = 3
RETRY_DELAYS = exponential_backoff(backoff_factor=2)
"""2 s, 4 s, 8 s (with Prefect's jitter) between attempts."""


def apply_environment(cfg: RunConfig) -> RunConfig:
    """``cfg`` with environment overrides applied (currently ``$VPO_STORAGE_ROOT``)."""
    root = os.environ.get(STORAGE_ROOT_ENV)
    if root and root != cfg.storage.root:
        cfg = cfg.model_copy(deep=True)
        cfg.storage.root = root
    return cfg


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth a retry: I/O, network, storage and tracking-server errors."""
    if isinstance(exc, ChecksumError):
        return False  # corrupt data does not heal by retrying
    if isinstance(exc, StorageError | ConnectionError | TimeoutError):
        return True
    module = type(exc).__module__
    if module.startswith(("botocore", "urllib3", "requests")):
        return True
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, MlflowException):
        return exc.get_http_status_code() >= 500 or "Connection" in str(exc)
    return False


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only failures that :func:`is_transient` accepts."""
    try:
        state.result()
    except BaseException as exc:  # the task's own exception is re-raised here
        return is_transient(exc)
    return False


def task_runner(ray_address: str | None = None, *, num_cpus: int | None = None) -> Any:
    """Threads when ``ray_address`` is None; a RayTaskRunner otherwise (``"local"``: a new
    in-process cluster with ``num_cpus`` CPUs; else an address like ``ray://head:10001``)."""
    if ray_address is None:
        return ThreadPoolTaskRunner(max_workers=num_cpus)
    from prefect_ray import RayTaskRunner

    if ray_address == "local":
        init = {"num_cpus": num_cpus or 2, "include_dashboard": False}
        return RayTaskRunner(init_kwargs=init)
    return RayTaskRunner(address=ray_address)
