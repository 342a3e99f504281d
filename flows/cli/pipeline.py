"""``vpo run``, ``vpo demo`` and ``vpo serve``: the pipeline as Prefect flows.

Without ``PREFECT_API_URL`` the flows run on Prefect's temporary local API and
MLflow writes to ``<storage root>/mlflow.db``; set ``PREFECT_API_URL``,
``MLFLOW_TRACKING_URI`` and the S3 variables to run against real servers.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import typer

from flows.cli.app import SetOption, app, console, load_config_or_exit

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
"""The embedded default run config (tiny model, synthetic code task)."""


def _config_or_demo(config: Path | None, overrides: list[str] | None):
    return load_config_or_exit(config or DEMO_CONFIG, overrides)


def _offline_prefect() -> None:
    """No usage telemetry from the temporary local API (these machines are offline anyway), and time
    for it to start on a busy 2-core machine (Prefect's 20 s default timed out under load)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@app.command()
def run(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="Run config YAML."),
    set_: list[str] = SetOption,
    train_deployment: str | None = typer.Option(
        None, help="Run training as this Prefect deployment (e.g. vpo-train/vpo-train on the gpu pool)."),
) -> None:
    """Run the whole pipeline (prep -> train -> evaluate) of CONFIG as a Prefect flow."""
    cfg = load_config_or_exit(config, set_)
    _offline_prefect()
    from flows.pipeline import pipeline_flow

    result = pipeline_flow(cfg, train_deployment=train_deployment)
    console.print(f"[bold green]done[/]: {result.name} — MLflow parent run {result.mlflow_run_id}, "
                  f"checkpoint {result.train.checkpoint_uri}")
    for key in sorted(result.eval_metrics):
        if key.startswith(("eval/best_at_", "eval/pass_at_1/", "eval/diversity")):
            console.print(f"  {key:32s} {result.eval_metrics[key]:.4f}")


@app.command()
def demo(
    set_: list[str] = SetOption,
    methods: str = typer.Option("vpo,grpo", help="Comma-separated estimators to train and compare."),
    ray: str | None = typer.Option(None, help="Evaluate on Ray: 'local' or a cluster address."),
) -> None:
    """The whole pipeline offline on CPU: prep, warm start, VPO + GRPO training, evaluation, comparison."""
    cfg = _config_or_demo(None, set_)
    _warn_if_no_docker(cfg.sandbox.backend)
    _offline_prefect()
    from components.compare import RunRecord, group_runs, rich_tables, write_comparison
    from components.tracking import resolve_tracking_uri
    from flows.cli.evaluate import _training_metrics
    from flows.pipeline import demo_flow

    results = demo_flow(cfg, methods=[m.strip() for m in methods.split(",") if m.strip()], ray_address=ray)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(resolve_tracking_uri(cfg))
    records = []
    for r in results:
        run = client.get_run(r.mlflow_run_id)
        training = _training_metrics(client, run.info.experiment_id, run)
        records.append(RunRecord(run_id=r.mlflow_run_id, params=dict(run.data.params),
                                 metrics={**r.eval_metrics, **training}, name=r.name))
    groups = group_runs(records)
    for table in rich_tables(groups, title=f"{methods} (this demo's runs, one seed each)"):
        console.print(table)
    files = write_comparison(groups, Path("runs/compare") / cfg.name, title=f"Demo {cfg.name}")
    console.print(f"comparison written to {files.markdown}")
    for name, path in sorted(files.plots.items()):
        console.print(f"  plot {name}: {path}")
    console.print("  what these numbers mean, and run 3 (5 seeds, same task): docs/results.md")
    uri = resolve_tracking_uri(cfg)
    console.print("\n[bold]Open what this run wrote[/]")
    if uri.startswith("sqlite:"):
        console.print(f"  MLflow:  mlflow ui --backend-store-uri {uri} --port 5000   -> http://127.0.0.1:5000"
                      f"  (experiment '{cfg.tracking.experiment}')")
    else:
        console.print(f"  MLflow:  {uri}  (experiment '{cfg.tracking.experiment}')")
    api = os.environ.get("PREFECT_API_URL")
    if api:
        console.print(f"  Prefect: {api.removesuffix('/api')}")
    else:
        console.print("  Prefect: prefect server start   -> http://127.0.0.1:4200  (flow runs 'vpo-demo')")
    console.print("  Compare: vpo compare " + cfg.tracking.experiment)


def _warn_if_no_docker(backend: str) -> None:
    if backend == "process":
        return
    try:
        import docker

        docker.from_env().ping()
    except Exception:
        if backend == "docker":
            console.print("[bold red]error:[/] sandbox.backend=docker but no Docker engine answers")
            raise typer.Exit(2) from None
        console.print("[bold yellow]WARNING: no Docker engine answers — candidate programs will run in the "
                      "PROCESS sandbox (rlimits only, no container isolation). Start dockerd and run "
                      "`vpo sandbox build-image` for the real sandbox.[/]")


@app.command()
def serve(
    config: Path | None = typer.Argument(None, exists=True, dir_okay=False,
                                         help="Default parameters of the deployments (default: the demo config)."),
    set_: list[str] = SetOption,
    register_only: bool = typer.Option(False, help="Create/update the deployments on the API and exit."),
) -> None:
    """Serve the Prefect deployments (pipeline with its nightly schedule, demo, each stage)."""
    cfg = _config_or_demo(config, set_)
    from flows.deployments import register_deployments, serve_deployments

    if register_only:
        ids = register_deployments(cfg)
        console.print(f"registered {len(ids)} deployments on {os.environ.get('PREFECT_API_URL', 'the local API')}")
        return
    if not os.environ.get("PREFECT_API_URL"):
        console.print("[yellow]PREFECT_API_URL is not set: deployments live only as long as this process "
                      "(start `prefect server start` and export PREFECT_API_URL=http://127.0.0.1:4200/api "
                      "to use the UI)[/]")
    if shutil.which("prefect") is None:
        console.print("[yellow]the prefect CLI is not on PATH; the UI needs `prefect server start`[/]")
    serve_deployments(cfg)
