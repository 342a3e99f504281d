"""VPO inside the RL stacks teams already run (docs/integrations.md).

* :mod:`components.integrations.trl`: ``VPOGRPOTrainer``, TRL's ``GRPOTrainer`` with
  the advantage replaced by :func:`components.advantages.compute_advantages`.
* :mod:`components.integrations.verl`: ``vpo``, ``vpo_single``, ``multi_rlvr`` and
  ``max_at_k`` in verl's advantage-estimator registry.

Each submodule imports its framework; this package imports neither.
"""
