"""``vpo evaluate``, ``vpo compare``, ``vpo evolve`` and ``vpo experiment``.

* ``vpo evaluate CONFIG [--checkpoint URI]``: evaluation pools and search metrics of a
  checkpoint (default: the run's latest), logged to the run's MLflow ``evaluate`` stage.
* ``vpo compare EXPERIMENT``: methods side by side from what MLflow holds.
* ``vpo evolve CONFIG --checkpoint A --checkpoint B``: OpenEvolve solved-vs-iterations
  per checkpoint on the held-out problems every checkpoint leaves unsolved at best@30.
* ``vpo experiment CONFIG... --seeds 0,1,2``: prep, train, evaluate each config x seed
  into one MLflow experiment (the comparison's input).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows.cli.app import SetOption, app, console, load_config_or_exit


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)


def _bar(progress: Progress, description: str):
    task_id = progress.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        progress.update(task_id, completed=done, total=total)

    return update


# ---- evaluate ---------------------------------------------------------------------------------


@app.command()
def evaluate(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="Run config YAML."),
    checkpoint: str | None = typer.Option(None, help="Checkpoint URI; default: the run's latest."),
    out: Path | None = typer.Option(None, help="Directory for report.json and plots."),
    log: bool = typer.Option(True, help="Log metrics and plots to the run's MLflow evaluate stage."),
    set_: list[str] = SetOption,
) -> None:
    """Evaluate a checkpoint of CONFIG: best@k, pass@k, diversity, coverage, Pareto; plots."""
    from components.datasets import prepare_dataset
    from components.evaluation import evaluate as evaluate_checkpoint

    cfg = load_config_or_exit(config, set_)
    uri = checkpoint or latest_checkpoint(cfg)
    with _progress() as progress:
        dataset = prepare_dataset(cfg, progress=_bar(progress, "dataset"))
        report = evaluate_checkpoint(cfg, dataset=dataset, checkpoint_uri=uri,
                                     progress=_bar(progress, "evaluation pools"), out_dir=out)
    _print_report(report)
    if log:
        run_id = log_evaluation(cfg, report)
        console.print(f"logged to MLflow run {run_id}")


def latest_checkpoint(cfg) -> str:
    """URI of the run's newest complete ``step-XXXXXX`` checkpoint; exits 2 when there is none."""
    from components.training import latest_checkpoint as newest
    from components.training.checkpoint import checkpoint_store

    found = newest(checkpoint_store(cfg))
    if found is None:
        console.print(f"[bold red]error:[/] no checkpoint under {cfg.storage.root}/{cfg.name}/checkpoints "
                      "(train first, or pass --checkpoint)")
        raise typer.Exit(2)
    return found[1]


def _print_report(report) -> None:
    from rich.table import Table

    table = Table(title=f"{report.task} / {report.method}: {report.num_prompts} prompts, pool {report.pool_size}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    keys = ["eval/best_at_1", "eval/best_at_10", f"eval/best_at_{len(report.best_at_k)}", "eval/pass_at_1/candidate",
            f"eval/pass_at_{len(report.pass_at_k_candidate)}/candidate", "eval/diversity",
            "eval/union_coverage", "eval/pareto/fraction", "eval/valid_fraction"]
    for key in dict.fromkeys(keys):
        if key in report.metrics:
            table.add_row(key, f"{report.metrics[key]:.4f}")
    console.print(table)
    console.print(f"plots: {report.out_dir}")


def log_evaluation(cfg, report, parent_run_id: str | None = None) -> str:
    """Log an EvalReport to the ``evaluate`` stage run under the run's pipeline run
    (the same layout as the Prefect evaluate flow: ``flows.evaluate.log_report``)."""
    from components import tracking
    from flows.evaluate import log_report

    parent = parent_run_id or tracking.start_pipeline_run(cfg)
    with tracking.stage_run(cfg, "evaluate", parent) as run_id:
        log_report(run_id, report)
    if parent_run_id is None:
        tracking.finish_run(parent)
    return run_id


# ---- compare ----------------------------------------------------------------------------------


