"""DeepScaleR-compatible math answer grader (tag ``deepscaler-v1``).

This module re-states, in the project's own code, the reward contract that DeepScaleR and ReMix
trained and evaluated with (see ``docs/math_reward.md`` section 2):

1. *Think split*: the graded text is what follows the first ``</think>``, up to a second one.
2. *Answer extraction*: the last ``\\boxed{...}`` with balanced braces; anything else is a format
   error (``\\fbox``, ``\\boxed 5``, an unterminated last box, no box at all).
3. *References*: a string, a number or a list of them; boxed references are unboxed first; the
   answer is correct if it matches any of them.
4. *Check A* ("mathd"): the Hendrycks MATH normaliser followed by string equality.
5. *Check B* ("sympy"): a second normaliser, an in-order tuple/interval split and a guarded
   ``sympy.simplify(gt - pred) == 0`` per element.

Everything here is pure and in-process. ``sympy`` gets no timeout in this module: callers that
grade untrusted model output in bulk should go through :class:`remix_engine.reward.pool.GraderPool`,
which runs this code in worker processes with a hard wall-clock limit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

GRADER_TAG = "deepscaler-v1"
grader_tag = GRADER_TAG

THINK_CLOSE = "</think>"
BOX_MACRO = "\\boxed"
BOX_OPEN = "\\boxed{"

Reference = str | int | float | Sequence[str | int | float]

REASON_CORRECT = "correct"
REASON_WRONG = "wrong answer"
REASON_NO_THINK = "no </think>"
REASON_NO_BOX = "no \\boxed{} answer"
REASON_UNTERMINATED_BOX = "unterminated \\boxed{"
REASON_BOX_WITHOUT_BRACE = "\\boxed without {"
REASON_NO_REFERENCE = "no usable reference"
REASON_TIMEOUT = "timeout"
REASON_WORKER_CRASH = "grader worker crashed"


@dataclass(frozen=True)
class GradeResult:
    """Verdict for one response.

    ``correct`` is the reward bit, ``format_ok`` says whether the response followed the format
    the grading mode asks for (``</think>`` + ``\\boxed{}`` with ``require_think``, a
    ``\\boxed{}`` alone without it), ``extracted`` is the raw content of the graded box (``None``
    when nothing could be extracted) and ``reason`` is a short label for dashboards.

    The fields mean the same in every mode: ``format_ok`` is exactly "an answer was extracted"
    (``extracted is not None``), so ``correct`` implies ``format_ok``; a wrong answer in the
    right format is ``format_ok`` and not ``correct``.
    """

    correct: bool
    format_ok: bool
    extracted: str | None
    reason: str

    @property
    def reward(self) -> float:
        """Binary training reward: 1.0 when correct, else 0.0 (format errors included)."""
        return 1.0 if self.correct else 0.0


def reward_from(result: GradeResult) -> float:
    """Return the binary reward (1.0 or 0.0) of a grading result."""
    return result.reward


# --------------------------------------------------------------------------------------------
# Steps 1 and 2: think split and last-box extraction
# --------------------------------------------------------------------------------------------


def split_after_think(response: str) -> str | None:
    """Return the text between the first ``</think>`` and the next one (or the end).

    ``None`` when the response has no ``</think>`` at all. A ``<think>`` opening tag is not
    required (R1-distill chat templates put it into the prompt).
    """
    if THINK_CLOSE not in response:
        return None
    return response.split(THINK_CLOSE)[1]


def find_last_box(text: str) -> tuple[str | None, str]:
    """Locate the last ``\\boxed`` in ``text`` and return ``(content, reason)``.

    ``content`` is what lies between ``\\boxed{`` and its matching ``}``, or ``None`` with a
    format-error reason: no ``\\boxed`` at all, braces that never close after the last one
    (fails closed: an earlier box is not recovered), or a last ``\\boxed`` not followed directly
    by ``{``. ``\\fbox`` is deliberately not accepted.
    """
    start = text.rfind(BOX_MACRO)
    if start < 0:
        return None, REASON_NO_BOX
    end = _matching_close(text, start)
    if end is None:
        return None, REASON_UNTERMINATED_BOX
    span = text[start : end + 1]
    if not span.startswith(BOX_OPEN):
        return None, REASON_BOX_WITHOUT_BRACE
    return span[len(BOX_OPEN) : -1], ""


def _matching_close(text: str, start: int) -> int | None:
    """Index of the ``}`` at which the brace depth, counted from ``start``, returns to zero."""
    depth = 0
    for pos in range(start, len(text)):
        char = text[pos]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return pos
    return None


def last_boxed_content(text: str) -> str | None:
    """Content of the last balanced ``\\boxed{...}`` in ``text``, or ``None``."""
    return find_last_box(text)[0]


def extract_final_answer(response: str, require_think: bool = True) -> tuple[str | None, bool, str]:
    """Apply the think split and last-box rule to a model response.

    Returns ``(answer, format_ok, reason)``. With ``require_think`` and no ``</think>`` the answer
    is ``None``. With ``require_think=False`` and no ``</think>`` the whole text is searched for a
    box. ``format_ok`` is ``answer is not None`` in both modes (the mode decides what the format
    is; a boxed answer without ``</think>`` is the right format when ``</think>`` is not required).
    ``reason`` is empty when an answer was extracted.
    """
    solution = split_after_think(response)
    has_think = solution is not None
    if not has_think:
        if require_think:
            return None, False, REASON_NO_THINK
        solution = response
    answer, reason = find_last_box(solution)
    if answer is None:
        return None, False, reason
    return answer, True, ""


def prepare_references(reference: Reference) -> list[str]:
    """Turn a reference (string, number or list of them) into a list of reference strings.

    Numbers are ``str()``-ed (``142.0`` stays ``"142.0"``), surrounding whitespace is trimmed and
    a reference that contains ``\\boxed`` is replaced by the content of its last box; a boxed
    reference whose box cannot be extracted is dropped.
    """
    raw: Iterable[object]
    if isinstance(reference, (list, tuple)):
        raw = reference
    else:
        raw = [reference]
    refs: list[str] = []
    for item in raw:
        text = str(item).strip()
        if BOX_MACRO in text:
            unboxed = last_boxed_content(text)
            if unboxed is None:
                continue
            text = unboxed
        refs.append(text)
    return refs


# --------------------------------------------------------------------------------------------
# Check A: the Hendrycks MATH ("mathd") normaliser
# --------------------------------------------------------------------------------------------

_WHOLE_TEXT = re.compile(r"^\\text\{(?P<inner>.+)\}$")


def _unwrap_whole_text(answer: str) -> str:
    """Unwrap an answer that is entirely one ``\\text{...}`` (no newlines inside)."""
    match = _WHOLE_TEXT.match(answer)
    return match.group("inner") if match else answer


def _cut_text_units(text: str) -> str:
    """Drop everything from ``"\\text{ "`` (with a space) on; two such units are an error."""
    marker = "\\text{ "
    if marker not in text:
        return text
    parts = text.split(marker)
    if len(parts) != 2:
        raise ValueError("more than one trailing unit")
    return parts[0]


def _add_leading_zeros(text: str) -> str:
    """Write ``.5`` as ``0.5`` after a space, after ``{`` and at the very start."""
    text = text.replace(" .", " 0.").replace("{.", "{0.")
    if text.startswith("."):
        text = "0" + text
    return text


def _drop_short_lhs(text: str) -> str:
    """``x = 5`` becomes `` 5``: exactly one ``=`` and at most two characters before it."""
    sides = text.split("=")
    if len(sides) == 2 and len(sides[0]) <= 2:
        return sides[1]
    return text


def _brace_sqrt_args(text: str) -> str:
    """``\\sqrt3`` becomes ``\\sqrt{3}`` (one-character arguments only)."""
    pieces = text.split("\\sqrt")
    out = [pieces[0]]
    for piece in pieces[1:]:
        if piece[0] == "{":  # an empty piece (trailing \sqrt) raises IndexError on purpose
            out.append("\\sqrt" + piece)
        else:
            out.append("\\sqrt{" + piece[0] + "}" + piece[1:])
    return "".join(out)


def _brace_frac_args(text: str) -> str:
    """``\\frac12`` becomes ``\\frac{1}{2}`` and ``\\frac1{2}`` becomes ``\\frac{1}{2}``.

    A ``\\frac`` followed by a single character leaves the whole string unchanged; a trailing
    bare ``\\frac`` raises ``IndexError`` (the caller then compares the raw answer).
    """
    pieces = text.split("\\frac")
    out = [pieces[0]]
    for piece in pieces[1:]:
        if piece[0] == "{":
            out.append("\\frac" + piece)
            continue
        if len(piece) < 2:
            return text
        first, second, rest = piece[0], piece[1], piece[2:]
        if second == "{":
            out.append("\\frac{" + first + "}" + second + rest)
        else:
            out.append("\\frac{" + first + "}{" + second + "}" + rest)
    return "".join(out)


def _slash_to_frac(text: str) -> str:
    """A plain integer ratio ``a/b`` becomes ``\\frac{a}{b}``; anything else is unchanged."""
    parts = text.split("/")
    if len(parts) != 2:
        return text
    try:
        num, den = int(parts[0]), int(parts[1])
    except ValueError:
        return text
    if text != f"{num}/{den}":
        return text
    return "\\frac{" + str(num) + "}{" + str(den) + "}"


_MATHD_DELETIONS = ("\\left", "\\right", "^{\\circ}", "^\\circ", "\\$")


def _mathd_steps(text: str) -> str:
    """The ordered string rewrites of the Hendrycks MATH normaliser (may raise)."""
    text = text.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    text = text.replace("tfrac", "frac").replace("dfrac", "frac")
    for token in _MATHD_DELETIONS:
        text = text.replace(token, "")
    text = _cut_text_units(text)
    text = text.replace("\\%", "")
    text = _add_leading_zeros(text)
    if not text:
        return text
    text = _drop_short_lhs(text)
    text = _brace_sqrt_args(text)
    text = text.replace(" ", "")
    text = _brace_frac_args(text)
    if text == "0.5":
        text = "\\frac{1}{2}"
    return _slash_to_frac(text)


def normalize_mathd(answer: str) -> str:
    """Hendrycks MATH normalisation; if a rewrite step fails the trimmed answer is returned."""
    text = _unwrap_whole_text(answer.strip()).strip()
    try:
        return _mathd_steps(text)
    except (IndexError, ValueError):
        return text


def equal_mathd(given: str, reference: str) -> bool:
    """Check A: string equality after the mathd normaliser."""
    return normalize_mathd(given) == normalize_mathd(reference)


# --------------------------------------------------------------------------------------------
# Check B: the sympy normaliser and comparison
# --------------------------------------------------------------------------------------------

_UNIT_WORDS = (
    "degree",
    "cm",
    "centimeter",
    "meter",
    "mile",
    "second",
    "minute",
    "hour",
    "day",
    "week",
    "month",
    "year",
    "foot",
    "feet",
    "inch",
    "yard",
)
_UNIT_PATTERNS = tuple(re.compile(word + r"(es)?(s)? *(\^[0-9]+)?") for word in _UNIT_WORDS)
_SCALE_WORDS = (("million", "*10^6"), ("billion", "*10^9"), ("trillion", "*10^12"))
_CIRC = re.compile(r"\^ *\\circ")
_LATEX_THOUSANDS = re.compile(r",\\! *")
_MINUS_SPACES = re.compile(r"- *")
_MIXED_NUMBER = re.compile(r"([0-9]) +([0-9])")
_GROUPED_COMMA = re.compile(r"(\d),(\d\d\d)($|\D)")
_PLAIN_FRACTION = re.compile(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$")
_UNICODE_TO_ASCII = (("√", "sqrt"), ("π", "pi"), ("∞", "inf"), ("∪", "U"), ("·", "*"), ("×", "*"))
_BRACKETS = "()[]"
_RISKY_SUBSTRINGS = ("^{", "^(")
_RISKY_EXPONENTS = (re.compile(r"\^[0-9]+\^"), re.compile(r"\^[0-9][0-9]+"))


def _is_float_text(text: str) -> bool:
    """True when ``float(text)`` succeeds."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_integral(value: float) -> bool:
    """True when a float is within 1e-7 of an integer (inf and nan are not)."""
    try:
        return abs(value - int(round(value))) <= 1e-7
    except (OverflowError, ValueError):
        return False


def strip_grouping_commas(text: str) -> str:
    """Remove thousands commas such as ``1,234,567`` (digit, comma, exactly three digits)."""
    while True:
        rewritten = _GROUPED_COMMA.sub(r"\1\2\3", text)
        if rewritten == text:
            return text
        text = rewritten


def is_integer_text(text: str) -> bool:
    """True when the text, after removing grouping commas, is a float within 1e-7 of an int."""
    try:
        value = float(strip_grouping_commas(text))
    except ValueError:
        return False
    return _is_integral(value)


def _integer_text(text: str) -> str:
    """Write an integer-valued numeric string as a plain int (all commas dropped, truncating)."""
    return str(int(float(text.replace(",", ""))))


def is_plain_fraction(text: str) -> bool:
    """True for a literal ``a/b`` of integers (as the grader's fraction rule defines it)."""
    return _PLAIN_FRACTION.search(text) is not None


@lru_cache(maxsize=1)
def _latex_to_text_converter():
    """A shared pylatexenc LaTeX-to-text converter (built on first use)."""
    from pylatexenc.latex2text import LatexNodes2Text

    return LatexNodes2Text()


def latex_to_plain(text: str) -> str:
    """Render LaTeX as plain text with pylatexenc and map its symbols to sympy-friendly ASCII."""
    text = text.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac")
    text = text.replace("\\frac", " \\frac")  # keeps mixed numbers like 7\frac{3}{4} apart
    text = _latex_to_text_converter().latex_to_text(text)
    for symbol, ascii_text in _UNICODE_TO_ASCII:
        text = text.replace(symbol, ascii_text)
    return text.strip()


def normalize_sympy(answer: str) -> str:
    """The aggressive second normaliser of check B (text, units, LaTeX, case, numbers)."""
    text = _unwrap_whole_text(answer)
    text = text.replace("\\%", "%").replace("\\$", "$").replace("$", "").replace("%", "")
    text = text.replace(" or ", " , ").replace(" and ", " , ")
    for word, power in _SCALE_WORDS:
        text = text.replace(word, power)
    for pattern in _UNIT_PATTERNS:
        text = pattern.sub("", text)
    text = _CIRC.sub("", text)
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    text = _LATEX_THOUSANDS.sub("", text)
    if _is_float_text(text) and _is_integral(float(text)):
        text = str(int(round(float(text))))
    if "\\" in text:
        try:
            text = latex_to_plain(text)
        except Exception:  # pylatexenc may reject odd input; keep the raw text then
            pass
    text = _MINUS_SPACES.sub("-", text)
    text = _MIXED_NUMBER.sub(r"\1+\2", text)
    text = text.replace(" ", "").replace("{", "").replace("}", "").lower()
    if is_integer_text(text):
        text = _integer_text(text)
    return text


def split_tuple(text: str) -> list[str]:
    """Split ``(a,b)``/``[a,b)``-style answers into elements; anything else is one element.

    Splitting only happens when the first and last characters are brackets and no bracket
    occurs in between. Grouping commas are removed first; an empty string gives ``[]``.
    """
    text = strip_grouping_commas(text)
    if not text:
        return []
    inner = text[1:-1]
    if (
        len(text) > 2
        and text[0] in _BRACKETS
        and text[-1] in _BRACKETS
        and not any(bracket in inner for bracket in _BRACKETS)
    ):
        return [element.strip() for element in inner.split(",")]
    return [text]


def count_unknown_letters(expr: str) -> int:
    """Distinct letters in ``expr`` once ``sqrt`` and ``frac`` are removed."""
    expr = expr.replace("sqrt", "").replace("frac", "")
    return len({char for char in expr if char.isalpha()})


def simplify_allowed(expr: str) -> bool:
    """Guards that keep sympy away from expensive inputs (more than 2 letters, big powers)."""
    if count_unknown_letters(expr) > 2:
        return False
    if any(bad in expr for bad in _RISKY_SUBSTRINGS):
        return False
    return not any(pattern.search(expr) for pattern in _RISKY_EXPONENTS)


@lru_cache(maxsize=1)
def _sympy_parser():
    """Return ``(parse_expr, transformations)`` with implicit multiplication enabled."""
    from sympy.parsing import sympy_parser

    transformations = sympy_parser.standard_transformations + (
        sympy_parser.implicit_multiplication_application,
    )
    return sympy_parser.parse_expr, transformations


def sympy_difference_is_zero(reference: str, given: str) -> bool:
    """True when ``simplify((reference) - (given)) == 0``; skipped (False) when guarded."""
    expr = f"({reference})-({given})"
    if not simplify_allowed(expr):
        return False
    import sympy

    parse_expr, transformations = _sympy_parser()
    try:
        difference = parse_expr(expr.replace("^", "**"), transformations=transformations)
        return bool(sympy.simplify(difference) == 0)
    except Exception:  # malformed model output: any parse/simplify failure is "not equal"
        return False


def _elements_equal(reference: str, given: str) -> bool:
    """Compare one tuple element: fraction rule, integer rule, then guarded sympy."""
    if is_plain_fraction(reference) and is_plain_fraction(given):
        return reference == given
    if is_integer_text(reference) != is_integer_text(given):
        return False
    return sympy_difference_is_zero(reference, given)


def equal_sympy(given: str, reference: str) -> bool:
    """Check B: normalise both sides, then exact, structural and symbolic comparison."""
    ref_norm = normalize_sympy(reference)
    given_norm = normalize_sympy(given)
    if ref_norm == given_norm:
        return True
    if not given_norm:
        return False
    ref_elems = split_tuple(ref_norm)
    given_elems = split_tuple(given_norm)
    if len(ref_elems) > 1 and (ref_norm[0] != given_norm[0] or ref_norm[-1] != given_norm[-1]):
        return False
    if len(ref_elems) != len(given_elems):
        return False
    return all(_elements_equal(r, g) for r, g in zip(ref_elems, given_elems, strict=True))


def answers_match(given: str, reference: str) -> bool:
    """True when check A or check B accepts ``given`` for one reference string."""
    if equal_mathd(given, reference):
        return True
    try:
        return equal_sympy(given, reference)
    except Exception:  # defensive: the reward must never raise on model output
        return False


def is_equivalent(given: str, references: Reference) -> bool:
    """True when ``given`` matches any of the (prepared) references."""
    return any(answers_match(given, ref) for ref in prepare_references(references))


# --------------------------------------------------------------------------------------------
# The public entry point
# --------------------------------------------------------------------------------------------


def grade(response: str, reference: Reference, require_think: bool = True) -> GradeResult:
    """Grade one model response against a reference the DeepScaleR way.

    ``reference`` may be a string, a number or a list of those (any match counts). With
    ``require_think`` (the DeepScaleR training rule) a response without ``</think>`` is a format
    error; with ``require_think=False`` the whole text is graded and a boxed answer there is in
    format (``format_ok`` is ``extracted is not None`` in every mode; see :class:`GradeResult`).
    """
    answer, format_ok, reason = extract_final_answer(response, require_think)
    if answer is None:
        return GradeResult(correct=False, format_ok=format_ok, extracted=None, reason=reason)
    references = prepare_references(reference)
    if not references:
        return GradeResult(correct=False, format_ok=format_ok, extracted=answer, reason=REASON_NO_REFERENCE)
    correct = any(answers_match(answer, ref) for ref in references)
    return GradeResult(
        correct=correct,
        format_ok=format_ok,
        extracted=answer,
        reason=REASON_CORRECT if correct else REASON_WRONG,
    )
