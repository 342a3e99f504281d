"""MLflow tracking for pipeline runs: one parent run per pipeline run, one nested run per stage.

The only module of ``components/`` that imports mlflow. Stages and the trainer
never talk to MLflow directly: flows open runs here, and the trainer reports
through :class:`MlflowTrainCallback` (a ``TrainCallback``).

Layout in MLflow (experiment = ``cfg.tracking.experiment``)::

    pipeline run   tags vpo.kind=pipeline, vpo.run_name, vpo.config_hash; params = flattened config
      ├─ prep      tags vpo.kind=stage, vpo.stage=prep, mlflow.parentRunId; artifact dataset/manifest.json
      ├─ train     metrics reward/<objective>/mean, train/*, vpo/*, time/* by step;
      │            artifacts rollouts/step-XXXXXX.jsonl; registered model <name>@<alias>
      └─ evaluate  metrics eval/*; artifacts plots/, eval/report.json

Runs are found again by tag, so a stage running in another process (another
worker, another machine) attaches to the same tree given the parent run id,
and a pipeline killed and started again continues the same runs: the parent is
reused while it is unfinished and its config hash matches, stage runs are
reused by stage name, and the train callback skips every step already logged.

Tracking URI: ``cfg.tracking.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else a
local SQLite store ``<storage root>/mlflow.db`` with artifacts under the storage root.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import mlflow
from mlflow.entities import Metric, RunStatus
from mlflow.tracking import MlflowClient

from components.config import RunConfig, flatten_config

STAGES = ("prep", "train", "evaluate")
METRIC_GROUPS = ("reward", "train", "vpo", "probe", "time", "eval", "data", "warmstart", "system")
"""Top-level metric prefixes; a metric key without one is filed under ``train/``."""
_SECRET_NAME = re.compile(r"(password|passwd|secret|token|credential|access_key|api_key)", re.I)
_TAG_KIND, _TAG_NAME, _TAG_HASH, _TAG_STAGE = "vpo.kind", "vpo.run_name", "vpo.config_hash", "vpo.stage"
_TAG_CHECKPOINT, _TAG_MODEL = "vpo.last_checkpoint", "vpo.model_version"


# -- where runs go ------------------------------------------------------------------------------
def _local_root(cfg: RunConfig) -> Path:
    """The storage root as a local directory (``./runs`` when the storage root is remote)."""
    root = cfg.storage.root
    if root.startswith("file://"):
        parsed = urlparse(root)
        return Path(parsed.netloc + parsed.path if parsed.netloc else parsed.path).resolve()
    if "://" not in root:
        return Path(root).resolve()
    return Path("runs").resolve()


def resolve_tracking_uri(cfg: RunConfig) -> str:
    """``cfg.tracking.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<root>/mlflow.db``."""
    if cfg.tracking.tracking_uri:
        return cfg.tracking.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{_local_root(cfg) / 'mlflow.db'}"


def artifact_location(cfg: RunConfig, tracking_uri: str) -> str | None:
    """Where a new experiment keeps artifacts: the server's choice for a tracking server,
    ``<storage root>/mlartifacts`` for a local store."""
    if tracking_uri.startswith(("http://", "https://", "databricks")):
        return None
    root = cfg.storage.root
    if root.startswith("s3://"):
        return f"{root.rstrip('/')}/mlartifacts"
    return (_local_root(cfg) / "mlartifacts").as_uri()


def configure_tracking(cfg: RunConfig) -> str:
    """Point mlflow at the run's tracking store and experiment; returns the experiment id."""
    uri = resolve_tracking_uri(cfg)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    if exp is None:
        try:
            exp_id = client.create_experiment(
                cfg.tracking.experiment, artifact_location=artifact_location(cfg, uri)
            )
        except mlflow.exceptions.MlflowException:  # created concurrently by another stage
            exp_id = client.get_experiment_by_name(cfg.tracking.experiment).experiment_id
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def run_url(run_id: str) -> str:
    """A link to the run: the UI URL for a tracking server, else the command that opens one."""
    uri = mlflow.get_tracking_uri()
    run = MlflowClient().get_run(run_id)
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
    return f"mlflow ui --backend-store-uri {uri}  (experiment {run.info.experiment_id}, run {run_id})"


# -- params -------------------------------------------------------------------------------------
def _redact_uri(value: str) -> str:
    """Drop the password of ``scheme://user:password@host`` URIs."""
    parsed = urlparse(value)
    if parsed.password:
        netloc = f"{parsed.username}:***@{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
        return urlunparse(parsed._replace(netloc=netloc))
    return value


def config_params(cfg: RunConfig) -> dict[str, str]:
    """The flattened config as MLflow params, secrets never included.

    Fields named like secrets are dropped; passwords embedded in URIs are masked.
    """
    params = {}
    for key, value in flatten_config(cfg).items():
        if _SECRET_NAME.search(key.rsplit(".", 1)[-1]):
            continue
        text = json.dumps(value) if isinstance(value, list | tuple | dict) else str(value)
        params[key] = _redact_uri(text) if "://" in text else text
    return params


