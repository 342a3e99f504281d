"""Data parallelism: 2 CPU processes with gloo (torchrun-style env) match the single-process update."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from loopback_servers import free_port
from test_trainer import ROWS, LettersTask, toy_config

from components.policy import SamplingParams
from components.training.distributed import DistContext, init_distributed
from components.training.forward import SequenceBatch
from components.training.trainer import StepBatch, Trainer

WORLD = 2


def _config(root: Path, name: str, *extra: str):
    return toy_config(root, f"name={name}", "training.kl_coef=0.02", "training.micro_batch_size=3", *extra)


def _fixed_batch(trainer: Trainer) -> StepBatch:
    prompts = [trainer.task.build_prompt(r, 2) for r in ROWS[:4]]
    r = trainer.engine.generate(prompts, SamplingParams(n=2, max_new_tokens=16, seed=11))
    seqs = SequenceBatch(r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)
    return StepBatch(seqs, r.logprobs, torch.linspace(-1.5, 1.0, len(r)), ref_logprobs=r.logprobs - 0.05)


def _shard(batch: StepBatch, rows: slice) -> StepBatch:
    s = batch.sequences
    return StepBatch(
        SequenceBatch(s.prompt_ids[rows], s.prompt_mask[rows], s.completion_ids[rows], s.completion_mask[rows]),
        batch.old_logprobs[rows], batch.advantages[rows], batch.ref_logprobs[rows],
    )


def _worker(rank: int, root: str, port: int) -> None:
    os.environ.update(
        WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    root_path = Path(root)
    ctx = init_distributed()
    try:
        assert ctx == DistContext(rank, WORLD, rank)
        # 1. One mini-batch: the DDP-synchronised gradient of each rank's half.
        trainer = Trainer(_config(root_path, "ddp"), LettersTask(), ROWS, ctx)
        trainer.setup(resume=False)
        batch = torch.load(root_path / "batch.pt", weights_only=False)
        local = _shard(batch, ctx.shard(len(batch.advantages)))
        sums = trainer.accumulate_gradients(local, torch.arange(len(local.advantages)))
        grads = torch.cat([p.grad.flatten() for p in trainer.params])
        torch.save({"grads": grads, "sums": sums}, root_path / f"rank{rank}.pt")
        # 2. The whole trainer for two steps: replicas stay identical, rank 0 checkpoints.
        run = Trainer(_config(root_path, "ddp-run", "training.steps=2"), LettersTask(), ROWS, ctx)
        result = run.run(resume=False)
        params = torch.cat([p.detach().flatten() for p in run.params])
        torch.save({"params": params, "uri": result.checkpoint_uri}, root_path / f"run{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_match_the_single_process_update(tmp_path, tiny_model_env):
    single = Trainer(_config(tmp_path, "single"), LettersTask(), ROWS, DistContext())
    single.setup(resume=False)
    batch = _fixed_batch(single)
    torch.save(batch, tmp_path / "batch.pt")
    sums = single.accumulate_gradients(batch, torch.arange(len(batch.advantages)))
    expected = torch.cat([p.grad.flatten() for p in single.params])

    mp.spawn(_worker, args=(str(tmp_path), free_port()), nprocs=WORLD, join=True)

    for rank in range(WORLD):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.allclose(got["grads"], expected, rtol=1e-4, atol=1e-6), (got["grads"] - expected).abs().max()
        for key in ("loss", "kl", "clipped", "tokens"):
            assert got["sums"][key] == pytest.approx(sums[key], rel=1e-5, abs=1e-7), key
    run0, run1 = torch.load(tmp_path / "run0.pt"), torch.load(tmp_path / "run1.pt")
    assert torch.equal(run0["params"], run1["params"])
    assert run0["uri"].endswith("step-000002")
    assert (tmp_path / "runs" / "ddp-run" / "checkpoints" / "step-000002" / "COMPLETE").exists()


def _fsdp_worker(rank: int, root: str, port: int) -> None:
    os.environ.update(
        WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    ctx = init_distributed()
    try:
        common = ("training.strategy=fsdp", "training.warmup_steps=1", "training.warmup_batch_size=4",
                  "training.checkpoint_every=1")
        first = Trainer(_config(Path(root), "fsdp", "training.steps=1", *common), LettersTask(), ROWS, ctx)
        first.run(resume=False)
        resumed = Trainer(_config(Path(root), "fsdp", "training.steps=2", *common), LettersTask(), ROWS, ctx)
        result = resumed.run(resume=True)
        if ctx.is_main:
            torch.save({"uri": result.checkpoint_uri, "loss": result.final_metrics["train/loss"]},
                       Path(root) / "fsdp.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_fsdp_two_processes_train_checkpoint_and_resume(tmp_path, tiny_model_env):
    """FSDP2 (training.strategy=fsdp) on 2 CPU processes: warm start, a step, a full-weight
    checkpoint, and a resumed step that reloads the gathered optimizer state."""
    mp.spawn(_fsdp_worker, args=(str(tmp_path), free_port()), nprocs=WORLD, join=True)
    out = torch.load(tmp_path / "fsdp.pt")
    assert out["uri"].endswith("step-000002") and out["loss"] == out["loss"]
    from components.training import load_checkpoint

    model, _, state = load_checkpoint(out["uri"])
    assert state.step == 2 and state.optimizer is not None
    assert model.model.embed_tokens.weight.shape[0] == 260  # full (gathered) weights, not a shard
