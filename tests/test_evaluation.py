"""Evaluation: pool metrics on hand-built pools, plots, and the whole stage on the tiny model."""

from __future__ import annotations

import json
import math

import pytest
import torch

from components.evaluation import Pool, plot_pareto_projections, pool_metrics

OBJECTIVES = ("a", "b")
WEIGHTS = torch.tensor([0.5, 0.5])


def _pool() -> Pool:
    """2 prompts x 2 generations x m = 2 answers, k = 2."""
    rewards = torch.tensor(
        [
            # prompt 0: generation 0 = [1,0], [0,1]; generation 1 = [1,1] (correct), invalid
            [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]],
            # prompt 1: every candidate [0.5, 0], one invalid
            [[0.5, 0.0], [0.5, 0.0], [0.0, 0.0], [0.5, 0.0]],
        ]
    )
    valid = torch.tensor([[True, True, True, False], [True, True, False, True]])
    return Pool(rewards=rewards, valid=valid, correct=(rewards == 1).all(-1), answers_per_generation=2)


def test_pool_metrics_by_hand() -> None:
    flat, curves, per_prompt = pool_metrics(_pool(), WEIGHTS, max_k=30, objective_names=OBJECTIVES,
                                            generator=torch.Generator().manual_seed(0))
    # best@pool: prompt 0 reaches 1.0, prompt 1 reaches 0.25
    assert flat["eval/best_at_4"] == pytest.approx((1.0 + 0.25) / 2)
    assert len(curves["best_at_k"]) == 4  # k capped at the pool size
    assert curves["best_at_k"] == sorted(curves["best_at_k"])  # a running max never drops
    # pass@1 per candidate: prompt 0 has 1 correct of 4, prompt 1 none
    assert flat["eval/pass_at_1/candidate"] == pytest.approx(0.25 / 2)
    assert flat["eval/pass_at_4/candidate"] == pytest.approx(0.5)
    # per generation: prompt 0 has 1 correct generation of 2
    assert flat["eval/pass_at_1/generation"] == pytest.approx(0.5 / 2)
    assert "eval/pass_at_3/generation" not in flat
    # diversity over valid candidates only: prompt 0 pairs (L1) 2, 1, 1 -> 4/3; prompt 1 all equal -> 0
    assert flat["eval/diversity"] == pytest.approx((4 / 3) / 2)
    assert flat["eval/union_coverage"] == pytest.approx((2.0 + 0.5) / 2)
    # prompt 0: [1,1] dominates the others -> front size 1 of 3 distinct; prompt 1: 1 of 1
    assert flat["eval/pareto/size"] == pytest.approx(1.0)
    assert flat["eval/pareto/fraction"] == pytest.approx((1 / 3 + 1) / 2)
    assert flat["eval/valid_fraction"] == pytest.approx(6 / 8)
    # objective a equals 1 for 2 of 8 candidates, b for 2 of 8
    assert flat["eval/objective/a/pass_rate"] == pytest.approx(2 / 8)
    assert flat["eval/objective/b/pass_rate"] == pytest.approx(2 / 8)
    assert per_prompt["best"].tolist() == [1.0, 0.25]
    assert per_prompt["solved"].tolist() == [True, False]
    assert all(math.isfinite(v) for v in flat.values())
    assert all("@" not in key for key in flat)  # MLflow rejects '@' in metric names


def test_best_at_k_is_reproducible_and_averages_over_shuffles() -> None:
    pool = _pool()
    first = pool_metrics(pool, WEIGHTS, max_k=4, objective_names=OBJECTIVES,
                         generator=torch.Generator().manual_seed(7))[1]["best_at_k"]
    again = pool_metrics(pool, WEIGHTS, max_k=4, objective_names=OBJECTIVES,
                         generator=torch.Generator().manual_seed(7))[1]["best_at_k"]
    assert first == again


