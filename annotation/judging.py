"""Every configured MLLM judge over the clips to rate: score rows per clip, verdicts per pair.

A failed call becomes a row with ``error`` set and no score (counted as a tie when judges are
evaluated), never an exception. Backend ``none`` makes no call: every row says so with
:data:`NOT_CONFIGURED_ERROR`, and the report leaves such rows out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from itertools import combinations
from pathlib import Path

import numpy as np

from pipelines.chat_http import BackendError, ChatClient, GeminiChatClient
from pipelines.config import JudgeConfig
from pipelines.media.decode import read_video_frames

from .aspects import ASPECTS
from .judge_answers import JudgeError
from .judges import AspectJudge, HolisticJudge, PairExample, PairwiseJudge, ScoreResult, SpecialistJudge, Video
from .versions import AnnotationInputError, VersionClip

# The error of every row when annotation.judges.backend is "none": no judge ran, nothing failed.
NOT_CONFIGURED = "judge_backend_not_configured"
NOT_CONFIGURED_ERROR = f"{NOT_CONFIGURED}: annotation.judges.backend is 'none', no call was made"


def sample_frames(path: Path, n: int) -> list[np.ndarray]:
    """``n`` frames spread uniformly over the clip (the middle of ``n`` equal spans)."""
    frames = read_video_frames(path)
    if not frames:
        raise AnnotationInputError(f"{path}: no video frames")
    idx = [min(len(frames) - 1, int((k + 0.5) * len(frames) / n)) for k in range(n)]
    return [frames[i] for i in idx]


def make_chat_client(cfg: JudgeConfig) -> ChatClient:
    """The configured judge model's client: OpenAI-compatible or Gemini."""
    clients = {"openai_chat": ChatClient, "gemini": GeminiChatClient}
    if cfg.backend not in clients:
        raise ValueError(f"judge backend {cfg.backend!r} makes no calls")
    return clients[cfg.backend](cfg.base_url, cfg.model, api_key_env=cfg.api_key_env or None, timeout_s=cfg.timeout_s,
                                max_retries=cfg.max_retries, backoff_s=cfg.backoff_s,
                                max_concurrency=cfg.max_concurrency)


def _score_rows(name: str, clip: VersionClip, result: ScoreResult) -> list[dict]:
    rows = [{"judge": name, "sample": clip.sample, "version": clip.version, "aspect": "overall",
             "score": result.overall, "error": None}]
    for aspect, score in result.scores.items():
        if aspect in ASPECTS:
            rows.append({"judge": name, "sample": clip.sample, "version": clip.version, "aspect": aspect,
                         "score": float(score), "error": None})
    return rows


def _in_context_examples(videos: dict[tuple[str, str], Video], human_pairs: Sequence[dict], sample: str,
                         k: int) -> list[PairExample]:
    """Solved pairs from *other* samples, so a judged pair never sees its own answer."""
    winners = {"A": "first", "B": "second", "tie": "tie"}
    out = []
    for p in human_pairs:
        if p["sample"] == sample or (p["sample"], p["a"]) not in videos or (p["sample"], p["b"]) not in videos:
            continue
        out.append(PairExample(videos[(p["sample"], p["a"])], videos[(p["sample"], p["b"])], winners[p["winner"]],
                               "Chosen by every human annotator."))
        if len(out) == k:
            break
    return out


def _pairs_by_sample(clips: Sequence[VersionClip]) -> dict[str, list[tuple[str, str]]]:
    by_sample: dict[str, list[str]] = defaultdict(list)
    for clip in clips:
        by_sample[clip.sample].append(clip.version)
    return {sample: list(combinations(sorted(versions), 2)) for sample, versions in sorted(by_sample.items())}


def _not_configured_rows(clips: Sequence[VersionClip], cfg: JudgeConfig) -> tuple[list[dict], list[dict]]:
    """One row per clip (score kinds) and per pair (pairwise kinds), each saying that no judge ran."""
    score_rows, pair_rows = [], []
    for kind in cfg.kinds:
        if kind.startswith("pairwise_"):
            pair_rows += [{"judge": kind, "sample": sample, "a": a, "b": b, "prediction": None, "a_shown_first": None,
                           "error": NOT_CONFIGURED_ERROR}
                          for sample, pairs in _pairs_by_sample(clips).items() for a, b in pairs]
        else:
            score_rows += [{"judge": kind, "sample": c.sample, "version": c.version, "aspect": "overall",
                            "score": None, "error": NOT_CONFIGURED_ERROR} for c in clips]
    return score_rows, pair_rows


