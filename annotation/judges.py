"""MLLM judges for talking-head videos: absolute scores and pairwise comparisons.

A video is a :class:`Video`: the clip's file (and/or frames given directly) plus an optional
transcript of its speech. Judges talk to a model through any
:class:`pipelines.chat_http.ChatModel` (``complete(messages) -> str``); the clients of
:mod:`annotation.judge_clients` take the clip itself, so the model watches it and hears its
soundtrack. Each call is built for the best medium the client still offers (its
``media_modes``: video with audio, video, frames); when the server answers that it cannot take
that medium, the client drops it and the call is made again with the next one
(:func:`ask_watching`). Every result says which input the model got (``input``, e.g.
``"video+audio+transcript"`` or ``"frames"``).

Judges:

- ``HolisticJudge``: one overall score per video.
- ``AspectJudge``: every aspect of :mod:`annotation.aspects` from a single call.
- ``SpecialistJudge``: one backend (specialist prompt) per aspect; overall is their mean.
- ``PairwiseJudge``: which of two videos is better, mode ``direct``, ``in_context`` (solved
  example pairs first) or ``multi_agent`` (one verdict per aspect, then an aggregator). A forced
  choice unless ties are allowed. The order the videos are shown in is given by the caller or
  counterbalanced with a seeded RNG, and the answer mapped back.

Every answer goes through :func:`annotation.judge_answers.ask` (one format reminder, then
``JudgeParseError``).
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.chat_http import BackendError, ChatModel, check_frames, image_part, text_part
from pipelines.media.decode import read_video_frames

from . import judge_prompts as P
from .aspects import ASPECT_TITLES, ASPECTS, rubric_text
from .judge_answers import FORCED_WINNERS, WINNERS, answer_example, ask
from .judge_clients import MEDIA_FRAMES, MEDIA_VIDEO_AUDIO, refused_media, video_part


class VideoInputError(ValueError):
    """A video cannot be shown to a judge (no file and no frames, or an empty file)."""


def sample_frames(path: Path, n: int) -> list[np.ndarray]:
    """``n`` frames spread uniformly over the clip (the middle of ``n`` equal spans)."""
    frames = read_video_frames(path)
    if not frames:
        raise VideoInputError(f"{path}: no video frames")
    idx = [min(len(frames) - 1, int((k + 0.5) * len(frames) / n)) for k in range(n)]
    return [frames[i] for i in idx]


@dataclass(frozen=True)
class Video:
    """One clip to judge: its file (sent as a video, or sampled into ``n_frames`` frames) or
    ``frames`` given directly, and the transcript of its speech when known."""

    path: Path | None = None
    transcript: str | None = None
    name: str = ""
    frames: Sequence[np.ndarray] | None = None
    n_frames: int = 8
    _sampled: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if self.path is None and self.frames is None:
            raise VideoInputError(f"video {self.name!r}: neither a file nor frames")

    def frame_list(self) -> list[np.ndarray]:
        if self.frames is not None:
            return check_frames(self.frames)
        if "frames" not in self._sampled:
            self._sampled["frames"] = check_frames(sample_frames(self.path, self.n_frames))
        return self._sampled["frames"]

    def parts(self, medium: str) -> list[dict]:
        """The content parts showing this video as ``medium`` (see :func:`_medium`)."""
        if medium == MEDIA_FRAMES:
            return [image_part(f) for f in self.frame_list()]
        if self.path is None:
            raise VideoInputError(f"video {self.name!r} has frames only; it cannot be sent as {medium}")
        return [video_part(self.path, with_audio=medium == MEDIA_VIDEO_AUDIO)]


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
    input: str = ""  # what the model got, e.g. "video+audio+transcript"
    prompt_version: str = P.PROMPT_VERSION


@dataclass
class PairwiseResult:
    winner: str  # "a", "b" or "tie", in the caller's order (a = first argument)
    a_shown_first: bool
    aspect_winners: dict[str, str] = field(default_factory=dict)  # multi_agent only, caller's order
    reasoning: dict[str, str] = field(default_factory=dict)
    raw: list[str] = field(default_factory=list)
    input: str = ""
    prompt_version: str = P.PROMPT_VERSION


def _medium(videos: Sequence[Video], mode: str) -> str:
    """The medium every video of one call is shown as: ``mode``, or frames when any of them
    has no file."""
    return MEDIA_FRAMES if any(v.path is None for v in videos) else mode


def _transcript(videos: Sequence[Video]) -> str | None:
    return next((v.transcript.strip() for v in videos if v.transcript and v.transcript.strip()), None)


def input_label(medium: str, videos: Sequence[Video]) -> str:
    """What the model was given, e.g. ``video+audio+transcript``."""
    return medium + ("+transcript" if _transcript(videos) else "")


def _audio_line(videos: Sequence[Video], medium: str) -> str:
    transcript = _transcript(videos)
    return P.TRANSCRIPT_LINE.format(transcript=transcript) if transcript else P.NO_TRANSCRIPT_LINE[medium]


def _answer_rules(keys: Sequence[str], winners: Sequence[str] = WINNERS) -> str:
    return P.ANSWER_RULES.format(example=answer_example(keys, winners))


# A call built for one medium: (messages, the input label of that call).
Build = Callable[[str], tuple[list[dict], str]]


def ask_watching(backend: ChatModel, build: Build, keys: Sequence[str],
                 winners: Sequence[str] = WINNERS) -> tuple[dict, str, list[str], str]:
    """(judgement, reasoning, raw answers, input label) for the best medium ``backend`` still
    offers. A server that says it cannot take the medium makes the client drop it
    (``refuse``) and the call is built again for the next one; any other failure is raised."""
    while True:
        modes = tuple(getattr(backend, "media_modes", (MEDIA_FRAMES,)))
        messages, label = build(modes[0])
        try:
            answer, why, raw = ask(backend, messages, keys, winners)
            return answer, why, raw, label
        except BackendError as exc:
            refused = refused_media(exc)
            if refused is None or not hasattr(backend, "refuse"):
                raise
            backend.refuse(refused, str(exc))
            if tuple(backend.media_modes) == modes:  # nothing left to fall back to
                raise


# --------------------------------------------------------------------------------------
# Score-based judges
# --------------------------------------------------------------------------------------

def _one_video(video: Video, mode: str, template: str, **fields) -> tuple[list[dict], str]:
    """One user turn: the video as ``mode`` (or frames), then ``template`` filled in."""
    medium = _medium([video], mode)
    prompt = template.format(video_intro=P.VIDEO_INTRO[medium], audio_line=_audio_line([video], medium), **fields)
    return [{"role": "user", "content": video.parts(medium) + [text_part(prompt)]}], input_label(medium, [video])


def holistic_messages(video: Video, mode: str = MEDIA_FRAMES) -> tuple[list[dict], str]:
    return _one_video(video, mode, P.HOLISTIC_PROMPT, criteria=P.HOLISTIC_CRITERIA,
                      answer_rules=_answer_rules(["score"]))


def all_aspects_messages(video: Video, mode: str = MEDIA_FRAMES) -> tuple[list[dict], str]:
    rubrics = "\n\n".join(P.ALL_ASPECTS_RUBRIC.format(name=a, title=ASPECT_TITLES[a], rubric=rubric_text(a))
                          for a in ASPECTS)
    return _one_video(video, mode, P.ALL_ASPECTS_PROMPT, n=len(ASPECTS), rubrics=rubrics,
                      answer_rules=_answer_rules(ASPECTS))


def aspect_messages(video: Video, aspect: str, mode: str = MEDIA_FRAMES) -> tuple[list[dict], str]:
    return _one_video(video, mode, P.ASPECT_PROMPT, title=ASPECT_TITLES[aspect], rubric=rubric_text(aspect),
                      answer_rules=_answer_rules(["score"]))


class HolisticJudge:
    """One overall 1..5 score per video."""

    def __init__(self, backend: ChatModel):
        self.backend = backend

    def judge(self, video: Video) -> ScoreResult:
        answer, reasoning, raw, label = ask_watching(self.backend, lambda m: holistic_messages(video, m), ["score"])
        return ScoreResult({"overall": answer["score"]}, float(answer["score"]), {"overall": reasoning}, raw, label)


class AspectJudge:
    """Every aspect from one call; overall is their mean."""

    def __init__(self, backend: ChatModel):
        self.backend = backend

    def judge(self, video: Video) -> ScoreResult:
        answer, reasoning, raw, label = ask_watching(self.backend, lambda m: all_aspects_messages(video, m), ASPECTS)
        return ScoreResult(dict(answer), float(np.mean([answer[a] for a in ASPECTS])), {"all": reasoning}, raw, label)


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
        scores, reasoning, raw, labels = {}, {}, [], []
        for aspect, backend in self.backends.items():
            answer, why, texts, label = ask_watching(backend, lambda m, a=aspect: aspect_messages(video, a, m),
                                                     ["score"])
            scores[aspect], reasoning[aspect] = answer["score"], why
            raw.extend(texts)
            labels.append(label)
        return ScoreResult(scores, float(np.mean(list(scores.values()))), reasoning, raw, _joined(labels))


def _joined(labels: Sequence[str]) -> str:
    """One label for several calls: the single one when they agree, else all of them."""
    distinct = list(dict.fromkeys(labels))
    return distinct[0] if len(distinct) == 1 else " / ".join(distinct)


# --------------------------------------------------------------------------------------
# Comparison-based judge
# --------------------------------------------------------------------------------------

PAIRWISE_MODES = ("direct", "in_context", "multi_agent")


class PairwiseJudge:
    """Which of two videos is better.

    ``allow_ties`` False (the default) makes every verdict a forced choice between the two.
    The presentation order is the caller's ``a_first`` when given; otherwise counterbalanced:
    calls come in pairs, the seeded RNG picks the order for the first call of each pair and
    the second call uses the opposite order. Answers ("first"/"second") are mapped back to the
    caller's order ("a"/"b").
    """

    def __init__(self, backend: ChatModel, mode: str = "direct", rng_seed: int | None = 0,
                 examples: Sequence[PairExample] = (),
                 specialists: Mapping[str, ChatModel] | None = None, aggregator: ChatModel | None = None,
                 allow_ties: bool = False):
        if mode not in PAIRWISE_MODES:
            raise ValueError(f"mode must be one of {PAIRWISE_MODES}, not {mode!r}")
        if mode == "in_context" and not examples:
            raise ValueError("in_context mode needs at least one PairExample")
        self.winners = WINNERS if allow_ties else FORCED_WINNERS
        for ex in examples:
            if ex.winner not in self.winners:
                raise ValueError(f"example winner {ex.winner!r} is not one of {self.winners}")
        self.backend = backend
        self.mode = mode
        self.examples = list(examples)
        self.specialists = _aspect_backends(specialists if specialists is not None else backend)
        self.aggregator = aggregator or backend
        self._tie_rule = P.TIE_ALLOWED if allow_ties else P.TIE_FORBIDDEN
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

    def _verdict_turn(self, first: Video, second: Video, focus: str, medium: str) -> dict:
        prompt = P.PAIRWISE_PROMPT.format(pair_media=P.PAIR_MEDIA[medium],
                                          audio_line=_audio_line([first, second], medium), focus=focus,
                                          tie_rule=self._tie_rule,
                                          answer_rules=_answer_rules(["winner"], self.winners))
        parts = ([text_part(P.FIRST_VIDEO_LABEL)] + first.parts(medium)
                 + [text_part(P.SECOND_VIDEO_LABEL)] + second.parts(medium) + [text_part(prompt)])
        return {"role": "user", "content": parts}

    def _verdict_messages(self, first: Video, second: Video, focus: str, mode: str) -> tuple[list[dict], str]:
        medium = _medium([first, second], mode)
        return [self._verdict_turn(first, second, focus, medium)], input_label(medium, [first, second])

    def _in_context_messages(self, first: Video, second: Video, mode: str) -> tuple[list[dict], str]:
        shown = [first, second] + [v for ex in self.examples for v in (ex.first, ex.second)]
        medium = _medium(shown, mode)
        messages = [{"role": "user", "content": [text_part(P.IN_CONTEXT_PREAMBLE.format(n=len(self.examples)))]}]
        for ex in self.examples:
            messages.append(self._verdict_turn(ex.first, ex.second, P.PAIRWISE_HOLISTIC_FOCUS, medium))
            answer = P.IN_CONTEXT_EXAMPLE_ANSWER.format(explanation=ex.explanation or "See the videos.",
                                                        answer=json.dumps({"winner": ex.winner}))
            messages.append({"role": "assistant", "content": [text_part(answer)]})
        task = self._verdict_turn(first, second, P.PAIRWISE_HOLISTIC_FOCUS, medium)
        task["content"].insert(0, text_part(P.IN_CONTEXT_TASK_INTRO))
        return messages + [task], input_label(medium, shown)

    def compare(self, a: Video, b: Video, a_first: bool | None = None) -> PairwiseResult:
        if a_first is None:
            a_first = self._next_order()
        first, second = (a, b) if a_first else (b, a)

        def to_caller(winner: str) -> str:
            if winner == "tie":
                return "tie"
            return "a" if (winner == "first") == a_first else "b"

        if self.mode == "multi_agent":
            aspect_winners, reasoning, raw, reports, labels = {}, {}, [], [], []
            for aspect, backend in self.specialists.items():
                focus = P.PAIRWISE_ASPECT_FOCUS.format(title=ASPECT_TITLES[aspect], rubric=rubric_text(aspect))
                answer, why, texts, label = ask_watching(
                    backend, lambda m, f=focus: self._verdict_messages(first, second, f, m), ["winner"], self.winners)
                aspect_winners[aspect], reasoning[aspect] = to_caller(answer["winner"]), why
                raw.extend(texts)
                labels.append(label)
                reports.append(P.AGGREGATOR_REPORT.format(title=ASPECT_TITLES[aspect], winner=answer["winner"],
                                                          reasoning=why or "(none given)"))
            transcript = _transcript([first, second])
            prompt = P.AGGREGATOR_PROMPT.format(
                audio_line=P.TRANSCRIPT_LINE.format(transcript=transcript) if transcript else "",
                reports="\n\n".join(reports), tie_rule=self._tie_rule,
                answer_rules=_answer_rules(["winner"], self.winners))
            answer, why, texts = ask(self.aggregator, [{"role": "user", "content": [text_part(prompt)]}], ["winner"],
                                     self.winners)
            reasoning["aggregate"] = why
            return PairwiseResult(to_caller(answer["winner"]), a_first, aspect_winners, reasoning, raw + texts,
                                  _joined(labels))

        def build(mode: str) -> tuple[list[dict], str]:
            if self.mode == "in_context":
                return self._in_context_messages(first, second, mode)
            return self._verdict_messages(first, second, P.PAIRWISE_HOLISTIC_FOCUS, mode)

        answer, why, raw, label = ask_watching(self.backend, build, ["winner"], self.winners)
        return PairwiseResult(to_caller(answer["winner"]), a_first, {}, {"overall": why}, raw, label)
