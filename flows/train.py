"""Train stage: rollouts -> sandbox rewards -> advantages -> update, resumable, tracked.

``components.training.train`` does the work (generation, test execution in the
sandbox, the estimator, the policy update, checkpoints); this flow attaches it
to the ``train`` MLflow run through :class:`components.tracking.MlflowTrainCallback`
and registers the final model. Run again after a crash, it resumes from the
last checkpoint and logs each step exactly once.

As a deployment (``vpo-train`` on the ``gpu`` pool) it runs on a GPU worker
while the rest of the pipeline stays on ``cpu``; see flows/pipeline.py.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from components import tracking
from components.config import RunConfig
from components.datasets import DatasetManifest
from components.training import TrainResult, latest_checkpoint, train
from components.training.checkpoint import checkpoint_store
from flows.reporting import link_to_prefect, publish_summary
from flows.runtime import RETRIES, RETRY_DELAYS, apply_environment, retry_if_transient


class ProgressCallback:
    """Forwards to the MLflow callback and logs one progress line per step to the flow run log."""

    SHOWN = ("reward/fixed/mean", "train/loss", "train/kl", "warmstart/loss")

    def __init__(self, cfg: RunConfig, inner: tracking.MlflowTrainCallback):
        self.inner, self.total, self.warmup = inner, cfg.training.steps, cfg.training.warmup_steps
        self.logger = get_run_logger()
        self.started = time.monotonic()

    def on_step(self, step: int, metrics: dict[str, float], samples: list[dict] | None) -> None:
        self.inner.on_step(step, metrics, samples)
        warm = any(k.startswith("warmstart/") for k in metrics)
        if warm and step % 10 and step != self.warmup:
            return  # warm-start steps are many and short: every 10th
        phase, total = ("warm start", self.warmup) if warm else ("RL step", self.total)
        shown = "  ".join(f"{k}={metrics[k]:.4f}" for k in self.SHOWN if k in metrics)
        self.logger.info(f"{phase} {step}/{total}  {shown}  [{time.monotonic() - self.started:.0f}s]")

    def on_checkpoint(self, step: int, uri: str) -> None:
        self.inner.on_checkpoint(step, uri)
        self.logger.info(f"checkpoint {uri}")


@task(name="train-policy", cache_policy=NO_CACHE, retries=RETRIES, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_if_transient)
def train_task(cfg: RunConfig, dataset: DatasetManifest, run_id: str) -> TrainResult:
    """One attempt resumes from the newest checkpoint, so a retry loses no finished step."""
    callback = ProgressCallback(cfg, tracking.MlflowTrainCallback(run_id))
    return train(cfg, dataset=dataset, callback=callback, resume=True)


@task(name="register-model", cache_policy=NO_CACHE, retries=RETRIES, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_if_transient)
def register_model_task(cfg: RunConfig, run_id: str, checkpoint_uri: str) -> int | None:
    return tracking.log_final_model(cfg, run_id, checkpoint_uri)


@flow(name="vpo-train", log_prints=True)
def train_flow(cfg: RunConfig, dataset: DatasetManifest, parent_run_id: str | None = None) -> TrainResult:
    """Train ``cfg``'s policy on ``dataset``; metrics, rollouts and the model go to MLflow."""
    cfg = apply_environment(cfg)
    parent = parent_run_id or tracking.start_pipeline_run(cfg)
    with tracking.stage_run(cfg, "train", parent) as run_id:
        link_to_prefect(run_id)
        result = train_task(cfg, dataset, run_id)
        version = None
        if cfg.tracking.registered_model:
            version = register_model_task(cfg, run_id, result.checkpoint_uri)
    registered = f"{cfg.tracking.registered_model}@{cfg.tracking.model_alias} (v{version})" if version else "-"
    publish_summary(
        key=f"{cfg.name}-train", title=f"Training of {cfg.name} ({cfg.estimator.name})",
        facts={"steps": result.steps_done, "checkpoint": result.checkpoint_uri,
               "registered model": registered, "dataset": dataset.content_hash},
        metrics=result.final_metrics, mlflow_link=tracking.run_url(run_id),
    )
    if parent_run_id is None:
        tracking.finish_run(parent)
    return result


def latest_checkpoint_uri(cfg: RunConfig) -> str | None:
    """URI of the newest complete ``step-XXXXXX`` checkpoint of the run, or None."""
    latest = latest_checkpoint(checkpoint_store(cfg))
    return latest[1] if latest else None
