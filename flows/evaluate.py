"""Evaluate stage: sample evaluation pools from a checkpoint, score them, log search metrics.

:func:`evaluate_and_log` is a Prefect task that evaluates and logs in the same
place, so it can be submitted to any task runner (threads, or a Ray cluster:
``evaluate_checkpoints_flow`` fans several checkpoints out at once) and the
plots it writes never have to travel back.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from components import tracking
from components.config import RunConfig
from components.datasets import DatasetManifest
from components.evaluation import EvalReport, evaluate
from flows.reporting import link_to_prefect, publish_summary
from flows.runtime import RETRIES, RETRY_DELAYS, apply_environment, retry_if_transient, task_runner


def log_report(run_id: str, report: EvalReport) -> None:
    """Metrics (once per run: a re-run never duplicates them), k-curves by step, plots, report."""
    if tracking.last_logged_step(run_id) < 0:
        tracking.log_step_metrics(run_id, 0, report.metrics)
        curves = {"eval/curve/best": report.best_at_k,
                  "eval/curve/pass_candidate": report.pass_at_k_candidate,
                  "eval/curve/pass_generation": report.pass_at_k_generation}
        for k in range(1, max(len(c) for c in curves.values()) + 1):
            tracking.log_step_metrics(run_id, k, {name: c[k - 1] for name, c in curves.items() if len(c) >= k})
    tracking.log_files(run_id, list(report.plots.values()), "plots")
    tracking.log_json(run_id, report, "eval/report.json")


@task(name="evaluate-checkpoint", cache_policy=NO_CACHE, retries=RETRIES,
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=retry_if_transient)
def evaluate_and_log(cfg: RunConfig, dataset: DatasetManifest, checkpoint_uri: str,
                     parent_run_id: str) -> EvalReport:
    """Evaluate ``checkpoint_uri`` and log it to the ``evaluate`` run under ``parent_run_id``."""
    with tracking.stage_run(cfg, "evaluate", parent_run_id) as run_id:
        link_to_prefect(run_id)
        report = evaluate(cfg, dataset=dataset, checkpoint_uri=checkpoint_uri)
        log_report(run_id, report)
    publish_summary(
        key=f"{cfg.name}-evaluate", title=f"Evaluation of {cfg.name} ({report.method})",
        facts={"checkpoint": checkpoint_uri, "prompts": report.num_prompts, "pool": report.pool_size},
        metrics=report.metrics, mlflow_link=tracking.run_url(run_id),
    )
    return report


@flow(name="vpo-evaluate", log_prints=True)
def evaluate_flow(cfg: RunConfig, dataset: DatasetManifest, checkpoint_uri: str,
                  parent_run_id: str | None = None) -> EvalReport:
    """Evaluate one checkpoint of ``cfg`` on the test split of ``dataset``."""
    cfg = apply_environment(cfg)
    parent = parent_run_id or tracking.start_pipeline_run(cfg)
    report = evaluate_and_log(cfg, dataset, checkpoint_uri, parent)
    if parent_run_id is None:
        tracking.finish_run(parent)
    return report


class EvalJob(BaseModel):
    """One checkpoint to evaluate, with the run it belongs to."""

    cfg: RunConfig
    dataset: DatasetManifest
    checkpoint_uri: str
    parent_run_id: str


@flow(name="vpo-evaluate-many", log_prints=True)
def evaluate_many_flow(jobs: list[EvalJob]) -> list[EvalReport]:
    """Evaluate several checkpoints concurrently on the flow's task runner."""
    futures = [evaluate_and_log.submit(apply_environment(j.cfg), j.dataset, j.checkpoint_uri,
                                       j.parent_run_id) for j in jobs]
    return [f.result() for f in futures]


def evaluate_many(jobs: list[EvalJob], ray_address: str | None = None) -> list[EvalReport]:
    """:func:`evaluate_many_flow` on threads (``ray_address=None``) or on a Ray cluster
    (``"local"``: a small in-process one; else a cluster address)."""
    runner = task_runner(ray_address, num_cpus=max(1, len(jobs)))
    return evaluate_many_flow.with_options(task_runner=runner)(jobs)
