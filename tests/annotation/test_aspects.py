"""The aspects are worded once: annotators in Label Studio and the judges read the same text."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from annotation.aspects import ASPECT_TITLES, ASPECTS, BY_NAME, SCALE, rubric_text
from annotation.judges import PairwiseJudge, Video, all_aspects_messages, aspect_messages
from annotation.rubric import rating_config


def prompt_text(messages: list[dict]) -> str:
    return "\n".join(part["text"] for m in messages for part in m["content"] if part["type"] == "text")


class Recorder:
    """A chat model that records what it is asked and prefers the first video."""

    name = "recorder"

    def __init__(self):
        self.asked: list[str] = []

    def complete(self, messages):
        self.asked.append(prompt_text(messages))
        return '{"winner": "first"}'


VIDEO = Video(frames=[np.zeros((8, 8, 3), np.uint8)], transcript="hello")


def test_every_aspect_anchors_every_score():
    for aspect in ASPECTS:
        assert sorted(BY_NAME[aspect].anchors) == list(SCALE)
        lines = rubric_text(aspect).splitlines()
        assert lines[0] == BY_NAME[aspect].description
        assert [line.split(" = ")[0] for line in lines[1:]] == [str(s) for s in reversed(SCALE)]


def test_humans_read_the_rubric_text():
    view = ET.fromstring(rating_config())
    for aspect in ASPECTS:
        (text,) = [t for t in view.iter("Text") if t.get("name") == f"{aspect}_rubric"]
        assert text.get("value") == rubric_text(aspect)
    headers = [h.get("value") for h in view.iter("Header")]
    assert all(ASPECT_TITLES[a] in headers for a in ASPECTS)


def test_judges_read_the_same_rubric_text():
    everything = prompt_text(all_aspects_messages(VIDEO)[0])
    for aspect in ASPECTS:
        assert rubric_text(aspect) in prompt_text(aspect_messages(VIDEO, aspect)[0])
        assert rubric_text(aspect) in everything
    recorder = Recorder()
    PairwiseJudge(recorder, mode="multi_agent").compare(VIDEO, VIDEO)
    for aspect in ASPECTS:
        assert any(rubric_text(aspect) in asked for asked in recorder.asked)
