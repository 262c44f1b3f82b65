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

from remix_engine.prompts import INSTRUCTION

ALGORITHMS = ("grpo", "remix-grpo", "ppo", "remix-ppo")


class ConfigError(ValueError):
    """A configuration problem, phrased for the user (names the field)."""


# Upper bounds keep a typo (or a hostile request) from asking for a run no machine can hold.
MAX_STEPS = 10_000_000
MAX_TOKENS = 131_072  # the longest context of the supported model families


class _Section(BaseModel):
    # Infinity and NaN are not settings (and are not valid JSON): reject them up front.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelConfig(_Section):
    name_or_path: str = Field("toy", description="'toy' builds the tiny offline Qwen2 model; anything else is a "
                                                 "local checkpoint directory or a Hugging Face hub id.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="dtype of the inference-only weights: the anchor and precedent copies, the vLLM "
                               "engine and the exported checkpoint. The trainable policy and critic always keep "
                               "float32 master weights.")
    mixed_precision: Literal["no", "bf16"] = Field(
        "no", description="Compute precision of the trainer's forward passes: 'bf16' runs them under bf16 "
                          "autocast over the float32 master weights (the optimizer state stays float32); "
                          "'no' computes in float32.")
    use_chat_template: bool = Field(True, description="Render prompts with the tokenizer's chat template when it "
                                                      "has one (R1-distill models do).")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub (transformers' "
                                                       "trust_remote_code).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: less "
                                                            "memory, about a third more compute.")


class DataConfig(_Section):
    train: str = Field("toy", description="Training prompts: 'toy' (the synthetic arithmetic task), a .jsonl / "
                                          ".json (array) / .parquet file of {id, problem, answer} rows, a benchmark "
                                          "name, or hf:<dataset id>[:split].")
    heldout: str = Field("toy", description="Held-out prompts evaluated every trainer.eval_every steps (same "
                                            "kinds of source as data.train).")
    heldout_size: int = Field(200, ge=1, le=100_000, description="Held-out problems evaluated (the first N).")
    prompt_suffix: str = Field(INSTRUCTION, description="Appended to each problem: the DeepScaleR instruction "
                                                        "(remix_algorithm.md §6.1).")
    max_prompt_tokens: int = Field(766, ge=1, le=MAX_TOKENS, description="Longer prompts are dropped (and counted) at load time.")
    require_think: bool = Field(True, description="The reward needs </think> before the boxed answer "
                                                  "(DeepScaleR); false grades the last box wherever it is.")


VLLM_MAX_TEMPERATURE = 2.0  # vLLM's SamplingParams rejects hotter sampling


class RolloutConfig(_Section):
    backend: Literal["hf", "vllm"] = Field("hf", description="Generation engine: 'hf' (transformers generate) or "
                                                             "'vllm' (the vllm extra).")
    prompts_per_step: int = Field(16, ge=1, le=65_536, description="Prompts per training batch (fresh + replayed).")
    group_size: int = Field(8, ge=1, le=1024, description="Responses per prompt (GRPO's G; 1 for PPO).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the rollouts.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass of the rollouts (1 = off).")
    max_new_tokens: int = Field(64, ge=1, le=MAX_TOKENS, description="Longest response; longer ones are cut (truncated).")
    behavior_logprobs: Literal["recompute", "engine"] = Field(
        "recompute", description="Behaviour log-probs stored with each rollout: the trainer's recomputation "
                                 "('recompute', verl's default) or what the rollout engine reported ('engine').")
    vllm_gpu_memory_utilization: float = Field(0.5, gt=0, le=1, description="Share of GPU memory vLLM may take "
                                                                            "(vllm backend).")
    vllm_sleep: bool | None = Field(None, description="vLLM sleep mode: free the engine's weights and KV cache while "
                                                      "the policy trains, wake it for the next weight sync (GPU only); "
                                                      "null = on when training on a GPU.")


