"""Policy models and tokenizers: the tiny offline toy model, or any Hugging Face causal LM.

* `build_toy_tokenizer` — a character-level tokenizer (digits, letters, operators, punctuation,
  space, newline) with ``<think>``, ``</think>`` and ``\\boxed{`` as single tokens and a chat
  template that renders one user turn as ``<s>{content}\\n<think>`` — the toy's counterpart of
  R1-distill's ``<｜begin▁of▁sentence｜><｜User｜>{content}<｜Assistant｜><think>\\n`` — so prompts go
  through the same ``apply_chat_template`` call for the toy and for real models. The think tags are
  *added* tokens but not *special* ones: ``decode(..., skip_special_tokens=True)`` keeps
  ``</think>`` (the grader needs it) and drops only pad/bos/eos/unk.
* `build_toy_model` — a 4-layer, width-128 Qwen2 (~0.8M parameters), random init from a seed.
* `load_policy` — ``"toy"`` → toy tokenizer + model + cached supervised warm start; anything else
  → ``AutoModelForCausalLM`` / ``AutoTokenizer`` from a local directory or a hub id.
* `load_pretrained` — a checkpoint directory written by ``save_pretrained``.
* `build_real_shape_model` — a stand-in for a released checkpoint (e.g. R1-Distill-Qwen-1.5B): its
  exact architecture (width, heads, vocabulary) with few layers and random weights, and a tokenizer
  of the same vocabulary size (character-level pieces plus filler tokens) with an R1-style chat
  template; offline, for memory measurements and CPU runs of the paper presets.

A saved toy checkpoint (model + tokenizer in one directory) must be loaded with `load_pretrained`
(or ``PreTrainedTokenizerFast.from_pretrained``) rather than ``AutoTokenizer``: for a directory
whose config says ``model_type: qwen2``, transformers 5 forces its byte-level ``Qwen2Tokenizer``,
which ignores the character-level pipeline. A tokenizer saved on its own round-trips through
``AutoTokenizer`` unchanged.
"""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
THINK_OPEN, THINK_CLOSE, BOXED = "<think>", "</think>", "\\boxed{"

# One user turn -> "<s>{content}\n<think>". Other roles are rendered too (system before the user
# text, earlier assistant turns after "</think> "), so a multi-turn conversation does not crash.
TOY_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}{{ '\\n' + message['content'] + eos_token }}"
    "{%- elif message['role'] == 'system' -%}{{ message['content'] + '\\n' }}"
    "{%- else -%}{{ message['content'] }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '\\n<think>' }}{%- endif -%}"
)

# Toy model shape (design.md §5: ~4 layers, width 128, ~1M parameters).
TOY_MODEL_SHAPE: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}


# The released checkpoints' architectures (their config.json), for offline stand-ins with few layers.
REAL_SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, rope_theta=1000000.0, rms_norm_eps=1e-6,
                         max_position_embeddings=32768, tie_word_embeddings=True),
    "r1-distill-1.5b": dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                            num_attention_heads=12, num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-6,
                            max_position_embeddings=131072, tie_word_embeddings=False),
    "r1-distill-7b": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                          num_attention_heads=28, num_key_value_heads=4, rope_theta=10000.0, rms_norm_eps=1e-6,
                          max_position_embeddings=131072, tie_word_embeddings=False),
}

