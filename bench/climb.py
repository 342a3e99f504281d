"""How far does RL climb its estimator's objective? One warm start per seed, then RL per variant.

For each seed: a warm start of CONFIG (``training.steps=0``), copied into each variant's run
(as ``bench/maze_rl.py --warm-start-from`` does, so variants of a seed differ in RL only), then
``training.steps`` RL steps; prints the climb of the objective the estimator climbs
(``components.compare.climbed_objective``): last quarter minus first quarter of the RL steps,
in standard errors (``components.compare.quarter_climb``), and writes every step's metrics.

    .venv/bin/python bench/climb.py --config configs/demo.yaml --seeds 1 2 \\
        --variant p8 --set training.prompts_per_step=8

``--set`` overrides apply to the RL runs only: the warm start is CONFIG's, shared by every
variant of a seed (under ``{root}/warm-{seed}``). One torch thread by default; the process sandbox (the climb does not depend on isolation).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from maze_rl import copy_checkpoint  # noqa: E402

from components.compare import climbed_objective, quarter_climb  # noqa: E402
from components.config import load_config  # noqa: E402
from components.datasets import load_split, prepare_dataset  # noqa: E402
from components.sandbox import open_sandbox  # noqa: E402
from components.storage import open_store  # noqa: E402
from components.tasks import get_task  # noqa: E402
from components.training import train_on_task  # noqa: E402
from components.training.checkpoint import checkpoint_store  # noqa: E402


class History:
    """A TrainCallback that keeps every RL step's metrics and prints the objective every 4 steps."""

    def __init__(self, key: str):
        self.key, self.steps = key, {}

    def on_step(self, step: int, metrics: dict[str, float], samples: list[dict] | None) -> None:
        for name, value in metrics.items():
            self.steps.setdefault(name, []).append(value)
        if step % 4 == 0 and self.key in metrics:
            print(f"  step {step:3d} {self.key} = {metrics[self.key]:.4f}", flush=True)

    def on_checkpoint(self, step: int, uri: str) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--variant", default="base", help="a name for this set of overrides")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--root", default="file://./runs/climb", help="storage root of the runs")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    for seed in args.seeds:
        base = [f"training.seed={seed}", f"storage.root={args.root}", "sandbox.backend=process"]
        warm = load_config(args.config, [*base, f"name=warm-{seed}", "training.steps=0"])
        cfg = load_config(args.config, [*base, f"name={args.variant}-{seed}", *args.overrides])
        rows = load_split(prepare_dataset(warm), "train")
        with open_sandbox(warm.sandbox) as sandbox:
            warm_uri = train_on_task(warm, get_task(warm, sandbox), rows, resume=True).warmstart_uri
            copy_checkpoint(warm_uri, f"{checkpoint_store(cfg).uri}/warmstart")
            history, started = History(climbed_objective(cfg.estimator.name)), time.perf_counter()
            train_on_task(cfg, get_task(cfg, sandbox), rows, callback=history, resume=True)
        climb = quarter_climb(history.steps[history.key])
        print(f"{args.variant} seed {seed}: {history.key} climb {climb.mean:+.4f} ± {climb.stderr:.4f} "
              f"= {climb.mean / climb.stderr:+.2f} s.e. ({time.perf_counter() - started:.0f} s of RL)", flush=True)
        run_store = open_store(cfg.storage.root).child(cfg.name)
        run_store.write_text("history.json", json.dumps(history.steps))
        print(f"  every step's metrics: {run_store.uri}/history.json")


if __name__ == "__main__":
    main()
