"""Typed run configuration: presets, YAML files and dotted overrides.

One `RunConfig` describes a whole training run. It is built as

    preset defaults  <-  YAML file  <-  --algorithm/--steps/--seed  <-  --set key=value

and validated by pydantic; any bad value raises `ConfigError` whose message names the field.
The same function (`build_config`) serves the CLI, the REST API and the worker.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ALGORITHMS = ("grpo", "remix-grpo", "ppo", "remix-ppo")


class ConfigError(ValueError):
    """A configuration problem, phrased for the user (names the field)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    # "toy" builds the tiny offline Qwen2 model; anything else is a local path or a hub id.
    name_or_path: str = "toy"
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="dtype of the inference-only weights: the anchor and precedent copies, the vLLM "
                               "engine and the exported checkpoint. The trainable policy and critic always keep "
                               "float32 master weights.")
    mixed_precision: Literal["no", "bf16"] = Field(
        "no", description="Compute precision of the trainer's forward passes: 'bf16' runs them under bf16 "
                          "autocast over the float32 master weights (the optimizer state stays float32); "
                          "'no' computes in float32.")
    # Apply the tokenizer's chat template when it has one (R1-distill models do).
    use_chat_template: bool = True
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False


class DataConfig(_Section):
    # "toy" (the synthetic arithmetic task), a .jsonl / .json (array) / .parquet file of
    # {"id","problem","answer"} rows, a benchmark name, or "hf:<dataset id>[:split]".
    train: str = "toy"
    heldout: str = "toy"
    heldout_size: int = Field(200, ge=1)
    # The DeepScaleR instruction appended to each problem (remix_algorithm.md §6.1).
    prompt_suffix: str = " Let's think step by step and output the final answer within \\boxed{}."
    max_prompt_tokens: int = Field(766, ge=1)  # longer prompts are dropped (and counted) at load time
    require_think: bool = True  # reward needs </think> before the boxed answer (DeepScaleR)


VLLM_MAX_TEMPERATURE = 2.0  # vLLM's SamplingParams rejects hotter sampling


class RolloutConfig(_Section):
    backend: Literal["hf", "vllm"] = "hf"
    prompts_per_step: int = Field(16, ge=1)  # prompts per training batch (fresh + replayed)
    group_size: int = Field(8, ge=1)  # responses per prompt (GRPO's G; 1 for PPO)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(64, ge=1)
    # Which behaviour log-probs the buffer stores: the trainer's recomputation (verl's default)
    # or what the rollout engine reported.
    behavior_logprobs: Literal["recompute", "engine"] = "recompute"
    vllm_gpu_memory_utilization: float = Field(0.5, gt=0, le=1)