# R1-distill's chat template, shortened to what the trainer renders: one user turn, then the
# assistant turn opened with "<think>\n".
R1_STYLE_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{ '<|User|>' + message['content'] }}"
    "{%- elif message['role'] == 'assistant' -%}{{ '<|Assistant|>' + message['content'] + eos_token }}"
    "{%- else -%}{{ message['content'] }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|Assistant|><think>\n' }}{%- endif -%}"
)


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be loaded; the message says what was tried."""


def _toy_alphabet() -> list[str]:
    punct = "+-*/=().,:;!?'\"<>{}[]\\^_$%&|#@~`"
    chars = list(string.digits) + list(punct) + list(string.ascii_lowercase) + list(string.ascii_uppercase)
    return chars + [" ", "\n"]


def build_toy_tokenizer() -> PreTrainedTokenizerFast:
    """The character-level toy tokenizer (deterministic: same vocab every call)."""
    vocab: dict[str, int] = {}
    for tok in (PAD, BOS, EOS, UNK):
        vocab[tok] = len(vocab)
    for ch in _toy_alphabet():
        vocab.setdefault(ch, len(vocab))
    for tok in (THINK_OPEN, THINK_CLOSE, BOXED):
        vocab[tok] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (PAD, BOS, EOS, UNK)])
    backend.add_tokens([AddedToken(t, special=False, normalized=False, single_word=False)
                        for t in (THINK_OPEN, THINK_CLOSE, BOXED)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=TOY_MODEL_SHAPE["max_position_embeddings"],
    )
    tok.chat_template = TOY_CHAT_TEMPLATE
    return tok


def build_real_shape_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """The toy's character-level pieces plus chat markers, padded with filler tokens to
    `vocab_size`, so that logits have the real width while any text still tokenises."""
    base = build_toy_tokenizer()
    vocab = dict(base.get_vocab())
    for marker in ("<|User|>", "<|Assistant|>"):
        vocab.setdefault(marker, len(vocab))
    if vocab_size < len(vocab):
        raise ValueError(f"vocab_size {vocab_size} is below the {len(vocab)} pieces the tokenizer needs")
    filler = {f"<|filler_{i}|>": i for i in range(len(vocab), vocab_size)}
    backend = Tokenizer(models.WordLevel(vocab={**vocab, **filler}, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (PAD, BOS, EOS, UNK)])
    backend.add_tokens([AddedToken(t, special=False, normalized=False)
                        for t in (THINK_OPEN, THINK_CLOSE, BOXED, "<|User|>", "<|Assistant|>")])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                  unk_token=UNK, padding_side="left", clean_up_tokenization_spaces=False)
    tok.chat_template = R1_STYLE_CHAT_TEMPLATE
    return tok


def build_real_shape_model(shape: str, num_layers: int, seed: int = 0) -> tuple[Qwen2ForCausalLM, Any]:
    """(model, tokenizer): the architecture of REAL_SHAPES[shape] with `num_layers` layers and
    random weights (float32), for memory and speed measurements without the real checkpoint."""
    if shape not in REAL_SHAPES:
        raise ValueError(f"unknown shape '{shape}' (choose from {', '.join(REAL_SHAPES)})")
    dims = {**REAL_SHAPES[shape], "num_hidden_layers": num_layers}
    tokenizer = build_real_shape_tokenizer(dims["vocab_size"])
    config = Qwen2Config(**dims, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, hidden_act="silu", initializer_range=0.02,
                         use_cache=True, attention_dropout=0.0,
                         remix_char_tokenizer=True)  # tells load_pretrained to keep our tokenizer class
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.eval()
    return model, tokenizer


def toy_model_config(tokenizer, **overrides: Any) -> Qwen2Config:
    shape = {**TOY_MODEL_SHAPE, **overrides}
    shape["head_dim"] = shape["hidden_size"] // shape["num_attention_heads"]
    return Qwen2Config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_act="silu",
        initializer_range=0.02,
        use_cache=True,
        attention_dropout=0.0,
        # PyTorch's CPU SDPA kernel made a training step ~5x slower than eager attention for this
        # model shape (measured here); the marker lets load_pretrained restore the choice.
        attn_implementation="eager",
        remix_toy=True,
        **shape,
    )


def build_toy_model(tokenizer, seed: int, **shape_overrides: Any) -> Qwen2ForCausalLM:
    """A tiny Qwen2 with random weights drawn from `seed` (float32)."""
    config = toy_model_config(tokenizer, **shape_overrides)
    devices = []  # fork_rng would otherwise warn about CUDA devices it cannot see
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.eval()
    return model


def n_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _prepare_tokenizer(tokenizer) -> Any:
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError("tokenizer has neither a pad nor an eos token; cannot pad batches")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation appends on the right
    return tokenizer


def _looks_local(name_or_path: str) -> bool:
    """A path rather than a hub id ('org/name'): absolute, relative, home-based or deeper than one '/'."""
    return name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1 or "\\" in name_or_path


def load_pretrained(
    path: str | os.PathLike,
    dtype: str = "float32",
    *,
    trust_remote_code: bool = False,
    local_files_only: bool = False,
) -> tuple[torch.nn.Module, Any]:
    """(model, tokenizer) from a checkpoint directory or hub id; ModelLoadError when impossible."""
    name = str(path)
    local = Path(name).expanduser()
    if dtype not in DTYPES:
        raise ModelLoadError(f"model.dtype: unknown dtype '{dtype}' (choose from {', '.join(DTYPES)})")
    if local.exists():
        if not local.is_dir():
            raise ModelLoadError(f"model path {local} is a file; expected a checkpoint directory")
        if not (local / "config.json").is_file():
            raise ModelLoadError(f"model directory {local} has no config.json (not a save_pretrained checkpoint)")
        name, local_files_only = str(local), True
    elif _looks_local(name) or local_files_only:
        raise ModelLoadError(f"model path not found: {local} (no such directory)")
    try:
        config = AutoConfig.from_pretrained(
            name, trust_remote_code=trust_remote_code, local_files_only=local_files_only
        )
        toy = bool(getattr(config, "remix_toy", False))
        if toy or getattr(config, "remix_char_tokenizer", False):
            # AutoTokenizer would not do: for model_type "qwen2" transformers 5 forces its byte-level
            # Qwen2Tokenizer, which rebuilds the pipeline and drops spaces and newlines.
            tokenizer = PreTrainedTokenizerFast.from_pretrained(name, local_files_only=local_files_only)
        else:
            tokenizer = AutoTokenizer.from_pretrained(
                name, trust_remote_code=trust_remote_code, local_files_only=local_files_only
            )
        extra = {"attn_implementation": "eager"} if toy else {}
        model = AutoModelForCausalLM.from_pretrained(
            name, config=config, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code,
            local_files_only=local_files_only, **extra,
        )
    except (OSError, ValueError) as exc:
        where = "directory" if local_files_only else "hub id (no local directory of that name)"
        raise ModelLoadError(f"could not load model '{name}' as a {where}: {exc}") from None
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
    model.eval()
    return model, _prepare_tokenizer(tokenizer)


def load_policy(model_cfg, warm_cfg, seed: int, should_stop=None, log=None,
                task: str = "toy") -> tuple[torch.nn.Module, Any]:
    """The policy to fine-tune and its tokenizer.

    ``model_cfg.name_or_path == "toy"``: toy tokenizer + toy model (init seed `seed`) + the
    supervised warm start of `warm_cfg` on the toy task `task` names (the run's data.train; a source
    that is not a toy task warm-starts on ``toy``), cached on disk, skipped when ``warm_cfg.steps == 0``.
    Otherwise a local checkpoint directory or hub id, with the tokenizer's pad token set to eos
    when missing and left padding. The policy is always loaded in float32: these are the master
    weights the optimizer steps (a bf16 weight cannot absorb an update of lr ≈ 1e-6); forward
    passes run in ``model_cfg.mixed_precision`` and ``model_cfg.dtype`` is the dtype of the
    inference-only copies and of the exported checkpoint.
    """
    if model_cfg.name_or_path == "toy":
        from remix_engine.warmstart import warm_start  # noqa: PLC0415 - warmstart imports this module

        tokenizer = build_toy_tokenizer()
        model = build_toy_model(tokenizer, seed)
        model = warm_start(model, tokenizer, warm_cfg, seed, task=task, should_stop=should_stop,
                           **({"log": log} if log is not None else {}))
        return model, tokenizer
    model, tokenizer = load_pretrained(
        model_cfg.name_or_path, "float32", trust_remote_code=model_cfg.trust_remote_code
    )
    if model_cfg.gradient_checkpointing:
        # transformers 5 renamed it; older releases (the vLLM env may pin one) have only the old name
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
        model.config.use_cache = False
    return model, tokenizer
