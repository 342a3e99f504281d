"""Benchmark: vectorised VPO advantages vs a naive per-group Python loop.

    .venv/bin/python bench/advantages.py                      # CPU, and CUDA when available
    .venv/bin/python bench/advantages.py --device cpu --threads 1 --repeats 50

For each (B, m, k, K), groups of 8 rollouts, it draws one set of weights
(G, K, k), runs both implementations on the same rewards, weights and mask,
asserts that they agree, and prints the best-of-N milliseconds of each and the
speed-up. "+draw" is the vectorised call drawing its own weights (what a
training step pays).

Two clocks: wall (perf_counter) and, on CPU, the process CPU time
(process_time). On a shared machine the wall clock also measures the
neighbours (a descheduled thread stalls the others); CPU time measures the work
this process did, so with --threads 1 it is the steadiest figure there is.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.advantages import sample_simplex_weights, vpo_advantages  # noqa: E402

SHAPES = [(1024, 3, 16, 100), (8192, 3, 16, 100)]
GROUP_SIZE = 8
TARGET_SPEEDUP = 20.0


def naive_vpo(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    group_ids: torch.Tensor,
    weights: torch.Tensor,
    eps: float = 1e-6,
) -> torch.Tensor:
    """VPO_SPEC §2 as a loop over groups: raw_b = mean_j max_s w_j . r_s, then z-norm.

    Same float32 arithmetic as the vectorised path, so the timing compares loops, not dtypes.
    """
    advantages = torch.zeros(rewards.shape[0], device=rewards.device)
    for g_index, g in enumerate(torch.unique(group_ids).tolist()):
        members = torch.nonzero(group_ids == g).squeeze(1)
        scores = torch.einsum("nmk,jk->nmj", rewards[members], weights[g_index])
        scores = scores.masked_fill(~mask[members][..., None], float("-inf"))
        best = scores.max(dim=1).values
        raw = torch.where(torch.isneginf(best), torch.zeros_like(best), best).mean(dim=1)
        std = raw.std(correction=0)
        if std >= eps:
            advantages[members] = (raw - raw.mean()) / (std + eps)
    return advantages


def best_of(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, float]:
    """(min wall ms, min process-CPU ms) over ``repeats`` calls after one warm-up."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        walls.append((time.perf_counter() - wall) * 1e3)
        cpus.append((time.process_time() - cpu) * 1e3)
    return min(walls), min(cpus)


def bench_one(shape: tuple[int, int, int, int], device: torch.device, repeats: int) -> dict:
    batch, m, k, num_weights = shape
    generator = torch.Generator(device=device).manual_seed(0)
    mask = torch.rand(batch, m, generator=generator, device=device) > 0.2
    rewards = torch.rand(batch, m, k, generator=generator, device=device) * mask[..., None]
    group_ids = torch.arange(batch // GROUP_SIZE, device=device).repeat_interleave(GROUP_SIZE)
    weights = sample_simplex_weights(
        batch // GROUP_SIZE, num_weights, k, generator=generator, device=device
    )

    fast, _ = vpo_advantages(rewards, group_ids, weights=weights, mask=mask)
    slow = naive_vpo(rewards, mask, group_ids, weights)
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)

    def vectorised():
        return vpo_advantages(rewards, group_ids, weights=weights, mask=mask)

    def with_draw():
        return vpo_advantages(
            rewards, group_ids, num_weights=num_weights, generator=generator, mask=mask
        )

    def naive():
        return naive_vpo(rewards, mask, group_ids, weights)

    return {
        "vectorised": best_of(vectorised, repeats, device),
        "with_draw": best_of(with_draw, repeats, device),
        "naive": best_of(naive, max(3, repeats // 4), device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["all", "cpu", "cuda"], default="all")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] if args.device in ("all", "cpu") else []
    if args.device in ("all", "cuda"):
        if torch.cuda.is_available():
            devices.append(torch.device("cuda"))
        elif args.device == "cuda":
            sys.exit("no CUDA device available")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), groups of 8")
    print("best-of-N milliseconds, wall / process CPU (CPU time is not meaningful on CUDA)")
    header = (
        f"{'device':<6} {'B':>5} {'m':>2} {'k':>3} {'K':>4} | {'vectorised':>13} "
        f"{'+draw':>13} {'naive loop':>15} | {'speed-up wall / cpu':>20}"
    )
    print(header)
    print("-" * len(header))
    for device in devices:
        for shape in SHAPES:
            t = bench_one(shape, device, args.repeats)
            (vw, vc), (dw, dc), (nw, nc) = t["vectorised"], t["with_draw"], t["naive"]
            print(
                f"{device.type:<6} {shape[0]:>5} {shape[1]:>2} {shape[2]:>3} {shape[3]:>4} | "
                f"{vw:>6.2f} / {vc:>4.1f} {dw:>6.2f} / {dc:>4.1f} {nw:>7.1f} / {nc:>5.1f} | "
                f"{nw / vw:>8.1f}x / {nc / max(vc, 1e-9):>6.1f}x"
            )
            if device.type == "cpu" and shape[0] == 8192:
                verdict = "met" if nw / vw >= TARGET_SPEEDUP else "NOT met"
                print(
                    f"       target >= {TARGET_SPEEDUP:.0f}x (wall) at B = 8192 on CPU: {verdict}"
                )
        if device.type == "cuda":
            print(f"       CUDA device: {torch.cuda.get_device_name(device)}")
    print("numerical agreement with the naive loop: OK (atol 1e-4, rtol 1e-4)")


if __name__ == "__main__":
    main()