def config_hash(cfg: RunConfig) -> str:
    """Content hash of everything that changes a run's results (tracking settings excluded)."""
    data = cfg.model_dump(mode="json", exclude={"tracking"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# -- run tree -----------------------------------------------------------------------------------
def _search(client: MlflowClient, exp_id: str, filters: Mapping[str, str]) -> list[Any]:
    clause = " and ".join(f"tags.`{k}` = '{v}'" for k, v in filters.items())
    return client.search_runs([exp_id], filter_string=clause, order_by=["attributes.start_time DESC"])


def stage_histories(client: MlflowClient, exp_id: str, run_name: str, stage: str,
                    keys: Mapping[str, str]) -> dict[str, list[float]]:
    """Metric histories (values in step order) of the newest ``stage`` run of pipeline ``run_name``:
    ``{alias: values}`` for ``keys = {alias: metric key}``; empty lists when absent."""
    runs = _search(client, exp_id, {_TAG_STAGE: stage, _TAG_NAME: run_name})
    if not runs:
        return {alias: [] for alias in keys}
    run_id = runs[0].info.run_id
    return {alias: [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
            for alias, key in keys.items()}


def start_pipeline_run(cfg: RunConfig) -> str:
    """The parent run of this pipeline run: the unfinished one with the same name and
    config hash when there is one (a resumed pipeline), else a new run. Returns its id."""
    exp_id = configure_tracking(cfg)
    client = MlflowClient()
    cfg_hash = config_hash(cfg)
    tags = {_TAG_KIND: "pipeline", _TAG_NAME: cfg.name, _TAG_HASH: cfg_hash}
    for run in _search(client, exp_id, tags):
        if run.info.status != RunStatus.to_string(RunStatus.FINISHED):
            client.update_run(run.info.run_id, status="RUNNING")
            return run.info.run_id
    run = client.create_run(exp_id, run_name=cfg.name, tags=tags)
    _log_params(client, run.info.run_id, config_params(cfg))
    return run.info.run_id


def start_stage_run(cfg: RunConfig, stage: str, parent_run_id: str) -> str:
    """The nested run of ``stage`` under ``parent_run_id`` (reused if it exists). Returns its id.

    Works from any process that can reach the tracking store: the parent id is the link.
    """
    exp_id = configure_tracking(cfg)
    client = MlflowClient()
    tags = {_TAG_KIND: "stage", _TAG_STAGE: stage, "mlflow.parentRunId": parent_run_id}
    existing = _search(client, exp_id, tags)
    if existing:
        run_id = existing[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id
    run = client.create_run(exp_id, run_name=f"{cfg.name}/{stage}", tags={**tags, _TAG_NAME: cfg.name})
    _log_params(client, run.info.run_id, config_params(cfg))
    return run.info.run_id


def _log_params(client: MlflowClient, run_id: str, params: Mapping[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), 100):  # the REST API caps a batch at 100 params
        client.log_batch(run_id, params=items[i:i + 100])


@contextmanager
def stage_run(cfg: RunConfig, stage: str, parent_run_id: str) -> Iterator[str]:
    """Attach to the stage's nested run for the duration of the block (system metrics on when
    ``cfg.tracking.system_metrics``); ends it FINISHED, FAILED on error, KILLED on interrupt."""
    run_id = start_stage_run(cfg, stage, parent_run_id)
    with attached_run(run_id, system_metrics=cfg.tracking.system_metrics):
        yield run_id


@contextmanager
def attached_run(run_id: str, *, system_metrics: bool = False) -> Iterator[str]:
    """Make ``run_id`` the active mlflow run; set its final status when the block exits.

    If ``run_id`` is already the active run (a helper called inside :func:`stage_run`),
    the block just runs in it and leaves its status alone.
    """
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        yield run_id
        return
    mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics)
    status = "FINISHED"
    try:
        yield run_id
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        mlflow.end_run(status=status)


def set_tags(run_id: str, tags: Mapping[str, str]) -> None:
    """Set string tags on a run."""
    client = MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def finish_run(run_id: str, status: str = "FINISHED") -> None:
    """Set a run's final status (``FINISHED``, ``FAILED``, ``KILLED``)."""
    MlflowClient().set_terminated(run_id, status=status)


# -- metrics --------------------------------------------------------------------------------------
def grouped_key(key: str) -> str:
    """``loss`` -> ``train/loss``; keys already under a known group are kept."""
    return key if key.split("/", 1)[0] in METRIC_GROUPS and "/" in key else f"train/{key}"


def last_logged_steps(run_id: str) -> dict[str, int]:
    """Largest logged step of every non-system metric of the run."""
    client = MlflowClient()
    last = {}
    for key in client.get_run(run_id).data.metrics:
        if not key.startswith("system/"):
            history = client.get_metric_history(run_id, key)
            if history:
                last[key] = max(m.step for m in history)
    return last


def last_logged_step(run_id: str) -> int:
    """Largest step of any non-system metric of the run; -1 when none."""
    return max(last_logged_steps(run_id).values(), default=-1)


def log_step_metrics(run_id: str, step: int, metrics: Mapping[str, float]) -> None:
    """Log one step's metrics (grouped keys) in one batch."""
    now = int(time.time() * 1000)
    batch = [Metric(grouped_key(k), float(v), now, step) for k, v in metrics.items()]
    client = MlflowClient()
    for i in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[i:i + 1000])


class MlflowTrainCallback:
    """TrainCallback that logs the trainer's reports to a (resumable) MLflow run.

    * ``on_step``: metrics under grouped prefixes at ``step``; the sampled rollouts the
      trainer passes (prompt, answers, reward matrix, advantage, ...) as
      ``rollouts/step-XXXXXX.jsonl``. A metric whose history already reaches ``step`` (a
      resumed training redoing the steps after its last checkpoint) is skipped, so every
      step of every metric is logged exactly once. Tracked per metric, because the warm
      start (``warmstart/*``) and RL steps number their steps independently.
    * ``on_checkpoint``: the checkpoint URI becomes the run's ``vpo.last_checkpoint`` tag.
    """

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.client = MlflowClient()
        self.logged_through = last_logged_steps(run_id)
        """Metric key -> last step already in MLflow (from an earlier attempt)."""
        self.skipped: list[tuple[str, int]] = []

    def on_step(self, step: int, metrics: dict[str, float], samples: list[dict] | None) -> None:
        fresh = {}
        for key, value in metrics.items():
            grouped = grouped_key(key)
            if step <= self.logged_through.get(grouped, -1):
                self.skipped.append((grouped, step))
            else:
                fresh[grouped] = value
        if not fresh:
            return
        log_step_metrics(self.run_id, step, fresh)
        if samples:
            lines = "\n".join(json.dumps(_jsonable(s), sort_keys=True) for s in samples)
            self.client.log_text(self.run_id, lines + "\n", f"rollouts/step-{step:06d}.jsonl")

    def on_checkpoint(self, step: int, uri: str) -> None:
        self.client.set_tag(self.run_id, _TAG_CHECKPOINT, uri)
        self.client.set_tag(self.run_id, "vpo.last_checkpoint_step", str(step))


def _jsonable(value: Any) -> Any:
    """Tensors / arrays / numpy scalars -> lists and floats, recursively."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# -- artifacts ------------------------------------------------------------------------------------
def log_json(run_id: str, data: Any, artifact_file: str) -> None:
    """Log ``data`` (a pydantic model or JSON-able value) as a JSON artifact."""
    if hasattr(data, "model_dump"):
        data = data.model_dump(mode="json")
    MlflowClient().log_text(run_id, json.dumps(_jsonable(data), indent=2, sort_keys=True), artifact_file)


def log_dataset_manifest(run_id: str, manifest: Any) -> None:
    """The dataset manifest as ``dataset/manifest.json`` plus its identity as tags."""
    log_json(run_id, manifest, "dataset/manifest.json")
    client = MlflowClient()
    client.set_tag(run_id, "vpo.dataset_hash", str(manifest.content_hash))
    client.set_tag(run_id, "vpo.dataset_uri", str(manifest.uri))


def log_files(run_id: str, paths: list[str | Path], artifact_path: str) -> None:
    """Upload local files (plots, tables) under ``artifact_path``; missing files are skipped."""
    client = MlflowClient()
    for path in paths:
        if Path(path).is_file():
            client.log_artifact(run_id, str(path), artifact_path)


def log_final_model(cfg: RunConfig, run_id: str, checkpoint_uri: str) -> int | None:
    """Log the checkpoint's model + tokenizer with ``mlflow.transformers`` in ``run_id`` and,
    when ``cfg.tracking.registered_model`` is set, register it and point the alias
    ``cfg.tracking.model_alias`` at the new version. Idempotent per run: a run that already
    logged its model returns the recorded version. Returns the version (None if unregistered)."""
    import mlflow.transformers

    from components.training import load_checkpoint

    client = MlflowClient()
    recorded = client.get_run(run_id).data.tags.get(_TAG_MODEL)
    if recorded is not None:
        return int(recorded) if recorded.isdigit() else None
    model, tokenizer, _state = load_checkpoint(checkpoint_uri)  # on CPU unless the config says otherwise
    name = cfg.tracking.registered_model
    with attached_run(run_id):
        info = mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tokenizer},
            name="model",
            task="text-generation",
            registered_model_name=name,
            # explicit: inference would import optional packages (torchvision) we do not ship
            pip_requirements=["torch", "transformers", "safetensors"],
        )
    version = int(info.registered_model_version) if name and info.registered_model_version else None
    if version is not None:
        client.set_registered_model_alias(name, cfg.tracking.model_alias, version)
    client.set_tag(run_id, _TAG_MODEL, str(version) if version is not None else "unregistered")
    return version
