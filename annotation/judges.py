"""MLLM judges for talking-head videos: absolute scores and pairwise comparisons.

A video is a ``Video``: RGB uint8 frames (H, W, 3) sampled in time order plus an optional
description or transcript of its audio. Judges talk to a model through any
:class:`pipelines.chat_http.ChatModel` (``complete(messages) -> str``): the shared
``ChatClient`` (OpenAI-compatible) or ``GeminiChatClient``, or a stand-in in tests.

Judges:

- ``HolisticJudge``: one overall score per video.
- ``AspectJudge``: every aspect of :mod:`annotation.aspects` from a single call.
- ``SpecialistJudge``: one backend (specialist prompt) per aspect; overall is their mean.
- ``PairwiseJudge``: which of two videos is better, mode ``direct``, ``in_context`` (solved
  example pairs first) or ``multi_agent`` (one verdict per aspect, then an aggregator). The order
  the videos are shown in is counterbalanced with a seeded RNG and the answer mapped back.

Every answer goes through :func:`annotation.judge_answers.ask` (one format reminder, then
``JudgeParseError``).
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipelines.chat_http import ChatModel, check_frames, image_part, text_part

from . import judge_prompts as P
from .aspects import ASPECT_TITLES, ASPECTS, rubric_text
from .judge_answers import WINNERS, answer_example, ask


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
    scores: dict[str, int]  # "overall" for HolisticJudge, one per aspect otherwise
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


def _answer_rules(keys: Sequence[str]) -> str:
    return P.ANSWER_RULES.format(example=answer_example(keys))


def _frames_parts(video: Video) -> list[dict]:
    return [image_part(f) for f in check_frames(video.frames)]


# --------------------------------------------------------------------------------------
# Score-based judges
# --------------------------------------------------------------------------------------

class HolisticJudge:
    """One overall 1..5 score per video."""

    def __init__(self, backend: ChatModel):
        self.backend = backend

    def messages(self, video: Video) -> list[dict]:
        prompt = P.HOLISTIC_PROMPT.format(video_intro=P.VIDEO_INTRO, audio_line=_audio_line(video.audio),
                                          criteria=P.HOLISTIC_CRITERIA, answer_rules=_answer_rules(["score"]))
        return [{"role": "user", "content": _frames_parts(video) + [text_part(prompt)]}]

    def judge(self, video: Video) -> ScoreResult:
        answer, reasoning, raw = ask(self.backend, self.messages(video), ["score"])
        return ScoreResult({"overall": answer["score"]}, float(answer["score"]), {"overall": reasoning}, raw)


class AspectJudge:
    """Every aspect from one call; overall is their mean."""

    def __init__(self, backend: ChatModel):
        self.backend = backend

    def messages(self, video: Video) -> list[dict]:
        rubrics = "\n\n".join(P.ALL_ASPECTS_RUBRIC.format(name=a, title=ASPECT_TITLES[a], rubric=rubric_text(a))
                              for a in ASPECTS)
        prompt = P.ALL_ASPECTS_PROMPT.format(video_intro=P.VIDEO_INTRO, audio_line=_audio_line(video.audio),
                                             n=len(ASPECTS), rubrics=rubrics, answer_rules=_answer_rules(ASPECTS))
        return [{"role": "user", "content": _frames_parts(video) + [text_part(prompt)]}]

    def judge(self, video: Video) -> ScoreResult:
        answer, reasoning, raw = ask(self.backend, self.messages(video), ASPECTS)
        return ScoreResult(dict(answer), float(np.mean([answer[a] for a in ASPECTS])), {"all": reasoning}, raw)


def aspect_messages(video: Video, aspect: str) -> list[dict]:
    prompt = P.ASPECT_PROMPT.format(title=ASPECT_TITLES[aspect], video_intro=P.VIDEO_INTRO,
                                    audio_line=_audio_line(video.audio), rubric=rubric_text(aspect),
                                    answer_rules=_answer_rules(["score"]))
    return [{"role": "user", "content": _frames_parts(video) + [text_part(prompt)]}]


def _aspect_backends(backends: ChatModel | Mapping[str, ChatModel]) -> dict[str, ChatModel]:
    if isinstance(backends, Mapping):
        missing = [a for a in ASPECTS if a not in backends]
        if missing:
            raise ValueError(f"no specialist backend for {missing}")
        return {a: backends[a] for a in ASPECTS}
    return {a: backends for a in ASPECTS}


class SpecialistJudge:
    """One specialist (backend and aspect prompt) per aspect; overall is the mean of the three."""

    def __init__(self, backends: ChatModel | Mapping[str, ChatModel]):
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

    def __init__(self, backend: ChatModel, mode: str = "direct", rng_seed: int | None = 0,
                 examples: Sequence[PairExample] = (),
                 specialists: Mapping[str, ChatModel] | None = None, aggregator: ChatModel | None = None):
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
                focus = P.PAIRWISE_ASPECT_FOCUS.format(title=ASPECT_TITLES[aspect], rubric=rubric_text(aspect))
                answer, why, texts = ask(backend, self._verdict_messages(first, second, focus), ["winner"])
                aspect_winners[aspect], reasoning[aspect] = to_caller(answer["winner"]), why
                raw.extend(texts)
                reports.append(P.AGGREGATOR_REPORT.format(title=ASPECT_TITLES[aspect], winner=answer["winner"],
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
