"""MLLM judges for talking-head videos: absolute scores and pairwise comparisons.

A video is a ``Video``: RGB uint8 frames (H, W, 3) sampled in time order plus an optional
description or transcript of its audio. Judges talk to a model through ``ChatBackend``
(``complete(messages) -> str``), where ``messages`` is a backend-neutral list of
``{"role": "user"|"assistant"|"system", "content": [part, ...]}`` and each part is
``{"type": "text", "text": str}`` or ``{"type": "image", "image": np.ndarray}``. Two backends
translate that: ``OpenAIChatBackend`` (``POST /chat/completions``, images as JPEG data URLs)
and ``GeminiBackend`` (``POST /models/{model}:generateContent``, images as inline JPEG data).
Both retry timeouts, connection errors, 429 and 5xx with exponential backoff and bound the
requests in flight.

Judges:

- ``HolisticJudge``: one overall score per video.
- ``AspectJudge``: lip_sync, expressiveness and motion_quality from a single call.
- ``SpecialistJudge``: one backend (specialist prompt) per aspect; overall is their mean.
- ``PairwiseJudge``: which of two videos is better, mode ``direct``, ``in_context`` (solved
  example pairs first) or ``multi_agent`` (one verdict per aspect, then an aggregator). The order
  the videos are shown in is counterbalanced with a seeded RNG and the answer mapped back.

Every answer is parsed by ``parse_judgement``; a parse failure is answered with one follow-up
reminding the model of the format, and a second failure raises ``JudgeParseError``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from annotation import judge_prompts as P
from pipelines.chat_http import (
    BackendError,
    RetryingJsonClient,
    check_frames,
    encode_jpeg,
    parse_chat_completion,
)

log = logging.getLogger(__name__)

ASPECTS = P.ASPECTS
WINNERS = ("first", "second", "tie")


class JudgeError(RuntimeError):
    """A judge could not produce a judgement."""


class JudgeParseError(JudgeError):
    """The model's answer has no usable JSON judgement; ``raw`` holds the answer text."""

    def __init__(self, message: str, raw: str):
        super().__init__(f"{message}; raw answer: {raw[:500]!r}")
        self.problem = message
        self.raw = raw


# --------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------

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


def _last_json_object(text: str) -> dict | None:
    decoder = json.JSONDecoder()
    found = None
    i = text.find("{")
    while i != -1:
        try:
            value, end = decoder.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        if isinstance(value, dict):
            found = value
        i = text.find("{", end)
    return found


