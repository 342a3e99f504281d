"""Prefect deployments of the pipeline and of each stage.

* ``vpo-pipeline``: the whole pipeline, with a nightly cron schedule created
  *paused* (switch it on in the UI once the config is right).
* ``vpo-prep``, ``vpo-train``, ``vpo-evaluate``: each stage on its own, e.g. to
  re-evaluate a checkpoint. ``vpo-train`` is the one the pipeline starts on the
  ``gpu`` pool with ``train_deployment="vpo-train/vpo-train"``.
* ``vpo-demo``: VPO vs GRPO on the demo config.

Two ways to run them: ``vpo serve`` (:func:`serve_deployments`, a local process
that runs flow runs itself, no work pool needed) or ``prefect deploy --all``
with ``prefect.yaml`` (work pools ``cpu`` and ``gpu`` and their workers: the
compose stack). Both use the same names, schedule and default parameters.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import serve
from prefect.schedules import Cron

from components.config import RunConfig
from flows.evaluate import evaluate_flow
from flows.pipeline import demo_flow, pipeline_flow
from flows.prep import prep_flow
from flows.train import train_flow

NIGHTLY_CRON = "0 2 * * *"
"""02:00 every night (the server's timezone: UTC unless configured)."""


def build_deployments(cfg: RunConfig) -> list[Any]:
    """RunnerDeployments for the pipeline, the demo and each stage, defaulting to ``cfg``."""
    params = {"cfg": cfg.model_dump(mode="json")}
    tags = ["vpo", cfg.task.name]
    return [
        pipeline_flow.to_deployment(
            name="vpo-pipeline", parameters=params, tags=tags,
            schedules=[Cron(NIGHTLY_CRON, timezone="UTC", active=False)],
            description="prep -> train -> evaluate under one MLflow parent run (nightly, paused).",
        ),
        demo_flow.to_deployment(name="vpo-demo", parameters=params, tags=tags,
                                description="VPO and GRPO on the same task, evaluated and compared."),
        prep_flow.to_deployment(name="vpo-prep", parameters=params, tags=tags,
                                description="Build or reuse the versioned dataset."),
        train_flow.to_deployment(name="vpo-train", parameters=params, tags=[*tags, "gpu"],
                                 description="Train from a dataset manifest (gpu pool)."),
        evaluate_flow.to_deployment(name="vpo-evaluate", parameters=params, tags=tags,
                                    description="Evaluate a checkpoint on the test split."),
    ]


def register_deployments(cfg: RunConfig) -> list[UUID]:
    """Create or update the deployments on the current Prefect API (no process serves them)."""
    return [deployment.apply() for deployment in build_deployments(cfg)]


def serve_deployments(cfg: RunConfig, *, limit: int | None = None) -> None:
    """Serve every deployment from this process until interrupted (schedules + UI triggers)."""
    serve(*build_deployments(cfg), limit=limit)
