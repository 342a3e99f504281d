"""Evaluation of a checkpoint: sampling pools and search metrics (VPO_SPEC §6).

Per held-out prompt the policy samples a *pool* of candidates at
``evaluation.temperature``: ``set_generations`` generations x m answers for set
methods (m > 1), ``single_samples`` samples for single-answer methods. Every
candidate is scored by the task into a k-vector (missing, unparseable and
within-generation duplicate answers are zero vectors, as in training). Then:

* best@k, k = 1..max_k: shuffle each pool once, running max of the fixed scalar,
  mean over prompts;
* pass@k per candidate (n = pool size) and per generation (a generation is
  correct when any of its answers is), unbiased estimator;
* diversity: mean pairwise L1 distance between the reward vectors of a pool's
  valid candidates; union coverage ``sum_j max_i R_ij``; Pareto-front size and
  fraction; per-objective pass rates (fraction of candidates with r_j = 1).

All pool arithmetic is in :func:`pool_metrics` (pure, tensors in, numbers out);
:func:`evaluate` loads a checkpoint, samples, scores, computes and plots.
Metric names are flat MLflow keys (MLflow rejects "@", hence ``best_at_k``): ``eval/best_at_10``, ``eval/pass_at_5/candidate``,
``eval/diversity``, ``eval/objective/<name>/pass_rate``, ...
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field

from components import metrics
from components.config import RunConfig

Progress = Callable[[int, int], None]
"""progress(done, total) in prompts."""


class EvalReport(BaseModel):
    """What :func:`evaluate` measured for one checkpoint."""

    checkpoint_uri: str
    method: str
    """The checkpoint's training method (``estimator.name`` of the config)."""
    task: str
    num_prompts: int
    pool_size: int
    """Candidates per prompt (generations x m, or single samples)."""
    metrics: dict[str, float]
    """Flat MLflow-ready metrics (see module docstring)."""
    best_at_k: list[float]
    """best@k for k = 1..max_k (index 0 is k = 1)."""
    pass_at_k_candidate: list[float]
    pass_at_k_generation: list[float]
    """pass@k over generations, k = 1..number of generations."""
    per_prompt_best: dict[str, float] = Field(default_factory=dict)
    """Prompt id -> max fixed scalar over its whole pool (best@pool_size)."""
    per_prompt_solved: dict[str, bool] = Field(default_factory=dict)
    """Prompt id -> some candidate of the pool is correct."""
    plots: dict[str, str] = Field(default_factory=dict)
    """Plot name -> local PNG path."""
    out_dir: str | None = None


@dataclass(frozen=True)
class Pool:
    """Scored candidates of P prompts, C candidates each (C = generations x m)."""

    rewards: torch.Tensor
    """(P, C, k) float in [0, 1]; zero rows for invalid answers."""
    valid: torch.Tensor
    """(P, C) bool: the answer parsed and was not a within-generation duplicate."""
    correct: torch.Tensor
    """(P, C) bool: every reward dimension equals 1."""
    answers_per_generation: int
    """m; candidate c belongs to generation c // m."""

    @property
    def num_generations(self) -> int:
        return self.rewards.shape[1] // self.answers_per_generation


def pool_metrics(
    pool: Pool,
    fixed_weights: torch.Tensor,
    *,
    max_k: int,
    objective_names: Sequence[str],
    generator: torch.Generator | None = None,
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, torch.Tensor]]:
    """Search metrics of a pool.

    Returns (flat metrics, curves, per-prompt tensors). Curves: ``best_at_k`` (k = 1..min(max_k, C)),
    ``pass_at_k_candidate`` (same ks), ``pass_at_k_generation`` (k = 1..min(max_k, generations)).
    Per-prompt: ``best`` (P,) max fixed scalar, ``solved`` (P,) any correct, ``diversity`` (P,).
    """
    num_prompts, pool_size, _ = pool.rewards.shape
    scalar = pool.rewards @ fixed_weights.to(pool.rewards)  # (P, C)
    ks_candidate = min(max_k, pool_size)
    ks_generation = min(max_k, pool.num_generations)

    best_curve = metrics.best_at_k_curve(scalar, ks_candidate, rng=generator)
    generation_correct = pool.correct.view(num_prompts, pool.num_generations, -1).any(dim=2)
    pass_candidate = metrics.pass_at_k_curve(
        torch.full((num_prompts,), pool_size), pool.correct.sum(dim=1), ks_candidate
    ).tolist()
    pass_generation = metrics.pass_at_k_curve(
        torch.full((num_prompts,), pool.num_generations), generation_correct.sum(dim=1), ks_generation
    ).tolist()
    valid_pools = [rewards[valid] for rewards, valid in zip(pool.rewards, pool.valid, strict=True)]
    diversity = metrics.diversity(valid_pools).float()  # (P,) over each pool's valid candidates
    # union_coverage of pools that are all empty fails (amax over a 0-size dim): it is 0 then
    coverage = metrics.union_coverage(valid_pools) if pool.valid.any() else torch.zeros(num_prompts)
    front = metrics.pareto_front(valid_pools)

    flat: dict[str, float] = {
        f"eval/best_at_{k}": best_curve[k - 1].item() for k in range(1, ks_candidate + 1)
    }
    flat.update({f"eval/pass_at_{k}/candidate": v for k, v in enumerate(pass_candidate, start=1)})
    flat.update({f"eval/pass_at_{k}/generation": v for k, v in enumerate(pass_generation, start=1)})
    flat.update(
        {
            "eval/diversity": diversity.mean().item(),
            "eval/union_coverage": coverage.mean().item(),
            "eval/pareto/size": front.size.float().mean().item(),
            "eval/pareto/fraction": front.fraction.mean().item(),
            "eval/valid_fraction": pool.valid.float().mean().item(),
            "eval/fixed_scalar/mean": scalar.mean().item(),
            "eval/solved_fraction": pool.correct.any(dim=1).float().mean().item(),
            "eval/pool_size": float(pool_size),
        }
    )
    objective_pass = (pool.rewards >= 1.0).float().mean(dim=(0, 1))  # (k,)
    flat.update(
        {f"eval/objective/{name}/pass_rate": objective_pass[j].item() for j, name in enumerate(objective_names)}
    )
    curves = {
        "best_at_k": best_curve.tolist(),
        "pass_at_k_candidate": pass_candidate,
        "pass_at_k_generation": pass_generation,
    }
    per_prompt = {
        "best": scalar.max(dim=1).values,
        "solved": pool.correct.any(dim=1),
        "diversity": diversity,
    }
    return flat, curves, per_prompt