def _score_value(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 1 <= value <= 5:
        return value
    return None


def parse_judgement(text: str, keys: Sequence[str]) -> dict:
    """The validated judgement in ``text``: the last JSON object outside ``<think>``.

    ``keys`` names the fields that must be present; ``"winner"`` must be one of first, second,
    tie (case-insensitive), any other key must be an integer score 1..5. Extra fields are
    dropped. Raises ``JudgeParseError`` (with the raw text) otherwise.
    """
    if not isinstance(text, str):
        raise JudgeParseError(f"answer is {type(text).__name__}, not text", repr(text))
    _, answer = split_reasoning(text)
    obj = _last_json_object(answer)
    if obj is None:
        raise JudgeParseError("no JSON object after the reasoning", text)
    missing = [k for k in keys if k not in obj]
    if missing:
        raise JudgeParseError(f"JSON object lacks {missing} (has {sorted(obj)})", text)
    out = {}
    for key in keys:
        value = obj[key]
        if key == "winner":
            winner = value.strip().lower() if isinstance(value, str) else None
            if winner not in WINNERS:
                raise JudgeParseError(f"winner {value!r} is not one of {list(WINNERS)}", text)
            out[key] = winner
        else:
            score = _score_value(value)
            if score is None:
                raise JudgeParseError(f"{key} = {value!r} is not an integer from 1 to 5", text)
            out[key] = score
    return out


# --------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------

@runtime_checkable
class ChatBackend(Protocol):
    name: str

    def complete(self, messages: Sequence[dict]) -> str:
        """The model's answer text to backend-neutral ``messages``."""


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def image_part(frame: np.ndarray) -> dict:
    return {"type": "image", "image": frame}


class _HTTPBackend:
    """A judge backend over the shared retrying JSON client."""

    def __init__(self, name: str, timeout_s: float, max_retries: int, backoff_s: float, max_concurrency: int):
        self.name = name
        self._client = RetryingJsonClient(name, timeout_s, max_retries, backoff_s, max_concurrency)

    def _post_json(self, url: str, body: dict, headers: dict[str, str]):
        return self._client.post_json(url, body, headers)


class OpenAIChatBackend(_HTTPBackend):
    """Any OpenAI-compatible ``POST {base_url}/chat/completions`` server."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY",
                 timeout_s: float = 120, max_retries: int = 3, backoff_s: float = 1.0, max_concurrency: int = 4,
                 max_tokens: int | None = 1024, temperature: float = 0.0, jpeg_quality: int = 90):
        super().__init__(f"openai-chat:{model}", timeout_s, max_retries, backoff_s, max_concurrency)
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.jpeg_quality = jpeg_quality

    def request_body(self, messages: Sequence[dict]) -> dict:
        out = []
        for message in messages:
            content = []
            for part in message["content"]:
                if part["type"] == "text":
                    content.append({"type": "text", "text": part["text"]})
                else:
                    data = base64.b64encode(encode_jpeg(part["image"], self.jpeg_quality)).decode("ascii")
                    content.append({"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + data}})
            if message["role"] != "user" and all(c["type"] == "text" for c in content):
                content = "".join(c["text"] for c in content)  # plain strings for system/assistant turns
            out.append({"role": message["role"], "content": content})
        body = {"model": self.model, "messages": out, "temperature": self.temperature}
        if self.max_tokens:
            body["max_tokens"] = self.max_tokens
        return body

    def complete(self, messages: Sequence[dict]) -> str:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return parse_chat_completion(self._post_json(self.url, self.request_body(messages), headers))


class GeminiBackend(_HTTPBackend):
    """Google's ``POST {base_url}/models/{model}:generateContent``."""

    def __init__(self, model: str, base_url: str = "https://generativelanguage.googleapis.com/v1beta",
                 api_key_env: str | None = "GEMINI_API_KEY", timeout_s: float = 120, max_retries: int = 3,
                 backoff_s: float = 1.0, max_concurrency: int = 4, max_output_tokens: int | None = 1024,
                 temperature: float = 0.0, jpeg_quality: int = 90):
        super().__init__(f"gemini:{model}", timeout_s, max_retries, backoff_s, max_concurrency)
        self.url = f"{base_url.rstrip('/')}/models/{model}:generateContent"
        self.model = model
        self.api_key_env = api_key_env
        self.max_output_tokens = max_output_tokens
        self.temperature = temperature
        self.jpeg_quality = jpeg_quality

    def request_body(self, messages: Sequence[dict]) -> dict:
        contents, system = [], []
        for message in messages:
            parts = []
            for part in message["content"]:
                if part["type"] == "text":
                    parts.append({"text": part["text"]})
                else:
                    data = base64.b64encode(encode_jpeg(part["image"], self.jpeg_quality)).decode("ascii")
                    parts.append({"inline_data": {"mime_type": "image/jpeg", "data": data}})
            if message["role"] == "system":
                system.extend(parts)
            else:
                contents.append({"role": "model" if message["role"] == "assistant" else "user", "parts": parts})
        config = {"temperature": self.temperature}
        if self.max_output_tokens:
            config["maxOutputTokens"] = self.max_output_tokens
        body = {"contents": contents, "generationConfig": config}
        if system:
            body["systemInstruction"] = {"parts": system}
        return body

    @staticmethod
    def parse_response(payload) -> str:
        try:
            parts = payload["candidates"][0]["content"]["parts"]
            texts = [p["text"] for p in parts if isinstance(p, dict) and "text" in p and not p.get("thought")]
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendError(f"generateContent answer without candidates[0].content.parts: {exc!r}") from None
        if not texts:
            raise BackendError("generateContent answer has no text parts")
        return "".join(texts)

    def complete(self, messages: Sequence[dict]) -> str:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["x-goog-api-key"] = key
        return self.parse_response(self._post_json(self.url, self.request_body(messages), headers))


# --------------------------------------------------------------------------------------
# Inputs, outputs, the ask-parse-retry step
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Video:
    frames: Sequence[np.ndarray]
    audio: str | None = None  # description or transcript of the audio track
    name: str = ""


@dataclass(frozen=True)
class PairExample:
    """A solved comparison shown to the model in ``in_context`` mode."""

    first: Video
    second: Video
    winner: str  # first | second | tie
    explanation: str = ""


@dataclass
class ScoreResult:
    scores: dict[str, int]  # "overall" for HolisticJudge, the three aspects otherwise
    overall: float
    reasoning: dict[str, str] = field(default_factory=dict)
    raw: list[str] = field(default_factory=list)
    prompt_version: str = P.PROMPT_VERSION


@dataclass
class PairwiseResult:
    winner: str  # "a", "b" or "tie", in the caller's order (a = first argument)
    a_shown_first: bool
    aspect_winners: dict[str, str] = field(default_factory=dict)  # multi_agent only, caller's order
    reasoning: dict[str, str] = field(default_factory=dict)
    raw: list[str] = field(default_factory=list)
    prompt_version: str = P.PROMPT_VERSION


def _audio_line(audio: str | None) -> str:
    return P.AUDIO_LINE.format(audio=audio.strip()) if audio and audio.strip() else P.NO_AUDIO_LINE


def _example(keys: Sequence[str]) -> str:
    return "{" + ", ".join(f'"{k}": "first" | "second" | "tie"' if k == "winner" else f'"{k}": 1-5'
                           for k in keys) + "}"


def _answer_rules(keys: Sequence[str]) -> str:
    return P.ANSWER_RULES.format(example=_example(keys))


def _frames_parts(video: Video) -> list[dict]:
    return [image_part(f) for f in check_frames(video.frames)]


def ask(backend: ChatBackend, messages: list[dict], keys: Sequence[str]) -> tuple[dict, str, list[str]]:
    """(judgement, reasoning, raw answers): one call, one format reminder on a parse failure."""
    text = backend.complete(messages)
    try:
        return parse_judgement(text, keys), split_reasoning(text)[0], [text]
    except JudgeParseError as exc:
        log.info("%s: unusable answer (%s); asking again", getattr(backend, "name", "backend"), exc.problem)
        follow_up = list(messages) + [
            {"role": "assistant", "content": [text_part(text)]},
            {"role": "user", "content": [text_part(P.FORMAT_REMINDER.format(problem=exc.problem,
                                                                           example=_example(keys)))]},
        ]
    second = backend.complete(follow_up)
    return parse_judgement(second, keys), split_reasoning(second)[0], [text, second]


# --------------------------------------------------------------------------------------
# Score-based judges
# --------------------------------------------------------------------------------------

class HolisticJudge:
    """One overall 1..5 score per video."""

    def __init__(self, backend: ChatBackend):
        self.backend = backend

    def messages(self, video: Video) -> list[dict]:
        prompt = P.HOLISTIC_PROMPT.format(video_intro=P.VIDEO_INTRO, audio_line=_audio_line(video.audio),
                                          criteria=P.HOLISTIC_CRITERIA, answer_rules=_answer_rules(["score"]))
        return [{"role": "user", "content": _frames_parts(video) + [text_part(prompt)]}]

    def judge(self, video: Video) -> ScoreResult:
        answer, reasoning, raw = ask(self.backend, self.messages(video), ["score"])
        return ScoreResult({"overall": answer["score"]}, float(answer["score"]), {"overall": reasoning}, raw)


class AspectJudge:
    """lip_sync, expressiveness and motion_quality from one call; overall is their mean."""

    def __init__(self, backend: ChatBackend):
        self.backend = backend

    def messages(self, video: Video) -> list[dict]:
        prompt = P.THREE_ASPECTS_PROMPT.format(video_intro=P.VIDEO_INTRO, audio_line=_audio_line(video.audio),
                                               answer_rules=_answer_rules(ASPECTS), **P.RUBRICS)
        return [{"role": "user", "content": _frames_parts(video) + [text_part(prompt)]}]

    def judge(self, video: Video) -> ScoreResult:
        answer, reasoning, raw = ask(self.backend, self.messages(video), ASPECTS)
        return ScoreResult(dict(answer), float(np.mean([answer[a] for a in ASPECTS])), {"all": reasoning}, raw)


def aspect_messages(video: Video, aspect: str) -> list[dict]:
    prompt = P.ASPECT_PROMPT.format(title=P.ASPECT_TITLES[aspect], video_intro=P.VIDEO_INTRO,
                                    audio_line=_audio_line(video.audio), rubric=P.RUBRICS[aspect],
                                    answer_rules=_answer_rules(["score"]))
    return [{"role": "user", "content": _frames_parts(video) + [text_part(prompt)]}]


def _aspect_backends(backends: ChatBackend | Mapping[str, ChatBackend]) -> dict[str, ChatBackend]:
    if isinstance(backends, Mapping):
        missing = [a for a in ASPECTS if a not in backends]
        if missing:
            raise ValueError(f"no specialist backend for {missing}")
        return {a: backends[a] for a in ASPECTS}
    return {a: backends for a in ASPECTS}


class SpecialistJudge:
    """One specialist (backend and aspect prompt) per aspect; overall is the mean of the three."""

    def __init__(self, backends: ChatBackend | Mapping[str, ChatBackend]):
        self.backends = _aspect_backends(backends)

    def judge(self, video: Video) -> ScoreResult:
        scores, reasoning, raw = {}, {}, []
        for aspect, backend in self.backends.items():
            answer, why, texts = ask(backend, aspect_messages(video, aspect), ["score"])
            scores[aspect], reasoning[aspect] = answer["score"], why
            raw.extend(texts)
        return ScoreResult(scores, float(np.mean(list(scores.values()))), reasoning, raw)


# --------------------------------------------------------------------------------------
# Comparison-based judge
# --------------------------------------------------------------------------------------

PAIRWISE_MODES = ("direct", "in_context", "multi_agent")


def _pair_parts(first: Video, second: Video) -> list[dict]:
    return ([text_part(P.FIRST_VIDEO_LABEL)] + _frames_parts(first)
            + [text_part(P.SECOND_VIDEO_LABEL)] + _frames_parts(second))


class PairwiseJudge:
    """Which of two videos is better.

    The presentation order is counterbalanced: calls come in pairs, the seeded RNG picks the
    order for the first call of each pair and the second call uses the opposite order, so the
    shown-first video alternates within every pair while staying reproducible. Answers
    ("first"/"second") are mapped back to the caller's order ("a"/"b").
    """

    def __init__(self, backend: ChatBackend, mode: str = "direct", rng_seed: int | None = 0,
                 examples: Sequence[PairExample] = (),
                 specialists: Mapping[str, ChatBackend] | None = None, aggregator: ChatBackend | None = None):
        if mode not in PAIRWISE_MODES:
            raise ValueError(f"mode must be one of {PAIRWISE_MODES}, not {mode!r}")
        if mode == "in_context" and not examples:
            raise ValueError("in_context mode needs at least one PairExample")
        for ex in examples:
            if ex.winner not in WINNERS:
                raise ValueError(f"example winner {ex.winner!r} is not one of {WINNERS}")
        self.backend = backend
        self.mode = mode
        self.examples = list(examples)
        self.specialists = _aspect_backends(specialists if specialists is not None else backend)
        self.aggregator = aggregator or backend
        self._rng = random.Random(rng_seed)
        self._lock = threading.Lock()
        self._calls = 0
        self._pending: bool | None = None

    def _next_order(self) -> bool:
        """True when the caller's ``a`` is shown first."""
        with self._lock:
            if self._calls % 2 == 0:
                self._pending = self._rng.random() < 0.5
                a_first = self._pending
            else:
                a_first = not self._pending
            self._calls += 1
            return a_first

    def _verdict_messages(self, first: Video, second: Video, focus: str) -> list[dict]:
        prompt = P.PAIRWISE_PROMPT.format(audio_line=_audio_line(first.audio or second.audio), focus=focus,
                                          answer_rules=_answer_rules(["winner"]))
        return [{"role": "user", "content": _pair_parts(first, second) + [text_part(prompt)]}]

    def _in_context_messages(self, first: Video, second: Video) -> list[dict]:
        messages = [{"role": "user", "content": [text_part(P.IN_CONTEXT_PREAMBLE.format(n=len(self.examples)))]}]
        for ex in self.examples:
            messages += self._verdict_messages(ex.first, ex.second, P.PAIRWISE_HOLISTIC_FOCUS)
            answer = P.IN_CONTEXT_EXAMPLE_ANSWER.format(explanation=ex.explanation or "See the frames.",
                                                        answer=json.dumps({"winner": ex.winner}))
            messages.append({"role": "assistant", "content": [text_part(answer)]})
        task = self._verdict_messages(first, second, P.PAIRWISE_HOLISTIC_FOCUS)
        task[0]["content"].insert(0, text_part(P.IN_CONTEXT_TASK_INTRO))
        return messages + task

    def compare(self, a: Video, b: Video) -> PairwiseResult:
        a_first = self._next_order()
        first, second = (a, b) if a_first else (b, a)

        def to_caller(winner: str) -> str:
            if winner == "tie":
                return "tie"
            return "a" if (winner == "first") == a_first else "b"

        if self.mode == "multi_agent":
            aspect_winners, reasoning, raw, reports = {}, {}, [], []
            for aspect, backend in self.specialists.items():
                focus = P.PAIRWISE_ASPECT_FOCUS.format(title=P.ASPECT_TITLES[aspect], rubric=P.RUBRICS[aspect])
                answer, why, texts = ask(backend, self._verdict_messages(first, second, focus), ["winner"])
                aspect_winners[aspect], reasoning[aspect] = to_caller(answer["winner"]), why
                raw.extend(texts)
                reports.append(P.AGGREGATOR_REPORT.format(title=P.ASPECT_TITLES[aspect], winner=answer["winner"],
                                                          reasoning=why or "(none given)"))
            prompt = P.AGGREGATOR_PROMPT.format(audio_line=_audio_line(first.audio or second.audio),
                                                reports="\n\n".join(reports), answer_rules=_answer_rules(["winner"]))
            answer, why, texts = ask(self.aggregator, [{"role": "user", "content": [text_part(prompt)]}], ["winner"])
            reasoning["aggregate"] = why
            return PairwiseResult(to_caller(answer["winner"]), a_first, aspect_winners, reasoning, raw + texts)

        if self.mode == "in_context":
            messages = self._in_context_messages(first, second)
        else:
            messages = self._verdict_messages(first, second, P.PAIRWISE_HOLISTIC_FOCUS)
        answer, why, raw = ask(self.backend, messages, ["winner"])
        return PairwiseResult(to_caller(answer["winner"]), a_first, {}, {"overall": why}, raw)
