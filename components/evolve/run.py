"""Evolutionary search per checkpoint: pick the hard problems, serve each policy, run OpenEvolve.

Hard problems (VPO_SPEC §6): held-out problems where best@pool (the max fixed
scalar over the evaluation pool) is 0 for *every* checkpoint compared. When
fewer than ``max_problems`` qualify, the set is filled with the problems of
lowest best@pool (max over checkpoints) that no checkpoint solves, and
``EvolveReport.selection`` says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from components.config import RunConfig
from components.evaluation import EvalReport, evaluate, pyplot, save_figure
from components.evolve import (
    EvolveReport,
    TaskPromptAdapter,
    engine_sampler,
    evolve_problems,
    mean_best_curve,
    serve_policy,
    solved_curve,
)

StageProgress = Callable[[str], Callable[[int, int], None]]
"""stage description -> progress(done, total) callback."""


def select_hard_problems(reports: Sequence[EvalReport], max_problems: int) -> tuple[list[str], str]:
    """Problem ids every checkpoint leaves at best@pool = 0 (then the least-solved unsolved ones)."""
    ids = list(reports[0].per_prompt_best)
    best = {pid: max(r.per_prompt_best[pid] for r in reports) for pid in ids}
    solved = {pid: any(r.per_prompt_solved.get(pid, False) for r in reports) for pid in ids}
    zero = [pid for pid in ids if best[pid] == 0.0]
    pool = reports[0].pool_size
    if len(zero) >= max_problems:
        return zero[:max_problems], f"best@{pool} = 0 for every checkpoint ({len(zero)} such problems)"
    rest = sorted((pid for pid in ids if pid not in zero and not solved[pid]), key=lambda pid: best[pid])
    chosen = zero + rest[: max_problems - len(zero)]
    return chosen, (f"best@{pool} = 0 for every checkpoint: {len(zero)} problems; filled with "
                    f"{len(chosen) - len(zero)} unsolved problems of lowest best@{pool}")


def config_for_checkpoint(cfg: RunConfig, checkpoint_uri: str) -> RunConfig:
    """``cfg`` with the checkpoint's own answer format: ``task.num_answers``, ``estimator.name``
    and ``rollout.max_new_tokens`` from the config stored in the checkpoint (a GRPO checkpoint is
    prompted for one answer, a VPO one for m)."""
    import json

    from components.storage import open_store

    trained = json.loads(open_store(checkpoint_uri).read_text("run_config.json"))
    data = cfg.model_dump(mode="json")
    data["task"]["num_answers"] = trained["task"]["num_answers"]
    data["estimator"]["name"] = trained["estimator"]["name"]
    data["rollout"]["max_new_tokens"] = trained["rollout"]["max_new_tokens"]
    return RunConfig.model_validate(data)


def evolve_checkpoints(
    cfg: RunConfig,
    *,
    dataset: Any,
    checkpoint_uris: Sequence[str],
    iterations: int,
    max_problems: int,
    prompt_mode: str = "task",
    out_dir: Path,
    progress: StageProgress | None = None,
) -> list[EvolveReport]:
    """Evaluate each checkpoint, select the shared hard problems, run OpenEvolve with each policy."""
    from components.datasets import load_split
    from components.policy.rollout import make_engine
    from components.sandbox import open_sandbox
    from components.tasks import get_task
    from components.tasks.code import problem_of
    from components.training import load_checkpoint

    def bar(stage: str) -> Callable[[int, int], None] | None:
        return progress(stage) if progress is not None else None

    out_dir.mkdir(parents=True, exist_ok=True)
    configs = [config_for_checkpoint(cfg, uri) for uri in checkpoint_uris]
    evals = [
        evaluate(c, dataset=dataset, checkpoint_uri=uri, progress=bar(f"eval pools {i}"),
                 out_dir=out_dir / f"eval-{i}")
        for i, (c, uri) in enumerate(zip(configs, checkpoint_uris, strict=True))
    ]
    problem_ids, selection = select_hard_problems(evals, max_problems)
    rows = {str(row["id"]): row for row in load_split(dataset, "test")}
    reports = []
    problems = [problem_of(rows[pid]["problem"]) for pid in problem_ids]
    with open_sandbox(cfg.sandbox) as sandbox:  # the task object only builds prompts and parses here
        task = get_task(cfg, sandbox=sandbox)
    for index, (run_cfg, uri) in enumerate(zip(configs, checkpoint_uris, strict=True)):
        model, tokenizer, _state = load_checkpoint(uri)
        model.eval()
        sampler = engine_sampler(make_engine(run_cfg, model, tokenizer), base_seed=cfg.evaluation.seed)
        adapter = TaskPromptAdapter(task, rows, run_cfg.task.num_answers, tokenizer, seed=cfg.evaluation.seed)
        with serve_policy(sampler, prompt_mode=prompt_mode, model_names=problem_ids, task_adapter=adapter,
                          tokenizer=tokenizer, max_tokens=run_cfg.rollout.max_new_tokens) as server:
            searches = evolve_problems(
                problems, base_url=server.base_url,
                model_name_for=lambda p: p.problem_id if prompt_mode == "task" else "policy",
                iterations=iterations, sandbox=cfg.sandbox, workdir=out_dir / f"search-{index}",
                seed=cfg.evaluation.seed, temperature=cfg.rollout.temperature,
                max_tokens=run_cfg.rollout.max_new_tokens, progress=bar(f"evolve {index}"),
            )
        reports.append(EvolveReport(
            checkpoint_uri=uri, iterations=iterations, problem_ids=problem_ids,
            solved_curve=solved_curve(searches, iterations),
            mean_best_curve=mean_best_curve(searches, iterations), selection=selection,
            searches=searches,
        ))
    return reports


def plot_solved(path: Path, reports: Sequence[EvolveReport], labels: Sequence[str] | None = None) -> Path:
    """Problems solved and mean best score vs iterations, one line per checkpoint."""
    plt = pyplot()

    labels = labels or [Path(r.checkpoint_uri.rstrip("/")).parent.parent.name or r.checkpoint_uri
                        for r in reports]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, report in zip(labels, reports, strict=True):
        xs = range(len(report.solved_curve))
        left.step(xs, report.solved_curve, where="post", label=label)
        right.plot(xs, report.mean_best_curve, marker=".", label=label)
    left.set_xlabel("OpenEvolve iterations")
    left.set_ylabel(f"problems solved (of {len(reports[0].problem_ids) if reports else 0})")
    right.set_xlabel("OpenEvolve iterations")
    right.set_ylabel("mean best fraction of tests passed")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)