# ---- plots ---------------------------------------------------------------------------


def pyplot():
    """``matplotlib.pyplot`` on the headless Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def style_k_axes(ax, *, ylabel: str, title: str) -> None:
    """Axes of a curve over k = 1..K: labels, title, grid, legend."""
    ax.set_xlabel("k")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()


def save_figure(fig, path: Path) -> Path:
    """Lay out, write ``fig`` as a PNG at ``path`` and close it; returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def plot_curve(path: Path, curves: dict[str, Sequence[float]], *, ylabel: str, title: str) -> Path:
    """Line plot of one or more k = 1.. curves (label -> values); PNG at ``path``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, marker=".", label=label)
    style_k_axes(ax, ylabel=ylabel, title=title)
    return save_figure(fig, path)


def plot_diversity(path: Path, per_prompt_diversity: torch.Tensor, *, title: str) -> Path:
    """Histogram of per-prompt pool diversity (mean pairwise L1)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.hist(per_prompt_diversity.numpy(), bins=20)
    ax.set_xlabel("pool diversity (mean pairwise L1 of reward vectors)")
    ax.set_ylabel("prompts")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_pareto_projections(
    path: Path, pool: Pool, objective_names: Sequence[str], *, max_pairs: int = 6, title: str
) -> Path:
    """Scatter of valid candidates' rewards on 2-D projections (pairs of the first objectives).

    Points are jittered (rewards are often 0/1) and the projection's own Pareto front
    (over all prompts' candidates) is marked.
    """
    plt = pyplot()
    k = pool.rewards.shape[-1]
    pairs = list(combinations(range(k), 2))[:max_pairs] or [(0, 0)]
    cols = min(3, len(pairs))
    rows = (len(pairs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.2 * rows), squeeze=False)
    points = pool.rewards[pool.valid]  # (N, k)
    jitter = torch.randn(points.shape, generator=torch.Generator().manual_seed(0)) * 0.015
    for ax, (a, b) in zip(axes.flat, pairs, strict=False):
        xy = points[:, [a, b]]
        if len(xy):
            front = metrics.pareto_front(xy).mask
            ax.scatter(xy[:, 0] + jitter[:, a], xy[:, 1] + jitter[:, b], s=6, alpha=0.3, label="candidates")
            ax.scatter(xy[front, 0], xy[front, 1], s=30, marker="x", color="red", label="front")
        ax.set_xlabel(objective_names[a])
        ax.set_ylabel(objective_names[b])
        ax.set_xlim(-0.08, 1.08)
        ax.set_ylim(-0.08, 1.08)
    for ax in list(axes.flat)[len(pairs):]:
        ax.axis("off")
    fig.suptitle(title)
    return save_figure(fig, path)


# ---- the stage -------------------------------------------------------------------------


def pool_shape(cfg: RunConfig) -> tuple[int, int]:
    """(generations per prompt, answers per generation) of the evaluation pool for ``cfg``."""
    m = cfg.task.num_answers
    return (cfg.evaluation.set_generations if m > 1 else cfg.evaluation.single_samples), m


