import numpy as np

from pipelines.captions.cache import CaptionCache
from pipelines.captions.describe import describe_windows
from pipelines.captions.instruction import INSTRUCTION, INSTRUCTION_VERSION

GOOD = "A content man with relaxed brows and soft eyes, mouth corners lifted, gazing at the camera."


class FakeCaptioner:
    name = "fake:1"

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    def caption(self, frames, instruction):
        assert len(frames) == 8 and all(f.shape == (4, 4, 3) for f in frames)
        self.calls.append(instruction)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def frames(n):
    return [np.full((4, 4, 3), i % 256, np.uint8) for i in range(n)]


def test_good_answer_and_cache_hit(tmp_path):
    cache = CaptionCache(tmp_path)
    fake = FakeCaptioner([f"<think>hmm</think>{GOOD}"])
    first = describe_windows(frames(450), 450, fake, cache, "sha-a")
    assert len(fake.calls) == 2  # two windows, one call each
    assert [(w["start"], w["end"]) for w in first] == [(0, 200), (200, 450)]
    w = first[0]
    assert w["caption"] == GOOD and not w["flagged"] and w["problems"] == [] and not w["cached"]
    assert w["frames"] == [12, 37, 62, 87, 112, 137, 162, 187]
    assert w["model"] == "fake:1" and w["instruction_version"] == INSTRUCTION_VERSION
    assert set(w) == {"start", "end", "frames", "caption", "flagged", "problems", "model",
                      "instruction_version", "cached"}

    second = describe_windows(lambda i: frames(450)[i], 450, fake, cache, "sha-a")
    assert len(fake.calls) == 2  # no new backend call
    assert all(w["cached"] for w in second)
    assert [w["caption"] for w in second] == [w["caption"] for w in first]

    describe_windows(frames(450), 450, fake, cache, "sha-b")  # other clip content: misses
    assert len(fake.calls) == 4


def test_retry_with_problems_then_success():
    fake = FakeCaptioner(["She is talking. Her brows are up.", GOOD])
    (w,) = describe_windows(frames(72), 72, fake, None, "sha")
    assert len(fake.calls) == 2
    assert fake.calls[0] == INSTRUCTION
    assert fake.calls[1].startswith(INSTRUCTION)
    assert "more than one sentence" in fake.calls[1] and "uses banned words: talking" in fake.calls[1]
    assert w["caption"] == GOOD and not w["flagged"] and w["problems"] == []


def test_still_bad_after_retry_is_flagged(tmp_path):
    cache = CaptionCache(tmp_path)
    fake = FakeCaptioner(["Her brows are up while listening."])
    (w,) = describe_windows(frames(100), 100, fake, cache, "sha")
    assert len(fake.calls) == 2  # one retry only
    assert w["flagged"] and w["caption"] == "Her brows are up while listening."
    assert "names no specific emotion" in w["problems"]
    assert any(p.startswith("uses banned words") for p in w["problems"])
    (again,) = describe_windows(frames(100), 100, fake, cache, "sha")
    assert again["cached"] and again["flagged"] and again["problems"] == w["problems"]
    assert len(fake.calls) == 2
