"""Training-step benchmark: our trainer vs TRL's GRPOTrainer on the same work, side by side.

CPU part (default): the tiny from-scratch Qwen2 (``model.tiny`` of the default
config), ``--prompts`` maze prompts x ``--group`` rollouts, ``--new-tokens`` new
tokens at most, GRPO advantages on a cheap scalar reward, low_var_kl to a frozen
reference (beta = ``--kl``), token-mean loss, one optimizer step per batch, the
whole batch in one micro-batch. Both trainers sample from the same weights, so
completion lengths follow the same distribution; throughput is reported per
processed token and per step. Prints rollout tokens/s and update tokens/s of ours,
then the step time of both and the ratio (TRL step time / ours: > 1 = ours faster).

GPU part (``--gpu``, needs CUDA): a Qwen2.5-0.5B-shaped model (random init,
bf16): generation tokens/s of our hf engine (static cache + compiled decode) beside
plain ``model.generate`` at batch ``--gpu-batch`` (128-token prompts, 256 new
tokens), update tokens/s, MFU = 6 * N * tokens / time / 989e12, peak memory.

    .venv/bin/python bench/train.py                 # CPU, ours vs TRL
    python bench/train.py --gpu --skip-trl          # on a GPU box
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.config import load_config  # noqa: E402
from components.policy import HFEngine, SamplingParams, load_policy  # noqa: E402
from components.tasks.base import ScoredBatch  # noqa: E402
from components.tasks.maze import MazeTask, generate_mazes, maze_row  # noqa: E402
from components.training.distributed import DistContext  # noqa: E402
from components.training.trainer import Trainer  # noqa: E402

H100_BF16_FLOPS = 989e12


def move_fraction(texts: list[str]) -> list[float]:
    """The benchmark reward: share of characters that are maze moves (U/D/L/R)."""
    return [sum(c in "UDLR" for c in t) / max(len(t), 1) for t in texts]


class MoveFractionTask:
    """Single-answer task for the benchmark: the whole completion is the answer, k = 1."""

    name = "bench"
    objective_names = ("moves",)
    fixed_weights = torch.ones(1)

    def __init__(self):
        self.maze = MazeTask()

    def build_prompt(self, row, m, tokenizer=None):
        return self.maze.build_prompt(row, 1, None)

    def parse_answers(self, text, m):
        return [text]

    def dedup_key(self, answer):
        return answer

    def score(self, rows, answers):
        values = torch.tensor(move_fraction([a[0] for a in answers]), dtype=torch.float32)
        return ScoredBatch(values[:, None, None], torch.ones(len(rows), 1, dtype=torch.bool))

    def is_correct(self, reward):
        return (reward == 1).all(-1)

    def oracle_answers(self, row, m):
        return self.maze.oracle_answers(row, 1)

    def format_answers(self, answers, m):
        return answers[0]


def bench_ours(args, rows, root: str) -> dict[str, float]:
    cfg = load_config(None, [
        f"storage.root=file://{root}", "name=bench-ours", "task.num_answers=1", "estimator.name=grpo",
        f"training.prompts_per_step={args.prompts}", f"rollout.group_size={args.group}",
        f"rollout.max_new_tokens={args.new_tokens}", f"rollout.generation_batch_size={args.prompts * args.group}",
        f"training.micro_batch_size={args.prompts * args.group}", f"training.kl_coef={args.kl}",
        "training.lr=1e-4", f"training.steps={args.steps + 1}", "training.checkpoint_every=1000",
    ])
    trainer = Trainer(cfg, MoveFractionTask(), rows, DistContext())
    trainer.setup(resume=False)
    runs = [trainer.step(step)[0] for step in range(1, args.steps + 2)][1:]  # first step = warm-up
    keys = ("time/generate", "time/score", "time/update", "perf/rollout_tokens_per_s", "perf/update_tokens_per_s",
            "rollout/completion_tokens_mean")
    out = {k: statistics.mean(r[k] for r in runs) for k in keys}
    out["step_s"] = statistics.mean(r["time/generate"] + r["time/score"] + r["time/update"] for r in runs)
    return out


def bench_trl(args, rows, root: str) -> dict[str, float]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer = load_policy(load_config(None, []))
    task = MoveFractionTask()
    prompts = [task.build_prompt(r, 1) for r in rows[: args.prompts * (args.steps + 1)]]

    def reward(completions, **_):
        return move_fraction(completions)

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self.lengths: list[float] = []

        def on_log(self, args, state, control, logs=None, **k):
            if logs and "completions/mean_length" in logs:
                self.lengths.append(float(logs["completions/mean_length"]))

        def on_step_begin(self, *a, **k):
            self._t = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self._t)

    batch = args.prompts * args.group
    config = GRPOConfig(
        output_dir=os.path.join(root, "trl"), per_device_train_batch_size=batch, gradient_accumulation_steps=1,
        num_generations=args.group, steps_per_generation=1, num_iterations=1,
        max_completion_length=args.new_tokens, temperature=1.0, top_p=1.0, top_k=0, beta=args.kl,
        loss_type="dapo", epsilon=0.2, learning_rate=1e-4, max_steps=args.steps + 1, logging_steps=1,
        save_strategy="no", report_to=[], use_cpu=True, bf16=False, seed=0, shuffle_dataset=False,
        disable_tqdm=True,
    )
    timer = StepTimer()
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, processing_class=tokenizer,
                          train_dataset=Dataset.from_dict({"prompt": prompts}), callbacks=[timer])
    trainer.train()
    return {"step_s": statistics.mean(timer.times[1:]),
            "rollout/completion_tokens_mean": statistics.mean(timer.lengths[1:])}


def bench_gpu(args) -> None:
    """Qwen2.5-0.5B shape, random init, bf16: our engine vs model.generate, update MFU, peak memory."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    from components.training.forward import SequenceBatch, TokenLogprobs
    from components.training.loss import policy_loss_sum

    device = torch.device("cuda")
    config = Qwen2Config(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, max_position_embeddings=32768, tie_word_embeddings=True, rope_theta=1e6,
    )
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa").to(device)
    n_params = sum(p.numel() for p in model.parameters())
    from components.policy.tiny import build_char_tokenizer

    tokenizer = build_char_tokenizer()  # ids < 260 are valid ids of the big vocabulary too
    b, p, new = args.gpu_batch, 128, 256
    prompts = ["".join(chr(65 + (i * 7 + j) % 26) for j in range(p)) for i in range(b)]
    enc = tokenizer(prompts, return_tensors="pt", add_special_tokens=False).to(device)

    def timed(fn):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        return out, time.perf_counter() - t

    model.generation_config.eos_token_id = None  # fixed lengths for both engines
    _, t_plain = timed(lambda: model.generate(**enc, do_sample=True, max_new_tokens=new, min_new_tokens=new,
                                              top_k=0, pad_token_id=0))
    engine = HFEngine(model, tokenizer, batch_size=b, static_cache=True, compile=True)
    engine.generate(prompts[:b], SamplingParams(n=1, max_new_tokens=8, seed=0))  # compile warm-up
    rollouts, t_ours = timed(lambda: engine.generate(prompts, SamplingParams(n=1, max_new_tokens=new, seed=1)))
    print(f"generation  plain generate {b * new / t_plain:,.0f} new tok/s | ours {rollouts.num_completion_tokens / t_ours:,.0f} "
          f"new tok/s | speed-up {(rollouts.num_completion_tokens / t_ours) / (b * new / t_plain):.2f}x")

    mb = 64
    seqs = SequenceBatch(rollouts.prompt_ids[:mb], rollouts.prompt_mask[:mb], rollouts.completion_ids[:mb],
                         rollouts.completion_mask[:mb]).to(device)
    policy = TokenLogprobs(model, chunk_tokens=8192)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    torch.cuda.reset_peak_memory_stats()

    def update():
        lp, _ = policy(seqs, with_entropy=False)
        loss, _ = policy_loss_sum(lp, lp.detach(), torch.ones(mb, device=device), seqs.completion_mask,
                                  clip_low=0.2, clip_high=0.2, dual_clip=3.0)
        (loss / seqs.completion_mask.sum()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    update()
    _, t_update = timed(update)
    tokens = int(seqs.prompt_mask.sum() + seqs.completion_mask.sum())
    mfu = 6 * n_params * tokens / t_update / H100_BF16_FLOPS
    print(f"update      {tokens / t_update:,.0f} tok/s on {mb} x {p + new} tokens | MFU {100 * mfu:.1f}% | "
          f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB | N = {n_params / 1e6:.0f}M")


def main() -> None:
    parser = argparse.ArgumentParser(description="our training step vs TRL GRPOTrainer")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--kl", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--gpu", action="store_true", help="run the GPU part (0.5B model, bf16)")
    parser.add_argument("--gpu-batch", type=int, default=256)
    args = parser.parse_args()
    if args.gpu:
        bench_gpu(args)
        return
    torch.set_num_threads(args.threads)
    rows = [maze_row(m, f"b{i}") for i, m in enumerate(generate_mazes(args.prompts * (args.steps + 1), seed=0))]
    with tempfile.TemporaryDirectory() as root:
        os.environ.setdefault("VPO_CACHE_DIR", os.path.join(root, "cache"))
        ours = bench_ours(args, rows, root)
        print(f"batch {args.prompts} prompts x {args.group} rollouts, <= {args.new_tokens} new tokens, "
              f"{torch.get_num_threads()} torch thread(s), tiny Qwen2 on CPU")
        print(f"ours  step {ours['step_s']:.2f} s (generate {ours['time/generate']:.2f}, score {ours['time/score']:.3f}, "
              f"update {ours['time/update']:.2f}) | rollout {ours['perf/rollout_tokens_per_s']:,.0f} tok/s | "
              f"update {ours['perf/update_tokens_per_s']:,.0f} tok/s | mean completion "
              f"{ours['rollout/completion_tokens_mean']:.1f} tokens")
        if args.skip_trl:
            return
        trl = bench_trl(args, rows, root)
        print(f"TRL   step {trl['step_s']:.2f} s | mean completion {trl['rollout/completion_tokens_mean']:.1f} tokens")
        per_token_ours = ours["step_s"] / ours["rollout/completion_tokens_mean"]
        per_token_trl = trl["step_s"] / trl["rollout/completion_tokens_mean"]
        print(f"ratio TRL/ours: {trl['step_s'] / ours['step_s']:.2f}x per step, "
              f"{per_token_trl / per_token_ours:.2f}x per completion token (> 1: ours is faster)")


if __name__ == "__main__":
    main()