class ActorConfig(_Section):
    lr: float = Field(1e-6, gt=0, le=1, description="Policy learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0, le=1, description="AdamW weight decay of the policy.")
    clip_eps: float = Field(0.2, gt=0, description="ε of the clipped objective (ε_low when clip_eps_high is set).")
    clip_eps_high: float | None = Field(None, gt=0, description="Upper clip bound (DAPO clip-higher); null = "
                                                                "clip_eps.")
    dual_clip_c: float | None = Field(None, gt=1, description="Dual-clip bound for negative advantages; null = off.")
    kl_coef: float = Field(0.001, ge=0, le=1000, description="β, the weight of the KL term.")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k3", description="Per-token KL estimator (k3: the low-variance "
                                                                      "one, clamped to ±10).")
    entropy_coef: float = Field(0.001, ge=0, le=1000, description="c, the weight of the entropy bonus.")
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"] = Field(
        "token-mean", description="How per-token losses are averaged into the batch loss.")
    mini_batch_size: int = Field(
        8, ge=1, le=65_536, description="Prompts per optimizer step; each brings its rollout.group_size responses "
                             "(verl's ppo_mini_batch_size, counted before × n).")
    max_tokens_per_microbatch: int | None = Field(
        None, ge=1, le=100 * MAX_TOKENS, description="Split each mini-batch into micro-batches of at most this many padded tokens "
                                "(prompt + response) and accumulate gradients; null = one micro-batch. The loss is "
                                "normalised by the whole mini-batch's token/sequence count, so the split does not "
                                "change the update.")
    logprob_max_tokens_per_microbatch: int | None = Field(
        None, ge=1, le=100 * MAX_TOKENS, description="Padded-token budget of the no-grad log-prob passes (π_k, anchor, precedent); "
                                "null = 64 responses at a time.")
    grad_clip: float = Field(1.0, gt=0, description="Gradient-norm clip of the policy update.")
    advantage: Literal["grpo", "rloo", "drgrpo", "gae"] = Field(
        "grpo", description="Advantage estimator: group-relative (grpo, rloo, drgrpo) or the critic's GAE "
                            "(ppo/remix-ppo).")


class CriticConfig(_Section):
    lr: float = Field(1e-5, gt=0, le=1, description="Critic learning rate (PPO only).")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount γ of GAE.")
    lam: float = Field(1.0, ge=0, le=1, description="λ of GAE (bias-variance trade-off).")
    cliprange_value: float = Field(0.5, gt=0, description="Clip range of the value loss.")
    whiten_advantages: bool = Field(True, description="Normalise GAE advantages over the batch.")
    replay_advantages: Literal["recompute", "stored"] = Field(
        "recompute", description="Replayed samples get advantages from the current critic ('recompute') or keep "
                                 "the ones stored when they were generated ('stored').")
    max_tokens_per_microbatch: int | None = Field(
        None, ge=1, le=100 * MAX_TOKENS, description="Padded-token budget of the critic's micro-batches (value passes and updates); "
                                "null = one micro-batch per mini-batch.")


class KLConvexSchedule(_Section):
    """λ(t) = max(1 − decay·ceil(max(t − start, 0)/interval), floor)."""

    start: int = Field(50, ge=0, le=MAX_STEPS, description="Step at which λ starts to decay.")
    interval: int = Field(10, ge=1, le=MAX_STEPS, description="Steps between two decays of λ.")
    decay: float = Field(0.1, ge=0, le=1, description="How much λ drops at each decay.")
    floor: float = Field(0.5, ge=0, le=1, description="The lowest λ.")


class RemixConfig(_Section):
    replay_share: float = Field(0.4, ge=0, lt=1, description="p, the share of each batch replayed from earlier "
                                                             "policies' rollouts.")
    window: int = Field(2, ge=1, le=1000, description="N, how many past policies' rollouts the buffer keeps (replayed "
                                             "uniformly over the lags present).")
    utd: int = Field(2, ge=1, le=100, description="m, update epochs over each batch (the update-to-data ratio).")
    kl_convex: bool = Field(True, description="KL-Convex: KL to a λ(t)-mix of the anchor and the precedent policy; "
                                              "off = plain KL to the anchor (λ ≡ 1).")
    schedule: KLConvexSchedule = Field(default_factory=KLConvexSchedule, description="λ(t) of KL-Convex.")
    reincarnate_at: int | None = Field(50, ge=1, le=MAX_STEPS, description="T: the anchor becomes π_T, the buffer is dropped, "
                                                             "p → 0 and m → 1; null = never.")
    precedent: Literal["previous", "current"] = Field(
        "previous", description="The precedent policy of KL-Convex: π_{k−1} ('previous', the paper) or π_k "
                                "('current', cheaper).")

    @model_validator(mode="before")
    @classmethod
    def _drop_removed_fields(cls, data: Any) -> Any:
        # Configs saved before `lag_sampling` was removed (it had one value, uniform) still load.
        if isinstance(data, dict) and data.get("lag_sampling", "uniform") == "uniform":
            data = {k: v for k, v in data.items() if k != "lag_sampling"}
        return data

    @classmethod
    def off(cls) -> RemixConfig:
        """Every ReMix component switched off: the plain on-policy algorithm."""
        return cls(replay_share=0.0, utd=1, kl_convex=False, reincarnate_at=None)


