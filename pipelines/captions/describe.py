"""Caption every window of one clip: cache, rule check, one corrective retry, then flag.

For each window of ``caption_windows(n_frames)``:

1. a cache hit (same clip content, window, model name and instruction version) is reused
   as it is (``cached=True``), without calling the captioner;
2. otherwise the captioner answers for the window's 8 frames; the answer is cleaned
   (``clean_caption``) and checked (``check_caption``);
3. if it breaks a rule, the captioner is asked once more with the problems appended to the
   instruction;
4. if the second answer still breaks a rule, it is kept with ``flagged=True`` and its
   problems listed (downstream decides whether flagged captions are used).

Final results, flagged ones included, are written to the cache. Backend errors propagate.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .backends import Captioner
from .cache import CaptionCache
from .instruction import INSTRUCTION, INSTRUCTION_VERSION, check_caption, clean_caption, corrective_instruction
from .windows import SAMPLES, WINDOW, caption_windows

FrameSource = Callable[[int], np.ndarray] | Sequence[np.ndarray]


def _frame(source: FrameSource, index: int) -> np.ndarray:
    return source(index) if callable(source) else source[index]


def caption_once(captioner: Captioner, frames: Sequence[np.ndarray], instruction: str = INSTRUCTION) -> dict:
    """Caption, check, retry once with the problems, flag if still bad."""
    caption = clean_caption(captioner.caption(frames, instruction))
    problems = check_caption(caption)
    attempts = 1
    if problems:
        caption = clean_caption(captioner.caption(frames, corrective_instruction(instruction, problems)))
        problems = check_caption(caption)
        attempts = 2
    return {"caption": caption, "flagged": bool(problems), "problems": problems, "attempts": attempts}


def describe_windows(frames_by_index: FrameSource, n_frames: int, captioner: Captioner,
                     cache: CaptionCache | None, clip_sha: str, *, instruction: str = INSTRUCTION,
                     instruction_version: str = INSTRUCTION_VERSION, window: int = WINDOW,
                     samples: int = SAMPLES) -> list[dict]:
    """One dict per window: start, end, frames, caption, flagged, problems, model,
    instruction_version, cached."""
    results = []
    for start, end, indices in caption_windows(n_frames, window, samples):
        hit = cache.get(clip_sha, start, end, captioner.name, instruction_version) if cache else None
        if hit is not None:
            outcome, cached = hit, True
        else:
            frames = [_frame(frames_by_index, i) for i in indices]
            outcome, cached = caption_once(captioner, frames, instruction), False
            if cache is not None:
                cache.put(clip_sha, start, end, captioner.name, instruction_version, outcome)
        results.append({
            "start": start,
            "end": end,
            "frames": list(indices),
            "caption": outcome["caption"],
            "flagged": bool(outcome["flagged"]),
            "problems": list(outcome["problems"]),
            "model": captioner.name,
            "instruction_version": instruction_version,
            "cached": cached,
        })
    return results
