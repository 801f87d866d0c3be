"""Every configured MLLM judge over the clips to rate: score rows per clip, verdicts per pair.

A failed call becomes a row with ``error`` set and no score (a failure, counted against the
judge's coverage and accuracy when judges are evaluated), never an exception. Backend ``none``
makes no call: every row says so with :data:`NOT_CONFIGURED_ERROR`, and the report leaves such
rows out. Each row's ``input`` says what the model got (``video+audio``, ``video``, ``frames``,
``+transcript``).

Results are cached (:class:`annotation.judge_cache.JudgeCache`) by the clips' sha256, judge kind,
prompt version, model and the settings that change what the model is shown, so a run after new
annotations makes only the calls whose answer could change: the in-context comparisons whose
solved examples changed, and clips or pairs not judged before.

The in-context judge (FlowPortrait's ICL-Comp) is shown one solved example per aspect, each a
pair every annotator ranked the same way, from *another* sample, the one in which that aspect
separates the two videos most clearly in the human ratings; which of its videos comes first is
seeded per judged sample, so across samples every example is shown in both orders.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from itertools import combinations

import numpy as np

from pipelines.chat_http import BackendError
from pipelines.config import JudgeConfig
from pipelines.models import sha256_file

from . import judge_prompts as P
from .agreement import latest_rows, rankings_from_rows, unanimous_pairs
from .aspects import ASPECT_TITLES, ASPECTS
from .judge_answers import JudgeError
from .judge_cache import JudgeCache
from .judge_clients import make_judge_client
from .judges import (  # noqa: F401  (sample_frames: the loop tests read frames through here)
    AspectJudge,
    HolisticJudge,
    PairExample,
    PairwiseJudge,
    SpecialistJudge,
    Video,
    VideoInputError,
    sample_frames,
)
from .versions import VersionClip

# The error of every row when annotation.judges.backend is "none": no judge ran, nothing failed.
NOT_CONFIGURED = "judge_backend_not_configured"
NOT_CONFIGURED_ERROR = f"{NOT_CONFIGURED}: annotation.judges.backend is 'none', no call was made"
NO_EXAMPLES_ERROR = "no solved pairs from other samples"

SCORE_KINDS = {"holistic": HolisticJudge, "aspects": AspectJudge, "specialist": SpecialistJudge}


def _seeded_bit(seed: int, *parts) -> bool:
    """A reproducible coin flip for ``parts`` (stable across runs and Python processes)."""
    return hashlib.sha256(json.dumps([seed, *parts]).encode()).digest()[0] & 1 == 1


def _seeded_rank(seed: int, *parts) -> str:
    return hashlib.sha256(json.dumps([seed, "rank", *parts]).encode()).hexdigest()


def solved_pairs(human_rows: Sequence[dict], min_annotators: int) -> list[dict]:
    """The unanimous human pairs (:func:`annotation.agreement.unanimous_pairs`), each with the
    human mean score of both videos per aspect: ``aspect_means = {aspect: [mean_a, mean_b]}``
    (aspects rated for both videos only)."""
    humans, _ = latest_rows(human_rows)
    ratings: dict[tuple, list[float]] = defaultdict(list)
    for r in humans:
        if r["aspect"] in ASPECTS and r["score"] is not None:
            ratings[(r["sample"], r["version"], r["aspect"])].append(float(r["score"]))
    out = []
    for pair in unanimous_pairs(rankings_from_rows(humans), min_annotators):
        means = {}
        for aspect in ASPECTS:
            a, b = ratings.get((pair["sample"], pair["a"], aspect)), ratings.get((pair["sample"], pair["b"], aspect))
            if a and b:
                means[aspect] = [float(np.mean(a)), float(np.mean(b))]
        out.append({**pair, "aspect_means": means})
    return out


def _gap(pair: dict, aspect: str) -> float | None:
    """How much higher the humans rated the preferred video on ``aspect``; None if not rated."""
    means = pair["aspect_means"].get(aspect)
    if means is None:
        return None
    return means[0] - means[1] if pair["winner"] == "A" else means[1] - means[0]


def in_context_examples(videos: dict[tuple[str, str], Video], digests: dict[tuple[str, str], str],
                        pairs: Sequence[dict], sample: str, seed: int) -> tuple[list[PairExample], list]:
    """(examples, their signature for the cache) for judging ``sample``: one solved pair per
    aspect from other samples, the one whose preferred video the humans rated highest above the
    other on that aspect (seeded tie-break), each pair used once. Without ratings for any aspect,
    as many solved pairs as there are aspects, in seeded order. The shown order of each example
    is a seeded coin flip per (judged sample, example)."""
    candidates = [p for p in pairs if p["sample"] != sample
                  and (p["sample"], p["a"]) in videos and (p["sample"], p["b"]) in videos]
    chosen: list[tuple[dict, str | None]] = []
    for aspect in ASPECTS:
        rated = [(gap, p) for p in candidates if all(p is not c for c, _ in chosen)
                 and (gap := _gap(p, aspect)) is not None and gap > 0]
        if rated:
            best = max(rated, key=lambda gp: (gp[0], _seeded_rank(seed, gp[1]["sample"], gp[1]["a"], gp[1]["b"])))[1]
            chosen.append((best, aspect))
    if not chosen:
        ordered = sorted(candidates, key=lambda p: _seeded_rank(seed, p["sample"], p["a"], p["b"]))
        chosen = [(p, None) for p in ordered[:len(ASPECTS)]]
    examples, signature = [], []
    for pair, aspect in chosen:
        winner_first = pair["winner"] == "A"
        a_first = _seeded_bit(seed, "example", sample, pair["sample"], pair["a"], pair["b"])
        first, second = (pair["a"], pair["b"]) if a_first else (pair["b"], pair["a"])
        winner = "first" if winner_first == a_first else "second"
        explanation = P.IN_CONTEXT_EXPLANATION.format(winner=winner.upper())
        if aspect is not None:
            means = pair["aspect_means"][aspect]
            shown = means if a_first else means[::-1]
            explanation += P.IN_CONTEXT_ASPECT_EXPLANATION.format(title=ASPECT_TITLES[aspect], first=shown[0],
                                                                  second=shown[1])
        key_first, key_second = (pair["sample"], first), (pair["sample"], second)
        examples.append(PairExample(videos[key_first], videos[key_second], winner, explanation))
        signature.append([digests[key_first], digests[key_second], winner, explanation])
    return examples, signature


def _pairs_by_sample(clips: Sequence[VersionClip]) -> dict[str, list[tuple[str, str]]]:
    by_sample: dict[str, list[str]] = defaultdict(list)
    for clip in clips:
        by_sample[clip.sample].append(clip.version)
    return {sample: list(combinations(sorted(versions), 2)) for sample, versions in sorted(by_sample.items())}


def _score_row(kind: str, clip: VersionClip, aspect: str, score: float | None, label: str | None,
               error: str | None) -> dict:
    return {"judge": kind, "sample": clip.sample, "version": clip.version, "aspect": aspect, "score": score,
            "input": label, "error": error}


def _pair_row(kind: str, sample: str, a: str, b: str, error: str | None = None, prediction: str | None = None,
              a_shown_first: bool | None = None, label: str | None = None) -> dict:
    return {"judge": kind, "sample": sample, "a": a, "b": b, "prediction": prediction,
            "a_shown_first": a_shown_first, "input": label, "error": error}


def _not_configured_rows(clips: Sequence[VersionClip], cfg: JudgeConfig) -> tuple[list[dict], list[dict]]:
    """One row per clip (score kinds) and per pair (pairwise kinds), each saying that no judge ran."""
    score_rows, pair_rows = [], []
    for kind in cfg.kinds:
        if kind.startswith("pairwise_"):
            pair_rows += [_pair_row(kind, sample, a, b, NOT_CONFIGURED_ERROR)
                          for sample, pairs in _pairs_by_sample(clips).items() for a, b in pairs]
        else:
            score_rows += [_score_row(kind, c, "overall", None, None, NOT_CONFIGURED_ERROR) for c in clips]
    return score_rows, pair_rows


def not_configured(row: dict) -> bool:
    """A row written because no judge backend is configured (not a failed call)."""
    return str(row.get("error") or "").startswith(NOT_CONFIGURED)


Progress = Callable[[str, object], None]

# A judge call that cannot be made or answered: recorded in its row, never raised.
JUDGE_FAILURES = (JudgeError, BackendError, VideoInputError, OSError)


def _failed(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _score_result_rows(kind: str, clip: VersionClip, result: dict) -> list[dict]:
    rows = [_score_row(kind, clip, "overall", result["overall"], result["input"], None)]
    rows += [_score_row(kind, clip, aspect, float(result["scores"][aspect]), result["input"], None)
             for aspect in ASPECTS if aspect in result["scores"]]
    return rows


def run_judges(clips: Sequence[VersionClip], cfg: JudgeConfig, solved: Sequence[dict] = (),
               progress: Progress | None = None, cache: JudgeCache | None = None) -> tuple[list[dict], list[dict]]:
    """(score rows, pair rows) for every configured judge kind.

    ``solved`` are the solved human pairs (:func:`solved_pairs`) the in-context judge learns
    from. ``cache`` keeps results between runs (default: this run only). A failed call becomes
    a row with ``error`` set and no score, never an exception. Backend ``none`` makes no call:
    every row's error is :data:`NOT_CONFIGURED_ERROR`."""
    if cfg.backend == "none":
        return _not_configured_rows(clips, cfg)
    cache = cache if cache is not None else JudgeCache()
    backend = make_judge_client(cfg)
    videos = {(c.sample, c.version): Video(c.path, c.transcript, f"{c.sample}/{c.version}",
                                           n_frames=cfg.frames_per_video) for c in clips}
    digests = {(c.sample, c.version): sha256_file(c.path) for c in clips}
    settings = {"prompt_version": P.PROMPT_VERSION, "backend": cfg.backend, "model": cfg.model, "media": cfg.media,
                "frames_per_video": cfg.frames_per_video}
    score_rows: list[dict] = []
    pair_rows: list[dict] = []
    for kind in cfg.kinds:
        if kind in SCORE_KINDS:
            judge = SCORE_KINDS[kind](backend)
            for clip in clips:
                key = {**settings, "kind": kind, "clip": digests[(clip.sample, clip.version)]}
                result = cache.get(key)
                if result is None:
                    try:
                        got = judge.judge(videos[(clip.sample, clip.version)])
                    except JUDGE_FAILURES as exc:
                        score_rows.append(_score_row(kind, clip, "overall", None, None, _failed(exc)))
                        result = None
                    else:
                        result = {"scores": got.scores, "overall": got.overall, "input": got.input}
                        cache.put(key, result)
                if result is not None:
                    score_rows += _score_result_rows(kind, clip, result)
                if progress:
                    progress(kind, clip)
            continue
        mode = kind.removeprefix("pairwise_")
        for sample, pairs in _pairs_by_sample(clips).items():
            examples, signature = [], []
            if mode == "in_context":
                examples, signature = in_context_examples(videos, digests, solved, sample, cfg.seed)
                if not examples:
                    pair_rows += [_pair_row(kind, sample, a, b, NO_EXAMPLES_ERROR) for a, b in pairs]
                    continue
            judge = PairwiseJudge(backend, mode=mode, rng_seed=cfg.seed, examples=examples,
                                  allow_ties=cfg.pairwise_ties)
            for a, b in pairs:
                a_first = _seeded_bit(cfg.seed, "pair", sample, a, b)
                key = {**settings, "kind": kind, "a": digests[(sample, a)], "b": digests[(sample, b)],
                       "a_first": a_first, "ties": cfg.pairwise_ties, "examples": signature}
                result = cache.get(key)
                if result is None:
                    try:
                        got = judge.compare(videos[(sample, a)], videos[(sample, b)], a_first=a_first)
                    except JUDGE_FAILURES as exc:
                        pair_rows.append(_pair_row(kind, sample, a, b, _failed(exc)))
                    else:
                        result = {"winner": got.winner, "a_shown_first": got.a_shown_first, "input": got.input}
                        cache.put(key, result)
                if result is not None:
                    pair_rows.append(_pair_row(kind, sample, a, b, prediction={"a": "A", "b": "B", "tie": "tie"}[
                        result["winner"]], a_shown_first=result["a_shown_first"], label=result["input"]))
                if progress:
                    progress(kind, (sample, a, b))
    return score_rows, pair_rows