class TrainerConfig(_Section):
    steps: int = Field(100, ge=1, le=MAX_STEPS, description="Training steps (one batch of rollouts each).")
    max_rollouts: int | None = Field(None, ge=1, le=10**12, description="Stop early once this many rollouts were generated "
                                                             "(compare methods at an equal rollout budget).")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of data order, sampling and initialisation.")
    eval_every: int = Field(10, ge=1, le=MAX_STEPS, description="Evaluate on the held-out set every this many steps.")
    eval_greedy: bool = Field(True, description="Held-out evaluation decodes greedily (else at "
                                                "rollout.temperature).")
    eval_benchmarks: list[str] = Field(default_factory=list, description="Benchmarks (names or JSONL paths) also "
                                       "evaluated greedily at every eval step, logged as eval/<benchmark>/pass@1.")
    eval_benchmark_limit: int | None = Field(None, ge=1, le=100_000, description="First N problems of each eval benchmark; "
                                                                     "null = all.")
    checkpoint_every: int = Field(25, ge=1, le=MAX_STEPS, description="Save a checkpoint every this many steps (and at the end).")
    keep_checkpoints: int = Field(2, ge=1, le=1000, description="Checkpoints kept on disk (older ones are deleted).")
    async_checkpoint: bool | None = Field(
        None, description="Write checkpoints on a background thread from a host-memory snapshot, so training "
                          "goes on during the write (the snapshot costs one host copy of the state). None: "
                          "only when training on an accelerator, where the copy to the host is needed "
                          "anyway; on CPU the write is synchronous and copies nothing.")
    log_rollouts: bool = Field(True, description="Emit every rollout and rollout use to the sinks (the traces and "
                                                 "off-policy views need them).")
    token_stats_every: int = Field(
        1, ge=0, le=1_000_000, description="Per-token statistics (the tokens, behaviour log-probs and, at every use, "
                                           "π_k's log-probs, advantages, entropy and clipped tokens: the trace page's "
                                           "token lens) for one rollout in N, chosen by a hash of its uid; 0 = none.")
    torch_threads: int | None = Field(None, ge=1, le=1024, description="torch CPU threads; null = torch's default.")


class WarmStartConfig(_Section):
    """Supervised warm start of the toy model (cached on disk by its settings)."""

    steps: int = Field(300, ge=0, le=1_000_000, description="Supervised steps on the toy task's demonstrations (0 = none).")
    batch_size: int = Field(64, ge=1, le=65_536, description="Demonstrations per warm-start step.")
    lr: float = Field(3e-3, gt=0, le=1, description="Warm-start learning rate.")
    processes: int = Field(1, ge=1, le=64, description="Data-parallel CPU processes for the warm start (capped at "
                                                        "the machine's cores); the weights do not depend on it up "
                                                        "to float rounding (bitwise for the toy preset's 2).")
    cache_dir: str | None = Field(None, description="Where the warm-started weights are cached when "
                                                    "$REMIX_CACHE_DIR is not set; null = "
                                                    "~/.cache/remix-studio/warmstart.")


class ResourcesConfig(_Section):
    gpus: int = Field(1, ge=1, le=64, description="Training processes (one per GPU; on a CPU machine, processes "
                                                  "joined with gloo). >1 shards the policy and critic with FSDP2 "
                                                  "through accelerate and splits each step's prompts across them.")
    queue: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                              description="Celery queue the studio sends the job to (e.g. 'gpu8' for whole-node "
                                          "jobs); null = the worker default (REMIX_GPU_QUEUE, 'gpu').")


