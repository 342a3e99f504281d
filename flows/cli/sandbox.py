"""``vpo sandbox build-image`` and ``vpo sandbox run``: the code-execution sandbox."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows.cli.app import app, console

sandbox_app = typer.Typer(help="The code-execution sandbox: build its image, run candidates.",
                          no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")


def _log_to_console() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])


@sandbox_app.command("build-image")
def build_image_cmd(
    image: Annotated[str, typer.Option(help="Tag to build (also tagged by content hash).")] = "vpo-sandbox:local",
    force: Annotated[bool, typer.Option(help="Rebuild even when the content-hash tag exists.")] = False,
) -> None:
    """Build the sandbox image offline (debootstrap rootfs + docker import); idempotent."""
    import docker.errors

    from components.sandbox.image import build_image

    try:
        build_image(image, force=force, log=lambda msg: console.print(msg, highlight=False))
    except (docker.errors.DockerException, RuntimeError, OSError) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None


def _read_candidates(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc})") from None
            if not isinstance(row, dict) or not isinstance(row.get("problem_id"), str) \
                    or not isinstance(row.get("code"), str):
                raise ValueError(f"{path}:{number}: expected {{\"problem_id\": str, \"code\": str}}")
            rows.append(row)
    return rows


@sandbox_app.command("run")
def run_cmd(
    problems: Annotated[str, typer.Option(help="Problems: our JSONL schema, a LiveCodeBench file, or `humaneval`.")],
    candidates: Annotated[Path, typer.Option(exists=True, dir_okay=False,
                                             help='JSONL, one {"problem_id", "code"} per line.')],
    out: Annotated[Path, typer.Option(help="Result JSONL, one line per candidate in input order.")],
    backend: Annotated[Literal["auto", "docker", "process"], typer.Option(help="Sandbox backend.")] = "auto",
    workers: Annotated[int, typer.Option(min=1, help="Parallel worker containers / processes.")] = 2,
    max_tests: Annotated[int, typer.Option(min=1, help="Tests kept per problem (deterministic choice).")] = 16,
    timeout_s: Annotated[float, typer.Option(min=0.1, help="Wall-clock limit per test, seconds.")] = 6.0,
) -> None:
    """Run candidate programs against their problems' tests; write one verdict vector per candidate."""
    _log_to_console()
    from components.config import SandboxConfig
    from components.sandbox import (
        ProblemFormatError,
        SandboxUnavailable,
        load_problems,
        open_sandbox,
    )

    try:
        by_id = {p.problem_id: p for p in load_problems(problems, max_tests=max_tests)}
        rows = _read_candidates(candidates)
    except (ProblemFormatError, ValueError, OSError) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    unknown = sorted({r["problem_id"] for r in rows} - by_id.keys())
    if unknown:
        console.print(f"[bold red]error:[/] unknown problem_id(s): {', '.join(unknown[:10])}", highlight=False)
        raise typer.Exit(2)
    jobs = [(by_id[r["problem_id"]], r["code"]) for r in rows]
    cfg = SandboxConfig(backend=backend, workers=workers, timeout_s=timeout_s)
    try:
        sandbox = open_sandbox(cfg)
    except SandboxUnavailable as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn())
    with sandbox, Progress(*columns, console=console) as bar:
        task = bar.add_task(f"sandbox ({sandbox.backend_name})", total=len(jobs), rate="")

        def progress(done: int, total: int) -> None:
            elapsed = bar.tasks[task].elapsed or 1e-9
            bar.update(task, completed=done, rate=f"{done / elapsed:.1f} programs/s")

        results = sandbox.run(jobs, progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "w", encoding="utf-8") as f:
        for result in results:
            line = {"problem_id": result.problem_id, "candidate_index": result.candidate_index,
                    "passed": result.passed, "statuses": result.statuses,
                    "durations_s": [v.duration_s for v in result.verdicts],
                    "stderr": [v.stderr for v in result.verdicts]}
            f.write(json.dumps(line) + "\n")
    tmp.replace(out)
    n_pass = sum(all(r.passed) for r in results)
    n_tests = sum(len(r.passed) for r in results)
    n_test_pass = sum(sum(r.passed) for r in results)
    console.print(f"{len(results)} programs ({n_pass} pass all tests), {n_test_pass}/{n_tests} tests passed "
                  f"\\[{sandbox.backend_name}] -> {out}", highlight=False)