@app.command()
def compare(
    experiment: str = typer.Argument(..., help="MLflow experiment name."),
    tracking_uri: str | None = typer.Option(
        None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db)."),
    out: Path = typer.Option(Path("runs/compare"), help="Directory for comparison.md/.csv and plots."),
    log: bool = typer.Option(True, help="Log the files to a 'comparison' run in the experiment."),
) -> None:
    """Methods side by side: mean ± standard error over seeds, from the experiment's evaluated runs."""
    from components.compare import group_runs, paired_tables, rich_tables, write_comparison

    uri = resolve_uri(tracking_uri)
    runs = fetch_runs(experiment, uri)
    groups = group_runs(runs)
    if not groups:
        console.print(f"[bold red]error:[/] experiment {experiment!r} at {uri} has no evaluated runs "
                      "(runs with eval/* metrics and an estimator.name param)")
        raise typer.Exit(1)
    out_dir = out / experiment
    files = write_comparison(groups, out_dir, title=f"Experiment {experiment}")
    for table in rich_tables(groups, title=f"{experiment}, mean ± standard error over seeds"):
        console.print(table)
    for table in paired_tables(groups, title=f"{experiment}, differences paired by seed (mean ± s.e.)"):
        console.print(table)
    console.print(f"written: {files.markdown}, {files.csv}, {len(files.plots)} plots in {out_dir}")
    if log:
        run_id = log_comparison(experiment, uri, files)
        console.print(f"logged to MLflow run {run_id}")


def resolve_uri(tracking_uri: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the default local store of ``runs/``."""
    import os

    if tracking_uri:
        return tracking_uri
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('runs/mlflow.db').resolve()}"


def fetch_runs(experiment: str, tracking_uri: str):
    """Finished evaluate-stage runs of ``experiment`` as :class:`components.compare.RunRecord`."""
    from mlflow.tracking import MlflowClient

    from components.compare import RunRecord

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        console.print(f"[bold red]error:[/] no experiment {experiment!r} at {tracking_uri}")
        raise typer.Exit(1)
    runs = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              max_results=5000)
    # A pipeline's evaluation can sit on its parent run (headline copy) and on its evaluate stage:
    # one record per pipeline (vpo.run_name), the parent when it has the metrics.
    evaluated = sorted((r for r in runs if "eval/best_at_1" in r.data.metrics),
                       key=lambda r: r.data.tags.get("vpo.kind") != "pipeline")
    by_pipeline = {}
    for r in evaluated:
        by_pipeline.setdefault(r.data.tags.get("vpo.run_name", r.info.run_id), r)
    return [RunRecord(run_id=r.info.run_id, params=dict(r.data.params),
                      metrics={**r.data.metrics, **_training_metrics(client, exp.experiment_id, r)},
                      name=r.info.run_name or "") for r in by_pipeline.values()]


def _training_metrics(client, exp_id: str, run) -> dict[str, float]:
    """:func:`components.compare.derived_metrics` of an evaluated run (a pipeline parent or its evaluate
    stage), from the curves of the train stage of the same pipeline (``vpo.run_name``)."""
    from components.compare import climbed_objective, derived_metrics
    from components.tracking import stage_histories

    metrics, params = dict(run.data.metrics), run.data.params
    if "eval/best_at_1" not in metrics or "vpo.run_name" not in run.data.tags:
        return {}
    keys = {"objective": climbed_objective(params.get("estimator.name", "")), "probe/diversity": "probe/diversity"}
    histories = stage_histories(client, exp_id, run.data.tags.get("vpo.run_name", ""), "train", keys)
    return derived_metrics(metrics, histories)


def log_comparison(experiment: str, tracking_uri: str, files) -> str:
    """Log the comparison files to a new run tagged ``vpo.kind=comparison`` in ``experiment``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    run = client.create_run(exp.experiment_id, run_name="comparison", tags={"vpo.kind": "comparison"})
    for path in [files.markdown, files.csv, *files.plots.values()]:
        client.log_artifact(run.info.run_id, str(path), "comparison")
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


# ---- evolve -----------------------------------------------------------------------------------


@app.command()
def evolve(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="Run config YAML (a code task)."),
    checkpoint: list[str] = typer.Option(..., help="Checkpoint URI (repeat: one search per checkpoint)."),
    label: list[str] = typer.Option(None, help="Plot label per checkpoint (repeat, same order)."),
    iterations: int | None = typer.Option(None, min=1, help="Iterations per problem [evaluation.evolve_iterations]."),
    problems: int | None = typer.Option(None, min=1, help="At most this many hard problems [evaluation.evolve_problems]."),
    out: Path = typer.Option(Path("runs/evolve"), help="Output directory (traces, report.json, plot)."),
    set_: list[str] = SetOption,
) -> None:
    """OpenEvolve with each checkpoint as its LLM and our sandbox as evaluator: solved vs iterations."""
    from components.datasets import prepare_dataset
    from components.evolve.run import evolve_checkpoints, plot_solved

    cfg = load_config_or_exit(config, set_)
    if cfg.task.name == "maze":
        console.print("[bold red]error:[/] evolutionary search needs a code task")
        raise typer.Exit(2)
    if label and len(label) != len(checkpoint):
        console.print("[bold red]error:[/] give one --label per --checkpoint")
        raise typer.Exit(2)
    iterations = iterations or cfg.evaluation.evolve_iterations or 10
    with _progress() as progress:
        dataset = prepare_dataset(cfg, progress=_bar(progress, "dataset"))
        reports = evolve_checkpoints(
            cfg, dataset=dataset, checkpoint_uris=checkpoint, iterations=iterations,
            max_problems=problems or cfg.evaluation.evolve_problems,
            prompt_mode=cfg.evaluation.evolve_prompt_mode, out_dir=out,
            progress=lambda stage: _bar(progress, stage),
        )
    console.print(f"problems: {reports[0].selection}")
    for report in reports:
        console.print(f"{report.checkpoint_uri}: solved {report.solved_curve[-1]}/{len(report.problem_ids)} "
                      f"after {report.iterations} iterations; solved curve {report.solved_curve}; "
                      f"mean best {[round(v, 3) for v in report.mean_best_curve]}")
    plot = plot_solved(out / "solved_vs_iterations.png", reports, labels=label or None)
    (out / "report.json").write_text(json.dumps([r.model_dump(mode="json") for r in reports], indent=1))
    console.print(f"written: {out / 'report.json'}, {plot}")