class AlertsConfig(_Section):
    """Thresholds of the health alerts (remix_engine/alerts.py); null turns a rule off. Relative rules
    compare the mean of the last 3 steps with the mean of the run's first 3."""

    entropy_collapse: float | None = Field(0.2, gt=0, lt=1, description="Fires when actor/entropy falls below this "
                                                                        "fraction of its start.")
    zero_variance_groups: float | None = Field(0.8, gt=0, le=1, description="Fires when at least this share of GRPO "
                                                                            "groups has one reward for all responses.")
    truncation: float | None = Field(0.2, gt=0, le=1, description="Fires when at least this share of responses hits "
                                                                  "rollout.max_new_tokens.")
    mismatch_growth: float | None = Field(4.0, gt=1, description="Fires when the engine–trainer KL (rollout_corr/kl_k3) "
                                                                 "grows to this multiple of its start (and above 1e-3).")
    ratio_blowup: float | None = Field(10.0, gt=1, description="Fires when the largest importance ratio of any "
                                                               "replayed policy age exceeds this.")
    replay_clipfrac: float | None = Field(0.3, gt=0, le=1, description="Fires when the clipped-token share of any "
                                                                       "replayed policy age exceeds this.")
    length_runaway: float | None = Field(2.0, gt=1, description="Fires when the mean response length grows to this "
                                                                "multiple of its start, or shrinks to its inverse.")
    reflection_collapse: float | None = Field(0.5, gt=0, lt=1, description="Fires when the self-reflection rate falls "
                                                                           "below this fraction of its start.")


class RunConfig(_Section):
    preset: str = Field("toy", description="The preset the run started from (toy, toy-long, r1-distill-1.5b, "
                                            "r1-distill-7b).")
    algorithm: Literal["grpo", "remix-grpo", "ppo", "remix-ppo"] = Field(
        "remix-grpo", description="grpo / ppo: the on-policy baselines; remix-*: the same code with replay, "
                                  "UTD, KL-Convex and reincarnation on.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The policy model.")
    data: DataConfig = Field(default_factory=DataConfig, description="Prompt sources and prompts.")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="Generation of the rollouts.")
    actor: ActorConfig = Field(default_factory=ActorConfig, description="The policy update.")
    critic: CriticConfig = Field(default_factory=CriticConfig, description="The value model (ppo/remix-ppo).")
    remix: RemixConfig = Field(default_factory=RemixConfig, description="The ReMix components (remix-* only).")
    trainer: TrainerConfig = Field(default_factory=TrainerConfig, description="Loop, evaluation and checkpoints.")
    warm_start: WarmStartConfig = Field(default_factory=WarmStartConfig, description="The toy's supervised warm "
                                                                                     "start.")
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig, description="Processes (GPUs) and queue "
                                                                                     "of the run.")
    alerts: AlertsConfig = Field(default_factory=AlertsConfig, description="Health alert thresholds.")

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
# Presets: only where they differ from the field defaults (the defaults are the paper's values,
# remix_algorithm.md §6.2, unless a field says otherwise); toy values measured on 2 CPU cores.
# --------------------------------------------------------------------------------------------

_PAPER_COMMON: dict[str, Any] = {
    "model": {"dtype": "bfloat16", "mixed_precision": "bf16", "gradient_checkpointing": True},
    "data": {"train": "hf:agentica-org/DeepScaleR-Preview-Dataset", "heldout": "math500"},
    "rollout": {"backend": "vllm", "max_new_tokens": 8192},
    # mini-batch 32 prompts (x n responses) and 17,408-token micro-batches: the paper's verl scripts
    # (remix_algorithm.md §6.2; docs/algorithm.md "Batches"). The other paper values are the defaults.
    "actor": {"mini_batch_size": 32, "max_tokens_per_microbatch": 17408, "logprob_max_tokens_per_microbatch": 17408},
    "critic": {"max_tokens_per_microbatch": 17408},
    "remix": {"reincarnate_at": 100},
    # token statistics for 1 rollout in 16: 8k-token responses make them the largest rows per rollout
    "trainer": {"steps": 500, "eval_every": 25, "checkpoint_every": 50, "token_stats_every": 16},
    "warm_start": {"steps": 0},
}

