"""Typed, validated run configuration.

A run is declared by one YAML file in ``configs/`` (see ``configs/demo.yaml``)
and loaded into :class:`RunConfig`. Every section is a pydantic model with
``extra="forbid"``: a misspelt field or a bad value fails *before any work
starts*, with the dotted path of the offending field and the reason.

The same models are the parameters of the Prefect flows, so the Prefect UI
renders a typed form from them.

Overrides use dotted paths, as on the command line::

    vpo train configs/demo.yaml --set training.steps=50 --set estimator.name=grpo
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration could not be loaded; the message names every bad field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TaskConfig(_Section):
    """Which task defines the reward vector, and how its dataset is built."""

    name: Literal["maze", "synthetic_code", "livecodebench", "humaneval"] = "synthetic_code"
    """Task name; picks the generator, prompt format and scorer."""
    num_answers: int = Field(3, ge=1, le=16)
    """m: answers requested per generation. 1 = single-answer prompt (GRPO-style)."""
    train_size: int = Field(256, ge=1)
    """Number of training prompts generated (synthetic tasks) or kept (file tasks)."""
    test_size: int = Field(64, ge=0)
    """Number of held-out prompts."""
    seed: int = 0
    """Seed of the dataset generator / split; the same seed gives the same dataset hash."""
    source: str | None = None
    """Input file or URI for file-backed tasks (LiveCodeBench JSON/JSONL); None for generated tasks."""
    max_tests: int = Field(16, ge=1, le=64)
    """Reward dimensions per code problem: at most this many tests, chosen deterministically."""
    max_bad_fraction: float = Field(0.05, ge=0.0, le=1.0)
    """Dataset prep fails when more than this fraction of input rows is malformed."""
    maze_size: int = Field(9, ge=9, le=31)
    """Side of the square maze (odd, >= 9: smaller grids almost never pass the conflict filter). VPO_SPEC §7 uses 9."""
    code_targets: int = Field(3, ge=1, le=4)
    """Synthetic code: target functions per problem (the oracle's programs; keep <= num_answers)."""
    code_tests_per_target: int = Field(3, ge=1, le=5)
    """Synthetic code: tests per target, on inputs 0..this-1 (k = targets x this)."""
    code_layout: Literal["uniform", "easy_first"] = "uniform"
    """Synthetic code: ``uniform`` draws every target from the whole grammar (generator v2);
    ``easy_first`` draws line 1 from ``x+B`` (copy f(0)) and the other lines from the rest of
    the grammar (x*A+B, B-x, x*x+B, x%A+B, ...: a slope or shape to infer): generator v3,
    the task where VPO, Multi-RLVR and GRPO optimise different things (docs/tasks.md)."""
    code_target_weights: list[float] | None = None
    """Synthetic code: relative weight of each target line in the fixed scalar (one per target,
    normalised to sum 1, split evenly over the line's tests); None = the plain mean of the tests."""
    code_duplicate_share: float = Field(0.0, ge=0.0, le=1.0)
    """Synthetic code, warm start only: share of multi-answer oracle sets that are line 1's
    program and behaviour-preserving rewrites of it (semantic duplicates with distinct ASTs)
    instead of one program per line; models a base policy that sometimes repeats itself."""

    @model_validator(mode="after")
    def _odd_maze(self) -> TaskConfig:
        if self.maze_size % 2 == 0:
            raise ValueError(f"maze_size must be odd (rooms sit on even coordinates), got {self.maze_size}")
        return self

    @model_validator(mode="after")
    def _one_weight_per_target(self) -> TaskConfig:
        weights = self.code_target_weights
        if weights is not None:
            if len(weights) != self.code_targets:
                raise ValueError(
                    f"code_target_weights needs one weight per target ({self.code_targets}), got {len(weights)}"
                )
            if any(w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError(f"code_target_weights must be non-negative with a positive sum, got {weights}")
        return self


class TinyModelConfig(_Section):
    """Shape of the from-scratch Qwen2-architecture model used on CPU."""

    hidden_size: int = Field(128, ge=8)
    intermediate_size: int = Field(384, ge=8)
    num_hidden_layers: int = Field(2, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    num_key_value_heads: int = Field(2, ge=1)
    max_position_embeddings: int = Field(1024, ge=64)


class ModelConfig(_Section):
    """The policy model."""

    name_or_path: str = "tiny"
    """A local path or hub id loadable with AutoModelForCausalLM, or ``tiny`` to build one."""
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)
    """Shape of the tiny model, used only when ``name_or_path == "tiny"``."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Parameter dtype; ``auto`` = bfloat16 on CUDA, float32 on CPU."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` = CUDA when available."""
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    gradient_checkpointing: bool = False


class RolloutConfig(_Section):
    """How training rollouts are sampled."""

    engine: Literal["hf", "vllm"] = "hf"
    """Generation backend. ``vllm`` needs the ``gpu`` extra and a CUDA device."""
    group_size: int = Field(8, ge=1)
    """G: rollouts per prompt (one advantage group)."""
    temperature: float = Field(1.0, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(128, ge=1)
    generation_batch_size: int = Field(64, ge=1)
    """Sequences per generate call (memory bound)."""
    gpu_memory_utilization: float = Field(0.5, gt=0.0, lt=1.0)
    """vLLM only: share of GPU memory for the colocated engine."""


class SandboxConfig(_Section):
    """Where and how candidate programs run."""

    backend: Literal["auto", "docker", "process"] = "auto"
    """``auto`` = Docker when an engine answers, else the (weaker) process sandbox, said loudly."""
    image: str = "vpo-sandbox:local"
    workers: int = Field(2, ge=1)
    """Parallel worker containers / processes."""
    timeout_s: float = Field(6.0, gt=0.0)
    """Wall-clock limit per test, seconds (a problem's own, lower time_limit_s wins)."""
    memory_mb: int = Field(512, ge=32)
    """Address-space limit per program, MiB (a problem's lower limit wins); containers get +128 MiB, no swap."""
    cpus: float = Field(1.0, gt=0.0)
    """CPU quota per worker container."""
    pids_limit: int = Field(64, ge=8)
    tmpfs_mb: int = Field(64, ge=1)
    """Size cap of the writable /tmp inside a container, MiB."""
    output_limit_bytes: int = Field(1 << 20, ge=1024)
    """Stdout beyond this is cut and the test marked output_limit."""
    programs_per_worker: int = Field(500, ge=1)
    """A worker container is recycled after this many programs."""
    batch_size: int = Field(8, ge=1)
    """Programs sent to a worker per round trip; a failed batch is retried one program at a time."""
    isolate_programs: bool = False
    """Fork each program from a pristine runner, so no byte of earlier programs (their code,
    outputs) is even in its freed memory; about 2x slower. Off: objects are gone, bytes may linger."""


class EstimatorConfig(_Section):
    """Advantage estimator, switched by name (see components.advantages.ESTIMATORS)."""

    name: Literal[
        "vpo", "vpo_single", "grpo", "multi_rlvr", "max_at_k", "random_weight_grpo", "gdpo", "rloo"
    ] = "vpo"
    num_weights: int = Field(100, ge=1)
    """K: Dirichlet weight vectors per group (VPO)."""
    alpha: float = Field(1.0, gt=0.0)
    """Dirichlet concentration; 1 = uniform on the simplex."""
    sampler: Literal["iid", "sobol"] = "iid"
    """``sobol``: scrambled Sobol points mapped to the simplex (lower-variance weights)."""
    std: Literal["population", "unbiased", "none"] = "population"
    """GRPO-family normalisation: divide by population std, by unbiased std, or not at all."""
    max_at_k: int | None = Field(None, ge=1)
    """k of the Max@k objective; None = max(2, G // 2)."""
    eps: float = Field(1e-6, gt=0.0)


class TrainingConfig(_Section):
    """Policy-gradient update (VPO_SPEC §4) and the supervised warm start."""

    steps: int = Field(30, ge=0)
    prompts_per_step: int = Field(8, ge=1)
    mini_batch_size: int | None = Field(None, ge=1)
    """Rollouts per optimizer step; None = the whole step batch (one update per step)."""
    micro_batch_size: int = Field(16, ge=1)
    """Rollouts per forward/backward (gradient accumulation inside a mini-batch)."""
    ppo_epochs: int = Field(1, ge=1)
    lr: float = Field(1e-6, gt=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.01, ge=0.0)
    grad_clip: float = Field(1.0, gt=0.0)
    clip_low: float = Field(0.2, ge=0.0)
    clip_high: float = Field(0.2, ge=0.0)
    dual_clip: float | None = Field(3.0, gt=1.0)
    """Dual-clip constant c for negative advantages; None disables it."""
    kl_coef: float = Field(1e-3, ge=0.0)
    """low_var_kl coefficient; 0 keeps no reference model."""
    entropy_coef: float = Field(0.0, ge=0.0)
    checkpoint_every: int = Field(10, ge=1)
    seed: int = 0
    warmup_steps: int = Field(0, ge=0)
    """Supervised warm-start steps on oracle answers before RL (0 = none)."""
    warmup_lr: float = Field(1e-3, gt=0.0)
    """AdamW learning rate of the warm start."""
    warmup_batch_size: int = Field(32, ge=1)
    """Prompts (each with its oracle completion) per warm-start step."""
    probe_every: int = Field(0, ge=0)
    """RL steps between probes (0 = none): the policy samples a pool on a fixed probe set (the
    first ``probe_prompts`` training rows) at ``evaluation.temperature`` before RL (step 0) and
    every this many steps, and logs ``probe/diversity``, ``probe/union_coverage``,
    ``probe/best_at_<C>`` and ``probe/fixed_scalar/mean``: whether a run keeps its spread or collapses."""
    probe_prompts: int = Field(8, ge=1)
    """Prompts in the probe set."""
    probe_candidates: int = Field(12, ge=1)
    """Candidates per probe prompt (generations x m for set methods, samples for single-answer ones)."""
    recompute_old_logprobs: bool = False
    """Recompute pi_old with the training forward instead of using the sampling pass's log-probs (use with bf16/vLLM)."""
    logprob_chunk_tokens: int = Field(4096, ge=1)
    """Response tokens per LM-head chunk in the training forward (bounds logits memory for large vocabularies)."""
    strategy: Literal["ddp", "fsdp"] = "ddp"
    """Data-parallel engine under torchrun: DDP replicas or FSDP2 sharding (models that do not fit one GPU)."""


class EvaluationConfig(_Section):
    """Evaluation pools and search metrics (VPO_SPEC §6)."""

    num_prompts: int | None = Field(None, ge=1)
    """Held-out prompts to evaluate; None = the whole test split."""
    set_generations: int = Field(10, ge=1)
    """Generations per prompt for multi-answer methods (pool = this x m)."""
    single_samples: int = Field(30, ge=1)
    """Samples per prompt for single-answer methods."""
    temperature: float = Field(0.7, gt=0.0)
    max_k: int = Field(30, ge=1)
    """best@k / pass@k are reported for k = 1..max_k."""
    seed: int = 0
    evolve_iterations: int = Field(0, ge=0)
    """OpenEvolve iterations per hard problem; 0 skips evolutionary search."""
    evolve_problems: int = Field(8, ge=1)
    """At most this many hard held-out problems (best@pool = 0 for every checkpoint) are searched."""
    evolve_prompt_mode: Literal["task", "chat"] = "task"
    """How OpenEvolve's requests reach the policy: ``task`` = the problem's task prompt (tiny model),
    ``chat`` = OpenEvolve's own prompt through the tokenizer's chat template (instruction models)."""


class TrackingConfig(_Section):
    """MLflow tracking. The URI falls back to $MLFLOW_TRACKING_URI, then a local SQLite store."""

    tracking_uri: str | None = None
    experiment: str = "vpo-demo"
    log_rollouts_every: int = Field(5, ge=1)
    """Sampled rollouts (prompt, answers, reward matrix, advantage) are logged every N steps."""
    system_metrics: bool = True
    registered_model: str | None = None
    """Register the final model under this name (None = do not register)."""
    model_alias: str = "candidate"


class StorageConfig(_Section):
    """Artifact store for datasets and checkpoints (file:// or s3://)."""

    root: str = "file://./runs"
    """Base URI; s3://bucket/prefix uses $AWS_ENDPOINT_URL / credentials from the environment."""
    multipart_threshold_mb: int = Field(64, ge=5)


class RunConfig(_Section):
    """One pipeline run: every stage reads its section of this."""

    name: str = "demo"
    """Run name; stage outputs live under ``{storage.root}/{name}/``."""
    seed: int = 0
    task: TaskConfig = Field(default_factory=TaskConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    estimator: EstimatorConfig = Field(default_factory=EstimatorConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        single = self.estimator.name in {"vpo_single", "grpo", "random_weight_grpo", "gdpo", "rloo", "max_at_k"}
        if single and self.task.num_answers != 1:
            raise ValueError(
                f"estimator.name={self.estimator.name!r} is a single-answer method: "
                f"set task.num_answers=1 (got {self.task.num_answers})"
            )
        if self.estimator.name in {"vpo", "multi_rlvr"} and self.task.num_answers < 2:
            raise ValueError(
                f"estimator.name={self.estimator.name!r} needs task.num_answers >= 2 "
                f"(use vpo_single / grpo for m = 1)"
            )
        return self


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        lines.append(f"  {path}: {e['msg']}")
    return "\n".join(lines)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b.c=value`` overrides applied.

    Values are parsed as YAML scalars (``3`` -> int, ``true`` -> bool, ``[1,2]`` -> list).
    """
    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected dotted.path=value")
        path, raw = item.split("=", 1)
        keys = path.strip().split(".")
        if not all(keys):
            raise ConfigError(f"override {item!r}: empty path component")
        node = out
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {key} is not a section")
            node = child
        node[keys[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a run config from YAML (or the defaults when ``path`` is None) plus overrides.

    Raises:
        ConfigError: unreadable file, bad YAML, or any invalid field (message lists dotted paths).
    """
    source = str(path) if path is not None else "<defaults>"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config {source}: {exc}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config {source} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {source}: top level must be a mapping, got {type(loaded).__name__}")
        data = loaded
    data = apply_overrides(data, overrides or [])
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def flatten_config(cfg: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Flatten a config into ``{"training.lr": 1e-6, ...}`` (for MLflow params)."""
    flat: dict[str, Any] = {}
    for key, value in cfg.model_dump(mode="json").items():
        _flatten_into(flat, f"{prefix}{key}", value)
    return flat


def _flatten_into(flat: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten_into(flat, f"{key}.{k}", v)
    else:
        flat[key] = value
