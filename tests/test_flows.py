"""Pure parts of the flows: prep cache key, retry classification, environment, variants, reporting."""

from __future__ import annotations

import pytest
from botocore.exceptions import EndpointConnectionError

from components.config import load_config
from components.storage import ChecksumError, StorageError
from flows.pipeline import method_variant
from flows.prep import prep_cache_key
from flows.reporting import artifact_key, headline
from flows.runtime import apply_environment, is_transient


def key(cfg) -> str:
    return prep_cache_key(None, {"cfg": cfg})


def test_prep_cache_key_follows_dataset_inputs_only(tmp_path):
    base = load_config(None, [])
    assert key(base) == key(load_config(None, []))
    assert key(base) == key(load_config(None, ["training.steps=99", "estimator.num_weights=7"]))
    assert key(base) != key(load_config(None, ["task.train_size=17"]))
    assert key(base) != key(load_config(None, ["storage.root=file:///elsewhere"]))
    source = tmp_path / "problems.jsonl"
    source.write_text('{"id": 1}\n')
    with_file = load_config(None, ["task.name=livecodebench", f"task.source={source}"])
    first = key(with_file)
    source.write_text('{"id": 2}\n')  # same path, new content: a new dataset
    assert key(with_file) != first


def test_only_transient_failures_are_retried():
    assert is_transient(ConnectionResetError("reset"))
    assert is_transient(StorageError("cannot write"))
    assert is_transient(EndpointConnectionError(endpoint_url="http://127.0.0.1:9"))
    assert not is_transient(ChecksumError("corrupt"))
    assert not is_transient(ValueError("bad shape"))
    assert not is_transient(KeyError("programs"))


def test_storage_root_from_environment(monkeypatch):
    cfg = load_config(None, [])
    monkeypatch.delenv("VPO_STORAGE_ROOT", raising=False)
    assert apply_environment(cfg) is cfg
    monkeypatch.setenv("VPO_STORAGE_ROOT", "s3://bucket/runs")
    assert apply_environment(cfg).storage.root == "s3://bucket/runs"
    assert cfg.storage.root == "file://./runs", "the caller's config is not modified"


@pytest.mark.parametrize(("method", "m"), [("vpo", 3), ("grpo", 1), ("multi_rlvr", 3), ("max_at_k", 1)])
def test_method_variants_are_valid_configs(method, m):
    cfg = load_config(None, ["task.num_answers=3", "tracking.registered_model=demo"])
    variant = method_variant(cfg, method)
    assert variant.name == f"demo-{method}"
    assert variant.estimator.name == method and variant.task.num_answers == m
    assert variant.tracking.registered_model == f"demo-{method}"
    # matched compute: as many answers and about as many new tokens per prompt for every method
    answers = variant.rollout.group_size * variant.task.num_answers
    assert answers == cfg.rollout.group_size * 3
    assert abs(variant.rollout.max_new_tokens * variant.rollout.group_size
               - cfg.rollout.max_new_tokens * cfg.rollout.group_size) <= variant.rollout.group_size


def test_headline_thins_k_curves():
    metrics = {f"eval/best_at_{k}": k / 30 for k in range(1, 31)} | {"eval/diversity": 0.5, "vpo/x": 1.0}
    assert set(headline(metrics)) == {"eval/best_at_1", "eval/best_at_5", "eval/best_at_10",
                                      "eval/best_at_30", "eval/diversity"}
    assert artifact_key("Demo_VPO run/1") == "demo-vpo-run-1"
