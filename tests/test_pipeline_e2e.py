"""End to end through the real stack on loopback: a moto S3 server, ``mlflow server`` (SQLite
backend, artifacts proxied to S3) and ``prefect server``; the pipeline is run with ``vpo run``,
killed mid-training, run again, and everything is checked through the public APIs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from loopback_servers import VENV_BIN, free_port, run_moto, stop, wait_http

pytest.importorskip("components.datasets", reason="the dataset stage is not there yet")
pytest.importorskip("components.sandbox", reason="the sandbox package is not there yet")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "vpo-e2e"
NAME = "e2e"
EXPERIMENT = "vpo-e2e"
MODEL = "vpo-e2e-model"
STEPS = 4
PIPELINE_SET = [
    f"name={NAME}", f"storage.root=s3://{BUCKET}/runs", "storage.multipart_threshold_mb=5",
    f"tracking.experiment={EXPERIMENT}", f"tracking.registered_model={MODEL}",
    "tracking.log_rollouts_every=2", "tracking.system_metrics=true",
    "task.name=synthetic_code", "task.num_answers=2", "task.train_size=8", "task.test_size=2",
    "estimator.name=vpo", "estimator.num_weights=16",
    "model.tiny.hidden_size=32", "model.tiny.intermediate_size=64", "model.tiny.num_hidden_layers=1",
    "model.tiny.num_attention_heads=2", "model.tiny.num_key_value_heads=1",
    "rollout.group_size=2", "rollout.max_new_tokens=24",
    f"training.steps={STEPS}", "training.prompts_per_step=2", "training.checkpoint_every=2",
    "training.warmup_steps=2", "training.warmup_batch_size=4", "training.micro_batch_size=4",
    "evaluation.set_generations=2", "evaluation.single_samples=4", "evaluation.max_k=4",
    "sandbox.backend=process", "sandbox.workers=1",
]


@dataclass
class Stack:
    env: dict[str, str]
    """Environment for processes that talk to the stack."""
    mlflow_uri: str
    prefect_api: str
    tmp: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stack")
    with run_moto(tmp) as s3:
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("PREFECT_", "MLFLOW_", "AWS_", "VPO_"))}
        base.update(s3.env)
        env_s3 = dict(base)
        s3_client(s3.endpoint).create_bucket(Bucket=BUCKET)
        mlflow_port, prefect_port = free_port(), free_port()
        mlflow_log = open(tmp / "mlflow.log", "wb")
        mlflow_proc = subprocess.Popen(
            [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
             "--artifacts-destination", f"s3://{BUCKET}/mlflow"],
            env=env_s3, stdout=mlflow_log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        prefect_env = {**base, "PREFECT_HOME": str(tmp / "prefect-server"),
                       "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false"}
        prefect_log = open(tmp / "prefect.log", "wb")
        prefect_proc = subprocess.Popen(
            [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
            env=prefect_env, stdout=prefect_log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            wait_http(f"http://127.0.0.1:{mlflow_port}/health", mlflow_proc, timeout_s=180)
            wait_http(f"http://127.0.0.1:{prefect_port}/api/health", prefect_proc, timeout_s=180)
            api = f"http://127.0.0.1:{prefect_port}/api"
            env = {**base, "PREFECT_API_URL": api, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
                   "PREFECT_HOME": str(tmp / "prefect-client"), "PREFECT_LOGGING_LEVEL": "INFO"}
            yield Stack(env=env, mlflow_uri=env["MLFLOW_TRACKING_URI"], prefect_api=api, tmp=tmp)
        finally:
            stop(prefect_proc)
            stop(mlflow_proc)
            mlflow_log.close()
            prefect_log.close()


def vpo(stack: Stack, *args: str, **kwargs) -> subprocess.Popen:
    log = open(stack.tmp / f"vpo-{args[0]}-{time.monotonic_ns()}.log", "wb")
    return subprocess.Popen([str(VENV_BIN / "vpo"), *args], cwd=stack.tmp, env=stack.env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kwargs)


def s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def s3_keys(stack: Stack, prefix: str) -> list[str]:
    client = s3_client(stack.env["AWS_ENDPOINT_URL"])
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def tail(stack: Stack) -> str:
    logs = sorted(stack.tmp.glob("vpo-*.log"))
    return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in logs)


@pytest.fixture(scope="module")
def pipeline_killed_and_resumed(stack):
    """Run the pipeline, SIGKILL it once the first RL checkpoint is in S3, run it again."""
    config = stack.tmp / "e2e.yaml"
    config.write_text("{}\n")
    args = ["run", str(config), *[a for s in PIPELINE_SET for a in ("--set", s)]]
    first = vpo(stack, *args)
    checkpoint_marker = f"runs/{NAME}/checkpoints/step-000002/"
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        if any(k.startswith(checkpoint_marker) and k.endswith("COMPLETE") for k in s3_keys(stack, checkpoint_marker)):
            break
        assert first.poll() is None, f"the first run ended before its first checkpoint\n{tail(stack)}"
        time.sleep(0.2)
    else:
        first.kill()
        pytest.fail(f"no checkpoint after 400 s\n{tail(stack)}")
    was_running = first.poll() is None
    os.killpg(first.pid, signal.SIGKILL)
    killed_at = time.time()
    first.wait()
    second = vpo(stack, *args)
    rc = second.wait(timeout=500)
    assert rc == 0, tail(stack)
    return {"killed_mid_training": was_running, "killed_at": killed_at}


def test_resume_logs_every_step_exactly_once(stack, pipeline_killed_and_resumed):
    import mlflow

    assert pipeline_killed_and_resumed["killed_mid_training"]
    # resumed, not restarted: the checkpoint written before the kill was never rewritten
    head = s3_client(stack.env["AWS_ENDPOINT_URL"]).head_object(
        Bucket=BUCKET, Key=f"runs/{NAME}/checkpoints/step-000002/COMPLETE")
    assert head["LastModified"].timestamp() < pipeline_killed_and_resumed["killed_at"] + 1
    mlflow.set_tracking_uri(stack.mlflow_uri)
    client = mlflow.MlflowClient()
    runs = mlflow.search_runs(experiment_names=[EXPERIMENT], output_format="list")
    parents = [r for r in runs if r.data.tags.get("vpo.kind") == "pipeline"]
    assert len(parents) == 1, "the resumed pipeline must continue the same MLflow parent run"
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    stages = {r.data.tags["vpo.stage"]: r for r in runs
              if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(stages) == {"prep", "train", "evaluate"}
    train = stages["train"]
    rl_keys = [k for k in train.data.metrics if not k.startswith(("system/", "warmstart/"))]
    assert rl_keys, train.data.metrics
    for key in rl_keys:
        steps = [m.step for m in client.get_metric_history(train.info.run_id, key)]
        assert sorted(steps) == list(range(1, STEPS + 1)), (key, steps)
    assert any(k.startswith("reward/") for k in rl_keys)
    assert any(k.startswith("vpo/") for k in rl_keys)
    assert train.data.tags["vpo.last_checkpoint"].endswith(f"step-{STEPS:06d}")


def test_runs_artifacts_model_and_checkpoints_are_where_they_belong(stack, pipeline_killed_and_resumed):
    import mlflow

    mlflow.set_tracking_uri(stack.mlflow_uri)
    client = mlflow.MlflowClient()
    runs = mlflow.search_runs(experiment_names=[EXPERIMENT], output_format="list")
    stages = {r.data.tags.get("vpo.stage"): r for r in runs}
    params = stages["train"].data.params
    assert params["estimator.name"] == "vpo" and params["training.steps"] == str(STEPS)
    assert not any("secret" in k.lower() or "testing" == v for k, v in params.items())
    evaluate = stages["evaluate"]
    assert any(k.startswith("eval/best_at_") for k in evaluate.data.metrics)
    # artifacts, through MLflow and in the S3 bucket behind the server
    prep_art = [a.path for a in client.list_artifacts(stages["prep"].info.run_id, "dataset")]
    assert prep_art == ["dataset/manifest.json"]
    rollouts = [a.path for a in client.list_artifacts(stages["train"].info.run_id, "rollouts")]
    assert "rollouts/step-000002.jsonl" in rollouts
    sample = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=stages["train"].info.run_id, artifact_path=rollouts[0])).read_text().splitlines()[0])
    assert sample
    plots = [a.path for a in client.list_artifacts(evaluate.info.run_id, "plots")]
    assert any(p.endswith(".png") for p in plots)
    mlflow_keys = s3_keys(stack, "mlflow/")
    assert any(k.endswith("dataset/manifest.json") for k in mlflow_keys)
    assert any(k.endswith("model.safetensors") for k in mlflow_keys), "the logged model lives in S3"
    # registered model with its alias
    version = client.get_model_version_by_alias(MODEL, "candidate")
    assert version.run_id == stages["train"].info.run_id
    # checkpoints and the dataset in the run's storage root
    run_keys = s3_keys(stack, f"runs/{NAME}/")
    for step in range(2, STEPS + 1, 2):
        assert f"runs/{NAME}/checkpoints/step-{step:06d}/COMPLETE" in run_keys
    datasets = s3_keys(stack, "runs/datasets/")
    assert any(k.endswith("/train.parquet") for k in datasets), "the dataset lives in the storage root"


def prefect_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    env = {**stack.env, "COLUMNS": "300"}  # rich tables are cut to the terminal width
    return subprocess.run([str(VENV_BIN / "prefect"), *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def served(stack, pipeline_killed_and_resumed):
    """``vpo serve`` against the Prefect server: registers the deployments and runs their flow runs."""
    proc = vpo(stack, "serve", "--set", f"name={NAME}")
    deadline = time.monotonic() + 180
    while "vpo-train/vpo-train" not in prefect_cli(stack, "deployment", "ls").stdout:
        assert proc.poll() is None, tail(stack)
        assert time.monotonic() < deadline, f"vpo serve registered nothing\n{tail(stack)}"
        time.sleep(2)
    yield proc
    stop(proc)


def test_deployments_are_served_with_a_paused_nightly_schedule(stack, served):
    out = prefect_cli(stack, "deployment", "ls")
    assert out.returncode == 0, out.stderr
    for name in ("vpo-pipeline/vpo-pipeline", "vpo-train/vpo-train", "vpo-prep/vpo-prep",
                 "vpo-evaluate/vpo-evaluate", "vpo-demo/vpo-demo"):
        assert name in out.stdout, out.stdout
    inspect = prefect_cli(stack, "deployment", "inspect", "vpo-pipeline/vpo-pipeline").stdout
    assert "0 2 * * *" in inspect
    assert "'active': False" in inspect, inspect
    runs = prefect_cli(stack, "flow-run", "ls", "--limit", "50").stdout
    for flow_name in ("vpo-pipeline", "vpo-prep", "vpo-train"):  # the pipeline ran through this server
        assert flow_name in runs, runs


def test_train_stage_runs_as_its_own_deployment(stack, served):
    import mlflow

    remote = "e2e-remote"
    overrides = [s for s in PIPELINE_SET if not s.startswith(("name=", "training.steps=", "training.warmup_steps="))]
    overrides += [f"name={remote}", "training.steps=2", "training.warmup_steps=0"]
    config = stack.tmp / "e2e.yaml"
    proc = vpo(stack, "run", str(config), *[a for s in overrides for a in ("--set", s)],
               "--train-deployment", "vpo-train/vpo-train")
    assert proc.wait(timeout=400) == 0, tail(stack)
    mlflow.set_tracking_uri(stack.mlflow_uri)
    runs = mlflow.search_runs(experiment_names=[EXPERIMENT], output_format="list")
    parent = next(r for r in runs if r.data.tags.get("vpo.kind") == "pipeline" and r.info.run_name == remote)
    assert parent.info.status == "FINISHED"
    children = {r.data.tags["vpo.stage"]: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"prep", "train", "evaluate"}
    train = children["train"]
    assert train.data.tags.get("prefect.deployment") == "vpo-train", "trained by the served deployment"
    assert "prefect.deployment" not in children["prep"].data.tags
    history = mlflow.MlflowClient().get_metric_history(train.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2]
