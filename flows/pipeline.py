"""The pipeline: prep -> train -> evaluate as nested flows under one MLflow parent run.

``pipeline_flow(cfg)`` runs every stage in this process. With
``train_deployment="vpo-train/vpo-train"`` the train stage is instead started as
its own deployment (``run_deployment``), which the ``gpu`` work pool picks up,
while prep and evaluation stay wherever this flow runs (the ``cpu`` pool).

Re-running a pipeline that died resumes it: the prep task is cached, the
MLflow parent and stage runs are found again by tag, the trainer continues
from its last checkpoint and no step is logged twice.

``demo_flow`` runs the pipeline once per method (VPO and GRPO by default) and
prints the comparison.
"""

from __future__ import annotations

from prefect import flow
from prefect.deployments import run_deployment
from pydantic import BaseModel

from components import tracking
from components.config import RunConfig
from components.datasets import DatasetManifest
from components.evaluation import EvalReport
from components.training import TrainResult
from flows.evaluate import EvalJob, evaluate_and_log, evaluate_many
from flows.prep import prep_flow
from flows.reporting import link_to_prefect, publish_summary
from flows.runtime import apply_environment
from flows.train import latest_checkpoint_uri, train_flow


class PipelineResult(BaseModel):
    """What one pipeline run produced, with the MLflow parent run that holds it all."""

    name: str
    method: str
    mlflow_run_id: str
    dataset: DatasetManifest
    train: TrainResult
    eval_metrics: dict[str, float]


def train_remotely(cfg: RunConfig, dataset: DatasetManifest, parent_run_id: str,
                   deployment: str) -> TrainResult:
    """Run the train stage as ``deployment`` (e.g. on the gpu pool) and wait for it.

    The result is read back from shared storage (its newest checkpoint), so the
    worker needs no result storage shared with this process.
    """
    flow_run = run_deployment(
        deployment,
        parameters={"cfg": cfg.model_dump(mode="json"), "dataset": dataset.model_dump(mode="json"),
                    "parent_run_id": parent_run_id},
        flow_run_name=f"{cfg.name}-train",
    )
    if not flow_run.state or not flow_run.state.is_completed():
        raise RuntimeError(f"train deployment {deployment} ended {flow_run.state}")
    checkpoint = latest_checkpoint_uri(cfg)
    if checkpoint is None:
        raise RuntimeError(f"train deployment {deployment} left no checkpoint under {cfg.storage.root}")
    return TrainResult(checkpoint_uri=checkpoint, steps_done=cfg.training.steps, final_metrics={})


@flow(name="vpo-pipeline", log_prints=True)
def pipeline_flow(cfg: RunConfig, train_deployment: str | None = None) -> PipelineResult:
    """Prep, train and evaluate ``cfg``; everything lands under one MLflow parent run.

    ``train_deployment``: run training as this deployment (``"vpo-train/vpo-train"`` puts
    it on the gpu pool) instead of in this process.
    """
    cfg = apply_environment(cfg)
    parent = tracking.start_pipeline_run(cfg)
    link_to_prefect(parent)
    try:
        dataset = prep_flow(cfg, parent_run_id=parent)
        if train_deployment:
            result = train_remotely(cfg, dataset, parent, train_deployment)
        else:
            result = train_flow(cfg, dataset, parent_run_id=parent)
        report: EvalReport = evaluate_and_log(cfg, dataset, result.checkpoint_uri, parent)
    except KeyboardInterrupt:
        tracking.finish_run(parent, "KILLED")
        raise
    except BaseException:
        tracking.finish_run(parent, "FAILED")
        raise
    log_headline(parent, report)
    tracking.finish_run(parent)
    publish_summary(
        key=f"{cfg.name}-pipeline", title=f"Pipeline {cfg.name}: {cfg.task.name} / {cfg.estimator.name}",
        facts={"dataset": dataset.content_hash, "train steps": result.steps_done,
               "checkpoint": result.checkpoint_uri, "MLflow experiment": cfg.tracking.experiment},
        metrics=report.metrics, mlflow_link=tracking.run_url(parent),
    )
    return PipelineResult(name=cfg.name, method=cfg.estimator.name, mlflow_run_id=parent,
                          dataset=dataset, train=result, eval_metrics=report.metrics)


def log_headline(parent_run_id: str, report: EvalReport) -> None:
    """Copy the eval/* metrics onto the parent run (once), so runs compare at the top level."""
    if tracking.last_logged_step(parent_run_id) < 0:
        tracking.log_step_metrics(parent_run_id, 0, {k: v for k, v in report.metrics.items()
                                                     if k.startswith("eval/")})


def method_variant(cfg: RunConfig, method: str) -> RunConfig:
    """``cfg`` for one method of a comparison: its own run name, estimator and answer count.

    Matched compute (docs/results.md): from a set config (G generations of m answers, T new
    tokens), a single-answer method samples G x m answers of ceil(T / m) tokens each, so
    every method sees as many answers and about as many generated tokens per prompt.
    """
    data = cfg.model_dump()
    data["name"] = f"{cfg.name}-{method}"
    data["estimator"]["name"] = method
    m = cfg.task.num_answers
    if method in {"vpo", "multi_rlvr"}:
        data["task"]["num_answers"] = max(2, m)
    else:
        data["task"]["num_answers"] = 1
        data["rollout"]["group_size"] = cfg.rollout.group_size * m
        data["rollout"]["max_new_tokens"] = -(-cfg.rollout.max_new_tokens // m)
    if cfg.tracking.registered_model:
        data["tracking"]["registered_model"] = f"{cfg.tracking.registered_model}-{method}"
    return RunConfig.model_validate(data)


@flow(name="vpo-demo", log_prints=True)
def demo_flow(cfg: RunConfig, methods: list[str] = ["vpo", "grpo"],  # noqa: B006  (Prefect form default)
              ray_address: str | None = None) -> list[PipelineResult]:
    """Train every method on the same task (sequentially: training owns the CPU), then
    evaluate all of them at once on the task runner (threads, or Ray with ``ray_address``)."""
    cfg = apply_environment(cfg)
    variants = [method_variant(cfg, m) for m in methods]
    staged = []
    for variant in variants:
        parent = tracking.start_pipeline_run(variant)
        dataset = prep_flow(variant, parent_run_id=parent)
        result = train_flow(variant, dataset, parent_run_id=parent)
        staged.append((variant, parent, dataset, result))
    reports = evaluate_many(
        [EvalJob(cfg=v, dataset=d, checkpoint_uri=r.checkpoint_uri, parent_run_id=p) for v, p, d, r in staged],
        ray_address=ray_address,
    )
    results = []
    for (variant, parent, dataset, result), report in zip(staged, reports, strict=True):
        log_headline(parent, report)
        tracking.finish_run(parent)
        results.append(PipelineResult(name=variant.name, method=variant.estimator.name, mlflow_run_id=parent,
                                      dataset=dataset, train=result, eval_metrics=report.metrics))
    publish_summary(
        key=f"{cfg.name}-demo", title=f"Demo {cfg.name}: {', '.join(methods)}",
        facts={r.method: f"best@{cfg.evaluation.max_k} = {r.eval_metrics.get(f'eval/best_at_{cfg.evaluation.max_k}', float('nan')):.4f}"
               for r in results},
        metrics={},
        mlflow_link=tracking.run_url(results[0].mlflow_run_id),
    )
    return results
