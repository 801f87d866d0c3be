"""Caption fixtures: tiny random Qwen-VL folders (one per family, built once per session) and
the 8 frames the caption stage samples from a real GRID clip."""

from __future__ import annotations

import pytest

from pipelines.captions.windows import caption_windows
from pipelines.fixtures.qwen_vl import build_tiny_qwen_vl
from pipelines.media.decode import iter_video_frames


@pytest.fixture(scope="session")
def tiny_qwen_vl(tmp_path_factory):
    """``tiny_qwen_vl(family)``: the folder of that family's tiny checkpoint, built on first use."""
    root = tmp_path_factory.mktemp("tiny-qwen-vl")
    built = {}

    def get(family: str):
        if family not in built:
            built[family] = build_tiny_qwen_vl(root / f"tiny-{family}", family)
        return built[family]

    return get


@pytest.fixture(scope="session")
def grid_clip_frames(grid_clip):
    """Every frame of one GRID clip (360x288 RGB, 75 frames)."""
    return list(iter_video_frames(grid_clip))


@pytest.fixture(scope="session")
def grid_eight(grid_clip_frames):
    """The 8 frames the caption stage takes from the clip's single window."""
    ((_, _, indices),) = caption_windows(len(grid_clip_frames))
    return [grid_clip_frames[i] for i in indices]
