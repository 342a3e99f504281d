"""MLflow tracking helpers against a real local MLflow store (SQLite + file artifacts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from components import tracking
from components.config import load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tracking_db(tmp_path_factory) -> str:
    """One SQLite store for the module (creating its schema takes seconds); one experiment per test."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture
def cfg(tmp_path, monkeypatch, tracking_db, request):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return load_config(None, [f"storage.root=file://{tmp_path}/runs", "name=unit",
                              f"tracking.tracking_uri={tracking_db}",
                              f"tracking.experiment=unit-{request.node.name}", "tracking.system_metrics=false"])


def test_tracking_uri_precedence(cfg, tmp_path, monkeypatch):
    cfg.tracking.tracking_uri = None
    assert tracking.resolve_tracking_uri(cfg) == f"sqlite:///{tmp_path}/runs/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert tracking.resolve_tracking_uri(cfg) == "http://127.0.0.1:9"
    cfg.tracking.tracking_uri = "sqlite:////elsewhere.db"
    assert tracking.resolve_tracking_uri(cfg) == "sqlite:////elsewhere.db"


def test_params_are_flat_config_without_secrets(cfg):
    cfg.tracking.tracking_uri = "http://alice:hunter2@127.0.0.1:5000"
    params = tracking.config_params(cfg)
    assert params["training.lr"] == str(cfg.training.lr)
    assert params["model.tiny.num_key_value_heads"] == "2"  # "key" alone is not a secret
    assert params["training.betas"] == "[0.9, 0.999]"
    assert "hunter2" not in json.dumps(params)
    assert params["tracking.tracking_uri"] == "http://alice:***@127.0.0.1:5000"


def test_pipeline_and_stage_runs_are_nested_and_resumable(cfg):
    parent = tracking.start_pipeline_run(cfg)
    assert tracking.start_pipeline_run(cfg) == parent, "an unfinished pipeline run is reused"
    with tracking.stage_run(cfg, "prep", parent) as prep_id:
        assert mlflow.active_run().info.run_id == prep_id
    assert tracking.start_stage_run(cfg, "prep", parent) == prep_id
    runs = mlflow.search_runs(experiment_names=[cfg.tracking.experiment], output_format="list")
    by_id = {r.info.run_id: r for r in runs}
    assert by_id[prep_id].data.tags["mlflow.parentRunId"] == parent
    assert by_id[parent].data.params["task.name"] == "synthetic_code"
    tracking.finish_run(parent)
    assert tracking.start_pipeline_run(cfg) != parent, "a finished pipeline run is never reopened"
    cfg.training.steps += 1
    assert tracking.config_hash(cfg) != tracking.config_hash(load_config(None, []))


def test_stage_run_marks_failure(cfg):
    parent = tracking.start_pipeline_run(cfg)
    with pytest.raises(RuntimeError), tracking.stage_run(cfg, "evaluate", parent) as run_id:
        raise RuntimeError("boom")
    assert MlflowClient().get_run(run_id).info.status == "FAILED"


ATTACH = textwrap.dedent("""
    import sys
    from components import tracking
    from components.config import load_config
    cfg = load_config(None, sys.argv[2:])
    with tracking.stage_run(cfg, "train", sys.argv[1]) as run_id:
        tracking.log_step_metrics(run_id, 0, {"loss": 1.5})
    print(run_id)
""")


def test_stage_run_from_another_process_joins_the_tree(cfg, tmp_path):
    parent = tracking.start_pipeline_run(cfg)
    out = subprocess.run(
        [sys.executable, "-c", ATTACH, parent, f"storage.root=file://{tmp_path}/runs", "name=unit",
         f"tracking.tracking_uri={cfg.tracking.tracking_uri}",
         f"tracking.experiment={cfg.tracking.experiment}", "tracking.system_metrics=false"],
        cwd=ROOT, env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        capture_output=True, text=True, check=True,
    )
    child = out.stdout.strip().splitlines()[-1]
    run = MlflowClient().get_run(child)
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.metrics["train/loss"] == 1.5


