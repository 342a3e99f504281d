"""Prep stage: build (or reuse) the versioned train/test dataset, logged to MLflow.

The Prefect task is cached by the content of its inputs: the dataset-relevant
config fields (``task.*``, the run name and the storage root) plus the SHA-256
of the input file for file-backed tasks. A cache hit whose dataset has since
vanished from storage is recomputed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.context import TaskRunContext

from components import tracking
from components.config import RunConfig
from components.datasets import DatasetManifest, prepare_dataset
from components.storage import open_store, sha256_file
from flows.reporting import link_to_prefect, publish_summary
from flows.runtime import RETRIES, RETRY_DELAYS, apply_environment, retry_if_transient


def input_file_hash(source: str | None) -> str:
    """SHA-256 of a local input file; the URI itself for remote sources; "" for generated tasks."""
    if not source:
        return ""
    path = Path(source[len("file://"):] if source.startswith("file://") else source)
    return sha256_file(path) if path.is_file() else source


def prep_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Cache key of :func:`prepare_dataset_task`: dataset-relevant config + input file hash."""
    cfg: RunConfig = parameters["cfg"]
    relevant = {
        "task": cfg.task.model_dump(mode="json"),
        "name": cfg.name,
        "storage_root": cfg.storage.root,
        "input_sha256": input_file_hash(cfg.task.source),
    }
    return "vpo-prep-" + hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


@task(name="prepare-dataset", cache_key_fn=prep_cache_key, persist_result=True,
      retries=RETRIES, retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_if_transient)
def prepare_dataset_task(cfg: RunConfig) -> DatasetManifest:
    return prepare_dataset(cfg)


def dataset_present(manifest: DatasetManifest) -> bool:
    """Whether the manifest's dataset still has objects in storage."""
    try:
        return bool(open_store(manifest.uri).list())
    except Exception:
        return False


@task(name="log-dataset", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_if_transient)
def log_dataset_task(cfg: RunConfig, manifest: DatasetManifest, parent_run_id: str) -> str:
    with tracking.stage_run(cfg, "prep", parent_run_id) as run_id:
        link_to_prefect(run_id)
        tracking.log_dataset_manifest(run_id, manifest)
        if tracking.last_logged_step(run_id) < 0:  # a resumed pipeline logs them once
            tracking.log_step_metrics(run_id, 0, {f"data/{k}_rows": v for k, v in manifest.counts.items()})
    return run_id


@flow(name="vpo-prep", log_prints=True)
def prep_flow(cfg: RunConfig, parent_run_id: str | None = None) -> DatasetManifest:
    """Build or reuse the dataset of ``cfg``; log its manifest to the ``prep`` MLflow run."""
    cfg = apply_environment(cfg)
    manifest = prepare_dataset_task(cfg)
    if not dataset_present(manifest):
        manifest = prepare_dataset_task.with_options(refresh_cache=True)(cfg)
    parent = parent_run_id or tracking.start_pipeline_run(cfg)
    run_id = log_dataset_task(cfg, manifest, parent)
    publish_summary(
        key=f"{cfg.name}-prep", title=f"Dataset of {cfg.name}",
        facts={"task": manifest.task, "uri": manifest.uri, "content hash": manifest.content_hash,
               "counts": manifest.counts, "objectives": len(manifest.objective_names),
               "reused": manifest.reused},
        metrics={}, mlflow_link=tracking.run_url(run_id),
    )
    if parent_run_id is None:
        tracking.finish_run(parent)
    return manifest