class ActorConfig(_Section):
    lr: float = Field(1e-6, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    clip_eps: float = Field(0.2, gt=0)  # ε (ε_low when clip_eps_high is set)
    clip_eps_high: float | None = Field(None, gt=0)  # DAPO clip-higher
    dual_clip_c: float | None = Field(None, gt=1)  # dual-clip bound for negative advantages
    kl_coef: float = Field(0.001, ge=0)  # β
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    entropy_coef: float = Field(0.001, ge=0)  # c
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"] = "token-mean"
    mini_batch_size: int = Field(
        8, ge=1, description="Prompts per optimizer step; each brings its rollout.group_size responses "
                             "(verl's ppo_mini_batch_size, counted before × n).")
    max_tokens_per_microbatch: int | None = Field(
        None, ge=1, description="Split each mini-batch into micro-batches of at most this many padded tokens "
                                "(prompt + response) and accumulate gradients; null = one micro-batch. The loss is "
                                "normalised by the whole mini-batch's token/sequence count, so the split does not "
                                "change the update.")
    logprob_max_tokens_per_microbatch: int | None = Field(
        None, ge=1, description="Padded-token budget of the no-grad log-prob passes (π_k, anchor, precedent); "
                                "null = 64 responses at a time.")
    grad_clip: float = Field(1.0, gt=0)
    advantage: Literal["grpo", "rloo", "drgrpo", "gae"] = "grpo"


class CriticConfig(_Section):
    lr: float = Field(1e-5, gt=0)
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(1.0, ge=0, le=1)
    cliprange_value: float = Field(0.5, gt=0)
    whiten_advantages: bool = True
    # Replayed samples get advantages from the current critic ("recompute") or keep the stored ones.
    replay_advantages: Literal["recompute", "stored"] = "recompute"
    max_tokens_per_microbatch: int | None = Field(
        None, ge=1, description="Padded-token budget of the critic's micro-batches (value passes and updates); "
                                "null = one micro-batch per mini-batch.")


class KLConvexSchedule(_Section):
    """λ(t) = max(1 − decay·ceil(max(t − start, 0)/interval), floor)."""

    start: int = Field(50, ge=0)
    interval: int = Field(10, ge=1)
    decay: float = Field(0.1, ge=0, le=1)
    floor: float = Field(0.5, ge=0, le=1)


class RemixConfig(_Section):
    replay_share: float = Field(0.4, ge=0, lt=1)  # p
    window: int = Field(2, ge=1)  # N past policies kept in the buffer
    utd: int = Field(2, ge=1)  # m update epochs per batch (Phase 1)
    kl_convex: bool = True  # off = plain KL to the anchor (λ ≡ 1)
    schedule: KLConvexSchedule = Field(default_factory=KLConvexSchedule)
    reincarnate_at: int | None = Field(50, ge=1)  # T, or null for never
    precedent: Literal["previous", "current"] = "previous"  # π_{k−1} (paper) or π_k (cheaper)
    lag_sampling: Literal["uniform"] = "uniform"  # ν over lags 1..N

    @classmethod
    def off(cls) -> RemixConfig:
        """Every ReMix component switched off: the plain on-policy algorithm."""
        return cls(replay_share=0.0, utd=1, kl_convex=False, reincarnate_at=None)


class TrainerConfig(_Section):
    steps: int = Field(100, ge=1)
    # Stop early once this many rollouts were generated (compare methods at an equal rollout budget).
    max_rollouts: int | None = Field(None, ge=1)
    seed: int = 0
    eval_every: int = Field(10, ge=1)
    eval_greedy: bool = True
    # Real benchmarks (names or JSONL paths) evaluated greedily at every eval step, so that
    # accuracy-vs-rollouts curves can use them: logged as eval/<benchmark>/pass@1.
    eval_benchmarks: list[str] = Field(default_factory=list)
    eval_benchmark_limit: int | None = Field(None, ge=1)
    checkpoint_every: int = Field(25, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    async_checkpoint: bool | None = Field(
        None, description="Write checkpoints on a background thread from a host-memory snapshot, so training "
                          "goes on during the write (the snapshot costs one host copy of the state). None: "
                          "only when training on an accelerator, where the copy to the host is needed "
                          "anyway; on CPU the write is synchronous and copies nothing.")
    log_rollouts: bool = True
    torch_threads: int | None = Field(None, ge=1)


class WarmStartConfig(_Section):
    """Supervised warm start of the toy model (cached on disk by its settings)."""

    steps: int = Field(300, ge=0)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    cache_dir: str | None = None


class RunConfig(_Section):
    preset: str = "toy"
    algorithm: Literal["grpo", "remix-grpo", "ppo", "remix-ppo"] = "remix-grpo"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    actor: ActorConfig = Field(default_factory=ActorConfig)
    critic: CriticConfig = Field(default_factory=CriticConfig)
    remix: RemixConfig = Field(default_factory=RemixConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    warm_start: WarmStartConfig = Field(default_factory=WarmStartConfig)

    @property
    def family(self) -> str:
        """'grpo' or 'ppo': the on-policy learner ReMix wraps."""
        return self.algorithm.removeprefix("remix-")

    @property
    def is_remix(self) -> bool:
        return self.algorithm.startswith("remix-")

    @model_validator(mode="after")
    def _check_combinations(self) -> RunConfig:
        if self.family == "ppo" and self.actor.advantage != "gae":
            raise ValueError(f"actor.advantage: {self.algorithm} uses a critic; set it to 'gae' (got '{self.actor.advantage}')")
        if self.family == "grpo" and self.actor.advantage == "gae":
            raise ValueError(f"actor.advantage: 'gae' needs a critic; use ppo/remix-ppo or grpo/rloo/drgrpo with {self.algorithm}")
        if self.family == "grpo" and self.actor.advantage in ("grpo", "rloo", "drgrpo") and self.rollout.group_size < 2:
            raise ValueError("rollout.group_size: group-relative advantages need at least 2 responses per prompt")
        if self.is_remix and self.remix.replay_share > 0:
            fresh = round((1 - self.remix.replay_share) * self.rollout.prompts_per_step)
            if fresh < 1:
                raise ValueError("remix.replay_share: leaves no fresh prompts per step; lower it or raise rollout.prompts_per_step")
        if self.is_remix and self.remix.kl_convex and self.actor.kl_coef == 0:
            raise ValueError("remix.kl_convex: needs a KL term; set actor.kl_coef > 0 or remix.kl_convex=false")
        if self.rollout.backend == "vllm" and self.rollout.temperature > VLLM_MAX_TEMPERATURE:
            raise ValueError(f"rollout.temperature: vLLM accepts at most {VLLM_MAX_TEMPERATURE} (got {self.rollout.temperature}); "
                             "use the hf backend for hotter sampling")
        # reincarnate_at > steps is allowed: the run ends before reincarnation (as the paper's 7B runs did).
        return self


# --------------------------------------------------------------------------------------------
# Presets. Paper values from remix_algorithm.md §6.2; toy values measured on 2 CPU cores.
# --------------------------------------------------------------------------------------------

_PAPER_COMMON: dict[str, Any] = {
    "model": {"dtype": "bfloat16", "mixed_precision": "bf16", "gradient_checkpointing": True},
    "data": {"train": "hf:agentica-org/DeepScaleR-Preview-Dataset", "heldout": "math500", "max_prompt_tokens": 766},
    "rollout": {"backend": "vllm", "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8192},
    # mini-batch 32 prompts (x n responses) and 17,408-token micro-batches: the paper's verl scripts
    # (remix_algorithm.md §6.2; docs/algorithm.md "Batches").
    "actor": {"lr": 1e-6, "clip_eps": 0.2, "kl_coef": 0.001, "kl_estimator": "k3", "entropy_coef": 0.001,
              "loss_agg": "token-mean", "mini_batch_size": 32, "grad_clip": 1.0,
              "max_tokens_per_microbatch": 17408, "logprob_max_tokens_per_microbatch": 17408},
    "critic": {"lr": 1e-5, "gamma": 1.0, "lam": 1.0, "max_tokens_per_microbatch": 17408},
    "remix": {"replay_share": 0.4, "window": 2, "utd": 2, "kl_convex": True, "reincarnate_at": 100},
    "trainer": {"steps": 500, "eval_every": 25, "checkpoint_every": 50},
    "warm_start": {"steps": 0},
}

PRESETS: dict[str, dict[str, Any]] = {
    "toy": {
        "model": {"name_or_path": "toy", "dtype": "float32"},
        "data": {"train": "toy", "heldout": "toy", "heldout_size": 200, "prompt_suffix": "", "max_prompt_tokens": 64},
        "rollout": {"backend": "hf", "prompts_per_step": 16, "group_size": 8, "temperature": 1.0, "max_new_tokens": 96},
        # lr 1e-5: the climb spans ~100 steps (3e-5 saturates in ~20; 3e-4 was unstable) — measured by
        # benchmarks/toy_calibration.py; warm start 700 x 32 puts greedy pass@1 at 30-40%, pass@8 ~90%.
        "actor": {"lr": 1e-5, "clip_eps": 0.2, "kl_coef": 0.001, "entropy_coef": 0.0},
        "critic": {"lr": 1e-3},
        "remix": {"replay_share": 0.4, "window": 2, "utd": 2, "kl_convex": True, "reincarnate_at": 50,
                  "schedule": {"start": 20, "interval": 5, "decay": 0.1, "floor": 0.5}},
        # One thread: the ~1M-parameter model gains nothing from more, and on 2 shared cores a second
        # thread made generation 20x slower (measured: 0.7 s vs 16.7 s for 128 responses under load).
        "trainer": {"steps": 100, "eval_every": 10, "checkpoint_every": 25, "torch_threads": 1},
        "warm_start": {"steps": 700, "batch_size": 32, "lr": 3e-3},
    },
    "r1-distill-1.5b": _PAPER_COMMON | {
        "model": _PAPER_COMMON["model"] | {"name_or_path": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"},
        "rollout": _PAPER_COMMON["rollout"] | {"prompts_per_step": 256, "group_size": 8},
    },
    "r1-distill-7b": _PAPER_COMMON | {
        "model": _PAPER_COMMON["model"] | {"name_or_path": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"},
        "rollout": _PAPER_COMMON["rollout"] | {"prompts_per_step": 128, "group_size": 8},
    },
}

# Per-family settings applied on top of a preset. PPO samples one response per prompt, so it takes
# group_size x more prompts: the same number of responses per step as GRPO (the paper's 1.5B PPO
# batch is 256 prompts x 1; its GRPO batch 2048 responses).
_FAMILY_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    # Toy mini-batches: 64 responses (8 prompts x 8 for GRPO, 64 prompts x 1 for PPO).
    "toy": {"grpo": {"actor": {"advantage": "grpo", "mini_batch_size": 8}},
            "ppo": {"actor": {"advantage": "gae", "mini_batch_size": 64},
                    "rollout": {"group_size": 1, "prompts_per_step": 128}}},
    "r1-distill-1.5b": {"grpo": {"actor": {"advantage": "grpo"}},
                        "ppo": {"actor": {"advantage": "gae"}, "rollout": {"group_size": 1, "prompts_per_step": 256}}},
    "r1-distill-7b": {"grpo": {"actor": {"advantage": "grpo"}},
                      "ppo": {"actor": {"advantage": "gae"}, "rollout": {"group_size": 1, "prompts_per_step": 256}}},
}


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(item: str) -> tuple[str, Any]:
    """'remix.utd=3' -> ('remix.utd', 3). Values are parsed as YAML scalars (null, true, 0.4, ...)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key=value (e.g. remix.utd=3)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def _format_validation_error(err: ValidationError) -> str:
    msgs = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "config"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown setting"
        if loc == "config" or msg.startswith(loc.split(".")[-1]):
            msgs.append(msg)
        else:
            msgs.append(f"{loc}: {msg}")
    return "; ".join(msgs)


def build_config(
    preset: str = "toy",
    algorithm: str | None = None,
    *,
    file: str | Path | None = None,
    values: dict[str, Any] | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    steps: int | None = None,
    seed: int | None = None,
) -> RunConfig:
    """Build and validate a run config. Raises ConfigError naming the offending field.

    `values` is a nested dict (as sent by the REST API or read from YAML); `overrides` are dotted
    `key=value` strings (CLI) or a {dotted key: value} dict.
    """
    tree: dict[str, Any] = {}
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping")
        tree = _deep_merge(tree, loaded)
    if values:
        tree = _deep_merge(tree, values)
    if isinstance(overrides, dict):
        override_items = list(overrides.items())
    else:
        override_items = [parse_override(o) for o in (overrides or [])]
    for key, value in override_items:
        _set_dotted(tree, key, value)
    preset = tree.pop("preset", None) or preset
    if preset not in PRESETS:
        raise ConfigError(f"preset: unknown preset '{preset}' (choose from {', '.join(PRESETS)})")
    algorithm = algorithm or tree.pop("algorithm", None) or "remix-grpo"
    tree.pop("algorithm", None)
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"algorithm: unknown algorithm '{algorithm}' (choose from {', '.join(ALGORITHMS)})")
    if not algorithm.startswith("remix-") and tree.get("remix"):
        names = ", ".join(f"remix.{k}" for k in tree["remix"])
        raise ConfigError(f"{names}: only used by remix-* algorithms; '{algorithm}' is plain on-policy")
    if algorithm.removeprefix("remix-") == "grpo" and tree.get("critic"):
        names = ", ".join(f"critic.{k}" for k in tree["critic"])
        raise ConfigError(f"{names}: only used by ppo/remix-ppo (GRPO has no critic)")

    merged = _deep_merge(PRESETS[preset], _FAMILY_DEFAULTS[preset][algorithm.removeprefix("remix-")])
    merged = _deep_merge(merged, tree)
    merged["preset"] = preset
    merged["algorithm"] = algorithm
    if steps is not None:
        merged.setdefault("trainer", {})["steps"] = steps
    if seed is not None:
        merged.setdefault("trainer", {})["seed"] = seed
    if not algorithm.startswith("remix-"):
        merged["remix"] = RemixConfig.off().model_dump()
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def load_saved_config(path: str | Path) -> RunConfig:
    """Load a config written by `save_config` (already complete; no preset merging)."""
    try:
        return RunConfig.model_validate(yaml.safe_load(Path(path).read_text()))
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None
