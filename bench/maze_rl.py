"""Maze acceptance experiment: warm start, then RL; held-out fixed-scalar reward before vs after.

For each seed: prepare the maze dataset of CONFIG, train (supervised warm start,
then ``training.steps`` RL steps with ``estimator.name``), and sample the warm-started
model and the final model on the same held-out mazes with the same sampling seed.
The reported number is the mean fixed scalar (mean of the 4 maze objectives) over
every answer slot of every sample (missing answers count as 0).

    .venv/bin/python bench/maze_rl.py --config configs/maze.yaml --seeds 0 1 2

Runs on CPU in a few minutes per seed with one torch thread (``--threads``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.config import load_config  # noqa: E402
from components.datasets import load_split, prepare_dataset  # noqa: E402
from components.policy.rollout import HFEngine, SamplingParams  # noqa: E402
from components.storage import open_store  # noqa: E402
from components.tasks import get_task  # noqa: E402
from components.training import load_checkpoint, train_on_task  # noqa: E402
from components.training.checkpoint import COMPLETE, checkpoint_store, download_checkpoint  # noqa: E402


def copy_checkpoint(src_uri: str, dst_uri: str) -> None:
    """Copy a complete checkpoint (``COMPLETE`` marker last) between stores."""
    src, dst = open_store(src_uri), open_store(dst_uri)
    if dst.exists(COMPLETE):
        return
    with tempfile.TemporaryDirectory() as tmp:
        download_checkpoint(src_uri, tmp)
        dst.put_dir("", tmp)
    dst.write_text(COMPLETE, src.read_text(COMPLETE))


def held_out_reward(uri: str, task, rows: list[dict], m: int, samples: int, temperature: float,
                    max_new_tokens: int, seed: int) -> dict[str, float]:
    """Mean fixed scalar / completion rate / best-of-set of ``samples`` generations per held-out row."""
    model, tokenizer, _ = load_checkpoint(uri)
    engine = HFEngine(model, tokenizer, batch_size=128)
    prompts = [task.build_prompt(row, m, tokenizer) for row in rows]
    params = SamplingParams(n=samples, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    rollouts = engine.generate(prompts, params)
    answers = [task.parse_answers(text, m) for text in rollouts.texts]
    scored = task.score([rows[i] for i in rollouts.prompt_index.tolist()], answers)
    fixed = scored.rewards @ task.fixed_weights  # (N, m)
    return {
        "fixed_mean": float(fixed.mean()),
        "best_of_set": float(fixed.max(1).values.mean()),
        "completion_rate": float(scored.rewards[..., 0].mean()),
        "valid_answer_frac": float(scored.mask.float().mean()),
    }


class PrintProgress:
    def __init__(self, every: int):
        self.every = every

    def on_step(self, step, metrics, samples):
        if step % self.every == 0:
            keys = [k for k in ("warmstart/loss", "reward/fixed/mean", "reward/completion/mean", "train/kl") if k in metrics]
            print(f"  step {step:4d} " + " ".join(f"{k}={metrics[k]:.4f}" for k in keys), flush=True)

    def on_checkpoint(self, step, uri):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/maze.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--eval-prompts", type=int, default=100)
    parser.add_argument("--eval-samples", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--warm-start-from", default=None,
                        help="checkpoint URI used as every seed's warm start (seeds then differ in RL only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = []
    for seed in args.seeds:
        cfg = load_config(args.config, [*args.overrides, f"seed={seed}", f"training.seed={seed}",
                                        f"name=maze-rl-{seed}"])
        manifest = prepare_dataset(cfg)
        task = get_task(cfg)
        train_rows, test_rows = load_split(manifest, "train"), load_split(manifest, "test")[: args.eval_prompts]
        print(f"seed {seed}: {len(train_rows)} train / {len(test_rows)} held-out mazes, "
              f"estimator={cfg.estimator.name}, warm start {cfg.training.warmup_steps} steps, RL {cfg.training.steps} steps", flush=True)
        if args.warm_start_from:
            copy_checkpoint(args.warm_start_from, f"{checkpoint_store(cfg).uri}/warmstart")
        t0 = time.perf_counter()
        result = train_on_task(cfg, task, train_rows, callback=PrintProgress(10), resume=True)
        train_s = time.perf_counter() - t0
        evaluate = dict(task=task, rows=test_rows, m=cfg.task.num_answers, samples=args.eval_samples,
                        temperature=cfg.evaluation.temperature, max_new_tokens=cfg.rollout.max_new_tokens,
                        seed=cfg.evaluation.seed)
        before = held_out_reward(result.warmstart_uri, **evaluate)
        after = held_out_reward(result.checkpoint_uri, **evaluate)
        row = {"seed": seed, "before": before, "after": after, "train_seconds": train_s}
        results.append(row)
        print(f"seed {seed}: fixed {before['fixed_mean']:.4f} -> {after['fixed_mean']:.4f}  "
              f"completion {before['completion_rate']:.3f} -> {after['completion_rate']:.3f}  "
              f"({train_s:.0f} s)", flush=True)

    mean_before = sum(r["before"]["fixed_mean"] for r in results) / len(results)
    mean_after = sum(r["after"]["fixed_mean"] for r in results) / len(results)
    print(f"\nmean fixed scalar over {len(results)} seeds: pre-RL {mean_before:.4f} -> after RL {mean_after:.4f} "
          f"({'improved' if mean_after > mean_before else 'NOT improved'}; "
          f"{sum(r['after']['fixed_mean'] > r['before']['fixed_mean'] for r in results)}/{len(results)} seeds up)")
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": results, "mean_before": mean_before, "mean_after": mean_after}, indent=1))


if __name__ == "__main__":
    main()