# ---- experiment -------------------------------------------------------------------------------


@app.command()
def experiment(
    configs: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="Run configs (one per method)."),
    seeds: str = typer.Option("0,1,2", help="Comma-separated training seeds."),
    name: str = typer.Option("vpo-experiment", help="MLflow experiment for every run."),
    share_warm_start: bool = typer.Option(
        True, help="Train the supervised warm start once per (task, m) and reuse it across seeds/methods."),
    set_: list[str] = SetOption,
) -> None:
    """Prep, train and evaluate every CONFIG x seed into one MLflow experiment; then `vpo compare NAME`."""
    seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    for seed in seed_list:  # seed-major: every method has a finished run early
        for path in configs:
            overrides = [*(set_ or []), f"seed={seed}", f"training.seed={seed}",
                         f"evaluation.seed={seed}", f"tracking.experiment={name}",
                         f"name={path.stem}-s{seed}"]
            cfg = load_config_or_exit(path, overrides)
            console.rule(f"{cfg.name}: task={cfg.task.name} method={cfg.estimator.name} seed={seed}")
            if _evaluated(cfg):
                console.print(f"{cfg.name}: already evaluated in experiment {name!r}, skipped")
                continue
            summary = run_one(cfg, share_warm_start=share_warm_start)
            console.print(summary)
    console.print(f"done: vpo compare {name}")


