"""`vpo compare`: methods side by side from a real local MLflow store populated here."""

from __future__ import annotations

import csv
import math

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from components.compare import (
    RunRecord,
    derived_metrics,
    group_runs,
    markdown_table,
    paired_difference,
    quarter_climb,
    summarise,
)
from flows.cli import app

MAX_K = 5


def test_summarise_mean_and_standard_error() -> None:
    s = summarise([1.0, 2.0, 3.0])
    assert s.mean == pytest.approx(2.0)
    assert s.stderr == pytest.approx(1.0 / math.sqrt(3))  # sample std 1, n = 3
    assert summarise([0.5]).stderr == 0.0
    with pytest.raises(ValueError):
        summarise([])


def test_paired_difference_pairs_runs_by_seed() -> None:
    def run(method, seed, value):
        return RunRecord(f"{method}{seed}", {"estimator.name": method, "task.name": "t", "training.seed": seed},
                         {"eval/best_at_1": value})

    vpo, grpo = group_runs([run("vpo", "1", 0.5), run("vpo", "2", 0.9), run("vpo", "3", 0.4),
                            run("grpo", "2", 0.6), run("grpo", "1", 0.3)])[::-1]
    d = paired_difference(vpo, grpo, "eval/best_at_1")  # seeds 1 and 2: differences 0.2 and 0.3
    assert d.n == 2 and d.mean == pytest.approx(0.25) and d.stderr == pytest.approx(0.05)
    assert paired_difference(vpo, grpo, "eval/missing") is None


def test_quarter_climb_and_the_derived_training_metrics() -> None:
    flat = [0.1, 0.2] * 8
    assert quarter_climb(flat).mean == pytest.approx(0.0)
    rising = [0.1, 0.2, 0.1, 0.2, 0.5, 0.5, 0.5, 0.5, 0.8, 0.9, 0.8, 0.9]
    climb = quarter_climb(rising)  # quarters of 3: (0.1, 0.2, 0.1) -> (0.9, 0.8, 0.9)
    assert climb.n == 3 and climb.mean == pytest.approx((2.6 - 0.4) / 3)
    assert climb.stderr == pytest.approx(math.hypot(summarise([0.1, 0.2, 0.1]).stderr, summarise([0.9, 0.8, 0.9]).stderr))
    with pytest.raises(ValueError):
        quarter_climb([1.0] * 7)
    derived = derived_metrics({"eval/best_at_1": 0.2, "eval/best_at_30": 0.5},
                              {"objective": rising, "probe/diversity": [2.0, 1.5, 1.0]})
    assert derived["eval/best_at_30_minus_1"] == pytest.approx(0.3)
    assert derived["train/climb_se"] == pytest.approx(climb.mean / climb.stderr)
    assert derived["probe/diversity_change"] == pytest.approx(-1.0)


def test_group_runs_skips_unevaluated_and_groups_by_task_and_method() -> None:
    runs = [
        RunRecord("a", {"estimator.name": "vpo", "task.name": "maze"}, {"eval/best_at_1": 0.5}),
        RunRecord("b", {"estimator.name": "vpo", "task.name": "maze"}, {"eval/best_at_1": 0.7}),
        RunRecord("c", {"estimator.name": "grpo", "task.name": "maze"}, {"eval/best_at_1": 0.6}),
        RunRecord("d", {"estimator.name": "grpo", "task.name": "maze"}, {"train/loss": 1.0}),
        RunRecord("e", {}, {"eval/best_at_1": 0.1}),
    ]
    groups = group_runs(runs)
    assert [(g.task, g.method, len(g.runs)) for g in groups] == [("maze", "grpo", 1), ("maze", "vpo", 2)]
    table = markdown_table(groups)
    assert "| maze | vpo | 2 | 0.600 ± 0.100 |" in table


