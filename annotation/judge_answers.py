"""Reading a judge's answer: reasoning inside ``<think>...</think>``, then one judgement.

The judgement is a JSON object, or a Python dict literal as models often write it
(``{'score': 4}``, FlowPortrait's own prompt format); a score may be written out of the scale's
top (``"4/5"``, ``"4 out of 5"``). :func:`ask` sends the messages, parses the answer with
:func:`parse_judgement` and, when that fails, asks once more with a reminder of the format; a
second failure raises :class:`JudgeParseError` carrying the raw answer.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from collections.abc import Sequence

from pipelines.chat_http import ChatModel, text_part

from . import judge_prompts as P
from .aspects import SCORE_MAX, SCORE_MIN

log = logging.getLogger(__name__)

WINNERS = ("first", "second", "tie")
FORCED_WINNERS = ("first", "second")  # a forced choice: no tie


class JudgeError(RuntimeError):
    """A judge could not produce a judgement."""


class JudgeParseError(JudgeError):
    """The model's answer has no usable JSON judgement; ``raw`` holds the answer text."""

    def __init__(self, message: str, raw: str):
        super().__init__(f"{message}; raw answer: {raw[:500]!r}")
        self.problem = message
        self.raw = raw


_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def split_reasoning(text: str) -> tuple[str, str]:
    """(reasoning, answer): the ``<think>`` text and what remains outside it.

    A closing tag without an opening one (templates that pre-fill ``<think>``) ends the
    reasoning; an opening tag that is never closed (a truncated answer) swallows the rest.
    """
    reasoning = " ".join(m.group(0)[7:-8].strip() for m in _THINK_BLOCK.finditer(text))
    answer = _THINK_BLOCK.sub(" ", text)
    lower = answer.lower()
    if "</think>" in lower:
        cut = lower.rfind("</think>")
        reasoning = (reasoning + " " + answer[:cut].replace("<think>", "")).strip()
        answer = answer[cut + len("</think>"):]
    elif "<think>" in lower:
        cut = lower.find("<think>")
        reasoning = (reasoning + " " + answer[cut + len("<think>"):]).strip()
        answer = answer[:cut]
    return reasoning.strip(), answer


def _closing_brace(text: str, start: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``start``, skipping quoted strings; None if unclosed."""
    depth, quote, i = 0, None, start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _last_object(text: str) -> dict | None:
    """The last top-level dict in ``text``: JSON, else a Python literal (single quotes, True)."""
    decoder = json.JSONDecoder()
    found = None
    i = text.find("{")
    while i != -1:
        end = None
        try:
            value, end = decoder.raw_decode(text, i)
        except ValueError:
            close = _closing_brace(text, i)
            if close is not None:
                try:
                    value, end = ast.literal_eval(text[i:close + 1]), close + 1
                except (ValueError, SyntaxError, MemoryError, RecursionError):
                    end = None
        if end is None:
            i = text.find("{", i + 1)
            continue
        if isinstance(value, dict):
            found = value
        i = text.find("{", end)
    return found


_OUT_OF_TOP = re.compile(rf"^\s*(\d+(?:\.0+)?)\s*(?:/|out of)\s*{SCORE_MAX}\s*$", re.IGNORECASE)


def _score_value(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        over = _OUT_OF_TOP.match(text)
        if over:
            text = over.group(1)
        try:
            value = float(text)
        except ValueError:
            return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and SCORE_MIN <= value <= SCORE_MAX:
        return value
    return None


def parse_judgement(text: str, keys: Sequence[str], winners: Sequence[str] = WINNERS) -> dict:
    """The validated judgement in ``text``: the last dict (JSON or Python literal) outside ``<think>``.

    ``keys`` names the fields that must be present; ``"winner"`` must be one of ``winners``
    (case-insensitive), any other key must be an integer score on the 1..5 scale (``4``,
    ``"4"``, ``4.0``, ``"4/5"``). Extra fields are dropped. Raises ``JudgeParseError`` (with
    the raw text) otherwise.
    """
    if not isinstance(text, str):
        raise JudgeParseError(f"answer is {type(text).__name__}, not text", repr(text))
    _, answer = split_reasoning(text)
    obj = _last_object(answer)
    if obj is None:
        raise JudgeParseError("no JSON object after the reasoning", text)
    missing = [k for k in keys if k not in obj]
    if missing:
        raise JudgeParseError(f"JSON object lacks {missing} (has {sorted(map(str, obj))})", text)
    out = {}
    for key in keys:
        value = obj[key]
        if key == "winner":
            winner = value.strip().lower() if isinstance(value, str) else None
            if winner not in winners:
                raise JudgeParseError(f"winner {value!r} is not one of {list(winners)}", text)
            out[key] = winner
        else:
            score = _score_value(value)
            if score is None:
                raise JudgeParseError(f"{key} = {value!r} is not an integer from {SCORE_MIN} to {SCORE_MAX}", text)
            out[key] = score
    return out


def answer_example(keys: Sequence[str], winners: Sequence[str] = WINNERS) -> str:
    """The JSON shape the prompts ask for, e.g. ``{"score": 1-5}`` or ``{"winner": "first" | "second"}``."""
    choices = " | ".join(f'"{w}"' for w in winners)
    return "{" + ", ".join(f'"{k}": {choices}' if k == "winner" else f'"{k}": {SCORE_MIN}-{SCORE_MAX}'
                           for k in keys) + "}"


def ask(backend: ChatModel, messages: list[dict], keys: Sequence[str],
        winners: Sequence[str] = WINNERS) -> tuple[dict, str, list[str]]:
    """(judgement, reasoning, raw answers): one call, one format reminder on a parse failure."""
    text = backend.complete(messages)
    try:
        return parse_judgement(text, keys, winners), split_reasoning(text)[0], [text]
    except JudgeParseError as exc:
        log.info("%s: unusable answer (%s); asking again", getattr(backend, "name", "backend"), exc.problem)
        follow_up = list(messages) + [
            {"role": "assistant", "content": [text_part(text)]},
            {"role": "user", "content": [text_part(P.FORMAT_REMINDER.format(problem=exc.problem,
                                                                           example=answer_example(keys, winners)))]},
        ]
    second = backend.complete(follow_up)
    return parse_judgement(second, keys, winners), split_reasoning(second)[0], [text, second]