def not_configured(row: dict) -> bool:
    """A row written because no judge backend is configured (not a failed call)."""
    return str(row.get("error") or "").startswith(NOT_CONFIGURED)


Progress = Callable[[str, object], None]


def _failed(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _score_judge_rows(kind: str, judge: HolisticJudge | AspectJudge | SpecialistJudge,
                      clips: Sequence[VersionClip], videos: dict[tuple[str, str], Video],
                      progress: Progress | None) -> list[dict]:
    rows: list[dict] = []
    for clip in clips:
        try:
            rows += _score_rows(kind, clip, judge.judge(videos[(clip.sample, clip.version)]))
        except (JudgeError, BackendError) as exc:
            rows.append({"judge": kind, "sample": clip.sample, "version": clip.version, "aspect": "overall",
                         "score": None, "error": _failed(exc)})
        if progress:
            progress(kind, clip)
    return rows


def _pair_judge_rows(kind: str, judge: PairwiseJudge, sample: str, pairs: Sequence[tuple[str, str]],
                     videos: dict[tuple[str, str], Video], progress: Progress | None) -> list[dict]:
    rows = []
    for a, b in pairs:
        row = {"judge": kind, "sample": sample, "a": a, "b": b, "prediction": None, "a_shown_first": None,
               "error": None}
        try:
            result = judge.compare(videos[(sample, a)], videos[(sample, b)])
            row.update(prediction={"a": "A", "b": "B", "tie": "tie"}[result.winner],
                       a_shown_first=result.a_shown_first)
        except (JudgeError, BackendError) as exc:
            row["error"] = _failed(exc)
        rows.append(row)
        if progress:
            progress(kind, (sample, a, b))
    return rows


def run_judges(clips: Sequence[VersionClip], cfg: JudgeConfig, human_pairs: Sequence[dict] = (),
               progress: Progress | None = None) -> tuple[list[dict], list[dict]]:
    """(score rows, pair rows) for every configured judge kind; a failed call becomes a row with
    ``error`` set and no score (counted as a tie when judges are evaluated), never an exception.
    Backend ``none`` makes no call: every row's error is :data:`NOT_CONFIGURED_ERROR`.
    ``human_pairs`` (unanimous human pairs) feed the in-context judge's solved examples."""
    if cfg.backend == "none":
        return _not_configured_rows(clips, cfg)
    videos = {(c.sample, c.version): Video(sample_frames(c.path, cfg.frames_per_video), c.transcript,
                                           f"{c.sample}/{c.version}") for c in clips}
    backend = make_chat_client(cfg)
    score_judges = {"holistic": HolisticJudge, "aspects": AspectJudge, "specialist": SpecialistJudge}
    score_rows: list[dict] = []
    pair_rows: list[dict] = []
    for kind in cfg.kinds:
        if kind in score_judges:
            score_rows += _score_judge_rows(kind, score_judges[kind](backend), clips, videos, progress)
            continue
        mode = kind.removeprefix("pairwise_")
        plain = PairwiseJudge(backend, mode="direct" if mode == "in_context" else mode, rng_seed=cfg.seed)
        for sample, pairs in _pairs_by_sample(clips).items():
            judge = plain
            if mode == "in_context":
                examples = _in_context_examples(videos, human_pairs, sample, cfg.in_context_examples)
                if not examples:
                    pair_rows += [{"judge": kind, "sample": sample, "a": a, "b": b, "prediction": None,
                                   "a_shown_first": None, "error": "no solved pairs from other samples"}
                                  for a, b in pairs]
                    continue
                judge = PairwiseJudge(backend, mode="in_context", rng_seed=cfg.seed, examples=examples)
            pair_rows += _pair_judge_rows(kind, judge, sample, pairs, videos, progress)
    return score_rows, pair_rows