def _evaluated(cfg) -> bool:
    """A finished evaluation of ``cfg.name`` exists in its experiment: re-running an interrupted
    ``vpo experiment`` skips it (unfinished runs resume from their last checkpoint)."""
    from mlflow.tracking import MlflowClient

    from components.tracking import resolve_tracking_uri

    client = MlflowClient(resolve_tracking_uri(cfg))
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    if exp is None:
        return False
    runs = client.search_runs([exp.experiment_id], filter_string=(
        f"tags.`vpo.run_name` = '{cfg.name}' and attributes.status = 'FINISHED' and metrics.`eval/best_at_1` >= 0"))
    return bool(runs)


def warmstart_key(cfg) -> str:
    """Identity of a warm start: everything it depends on except the seeds."""
    import hashlib

    t = cfg.training
    data = {"task": cfg.task.model_dump(mode="json"), "model": cfg.model.model_dump(mode="json"),
            "warmup": [t.warmup_steps, t.warmup_lr, t.warmup_batch_size, t.micro_batch_size, t.betas,
                       t.weight_decay, t.grad_clip]}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def share_warmstart(cfg) -> str | None:
    """Reuse one warm start per :func:`warmstart_key` across seeds and methods.

    Before training: copy the cached warm start into the run's checkpoints (the trainer
    then reuses it instead of training one) and return the cache URI. After training: cache
    the run's warm start if none is cached yet. None when nothing was copied.
    """
    import tempfile

    from components.storage import open_store
    from components.training.checkpoint import (
        COMPLETE,
        WARMSTART,
        checkpoint_store,
        download_checkpoint,
    )

    if cfg.training.warmup_steps == 0:
        return None
    cache = open_store(cfg.storage.root).child("warmstarts")
    key = warmstart_key(cfg)
    run_store = checkpoint_store(cfg)
    cached = cache.exists(f"{key}/{COMPLETE}")
    mine = run_store.exists(f"{WARMSTART}/{COMPLETE}")
    if cached == mine:
        return None
    source, target, name = (cache, run_store, WARMSTART) if cached else (run_store, cache, key)
    with tempfile.TemporaryDirectory(prefix="vpo-warmstart-") as tmp:
        download_checkpoint(f"{source.uri.rstrip('/')}/{key if cached else WARMSTART}", tmp)
        target.put_dir(name, tmp)
        target.write_text(f"{name}/{COMPLETE}", json.dumps({"step": 0}))
    return f"{cache.uri.rstrip('/')}/{key}" if cached else None


def run_one(cfg, share_warm_start: bool = True) -> dict[str, float]:
    """Prep, train and evaluate one config into MLflow (pipeline run + prep/train/evaluate stages).

    Plain function calls, no Prefect: the experiment's runs are many small sequential jobs.
    With ``share_warm_start`` the supervised warm start is trained once per
    :func:`warmstart_key` (same task, model and warm-start settings; seeds and estimator
    ignored) and reused by the other runs. Returns the headline evaluation metrics.
    """
    import time

    from mlflow.tracking import MlflowClient

    from components import tracking
    from components.datasets import prepare_dataset
    from components.evaluation import evaluate as evaluate_checkpoint
    from components.training import train

    started = time.perf_counter()
    parent = tracking.start_pipeline_run(cfg)
    with tracking.stage_run(cfg, "prep", parent) as run_id:
        dataset = prepare_dataset(cfg)
        tracking.log_dataset_manifest(run_id, dataset)
    with tracking.stage_run(cfg, "train", parent) as run_id:
        shared = share_warmstart(cfg) if share_warm_start else None
        if shared is not None:
            MlflowClient().set_tag(run_id, "vpo.shared_warmstart", shared)
        result = train(cfg, dataset=dataset, callback=tracking.MlflowTrainCallback(run_id))
        if share_warm_start:
            share_warmstart(cfg)
    report = evaluate_checkpoint(cfg, dataset=dataset, checkpoint_uri=result.checkpoint_uri)
    log_evaluation(cfg, report, parent_run_id=parent)
    tracking.log_step_metrics(parent, 0, {"time/pipeline_s": time.perf_counter() - started})
    tracking.finish_run(parent)
    keys = ("eval/best_at_1", "eval/best_at_30", "eval/diversity", "eval/pass_at_30/candidate")
    return {k: round(report.metrics[k], 4) for k in keys if k in report.metrics}
