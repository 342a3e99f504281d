"""The trainer end to end on CPU with the tiny model: metrics, checkpoints, estimators, warm start.

Uses a throwaway "letters" task defined here (short prompts, k = 2) so a step
costs well under a second, plus one run on the real maze task.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import pytest
import torch

from components.config import load_config
from components.policy import SamplingParams
from components.tasks.answers import format_tagged, parse_tagged
from components.tasks.base import ScoredBatch
from components.training import load_checkpoint, train_on_task
from components.training.checkpoint import checkpoint_store, latest_checkpoint
from components.training.distributed import DistContext
from components.training.forward import SequenceBatch
from components.training.trainer import StepBatch, Trainer

VOWELS = set("AEIOUaeiou")


class LettersTask:
    """Answer = one letter in ``<a_i>`` tags; objectives: [is a vowel, is upper case]."""

    name = "letters"
    objective_names = ("vowel", "upper")

    @property
    def fixed_weights(self) -> torch.Tensor:
        return torch.tensor([0.5, 0.5])

    def build_prompt(self, row, m, tokenizer=None) -> str:
        return f"#{row['id']} letters x{m}:"

    def parse_answers(self, text: str, m: int) -> list[str | None]:
        return [a if a is not None and len(a) == 1 and a.isalpha() else None for a in parse_tagged(text, "a", m)]

    def dedup_key(self, answer: str) -> Hashable:
        return answer

    def score(self, rows, answers: Sequence[Sequence[str | None]]) -> ScoredBatch:
        m = len(answers[0])
        rewards = torch.zeros(len(rows), m, 2)
        mask = torch.zeros(len(rows), m, dtype=torch.bool)
        for b, row_answers in enumerate(answers):
            seen = set()
            for i, a in enumerate(row_answers):
                if a is None or a in seen:
                    continue
                seen.add(a)
                rewards[b, i] = torch.tensor([a in VOWELS, a.isupper()], dtype=torch.float32)
                mask[b, i] = True
        return ScoredBatch(rewards, mask)

    def is_correct(self, reward: torch.Tensor) -> torch.Tensor:
        return (reward == 1).all(-1)

    def oracle_answers(self, row, m: int) -> list[str]:
        return ["A", "e", "X", "O"][:m]

    def format_answers(self, answers, m: int) -> str:
        return format_tagged(answers, "a", m)


ROWS = [{"id": f"{i:02d}"} for i in range(16)]


pytestmark = pytest.mark.usefixtures("tiny_model_env")


def toy_config(tmp_path, *overrides: str):
    base = [
        f"storage.root=file://{tmp_path}/runs", "name=toy", "task.num_answers=2",
        "model.tiny.hidden_size=32", "model.tiny.intermediate_size=64", "model.tiny.num_attention_heads=2",
        "model.tiny.num_key_value_heads=1",
        "training.steps=2", "training.prompts_per_step=2", "rollout.group_size=4", "rollout.max_new_tokens=16",
        "training.micro_batch_size=4", "training.lr=1e-3", "training.warmup_steps=0", "training.checkpoint_every=10",
        "tracking.log_rollouts_every=2", "estimator.num_weights=16",
    ]
    return load_config(None, base + list(overrides))


class Recorder:
    def __init__(self):
        self.steps: list[tuple[int, dict, list | None]] = []
        self.checkpoints: list[tuple[int, str]] = []

    def on_step(self, step, metrics, samples):
        self.steps.append((step, metrics, samples))

    def on_checkpoint(self, step, uri):
        self.checkpoints.append((step, uri))


def test_training_reports_every_metric_samples_and_checkpoints(tmp_path):
    cfg = toy_config(tmp_path, "training.warmup_steps=2", "training.warmup_batch_size=4", "training.kl_coef=0.01")
    rec = Recorder()
    result = train_on_task(cfg, LettersTask(), ROWS, callback=rec, resume=False)

    warm = [s for s in rec.steps if "warmstart/loss" in s[1]]
    rl = [s for s in rec.steps if "train/loss" in s[1]]
    assert [s[0] for s in warm] == [1, 2] and [s[0] for s in rl] == [1, 2]
    metrics = rl[-1][1]
    expected = {
        "train/loss", "train/kl", "train/entropy", "train/clip_frac", "train/grad_norm",
        "reward/vowel/mean", "reward/upper/mean", "reward/fixed/mean",
        "perf/tokens_per_s", "time/generate", "time/score", "time/update",
    }
    assert expected <= metrics.keys()
    assert any(k.startswith("vpo/") for k in metrics)
    assert all(isinstance(v, float) and v == v for v in metrics.values())
    assert metrics["train/kl"] >= 0 and metrics["train/entropy"] > 0
    # samples every tracking.log_rollouts_every (= 2) steps only
    assert rl[0][2] is None
    sample = rl[1][2][0]
    assert {"prompt", "completion", "answers", "reward_matrix", "advantage"} <= sample.keys()
    assert len(sample["reward_matrix"]) == 2 and len(sample["reward_matrix"][0]) == 2

    assert [c[0] for c in rec.checkpoints] == [0, 2]
    assert result.steps_done == 2 and result.checkpoint_uri.endswith("checkpoints/step-000002")
    assert result.warmstart_uri.endswith("checkpoints/warmstart")
    model, tok, state = load_checkpoint(result.checkpoint_uri)
    assert state.step == 2 and state.optimizer is not None and state.config["name"] == "toy"
    assert tok.decode(tok("<a_1>A</a_1>")["input_ids"]) == "<a_1>A</a_1>"
    _, _, warm_state = load_checkpoint(result.warmstart_uri)
    assert warm_state.step == 0 and warm_state.optimizer is None


@pytest.mark.parametrize(
    "estimator,m", [("vpo", 2), ("multi_rlvr", 2), ("grpo", 1), ("gdpo", 1), ("rloo", 1), ("max_at_k", 1)]
)
def test_estimator_is_switched_by_the_config_field_alone(tmp_path, estimator, m):
    cfg = toy_config(tmp_path, f"estimator.name={estimator}", f"task.num_answers={m}", "training.steps=1")
    rec = Recorder()
    train_on_task(cfg, LettersTask(), ROWS, callback=rec, resume=False)
    assert "train/loss" in rec.steps[-1][1]


def test_no_reference_model_is_kept_when_kl_coef_is_zero(tmp_path):
    cfg = toy_config(tmp_path, "training.kl_coef=0")
    trainer = Trainer(cfg, LettersTask(), ROWS, DistContext())
    trainer.setup(resume=False)
    assert trainer.reference is None
    cfg = toy_config(tmp_path, "training.kl_coef=0.1", "name=toy-kl")
    trainer = Trainer(cfg, LettersTask(), ROWS, DistContext())
    trainer.setup(resume=False)
    assert trainer.reference is not None and not any(p.requires_grad for p in trainer.reference.parameters())


def _rollout_batch(trainer: Trainer, advantages: torch.Tensor) -> StepBatch:
    prompts = [trainer.task.build_prompt(r, 2) for r in ROWS[:2]]
    r = trainer.engine.generate(prompts, SamplingParams(n=4, max_new_tokens=16, seed=0))
    seqs = SequenceBatch(r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)
    return StepBatch(seqs, r.logprobs, advantages)


def _sequence_logprob(trainer: Trainer, batch: StepBatch) -> torch.Tensor:
    with torch.no_grad():
        lp, _ = trainer.policy(batch.sequences)
    return (lp * batch.sequences.completion_mask).sum(1)


def test_update_raises_logprob_of_positive_advantage_rollouts(tmp_path):
    cfg = toy_config(tmp_path, "training.kl_coef=0", "training.lr=1e-3")
    trainer = Trainer(cfg, LettersTask(), ROWS, DistContext())
    trainer.setup(resume=False)
    advantages = torch.tensor([1.0, -1.0] * 4)
    batch = _rollout_batch(trainer, advantages)
    before = _sequence_logprob(trainer, batch)
    metrics = trainer.update(batch, torch.Generator().manual_seed(0))
    after = _sequence_logprob(trainer, batch)
    delta = after - before
    assert (delta[advantages > 0] > 0).all() and (delta[advantages < 0] < 0).all()
    assert metrics["train/clip_frac"] == 0.0 and metrics["train/grad_norm"] > 0


def test_micro_batching_accumulates_the_same_gradient(tmp_path):
    grads = []
    for micro in (1, 3, 8):
        cfg = toy_config(tmp_path, "training.kl_coef=0.01", f"training.micro_batch_size={micro}", f"name=mb{micro}")
        trainer = Trainer(cfg, LettersTask(), ROWS, DistContext())
        trainer.setup(resume=False)
        batch = _rollout_batch(trainer, torch.linspace(-1, 1, 8))
        batch.ref_logprobs = batch.old_logprobs - 0.1
        trainer.accumulate_gradients(batch, torch.arange(8))
        grads.append(torch.cat([p.grad.flatten() for p in trainer.params]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6) and torch.allclose(grads[0], grads[2], atol=1e-6)


def test_warm_start_learns_the_oracle_format(tmp_path):
    cfg = toy_config(
        tmp_path, "training.steps=0", "training.warmup_steps=25", "training.warmup_batch_size=8",
        "training.warmup_lr=3e-3", "training.kl_coef=0",
    )
    rec = Recorder()
    result = train_on_task(cfg, LettersTask(), ROWS, callback=rec, resume=False)
    losses = [m["warmstart/loss"] for _, m, _ in rec.steps]
    assert losses[-1] < 0.5 * losses[0]
    assert result.checkpoint_uri == result.warmstart_uri


def test_incomplete_checkpoints_are_ignored(tmp_path):
    cfg = toy_config(tmp_path, "training.checkpoint_every=1", "training.kl_coef=0")
    train_on_task(cfg, LettersTask(), ROWS, resume=False)
    store = checkpoint_store(cfg)
    assert latest_checkpoint(store)[0] == 2
    store.delete("step-000002/COMPLETE")  # as if the upload of step 2 had crashed
    assert latest_checkpoint(store)[0] == 1
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        load_checkpoint(f"{store.uri}/step-000002")


def test_divisibility_errors_are_clear(tmp_path):
    cfg = toy_config(tmp_path, "training.mini_batch_size=3")
    with pytest.raises(ValueError, match="mini_batch_size=3"):
        train_on_task(cfg, LettersTask(), ROWS, resume=False)


def test_one_maze_step_with_the_real_task(tmp_path):
    from components.tasks.maze import MazeTask, generate_mazes, maze_row

    rows = [maze_row(m, f"m{i}") for i, m in enumerate(generate_mazes(4, seed=0))]
    cfg = toy_config(tmp_path, "task.name=maze", "task.num_answers=3", "training.steps=1",
                     "training.warmup_steps=1", "training.warmup_batch_size=2", "rollout.max_new_tokens=24")
    rec = Recorder()
    train_on_task(cfg, MazeTask(), rows, callback=rec, resume=False)
    metrics = rec.steps[-1][1]
    assert {"reward/completion/mean", "reward/gold/mean", "reward/fixed/mean"} <= metrics.keys()


def test_vpo_train_command_preps_and_trains(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    args = [
        "train", "configs/maze.yaml", "--set", f"storage.root=file://{tmp_path}/runs", "--set", "name=cli",
        "--set", "task.train_size=6", "--set", "task.test_size=2", "--set", "training.steps=1",
        "--set", "training.warmup_steps=1", "--set", "training.warmup_batch_size=2",
        "--set", "training.prompts_per_step=2", "--set", "rollout.group_size=2", "--set", "rollout.max_new_tokens=8",
        "--set", "model.tiny.hidden_size=32", "--set", "model.tiny.intermediate_size=64",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / "cli" / "checkpoints" / "step-000001" / "COMPLETE").exists()
    assert (tmp_path / "runs" / "cli" / "checkpoints" / "warmstart" / "COMPLETE").exists()


def test_probe_logs_pool_metrics_before_rl_and_every_n_steps(tmp_path):
    cfg = toy_config(tmp_path, "training.probe_every=2", "training.probe_prompts=2",
                     "training.probe_candidates=4", "training.kl_coef=0")
    rec = Recorder()
    train_on_task(cfg, LettersTask(), ROWS, callback=rec, resume=False)
    probed = {step: m for step, m, _ in rec.steps if "probe/diversity" in m}
    assert sorted(probed) == [0, 2]  # before RL, then every 2 steps
    assert {"probe/diversity", "probe/union_coverage", "probe/best_at_4", "probe/fixed_scalar/mean"} <= probed[2].keys()
    assert "train/loss" not in probed[0]