def sample_pool(
    task: Any,
    engine: Any,
    rows: Sequence[dict],
    *,
    generations: int,
    num_answers: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    tokenizer: Any = None,
    prompts_per_call: int = 8,
    progress: Progress | None = None,
) -> Pool:
    """Sample ``generations`` generations per row, parse and score every answer into a :class:`Pool`."""
    from components.policy.rollout import SamplingParams

    rewards, valid = [], []
    for start in range(0, len(rows), prompts_per_call):
        chunk = list(rows[start : start + prompts_per_call])
        prompts = [task.build_prompt(row, num_answers, tokenizer) for row in chunk]
        params = SamplingParams(
            n=generations, temperature=temperature, top_p=1.0, max_new_tokens=max_new_tokens,
            stop=(), seed=seed + start,
        )
        rollouts = engine.generate(prompts, params)  # prompt-major: len(chunk) * generations
        answers = [task.parse_answers(text, num_answers) for text in rollouts.texts]
        repeated_rows = [chunk[i] for i in rollouts.prompt_index]
        scored = task.score(repeated_rows, answers)
        k = scored.rewards.shape[-1]
        rewards.append(scored.rewards.reshape(len(chunk), generations * num_answers, k))
        valid.append(scored.mask.reshape(len(chunk), generations * num_answers))
        if progress is not None:
            progress(min(start + prompts_per_call, len(rows)), len(rows))
    reward_tensor = torch.cat(rewards).float()
    return Pool(
        rewards=reward_tensor,
        valid=torch.cat(valid).bool(),
        correct=task.is_correct(reward_tensor),
        answers_per_generation=num_answers,
    )


def evaluate(
    cfg: RunConfig,
    *,
    dataset: Any,
    checkpoint_uri: str,
    progress: Progress | None = None,
    out_dir: str | Path | None = None,
) -> EvalReport:
    """Evaluate the checkpoint at ``checkpoint_uri`` on the test split of ``dataset``.

    Writes ``report.json`` and the PNG plots into ``out_dir`` (a new temporary
    directory when None) and returns the :class:`EvalReport`. Logging to MLflow is
    the caller's (``components.tracking`` / the flow).
    """
    from components.datasets import load_split
    from components.policy.rollout import make_engine
    from components.tasks import get_task
    from components.training import load_checkpoint

    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="vpo-eval-"))
    out.mkdir(parents=True, exist_ok=True)
    rows = load_split(dataset, "test")
    if cfg.evaluation.num_prompts is not None:
        rows = rows[: cfg.evaluation.num_prompts]
    if not rows:
        raise ValueError("evaluation needs at least one test prompt (task.test_size = 0?)")
    generations, m = pool_shape(cfg)
    model, tokenizer, _state = load_checkpoint(checkpoint_uri)
    model.eval()
    engine = make_engine(cfg, model, tokenizer)
    sandbox_context = _sandbox_for(cfg)
    with sandbox_context as sandbox:
        task = get_task(cfg, sandbox=sandbox)
        pool = sample_pool(
            task, engine, rows, generations=generations, num_answers=m,
            temperature=cfg.evaluation.temperature, max_new_tokens=cfg.rollout.max_new_tokens,
            seed=cfg.evaluation.seed, tokenizer=tokenizer,
            prompts_per_call=max(1, cfg.rollout.generation_batch_size // generations),
            progress=progress,
        )
    generator = torch.Generator().manual_seed(cfg.evaluation.seed)
    objective_names = list(task.objective_names)
    flat, curves, per_prompt = pool_metrics(
        pool, task.fixed_weights, max_k=cfg.evaluation.max_k, objective_names=objective_names,
        generator=generator,
    )
    method = cfg.estimator.name
    title = f"{cfg.task.name} / {method}"
    plots = {
        "best_at_k": str(plot_curve(out / "best_at_k.png", {method: curves["best_at_k"]},
                                    ylabel="best@k (fixed scalar)", title=title)),
        "pass_at_k": str(plot_curve(out / "pass_at_k.png",
                                    {"per candidate": curves["pass_at_k_candidate"],
                                     "per generation": curves["pass_at_k_generation"]},
                                    ylabel="pass@k", title=title)),
        "diversity": str(plot_diversity(out / "diversity.png", per_prompt["diversity"], title=title)),
        "pareto": str(plot_pareto_projections(out / "pareto.png", pool, objective_names, title=title)),
    }
    ids = [str(row.get("id", i)) for i, row in enumerate(rows)]
    report = EvalReport(
        checkpoint_uri=checkpoint_uri,
        method=method,
        task=cfg.task.name,
        num_prompts=len(rows),
        pool_size=pool.rewards.shape[1],
        metrics=flat,
        best_at_k=curves["best_at_k"],
        pass_at_k_candidate=curves["pass_at_k_candidate"],
        pass_at_k_generation=curves["pass_at_k_generation"],
        per_prompt_best=dict(zip(ids, per_prompt["best"].tolist(), strict=True)),
        per_prompt_solved=dict(zip(ids, per_prompt["solved"].tolist(), strict=True)),
        plots=plots,
        out_dir=str(out),
    )
    (out / "report.json").write_text(json.dumps(report.model_dump(mode="json"), indent=1))
    return report


def _sandbox_for(cfg: RunConfig):
    """An open-able sandbox context for code tasks; a null context (None) for the maze."""
    if cfg.task.name == "maze":
        return nullcontext(None)
    from components.sandbox import open_sandbox

    return open_sandbox(cfg.sandbox)
