"""Resume: 2 steps + resume + 1 step reproduces 3 uninterrupted steps bit for bit on CPU."""

from __future__ import annotations

import pytest
import torch
from test_trainer import ROWS, LettersTask, Recorder, toy_config

from components.training import load_checkpoint, train_on_task

pytestmark = pytest.mark.usefixtures("tiny_model_env")


def _config(tmp_path, name: str, steps: int):
    # Warm start + KL to the warm-started reference: resume must reload both exactly.
    return toy_config(
        tmp_path, f"name={name}", f"training.steps={steps}", "training.checkpoint_every=2",
        "training.warmup_steps=2", "training.warmup_batch_size=4", "training.kl_coef=0.05",
        "training.micro_batch_size=3", "training.lr=3e-3",
    )


def test_resume_reproduces_the_next_step_exactly(tmp_path):
    straight = Recorder()
    full = train_on_task(_config(tmp_path, "straight", 3), LettersTask(), ROWS, callback=straight, resume=False)

    first = Recorder()
    train_on_task(_config(tmp_path, "resumed", 2), LettersTask(), ROWS, callback=first, resume=False)
    second = Recorder()
    resumed = train_on_task(_config(tmp_path, "resumed", 3), LettersTask(), ROWS, callback=second, resume=True)

    # The resumed run neither repeats the warm start nor the first two steps.
    assert [s for s, m, _ in second.steps] == [3] and "train/loss" in second.steps[0][1]
    by_step = {s: m for s, m, _ in straight.steps if "train/loss" in m}
    for key in ("train/loss", "train/kl", "train/entropy", "reward/fixed/mean", "train/grad_norm"):
        assert second.steps[0][1][key] == by_step[3][key], key  # bit-for-bit

    model_a, _, state_a = load_checkpoint(full.checkpoint_uri)
    model_b, _, state_b = load_checkpoint(resumed.checkpoint_uri)
    assert state_a.step == state_b.step == 3
    for (name, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_resume_after_the_last_step_does_nothing(tmp_path):
    cfg = _config(tmp_path, "done", 2)
    train_on_task(cfg, LettersTask(), ROWS, resume=False)
    rec = Recorder()
    result = train_on_task(cfg, LettersTask(), ROWS, callback=rec, resume=True)
    assert rec.steps == [] and result.steps_done == 2
    assert result.checkpoint_uri.endswith("step-000002")
