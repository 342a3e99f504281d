"""VPO as a plain function in any policy-gradient loop: the tiny from-scratch model on CPU.

    .venv/bin/python examples/plain_vpo.py            # 3 steps, ~15 s on one core

``vpo_advantages(rewards (B, m, k), group_ids (B,))`` is the whole API: no Prefect,
MLflow or trainer involved. This loop samples ``--group`` completions per prompt,
splits each into m answers (the untrained model writes no ``<response_i>`` tags),
scores every answer on k = 2 dimensions, and takes one REINFORCE step on the VPO
advantage broadcast over the completion's tokens.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.advantages import vpo_advantages  # noqa: E402
from components.config import load_config  # noqa: E402
from components.integrations.multi_answer import multi_answer_prompt  # noqa: E402
from components.policy import load_policy  # noqa: E402

M = 3


def score(text: str) -> tuple[list[list[float]], list[bool]]:
    """(m, k) rewards (share of letters, share of digits) of m equal chunks, and which exist."""
    size = max(len(text) // M, 1)
    answers = [text[i * size : (i + 1) * size] for i in range(M)]
    rows = [[sum(c.isascii() and c.isalpha() for c in a) / max(len(a), 1),
             sum(c.isdigit() for c in a) / max(len(a), 1)] for a in answers]
    return rows, [bool(a) for a in answers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--group", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    model, tokenizer = load_policy(load_config(None, []))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    prompts = [multi_answer_prompt(f"Write {i} letters and {i} digits.", M) for i in range(1, 4)]
    repeated = [p for p in prompts for _ in range(args.group)]
    group_ids = torch.arange(len(repeated)) // args.group
    enc = tokenizer(repeated, return_tensors="pt", padding=True, add_special_tokens=False)
    prompt_len = enc.input_ids.shape[1]

    for step in range(args.steps):
        with torch.no_grad():
            seqs = model.generate(**enc, do_sample=True, top_k=0, max_new_tokens=24,
                                  pad_token_id=tokenizer.pad_token_id)
        completion = seqs[:, prompt_len:]
        completion_mask = (completion != tokenizer.pad_token_id).float()
        scored = [score(t) for t in tokenizer.batch_decode(completion, skip_special_tokens=True)]
        rewards = torch.tensor([rows for rows, _ in scored])  # (B, m, k)
        mask = torch.tensor([present for _, present in scored])  # (B, m)

        advantages, raw = vpo_advantages(  # (B,) each: z-scored within groups, and E_w max
            rewards, group_ids, mask=mask, generator=torch.Generator().manual_seed(step)
        )

        attention = torch.cat([enc.attention_mask, completion_mask.long()], dim=1)
        logits = model(input_ids=seqs, attention_mask=attention).logits[:, prompt_len - 1 : -1]
        logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, completion[..., None])[..., 0]
        loss = -(advantages[:, None] * logp * completion_mask).sum() / completion_mask.sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        print(f"step {step}: E_w max (raw) {raw.mean():.3f}  |A| {advantages.abs().mean():.3f}  "
              f"loss {loss.item():+.4f}")


if __name__ == "__main__":
    main()