_TOY: dict[str, Any] = {
    "data": {"prompt_suffix": "", "max_prompt_tokens": 64},
    "rollout": {"max_new_tokens": 96},
    # lr 1e-5: the climb spans ~100 steps (3e-5 saturates in ~20; 3e-4 was unstable) — measured by
    # benchmarks/toy_calibration.py; warm start 700 x 32 puts greedy pass@1 at 30-40%, pass@8 ~90%.
    "actor": {"lr": 1e-5, "entropy_coef": 0.0},
    "critic": {"lr": 1e-3},
    "remix": {"schedule": {"start": 20, "interval": 5}},
    # One thread: the ~1M-parameter model gains nothing from more, and on 2 shared cores a second
    # thread made generation 20x slower (measured: 0.7 s vs 16.7 s for 128 responses under load).
    "trainer": {"torch_threads": 1},
    "warm_start": {"steps": 700, "batch_size": 32, "processes": 2},
}

PRESETS: dict[str, dict[str, Any]] = {
    "toy": _TOY,
    # The toy with 3x longer responses (remix_engine/toy.py, issue 19's long-horizon study): prompt and
    # response fit the toy model's 256 positions; 8 prompts x 8 per step, half the toy's responses.
    "toy-long": _TOY | {
        "data": {"train": "toy-long", "heldout": "toy-long", "prompt_suffix": "", "max_prompt_tokens": 40},
        "rollout": {"max_new_tokens": 216, "prompts_per_step": 8},
    },
    "r1-distill-1.5b": _PAPER_COMMON | {
        "model": _PAPER_COMMON["model"] | {"name_or_path": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"},
        "rollout": _PAPER_COMMON["rollout"] | {"prompts_per_step": 256},
    },
    "r1-distill-7b": _PAPER_COMMON | {
        "model": _PAPER_COMMON["model"] | {"name_or_path": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"},
        "rollout": _PAPER_COMMON["rollout"] | {"prompts_per_step": 128},
    },
}

# Per-family settings applied on top of a preset. PPO samples one response per prompt, so it takes
# group_size x more prompts: the same number of responses per step as GRPO (the paper's 1.5B PPO
# batch is 256 prompts x 1; its GRPO batch 2048 responses).
_FAMILY_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    # Toy mini-batches: 64 responses (8 prompts x 8 for GRPO, 64 prompts x 1 for PPO).
    "toy": {"grpo": {},
            "ppo": {"actor": {"advantage": "gae", "mini_batch_size": 64},
                    "rollout": {"group_size": 1, "prompts_per_step": 128}}},
    "toy-long": {"grpo": {"actor": {"mini_batch_size": 4}},
                 "ppo": {"actor": {"advantage": "gae", "mini_batch_size": 32},
                         "rollout": {"group_size": 1, "prompts_per_step": 64}}},
    "r1-distill-1.5b": {"grpo": {},
                        "ppo": {"actor": {"advantage": "gae"}, "rollout": {"group_size": 1, "prompts_per_step": 256}}},
    "r1-distill-7b": {"grpo": {},
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


def config_fields(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[dict[str, Any]]:
    """Every setting as {key (dotted), type, default, description}: the one source of the help text
    that `remix config`, the OpenAPI schema and the New-run page show."""
    out: list[dict[str, Any]] = []
    for name, field in model.model_fields.items():
        key = prefix + name
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += config_fields(annotation, key + ".")
            continue
        default = field.get_default(call_default_factory=True)
        out.append({"key": key, "type": _type_name(annotation), "default": default,
                    "description": field.description or "", **_bounds(field)})
    return out


def _bounds(field) -> dict[str, float]:
    """The field's numeric limits as {minimum, exclusive_minimum, maximum, exclusive_maximum} (JSON-schema names)."""
    names = {"ge": "minimum", "gt": "exclusive_minimum", "le": "maximum", "lt": "exclusive_maximum"}
    return {names[attr]: getattr(m, attr) for m in field.metadata for attr in names if hasattr(m, attr)}


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "")
    return annotation.__name__ if isinstance(annotation, type) else text


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