def test_train_callback_logs_each_step_once_across_a_resume(cfg):
    parent = tracking.start_pipeline_run(cfg)
    run_id = tracking.start_stage_run(cfg, "train", parent)
    cb = tracking.MlflowTrainCallback(run_id)
    sample = [{"prompt": "p", "answers": ["a", "b"], "rewards": [[1.0, 0.0], [0.0, 1.0]], "advantage": 0.5}]
    for step in range(1, 6):
        cb.on_step(step, {"reward/test_0/mean": step / 10, "loss": -step, "vpo/raw_mean": 0.1},
                   sample if step % 2 == 0 else None)
        if step == 3:
            cb.on_checkpoint(3, "file:///ckpt/step-000003")
    # The process dies after step 5; training resumes from the step-3 checkpoint and redoes 4, 5.
    resumed = tracking.MlflowTrainCallback(run_id)
    assert resumed.logged_through["train/loss"] == 5
    for step in range(4, 8):
        resumed.on_step(step, {"reward/test_0/mean": 0.0, "loss": 0.0, "vpo/raw_mean": 0.0}, None)
    assert sorted({s for _, s in resumed.skipped}) == [4, 5]
    client = MlflowClient()
    for key in ("reward/test_0/mean", "train/loss", "vpo/raw_mean"):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert sorted(steps) == [1, 2, 3, 4, 5, 6, 7], key
    arts = [a.path for a in client.list_artifacts(run_id, "rollouts")]
    assert arts == ["rollouts/step-000002.jsonl", "rollouts/step-000004.jsonl"]
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="rollouts/step-000002.jsonl")
    assert json.loads(Path(local).read_text().splitlines()[0])["advantage"] == 0.5
    assert client.get_run(run_id).data.tags["vpo.last_checkpoint"] == "file:///ckpt/step-000003"


def test_warm_start_and_rl_steps_are_tracked_separately(cfg):
    parent = tracking.start_pipeline_run(cfg)
    run_id = tracking.start_stage_run(cfg, "train", parent)
    cb = tracking.MlflowTrainCallback(run_id)
    for step in range(1, 4):
        cb.on_step(step, {"warmstart/loss": 1.0 / step}, None)
    tracking.MlflowTrainCallback(run_id).on_step(1, {"loss": 0.5}, None)  # RL step 1 after a restart
    history = MlflowClient().get_metric_history(run_id, "train/loss")
    assert [m.step for m in history] == [1]


def test_grouped_keys():
    assert tracking.grouped_key("loss") == "train/loss"
    assert tracking.grouped_key("vpo/raw_std") == "vpo/raw_std"
    assert tracking.grouped_key("reward/t0/mean") == "reward/t0/mean"
    assert tracking.grouped_key("kl/mean") == "train/kl/mean"


def test_final_model_is_logged_registered_and_aliased_once(cfg):
    from components.policy.tiny import build_char_tokenizer, build_tiny_model
    from components.training.checkpoint import CheckpointState, checkpoint_store, save_checkpoint

    cfg.model.tiny.hidden_size, cfg.model.tiny.intermediate_size = 16, 32
    cfg.tracking.registered_model = "unit-model"  # the only test that registers a model
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(cfg.model.tiny, tokenizer, seed=0)
    uri = save_checkpoint(checkpoint_store(cfg), "step-000001", model, tokenizer,
                          CheckpointState(step=1, config=cfg.model_dump(mode="json")))
    parent = tracking.start_pipeline_run(cfg)
    with tracking.stage_run(cfg, "train", parent) as run_id:  # called inside the active stage run
        version = tracking.log_final_model(cfg, run_id, uri)
    assert version == 1
    assert tracking.log_final_model(cfg, run_id, uri) == 1, "a second call logs nothing new"
    client = MlflowClient()
    aliased = client.get_model_version_by_alias("unit-model", "candidate")
    assert int(aliased.version) == 1 and aliased.run_id == run_id
    assert len(client.search_model_versions("name='unit-model'")) == 1
