"""VPO with TRL's GRPOTrainer on CPU: the tiny from-scratch model, two reward dimensions, 3 answers.

    .venv/bin/python examples/trl_vpo.py                    # VPO, 2 steps, ~1 min on one core
    .venv/bin/python examples/trl_vpo.py --estimator multi_rlvr --steps 3

What a TRL user changes (docs/integrations.md):
  * prompts go through ``multi_answer_prompt(prompt, m)``;
  * ``GRPOTrainer`` becomes ``VPOGRPOTrainer(..., num_answers=m, estimator="vpo")``;
  * each reward function scores ONE answer, in [0, 1]; each is one reward dimension.

The untrained tiny model never writes ``<response_i>`` tags, so by default this
example splits each completion into m equal chunks (``--parser chunks``) to give
the estimator real (m, k) rewards; ``--parser tags`` is the default parser a
real model uses.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets import Dataset  # noqa: E402
from trl import GRPOConfig  # noqa: E402

from components.config import load_config  # noqa: E402
from components.integrations.trl import (  # noqa: E402
    VPOGRPOTrainer,
    multi_answer_prompt,
    parse_responses,
)
from components.policy import load_policy  # noqa: E402


def letters(completions, **_):
    """Dimension 1: share of ASCII letters in the answer."""
    return [sum(c.isascii() and c.isalpha() for c in a) / max(len(a), 1) for a in completions]


def digits(completions, **_):
    """Dimension 2: share of digits in the answer (trades off against letters)."""
    return [sum(c.isdigit() for c in a) / max(len(a), 1) for a in completions]


def chunks(text: str, m: int) -> list[str | None]:
    """m equal slices of the completion (an empty slice is a missing answer)."""
    size = max(len(text) // m, 1)
    return [text[i * size : (i + 1) * size] or None for i in range(m)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--estimator", default="vpo", help="vpo | multi_rlvr | vpo_single (m = 1) | ...")
    parser.add_argument("--answers", type=int, default=3, help="m, answers per completion")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--parser", choices=("chunks", "tags"), default="chunks")
    args = parser.parse_args()
    torch.set_num_threads(1)
    m = 1 if args.estimator == "vpo_single" else args.answers

    model, tokenizer = load_policy(load_config(None, []))  # tiny Qwen2, built offline and cached
    questions = [f"Write {i} letters and {i} digits." for i in range(1, 9)]
    dataset = Dataset.from_dict({"prompt": [multi_answer_prompt(q, m) for q in questions]})
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out, per_device_train_batch_size=8, num_generations=4, max_completion_length=24,
            max_steps=args.steps, learning_rate=1e-4, beta=0.0, logging_steps=1, save_strategy="no",
            report_to=[], use_cpu=True, bf16=False, seed=0, disable_tqdm=True,
        )
        trainer = VPOGRPOTrainer(
            model=model, processing_class=tokenizer, reward_funcs=[letters, digits], args=config,
            train_dataset=dataset, num_answers=m, estimator=args.estimator,
            answer_parser=chunks if args.parser == "chunks" else parse_responses,
        )
        trainer.train()
    for entry in trainer.state.log_history:
        if "vpo/advantage_abs_mean" in entry:
            vpo = {k: round(v, 4) for k, v in entry.items() if k.startswith("vpo/")}
            print(f"step {entry['step']}: reward {entry['reward']:.4f} {vpo}")
    scored = trainer.last_scored
    print(f"last step: rewards {tuple(scored.rewards.shape)} (B, m, k), "
          f"advantages mean {scored.advantages.mean():+.2e}, std {scored.advantages.std(correction=0):.3f}")


if __name__ == "__main__":
    main()