def test_pareto_projection_plot_is_a_png(tmp_path) -> None:
    path = plot_pareto_projections(tmp_path / "p.png", _pool(), OBJECTIVES, title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _tiny_overrides(tmp_path, method: str, m: int) -> list[str]:
    return [
        "name=eval-test", "task.name=maze", f"task.num_answers={m}", "task.train_size=4", "task.test_size=3",
        f"estimator.name={method}", f"storage.root=file://{tmp_path}/store",
        f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db", "tracking.experiment=eval-test",
        "tracking.system_metrics=false", "training.steps=0", "training.warmup_steps=0",
        "model.tiny.hidden_size=32", "model.tiny.intermediate_size=64", "model.tiny.num_hidden_layers=1",
        "model.tiny.num_attention_heads=2", "model.tiny.num_key_value_heads=1",
        "rollout.max_new_tokens=24", "evaluation.set_generations=2", "evaluation.single_samples=5",
        "evaluation.max_k=30",
    ]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "m", "pool_size", "generations"), [("vpo", 3, 6, 2), ("grpo", 1, 5, 5)])
def test_evaluate_tiny_model_end_to_end(tmp_path, method, m, pool_size, generations) -> None:
    """prep -> initial checkpoint -> `vpo evaluate` (real tiny model, maze, MLflow sqlite store)."""
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from components.config import load_config
    from components.datasets import prepare_dataset
    from components.training import train
    from flows.cli import app

    overrides = _tiny_overrides(tmp_path, method, m)
    cfg = load_config(None, overrides)
    checkpoint = train(cfg, dataset=prepare_dataset(cfg)).checkpoint_uri
    config_file = tmp_path / "cfg.yaml"
    config_file.write_text("{}\n")
    out = tmp_path / "eval"
    args = ["evaluate", str(config_file), "--checkpoint", checkpoint, "--out", str(out)]
    result = CliRunner().invoke(app, [*args, *sum((["--set", o] for o in overrides), [])])
    assert result.exit_code == 0, result.output

    report = json.loads((out / "report.json").read_text())
    assert report["pool_size"] == pool_size and report["num_prompts"] == 3
    assert len(report["best_at_k"]) == pool_size  # k capped at the pool size
    assert len(report["pass_at_k_generation"]) == generations
    assert set(report["per_prompt_best"]) == set(report["per_prompt_solved"])
    for name in ("best_at_k", "pass_at_k", "diversity", "pareto"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    metrics = report["metrics"]
    assert 0.0 <= metrics["eval/best_at_1"] <= metrics[f"eval/best_at_{pool_size}"] <= 1.0
    assert {f"eval/objective/{o}/pass_rate" for o in ("completion", "gold", "diamond", "safety")} <= set(metrics)

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("eval-test")
    [run] = client.search_runs([exp.experiment_id], filter_string="tags.`vpo.stage` = 'evaluate'")
    assert run.data.params["estimator.name"] == method
    assert run.data.metrics["eval/best_at_1"] == pytest.approx(metrics["eval/best_at_1"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/best_at_k.png" in artifacts


def test_experiment_shares_one_warm_start_across_seeds_and_set_methods(tmp_path) -> None:
    from components.config import load_config
    from components.storage import open_store
    from components.training.checkpoint import checkpoint_store
    from flows.cli.evaluate import share_warmstart, warmstart_key

    root = f"storage.root=file://{tmp_path}"
    vpo = load_config("configs/experiments/maze_vpo.yaml", [root, "name=a-s0"])
    rlvr = load_config("configs/experiments/maze_multi_rlvr.yaml", [root, "name=b-s1", "training.seed=1"])
    grpo = load_config("configs/experiments/maze_grpo.yaml", [root, "name=c-s0"])
    assert warmstart_key(vpo) == warmstart_key(rlvr) != warmstart_key(grpo)  # m = 3 vs m = 1
    store = checkpoint_store(vpo)
    store.write_text("warmstart/model.safetensors", "weights")
    store.write_text("warmstart/COMPLETE", "{}")
    assert share_warmstart(vpo) is None  # cached after a's training
    assert open_store(f"file://{tmp_path}").child("warmstarts").exists(f"{warmstart_key(vpo)}/COMPLETE")
    assert share_warmstart(rlvr).endswith(warmstart_key(vpo))  # copied into b before its training
    assert checkpoint_store(rlvr).read_text("warmstart/model.safetensors") == "weights"
    assert share_warmstart(grpo) is None and not checkpoint_store(grpo).exists("warmstart/COMPLETE")