def _populate(uri: str, experiment: str) -> dict[str, list[float]]:
    """2 methods x 3 seeds of evaluate-stage runs, plus runs compare must ignore."""
    client = MlflowClient(uri)
    exp_id = client.create_experiment(experiment)
    best30 = {"vpo": [], "grpo": []}
    for method, base in (("vpo", 0.5), ("grpo", 0.4)):
        for seed in range(3):
            run = client.create_run(exp_id, run_name=f"{method}-s{seed}/evaluate",
                                    tags={"vpo.kind": "stage", "vpo.stage": "evaluate"})
            rid = run.info.run_id
            for key, value in {"estimator.name": method, "task.name": "maze", "training.seed": str(seed)}.items():
                client.log_param(rid, key, value)
            for k in range(1, MAX_K + 1):
                value = base + 0.02 * k * (2 if method == "vpo" else 1) + 0.01 * seed
                client.log_metric(rid, f"eval/best_at_{k}", value)
                client.log_metric(rid, f"eval/pass_at_{k}/candidate", value / 2)
            client.log_metric(rid, "eval/diversity", 1.0 if method == "vpo" else 0.01)
            best30[method].append(base + 0.02 * MAX_K * (2 if method == "vpo" else 1) + 0.01 * seed)
            client.set_terminated(rid, "FINISHED")
    # a training stage run and an unfinished run: neither is in the comparison
    train = client.create_run(exp_id, run_name="vpo-s0/train")
    client.log_param(train.info.run_id, "estimator.name", "vpo")
    client.log_metric(train.info.run_id, "train/loss", 1.0)
    client.set_terminated(train.info.run_id, "FINISHED")
    running = client.create_run(exp_id, run_name="half")
    client.log_param(running.info.run_id, "estimator.name", "vpo")
    client.log_metric(running.info.run_id, "eval/best_at_1", 99.0)
    return best30


def test_vpo_compare_reads_mlflow_writes_files_and_logs(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    best = _populate(uri, "exp-a")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["compare", "exp-a", "--tracking-uri", uri, "--out", str(out)])
    assert result.exit_code == 0, result.output
    folder = out / "exp-a"
    rows = list(csv.DictReader((folder / "comparison.csv").open()))
    by_key = {(r["method"], r["metric"]): r for r in rows}
    vpo_last = by_key[("vpo", f"eval/best_at_{MAX_K}")]
    assert float(vpo_last["mean"]) == pytest.approx(sum(best["vpo"]) / 3, rel=1e-5)
    assert float(vpo_last["stderr"]) == pytest.approx(summarise(best["vpo"]).stderr, rel=1e-4)
    assert vpo_last["n"] == "3"
    assert by_key[("vpo", "eval/best_at_1")]["n"] == "3"  # the unfinished run (99.0) is not counted
    assert float(by_key[("vpo", "eval/best_at_1")]["mean"]) < 1.0
    assert (folder / "best_at_k_maze.png").stat().st_size > 1000
    assert (folder / "pass_at_k_maze.png").stat().st_size > 1000
    markdown = (folder / "comparison.md").read_text()
    assert "| maze | vpo | 3 |" in markdown and "| maze | grpo | 3 |" in markdown
    assert "vpo" in result.output and "±" in result.output  # the rich table
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("exp-a")
    [logged] = client.search_runs([exp.experiment_id], filter_string="tags.`vpo.kind` = 'comparison'")
    names = {a.path for a in client.list_artifacts(logged.info.run_id, "comparison")}
    assert {"comparison/comparison.md", "comparison/comparison.csv", "comparison/best_at_k_maze.png"} <= names
    # a second compare ignores the comparison run it logged before
    again = CliRunner().invoke(app, ["compare", "exp-a", "--tracking-uri", uri, "--out", str(out), "--no-log"])
    assert again.exit_code == 0, again.output


def test_vpo_compare_unknown_experiment_fails_clearly(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("other")
    result = CliRunner().invoke(app, ["compare", "nope", "--tracking-uri", uri, "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "no experiment 'nope'" in result.output
