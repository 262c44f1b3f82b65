"""Prompts (remix_algorithm.md §6.1): the problem plus the DeepScaleR instruction as one user turn,
rendered with the tokenizer's chat template. Training (data.py) and evaluation (evaluate.py) use
the same instruction and the same renderer.
"""

from __future__ import annotations

# The one instruction suffix (config `data.prompt_suffix` defaults to it).
INSTRUCTION = " Let's think step by step and output the final answer within \\boxed{}."
DEFAULT_TEMPLATE = "{problem}" + INSTRUCTION


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
