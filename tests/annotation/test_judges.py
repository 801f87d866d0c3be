"""Judges against a local scripted server speaking chat-completions and generateContent."""

from __future__ import annotations

import io

import numpy as np
import pytest
from judge_server import ScriptedServer
from PIL import Image

from annotation.aspects import ASPECT_TITLES, ASPECTS
from annotation.judge_answers import FORCED_WINNERS, JudgeParseError, parse_judgement
from annotation.judges import AspectJudge, HolisticJudge, PairExample, PairwiseJudge, SpecialistJudge, Video
from pipelines.captions.backends import CaptionRetriesExhausted
from pipelines.chat_http import ChatClient, GeminiChatClient

BRIGHT, DARK = 230, 20


def video(level: int, n: int = 2, transcript: str | None = "a calm greeting") -> Video:
    return Video(frames=[np.full((16, 16, 3), level, np.uint8) for _ in range(n)], transcript=transcript)


def level_of(jpeg: bytes) -> float:
    return float(np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).mean())


@pytest.fixture(params=["openai", "gemini"])
def server(request):
    srv = ScriptedServer(request.param)
    yield srv
    srv.close()


def make_backend(srv: ScriptedServer, timeout_s: float = 5.0, max_retries: int = 2):
    kw = {"timeout_s": timeout_s, "max_retries": max_retries, "backoff_s": 0.01, "api_key_env": None}
    if srv.kind == "openai":
        return ChatClient(srv.base_url, "judge-model", **kw)
    return GeminiChatClient(srv.base_url, "gemini-test", **kw)


# ---------------------------------------------------------------- parse_judgement

def test_parse_good_answers():
    assert parse_judgement('<think>mouth {"score": 1} ok</think>\n{"score": 4}', ["score"]) == {"score": 4}
    fenced = '<think>x</think>\n```json\n{"winner": "Second"}\n```\nThat is my verdict.'
    assert parse_judgement(fenced, ["winner"]) == {"winner": "second"}
    # closing tag only (template pre-filled <think>); the last top-level object wins
    text = 'reasoning {"score": 2}</think> draft {"score": 1} final {"score": 5, "note": {"x": 1}}'
    assert parse_judgement(text, ["score"]) == {"score": 5}
    three = '{"lip_sync": 5, "expressiveness": "3", "motion_quality": 2.0, "extra": 9}'
    assert parse_judgement(three, ASPECTS) == {"lip_sync": 5, "expressiveness": 3, "motion_quality": 2}


def test_parse_python_literals_and_scores_out_of_five():
    """FlowPortrait's prompts show the answer as a Python dict; models copy it."""
    assert parse_judgement("<think>lips lag</think> {'score': 4}", ["score"]) == {"score": 4}
    assert parse_judgement("Final: {'score': '2/5', 'why': 'jaw } frozen'}", ["score"]) == {"score": 2}
    assert parse_judgement('{"score": "4 out of 5"}', ["score"]) == {"score": 4}
    assert parse_judgement("{'winner': 'Second', 'sure': True}", ["winner"]) == {"winner": "second"}
    # a later JSON object still wins over an earlier Python one
    assert parse_judgement("{'score': 1} then {\"score\": 5}", ["score"]) == {"score": 5}
    for bad in ("{'score': '6/5'}", "{'score': '4/10'}", "{'score': 4", "{score: 4}"):
        with pytest.raises(JudgeParseError):
            parse_judgement(bad, ["score"])


def test_forced_choice_refuses_tie():
    with pytest.raises(JudgeParseError, match="not one of \\['first', 'second'\\]"):
        parse_judgement('{"winner": "tie"}', ["winner"], FORCED_WINNERS)
    assert parse_judgement('{"winner": "tie"}', ["winner"]) == {"winner": "tie"}


