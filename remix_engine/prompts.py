"""Prompts (remix_algorithm.md §6.1): the problem plus the DeepScaleR instruction as one user turn,
rendered with the tokenizer's chat template. Training (data.py) and evaluation (evaluate.py) use
the same instruction and the same renderer.
"""

from __future__ import annotations

import json
from pathlib import Path

# The one instruction suffix (config `data.prompt_suffix` defaults to it).
INSTRUCTION = " Let's think step by step and output the final answer within \\boxed{}."
DEFAULT_TEMPLATE = "{problem}" + INSTRUCTION


# Written beside a checkpoint's weights by the trainer: how that run rendered its prompts, so an
# evaluation of the checkpoint renders them the same way (the toy trains without the instruction).
PROMPT_FILE = "remix_prompt.json"


def write_prompt_settings(folder: str | Path, template: str, use_chat_template: bool) -> None:
    (Path(folder) / PROMPT_FILE).write_text(json.dumps(
        {"prompt_template": template, "use_chat_template": use_chat_template}, indent=2) + "\n")


def read_prompt_settings(folder: str | Path) -> dict | None:
    """The settings a checkpoint was trained with, or None (not a ReMix checkpoint, or older)."""
    try:
        data = json.loads((Path(folder) / PROMPT_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "{problem}" not in str(data.get("prompt_template", "")):
        return None
    return {"prompt_template": str(data["prompt_template"]), "use_chat_template": bool(data.get("use_chat_template", True))}


def fill_template(template: str, problem: str) -> str:
    """`template` with its ``{problem}`` replaced (plain replacement: LaTeX braces need no escaping)."""
    return template.replace("{problem}", problem)


def render_user_turn(tokenizer, content: str, use_chat_template: bool) -> str:
    """The prompt text of one user turn.

    With `use_chat_template` and a tokenizer that has a chat template, the turn is rendered with
    ``add_generation_prompt=True`` (R1-distill: ``<｜begin▁of▁sentence｜><｜User｜>…<｜Assistant｜><think>\\n``;
    toy: ``<s>…\\n<think>``). Otherwise the bare text is returned.
    """
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
    return content
