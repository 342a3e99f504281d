"""Stateless seeding: every random draw of a step comes from a generator seeded by
``(run seed, purpose, step, rank)``.

A resumed run therefore draws exactly what the uninterrupted run would have
drawn at the same step, without replaying earlier draws.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that depends on every part (order matters)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(*parts: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator seeded with :func:`derive_seed` of ``parts``."""
    return torch.Generator(device=device).manual_seed(derive_seed(*parts))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch global RNGs (for library code that uses them)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)