@pytest.mark.parametrize("text, keys", [
    ("<think>all good</think> the score is four", ["score"]),
    ('<think>hmm</think>{"score": 6}', ["score"]),
    ('{"score": 0}', ["score"]),
    ('{"score": true}', ["score"]),
    ('{"score": 3.5}', ["score"]),
    ('{"rating": 3}', ["score"]),
    ('{"winner": "both"}', ["winner"]),
    ('{"lip_sync": 3, "expressiveness": 3}', list(ASPECTS)),
    ('<think>unfinished reasoning {"score": 4}', ["score"]),
])
def test_parse_rejects(text, keys):
    with pytest.raises(JudgeParseError) as info:
        parse_judgement(text, keys)
    assert info.value.raw == text


# ---------------------------------------------------------------- backends and retries

def test_holistic_good_answer(server):
    server.script.append("<think>The lips close on every b.</think>\n{\"score\": 4}")
    result = HolisticJudge(make_backend(server)).judge(video(BRIGHT, n=3))
    assert result.scores == {"overall": 4} and result.overall == 4.0
    assert "lips close" in result.reasoning["overall"]
    assert len(server.requests) == 1
    path, body = server.requests[0]
    assert path.endswith("/chat/completions" if server.kind == "openai" else "/models/gemini-test:generateContent")
    assert len(server.images(body)) == 3
    assert "a calm greeting" in server.texts(body)


@pytest.mark.parametrize("bad", ["<think>no idea</think> looks good", '{"score": 9}', '{"grade": 4}'])
def test_malformed_answer_retried_once_then_raises(server, bad):
    server.script.extend([bad, bad])
    with pytest.raises(JudgeParseError):
        HolisticJudge(make_backend(server)).judge(video(BRIGHT))
    assert len(server.requests) == 2
    assert "could not be used" in server.texts(server.requests[1][1])


def test_malformed_then_good(server):
    server.script.extend(['{"lip_sync": 4}', '<think>ok</think>{"lip_sync": 4, "expressiveness": 2, "motion_quality": 3}'])
    result = AspectJudge(make_backend(server)).judge(video(DARK))
    assert result.scores == {"lip_sync": 4, "expressiveness": 2, "motion_quality": 3}
    assert result.overall == pytest.approx(3.0)
    assert len(result.raw) == 2


def test_5xx_then_success_is_retried(server):
    server.script.extend([503, 429, '{"score": 2}'])
    assert HolisticJudge(make_backend(server)).judge(video(BRIGHT)).overall == 2.0
    assert len(server.requests) == 3


def test_timeout_is_retried(server):
    server.script.extend([("sleep", 1.0, '{"score": 1}'), '{"score": 5}'])
    assert HolisticJudge(make_backend(server, timeout_s=0.3)).judge(video(BRIGHT)).overall == 5.0
    assert len(server.requests) == 2


def test_retries_exhausted(server):
    server.script.extend([500, 500])
    with pytest.raises(CaptionRetriesExhausted):
        HolisticJudge(make_backend(server, max_retries=1)).judge(video(BRIGHT))


def test_specialists_one_call_each(server):
    def by_aspect(body):
        text = server.texts(body)
        for aspect, score in (("lip_sync", 5), ("expressiveness", 1), ("motion_quality", 3)):
            if f"specialised in one aspect: {ASPECT_TITLES[aspect]}" in text:
                return f'<think>{aspect}</think>{{"score": {score}}}'
        return "nothing"

    server.default = by_aspect
    backend = make_backend(server)
    result = SpecialistJudge({a: backend for a in ASPECTS}).judge(video(BRIGHT))
    assert result.scores == {"lip_sync": 5, "expressiveness": 1, "motion_quality": 3}
    assert result.overall == pytest.approx(3.0)
    assert len(server.requests) == 3


# ---------------------------------------------------------------- pairwise

def first_is_better_if_bright(srv: ScriptedServer):
    def answer(body):
        first = srv.images(body)[0]
        return '<think>compared</think>{"winner": "%s"}' % ("first" if level_of(first) > 128 else "second")
    return answer


