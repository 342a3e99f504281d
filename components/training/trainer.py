"""The VPO trainer: rollouts -> reward matrices -> advantages -> PPO-clip update.

One step (VPO_SPEC §2-§4):

1. sample ``training.prompts_per_step`` training rows (seeded by step);
2. generate ``rollout.group_size`` completions per prompt, each asking for
   ``task.num_answers`` answers, with the rollout engine (sampling log-probs kept
   as pi_old, or recomputed when ``training.recompute_old_logprobs``);
3. parse and score them through the task into rewards (B, m, k) and a mask;
4. advantages with ``compute_advantages(estimator.name, ...)`` — any registered
   estimator, switched by the config field alone;
5. PPO-clip with dual clip, token-mean over the mini-batch, low_var_kl to the
   frozen reference (kept only when ``kl_coef > 0``), micro-batches with gradient
   accumulation, AdamW, grad-norm clip; ``ppo_epochs`` passes.

Metrics go to a :class:`TrainCallback` (the flows log them to MLflow; this
module never imports mlflow or prefect). Every random draw is seeded by
``(training.seed, purpose, step, rank)``, so a resumed run reproduces the
uninterrupted one exactly on CPU.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from pydantic import BaseModel
from transformers import PreTrainedModel

from components.config import RunConfig
from components.policy.model import load_pretrained, model_source, resolve_device
from components.policy.rollout import HFEngine, RolloutEngine, Rollouts, SamplingParams, make_engine
from components.tasks.base import Task
from components.training.checkpoint import (
    WARMSTART,
    CheckpointState,
    capture_rng,
    checkpoint_store,
    is_complete,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    step_dir,
)
from components.training.distributed import (
    DistContext,
    all_gather_rows,
    all_reduce_sum,
    barrier,
    full_state_dicts,
    init_distributed,
    load_optimizer_state,
    no_sync,
    root_unsharded,
    unwrap,
    wrap_for_training,
)
from components.training.forward import SequenceBatch, TokenLogprobs
from components.training.loss import policy_loss_sum
from components.training.seeding import derive_seed, generator, seed_everything
from components.training.warmstart import warm_start

SAMPLES_PER_LOG = 8
"""Rollouts included in ``samples`` when they are logged (the first prompt group(s))."""


class TrainCallback(Protocol):
    """Receives progress from :func:`train` (rank 0 only)."""

    def on_step(self, step: int, metrics: dict[str, float], samples: list[dict] | None) -> None:
        """After RL step ``step`` (1-based). Warm-start steps report ``warmstart/*`` keys with their own
        step numbers; ``samples`` is None except every ``tracking.log_rollouts_every`` RL steps."""

    def on_checkpoint(self, step: int, uri: str) -> None:
        """A complete checkpoint exists at ``uri`` (step 0 = the warm-start model)."""


class TrainResult(BaseModel):
    """What a training run produced."""

    checkpoint_uri: str
    """The final (latest) checkpoint."""
    steps_done: int
    final_metrics: dict[str, float]
    warmstart_uri: str | None = None
    """The warm-start checkpoint (the pre-RL baseline), when ``training.warmup_steps > 0``."""


@dataclass
class StepBatch:
    """One rank's share of a step, ready for the update."""

    sequences: SequenceBatch
    old_logprobs: torch.Tensor
    """(n, C) float32."""
    advantages: torch.Tensor
    """(n,) float32."""
    ref_logprobs: torch.Tensor | None = None
    """(n, C) float32, when kl_coef > 0."""


def train(
    cfg: RunConfig, *, dataset: Any, callback: TrainCallback | None = None, resume: bool = True
) -> TrainResult:
    """Train the policy of ``cfg`` on the train split of ``dataset`` (a DatasetManifest).

    Code tasks open a sandbox (``cfg.sandbox``) for the run. Under torchrun every
    rank calls this; only rank 0 writes checkpoints and calls ``callback``.
    """
    from components.datasets import load_split
    from components.tasks import get_task

    rows = load_split(dataset, "train")
    if cfg.task.name == "maze":
        return train_on_task(cfg, get_task(cfg), rows, callback=callback, resume=resume)
    from components.sandbox import open_sandbox

    with open_sandbox(cfg.sandbox) as sandbox:
        return train_on_task(cfg, get_task(cfg, sandbox=sandbox), rows, callback=callback, resume=resume)


def train_on_task(
    cfg: RunConfig,
    task: Task,
    rows: Sequence[dict[str, Any]],
    *,
    callback: TrainCallback | None = None,
    resume: bool = True,
) -> TrainResult:
    """:func:`train` with the task and training rows given directly."""
    if not rows:
        raise ValueError("the training split is empty")
    ctx = init_distributed()
    _check_divisibility(cfg, ctx)
    trainer = Trainer(cfg, task, rows, ctx, callback)
    return trainer.run(resume)


def _check_divisibility(cfg: RunConfig, ctx: DistContext) -> None:
    tc = cfg.training
    if tc.prompts_per_step % ctx.world_size:
        raise ValueError(f"training.prompts_per_step={tc.prompts_per_step} must be divisible by the world size {ctx.world_size}")
    if tc.warmup_steps and tc.warmup_batch_size % ctx.world_size:
        raise ValueError(f"training.warmup_batch_size={tc.warmup_batch_size} must be divisible by the world size {ctx.world_size}")
    batch = tc.prompts_per_step * cfg.rollout.group_size
    mini = tc.mini_batch_size or batch
    if batch % mini or mini % ctx.world_size:
        raise ValueError(
            f"training.mini_batch_size={mini} must divide the step batch {batch} "
            f"(prompts_per_step x group_size) and be divisible by the world size {ctx.world_size}"
        )


class Trainer:
    """Holds the model, reference, optimizer and engine of one run; :meth:`run` drives it."""

    def __init__(
        self, cfg: RunConfig, task: Task, rows: Sequence[dict[str, Any]], ctx: DistContext,
        callback: TrainCallback | None = None,
    ):
        self.cfg, self.task, self.rows, self.ctx = cfg, task, rows, ctx
        self.callback = callback if ctx.is_main else None
        self.store = checkpoint_store(cfg)
        self.device = resolve_device(cfg.model)
        if self.device.type == "cuda" and ctx.enabled:
            self.device = torch.device("cuda", ctx.local_rank)
        self.m = cfg.task.num_answers

    # -- setup ----------------------------------------------------------------------------

    def setup(self, resume: bool) -> int:
        """Load (or build and warm-start) the model, reference, optimizer and engine.

        Returns the number of RL steps already done (from the latest checkpoint when resuming).
        """
        cfg, tc = self.cfg, self.cfg.training
        seed_everything(derive_seed(tc.seed, "global", self.ctx.rank))
        self.latest = latest_checkpoint(self.store) if resume else None
        self.warm_uri = self._warm_start_model(resume, skip_load=self.latest is not None)
        state: CheckpointState | None = None
        if self.latest is not None:
            model, tokenizer, state = load_checkpoint(self.latest[1], cfg.model, self.device)
        else:
            model, tokenizer = self._initial_model
        self.model, self.tokenizer = model, tokenizer
        self.reference = self._reference(self.warm_uri) if tc.kl_coef > 0 else None
        self.policy = wrap_for_training(
            TokenLogprobs(model, cfg.rollout.temperature, tc.logprob_chunk_tokens, entropy_grad=tc.entropy_coef > 0),
            self.ctx, tc.strategy,
        )
        self.params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay)
        self.metrics: dict[str, float] = {}
        start = 0
        if state is not None:
            start, self.metrics = state.step, dict(state.metrics)
            if state.optimizer is not None:
                load_optimizer_state(self.policy, self.optimizer, state.optimizer)
            if state.rng is not None:
                restore_rng(state.rng)
        self.engine: RolloutEngine = make_engine(cfg, model, tokenizer)
        if self.ctx.enabled and tc.strategy == "fsdp" and isinstance(self.engine, HFEngine):
            self.engine.lockstep = True  # every decode step is a collective (layer all-gathers)
        return start

    def run(self, resume: bool) -> TrainResult:
        """Set up, then run RL steps until ``training.steps``, checkpointing as configured."""
        tc = self.cfg.training
        start = self.setup(resume)
        metrics = self.metrics
        uri = self.latest[1] if self.latest is not None else self.warm_uri
        if tc.probe_every and start == 0 and tc.steps > 0 and self.callback is not None:
            self.callback.on_step(0, self.probe(), None)
        for step in range(start + 1, tc.steps + 1):
            metrics, samples = self.step(step)
            if tc.probe_every and step % tc.probe_every == 0:
                metrics = {**metrics, **self.probe()}
            if self.callback is not None:
                self.callback.on_step(step, metrics, samples)
            if step % tc.checkpoint_every == 0 or step == tc.steps:
                uri = self._save(step_dir(step), step, metrics, with_optimizer=True)
                if self.callback is not None:
                    self.callback.on_checkpoint(step, uri)
        if uri is None:  # no RL steps and no warm start: the initial model is the result
            uri = self._save(step_dir(0), 0, {}, with_optimizer=False)
        return TrainResult(checkpoint_uri=uri, steps_done=max(tc.steps, start), final_metrics=metrics,
                           warmstart_uri=self.warm_uri)

    def _warm_start_model(self, resume: bool, skip_load: bool) -> str | None:
        """Produce (or reuse) the warm-start checkpoint; leaves the initial model in ``_initial_model``."""
        cfg, tc = self.cfg, self.cfg.training
        self._initial_model = None
        warm_uri = f"{self.store.uri.rstrip('/')}/{WARMSTART}"
        if tc.warmup_steps == 0:
            if not skip_load:
                self._initial_model = load_pretrained(model_source(cfg), cfg.model, self.device)
            return None
        if resume and is_complete(self.store, WARMSTART):
            if not skip_load:
                model, tokenizer, _ = load_checkpoint(warm_uri, cfg.model, self.device)
                self._initial_model = (model, tokenizer)
            return warm_uri
        model, tokenizer = load_pretrained(model_source(cfg), cfg.model, self.device)
        policy = wrap_for_training(
            TokenLogprobs(model, 1.0, tc.logprob_chunk_tokens), self.ctx, tc.strategy
        )

        def report(step: int, metrics: dict[str, float]) -> None:
            if self.callback is not None:
                self.callback.on_step(step, metrics, None)

        metrics = warm_start(policy, tokenizer, self.task, self.rows, cfg, self.ctx, on_step=report)
        self.model, self.tokenizer, self.policy = model, tokenizer, policy
        self._save(WARMSTART, 0, metrics, with_optimizer=False)
        if self.callback is not None:
            self.callback.on_checkpoint(0, warm_uri)
        # RL starts from the saved copy: a fresh module (no stale DDP/FSDP hooks), and exactly
        # what a resumed run loads.
        del self.policy, policy, model
        if not skip_load:
            model, tokenizer, _ = load_checkpoint(warm_uri, cfg.model, self.device)
            self._initial_model = (model, tokenizer)
        return warm_uri

    def _reference(self, warm_uri: str | None) -> PreTrainedModel:
        """The frozen reference: the warm-started model, else the base model."""
        if warm_uri is not None:
            ref, _, _ = load_checkpoint(warm_uri, self.cfg.model, self.device)
        else:
            ref, _ = load_pretrained(model_source(self.cfg), self.cfg.model, self.device)
        ref.requires_grad_(False)
        ref.eval()
        return ref

    def _save(self, name: str, step: int, metrics: dict[str, float], with_optimizer: bool) -> str:
        """Rank 0 writes; every rank waits for it (the URI is the same everywhere)."""
        uri = f"{self.store.uri.rstrip('/')}/{name}"
        policy = getattr(self, "policy", None)
        optimizer = self.optimizer if with_optimizer else None
        model_state, optim_state = full_state_dicts(policy, optimizer) if policy is not None else (None, None)
        if optim_state is None and optimizer is not None:
            optim_state = copy.deepcopy(optimizer.state_dict())
        if self.ctx.is_main:
            state = CheckpointState(
                step=step, config=self.cfg.model_dump(mode="json"), metrics=metrics, optimizer=optim_state,
                rng=capture_rng(),
            )
            save_checkpoint(self.store, name, unwrap(self.model), self.tokenizer, state, model_state)
        barrier(self.ctx)
        return uri

    # -- one step -------------------------------------------------------------------------

    def step(self, step: int) -> tuple[dict[str, float], list[dict] | None]:
        """Run RL step ``step``; returns its metrics and (sometimes) sample rollouts."""
        cfg, tc, ctx = self.cfg, self.cfg.training, self.ctx
        t0 = time.perf_counter()
        picks = _sample_prompts(len(self.rows), tc.prompts_per_step, generator(tc.seed, "prompts", step))
        local_picks = picks[ctx.shard(len(picks))]
        rows = [self.rows[i] for i in local_picks.tolist()]
        prompts = [self.task.build_prompt(row, self.m, self.tokenizer) for row in rows]
        params = SamplingParams(
            n=cfg.rollout.group_size, temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
            max_new_tokens=cfg.rollout.max_new_tokens, seed=derive_seed(tc.seed, "rollout", step, ctx.rank),
        )
        with root_unsharded(self.policy):
            rollouts = self.engine.generate(prompts, params)
        t1 = time.perf_counter()

        answers = [self.task.parse_answers(text, self.m) for text in rollouts.texts]
        scored = self.task.score([rows[i] for i in rollouts.prompt_index.tolist()], answers)
        group_ids = local_picks.new_tensor(ctx.shard(len(picks)).start) + rollouts.prompt_index
        rewards = all_gather_rows(scored.rewards.float().to(self.device), ctx).cpu()
        mask = all_gather_rows(scored.mask.to(self.device, torch.uint8), ctx).cpu().bool()  # gloo has no bool
        all_groups = all_gather_rows(group_ids.to(self.device), ctx).cpu()
        from components.advantages import compute_advantages

        result = compute_advantages(
            cfg.estimator.name, rewards, mask, all_groups, self.task.fixed_weights, cfg.estimator,
            generator=generator(tc.seed, "advantages", step),
        )
        local_rows = ctx.shard(len(rewards))
        advantages = result.advantages[local_rows]
        t2 = time.perf_counter()

        batch = StepBatch(
            sequences=SequenceBatch(rollouts.prompt_ids, rollouts.prompt_mask, rollouts.completion_ids,
                                    rollouts.completion_mask),
            old_logprobs=rollouts.logprobs,
            advantages=advantages,
        )
        update_metrics = self.update(batch, generator(tc.seed, "minibatches", step, ctx.rank))
        self.engine.update_weights(unwrap(self.model))
        t3 = time.perf_counter()

        metrics = {
            **update_metrics,
            **_reward_metrics(rewards, mask, self.task),
            **{(k if "/" in k else f"vpo/{k}"): float(v) for k, v in result.diagnostics.items()},
            **self._throughput(rollouts, t1 - t0, t3 - t2, t3 - t0),
            "time/generate": t1 - t0,
            "time/score": t2 - t1,
            "time/update": t3 - t2,
        }
        samples = None
        if step % cfg.tracking.log_rollouts_every == 0:
            samples = _samples(rollouts, prompts, answers, scored.rewards, scored.mask, advantages)
        return metrics, samples

    def probe(self) -> dict[str, float]:
        """Search metrics of a pool sampled on the fixed probe set (rank 0; ``probe/*`` keys).

        The probe set is the first ``training.probe_prompts`` training rows; the pool has
        ``training.probe_candidates`` candidates per prompt at ``evaluation.temperature``, with a
        fixed seed, so successive probes differ only by the policy.
        """
        from components.evaluation import pool_metrics, sample_pool

        if not self.ctx.is_main:
            return {}
        tc = self.cfg.training
        with root_unsharded(self.policy):
            pool = sample_pool(
                self.task, self.engine, self.rows[: tc.probe_prompts],
                generations=max(1, tc.probe_candidates // self.m), num_answers=self.m,
                temperature=self.cfg.evaluation.temperature, max_new_tokens=self.cfg.rollout.max_new_tokens,
                seed=self.cfg.evaluation.seed, tokenizer=self.tokenizer,
            )
        flat, _, _ = pool_metrics(
            pool, self.task.fixed_weights, max_k=pool.rewards.shape[1], objective_names=self.task.objective_names,
            generator=torch.Generator().manual_seed(self.cfg.evaluation.seed),
        )
        size = pool.rewards.shape[1]
        keys = ("diversity", "union_coverage", f"best_at_{size}", "fixed_scalar/mean", "valid_fraction")
        return {f"probe/{key}": flat[f"eval/{key}"] for key in keys}

    def _throughput(self, rollouts: Rollouts, t_gen: float, t_update: float, t_step: float) -> dict[str, float]:
        counts = all_reduce_sum(torch.tensor([rollouts.num_completion_tokens, rollouts.num_prompt_tokens]), self.ctx)
        completion, prompt = (int(x) for x in counts)
        return {
            "perf/tokens_per_s": (completion + prompt) / t_step,
            "perf/rollout_tokens_per_s": completion / max(t_gen, 1e-9),
            "perf/update_tokens_per_s": (completion + prompt) * self.cfg.training.ppo_epochs / max(t_update, 1e-9),
            "rollout/completion_tokens_mean": completion / (len(rollouts) * self.ctx.world_size),
        }

    # -- the update -----------------------------------------------------------------------

    @torch.no_grad()
    def _forward_no_grad(self, model: torch.nn.Module, sequences: SequenceBatch) -> torch.Tensor:
        """Per-token log-probs (n, C) of ``model`` in micro-batches, without gradients."""
        tc = self.cfg.training
        module = TokenLogprobs(model, self.cfg.rollout.temperature, tc.logprob_chunk_tokens)
        out = torch.zeros(sequences.completion_ids.shape, dtype=torch.float32)
        for start in range(0, len(sequences), tc.micro_batch_size):
            rows = slice(start, start + tc.micro_batch_size)
            part = sequences.select(rows)
            lp, _ = module(part.to(self.device), with_entropy=False)
            out[rows, : lp.shape[1]] = lp.cpu()
        return out

    def update(self, batch: StepBatch, shuffle: torch.Generator) -> dict[str, float]:
        """PPO epochs over mini-batches of this rank's rollouts; returns train/* metrics."""
        tc, ctx = self.cfg.training, self.ctx
        if tc.recompute_old_logprobs:
            with root_unsharded(self.policy):
                batch.old_logprobs = self._forward_no_grad(unwrap(self.model), batch.sequences)
        if self.reference is not None:
            batch.ref_logprobs = self._forward_no_grad(self.reference, batch.sequences)
        n = len(batch.sequences)
        mini = (tc.mini_batch_size or n * ctx.world_size) // ctx.world_size
        totals = {"loss": 0.0, "pg_loss": 0.0, "kl": 0.0, "entropy": 0.0, "clipped": 0.0, "tokens": 0.0}
        grad_norms = []
        self.policy.train()
        for _ in range(tc.ppo_epochs):
            order = torch.randperm(n, generator=shuffle)
            for start in range(0, n, mini):
                sums, grad_norm = self._optimizer_step(batch, order[start : start + mini])
                grad_norms.append(grad_norm)
                for key, value in sums.items():
                    totals[key] += value
        tokens = max(totals["tokens"], 1.0)
        return {
            "train/loss": totals["loss"] / tokens,
            "train/pg_loss": totals["pg_loss"] / tokens,
            "train/kl": totals["kl"] / tokens,
            "train/entropy": totals["entropy"] / tokens,
            "train/clip_frac": totals["clipped"] / tokens,
            "train/grad_norm": sum(grad_norms) / len(grad_norms),
            "train/advantage_mean": float(batch.advantages.mean()),
        }

    def _optimizer_step(self, batch: StepBatch, rows: torch.Tensor) -> tuple[dict[str, float], float]:
        """Accumulate gradients of ``rows``, clip, step; returns global token sums and the grad norm."""
        sums = self.accumulate_gradients(batch, rows)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.training.grad_clip))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return sums, grad_norm

    def accumulate_gradients(self, batch: StepBatch, rows: torch.Tensor) -> dict[str, float]:
        """Backward the token-mean loss of mini-batch ``rows`` (this rank's share) in micro-batches.

        The loss is a token *sum* scaled by ``world_size / global_tokens``: after DDP's
        gradient averaging the gradient is the token-mean gradient of the global mini-batch.
        Returns global token sums of the loss parts and the token count.
        """
        tc, ctx = self.cfg.training, self.ctx
        global_tokens = all_reduce_sum(batch.sequences.completion_mask[rows].sum(), ctx).item()
        scale = ctx.world_size / max(global_tokens, 1)
        sums = torch.zeros(5, dtype=torch.float64)  # loss, pg_loss, kl, entropy, clipped
        micro = [rows[i : i + tc.micro_batch_size] for i in range(0, len(rows), tc.micro_batch_size)]
        for i, index in enumerate(micro):
            part = batch.sequences.select(index).to(self.device)
            width = part.completion_ids.shape[1]
            old = batch.old_logprobs[index, :width].to(self.device)
            ref = None if batch.ref_logprobs is None else batch.ref_logprobs[index, :width].to(self.device)
            with no_sync(self.policy, sync=i == len(micro) - 1):
                logprobs, entropy = self.policy(part, with_entropy=True)
                loss_sum, parts = policy_loss_sum(
                    logprobs, old, batch.advantages[index].to(self.device), part.completion_mask,
                    clip_low=tc.clip_low, clip_high=tc.clip_high, dual_clip=tc.dual_clip,
                    ref_logprobs=ref, kl_coef=tc.kl_coef, entropy=entropy, entropy_coef=tc.entropy_coef,
                )
                (loss_sum * scale).backward()
            sums += torch.stack([
                loss_sum.detach().double().cpu(),
                parts["pg_loss"].double().cpu(),
                parts.get("kl", torch.zeros(())).double().cpu(),
                parts["entropy"].double().cpu(),
                parts["clipped"].detach().double().cpu(),
            ])
        sums = all_reduce_sum(sums, ctx)
        out = {key: float(v) for key, v in zip(("loss", "pg_loss", "kl", "entropy", "clipped"), sums, strict=True)}
        out["tokens"] = float(global_tokens)
        return out


def _sample_prompts(num_rows: int, count: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` row indices: without replacement when possible, else with replacement."""
    if count <= num_rows:
        return torch.randperm(num_rows, generator=gen)[:count]
    return torch.randint(num_rows, (count,), generator=gen)


def _reward_metrics(rewards: torch.Tensor, mask: torch.Tensor, task: Task) -> dict[str, float]:
    """Means over every answer slot (B, m) — missing answers count as zero rows — per objective,
    of the fixed scalar, of each rollout's best answer, and the share of valid answers."""
    fixed = rewards @ task.fixed_weights.to(rewards.dtype)  # (B, m)
    metrics = {f"reward/{name}/mean": float(rewards[..., j].mean()) for j, name in enumerate(task.objective_names)}
    metrics["reward/fixed/mean"] = float(fixed.mean())
    metrics["reward/fixed/best_of_set"] = float(fixed.max(dim=1).values.mean())
    metrics["reward/valid_answer_frac"] = float(mask.float().mean())
    return metrics


def _samples(
    rollouts: Rollouts, prompts: list[str], answers: list[list[str | None]],
    rewards: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor,
) -> list[dict]:
    """The first :data:`SAMPLES_PER_LOG` rollouts as JSON-able dicts."""
    out = []
    for b in range(min(SAMPLES_PER_LOG, len(rollouts))):
        out.append({
            "prompt": prompts[int(rollouts.prompt_index[b])],
            "completion": rollouts.texts[b],
            "answers": answers[b],
            "reward_matrix": rewards[b].tolist(),
            "answer_mask": mask[b].tolist(),
            "advantage": float(advantages[b]),
            "finish_reason": rollouts.finish_reasons[b],
        })
    return out

