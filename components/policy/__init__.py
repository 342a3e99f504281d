"""The policy: model/tokenizer loading (incl. the tiny factory) and rollout engines."""

from components.policy.model import load_policy
from components.policy.rollout import HFEngine, RolloutEngine, Rollouts, SamplingParams, make_engine

__all__ = ["HFEngine", "RolloutEngine", "Rollouts", "SamplingParams", "load_policy", "make_engine"]