def test_pairwise_order_randomised_and_mapped_back(server):
    server.default = first_is_better_if_bright(server)
    judge = PairwiseJudge(make_backend(server), mode="direct", rng_seed=7)
    bright, dark = video(BRIGHT), video(DARK)
    results = [judge.compare(bright, dark) for _ in range(6)]
    orders = [r.a_shown_first for r in results]
    assert all(orders[i] != orders[i + 1] for i in range(0, 6, 2))  # alternates within each pair
    assert all(r.winner == "a" for r in results)  # bright wins whichever side it was shown on
    swapped = [judge.compare(dark, bright) for _ in range(4)]
    assert {r.a_shown_first for r in swapped} == {True, False}
    assert all(r.winner == "b" for r in swapped)
    # the same seed reproduces the same presentation orders
    again = PairwiseJudge(make_backend(server), mode="direct", rng_seed=7)
    assert [again.compare(bright, dark).a_shown_first for _ in range(6)] == orders


def test_pairwise_in_context_examples_come_first(server):
    server.default = first_is_better_if_bright(server)
    example = PairExample(video(DARK, n=1), video(BRIGHT, n=1), "second", "The second keeps its lips in sync.")
    judge = PairwiseJudge(make_backend(server), mode="in_context", rng_seed=1, examples=[example])
    result = judge.compare(video(DARK), video(BRIGHT))
    assert result.winner == "b"
    body = server.requests[0][1]
    text = server.texts(body)
    assert text.index("solved comparisons") < text.index("keeps its lips") < text.index("Now the real task")
    assert len(server.images(body)) == 4  # the real pair is the last user turn


def test_pairwise_multi_agent_specialists_then_aggregator(server):
    def answer(body):
        text = server.texts(body)
        if "lead a panel" in text:
            assert text.count("verdict:") == 3
            assert server.images(body) == []
            return '<think>two of three</think>{"winner": "first"}'
        return first_is_better_if_bright(server)(body)

    server.default = answer
    judge = PairwiseJudge(make_backend(server), mode="multi_agent", rng_seed=3)
    for a, b, expected in ((video(BRIGHT), video(DARK), "a"), (video(DARK), video(BRIGHT), "b")):
        before = len(server.requests)
        result = judge.compare(a, b)
        calls = server.requests[before:]
        assert len(calls) == 4
        assert all("lead a panel" not in server.texts(c[1]) for c in calls[:3])
        assert "lead a panel" in server.texts(calls[3][1])
        assert result.aspect_winners == {aspect: expected for aspect in ASPECTS}
        # the aggregator always says "first": mapped back through the presentation order
        assert result.winner == ("a" if result.a_shown_first else "b")
        assert "aggregate" in result.reasoning


def test_pairwise_forced_choice_and_optional_ties(server):
    server.script.extend(['<think>same</think>{"winner": "tie"}', '<think>still same</think>{"winner": "tie"}'])
    with pytest.raises(JudgeParseError):
        PairwiseJudge(make_backend(server), mode="direct").compare(video(BRIGHT), video(DARK))
    first = server.texts(server.requests[0][1])
    assert '"tie" is not an answer' in first and '"winner": "first" | "second"}' in first
    assert '"first" | "second"' in server.texts(server.requests[1][1])  # the format reminder
    server.script.append('<think>same</think>{"winner": "tie"}')
    tied = PairwiseJudge(make_backend(server), mode="direct", allow_ties=True).compare(video(BRIGHT), video(DARK))
    assert tied.winner == "tie"
    assert '"winner": "first" | "second" | "tie"}' in server.texts(server.requests[2][1])
    with pytest.raises(ValueError, match="example winner"):
        PairwiseJudge(None, mode="in_context", examples=[PairExample(video(DARK), video(BRIGHT), "tie")])


def test_pairwise_rejects_bad_mode():
    with pytest.raises(ValueError):
        PairwiseJudge(None, mode="tournament")
    with pytest.raises(ValueError):
        PairwiseJudge(None, mode="in_context")
