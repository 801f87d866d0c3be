"""A dataset's face-direction annotations for one source: ``<source stem>.directions.json``.

The file lies beside the source video (``talk.mp4`` -> ``talk.directions.json``). Its labels
take precedence over the keypoint estimate (pipelines/faces/quality.py), as FlowPortrait
(appendix B) keeps frontal and side faces by a dataset's own face-direction annotations.
Format, version 1::

    {
      "format": "talkinghead.face_directions/1",
      "ranges": [
        {"start_s": 0.0, "end_s": 4.2, "label": "frontal"},
        {"start_s": 4.2, "end_s": 6.0, "label": "profile"}
      ]
    }

* ``start_s`` / ``end_s``: seconds in the source, a frame at time t is in ``[start_s, end_s)``.
* ``label``: ``frontal``, ``side`` or ``profile`` (the labels of ``quality.allowed_orientations``).
* Ranges must not overlap; times no range covers keep the estimate.
* A range applies to every face on screen at that time: the datasets this is meant for
  annotate one speaker per clip. Sources with several faces need per-face annotations, which
  this version does not have (our track ids are not known to an annotator).

Unknown keys, another ``format`` string, bad times or labels raise :class:`DirectionsError`
naming the file; the quality stage records it as a rejection instead of guessing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, ValidationError, model_validator

from pipelines.schema.base import StrictModel

FORMAT = "talkinghead.face_directions/1"
SUFFIX = ".directions.json"


class DirectionsError(ValueError):
    """A direction sidecar that cannot be used; the message names the file."""


class DirectionRange(StrictModel):
    start_s: float = Field(ge=0)
    end_s: float
    label: Literal["frontal", "side", "profile"]

    @model_validator(mode="after")
    def _ordered(self) -> DirectionRange:
        if not self.end_s > self.start_s:
            raise ValueError(f"end_s {self.end_s} must be after start_s {self.start_s}")
        return self


class FaceDirections(StrictModel):
    format: Literal["talkinghead.face_directions/1"]
    ranges: tuple[DirectionRange, ...]

    @model_validator(mode="after")
    def _no_overlap(self) -> FaceDirections:
        ordered = sorted(self.ranges, key=lambda r: r.start_s)
        for before, after in zip(ordered, ordered[1:]):
            if after.start_s < before.end_s:
                raise ValueError(f"ranges overlap: [{before.start_s}, {before.end_s}) and "
                                 f"[{after.start_s}, {after.end_s})")
        return self

    def labels_at(self, times) -> list[str | None]:
        """The annotated label at each time (seconds in the source); None where no range covers it."""
        times = np.asarray(times, dtype=np.float64)
        out: list[str | None] = [None] * len(times)
        for item in self.ranges:
            for index in np.flatnonzero((times >= item.start_s) & (times < item.end_s)):
                out[int(index)] = item.label
        return out


def sidecar_path(video: Path) -> Path:
    """``<stem>.directions.json`` beside ``video``."""
    video = Path(video)
    return video.with_name(video.stem + SUFFIX)


def load_directions(path: Path) -> FaceDirections:
    """Parse and validate one sidecar; every failure is a :class:`DirectionsError` naming ``path``."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DirectionsError(f"{path.name}: not readable JSON ({error})") from None
    if isinstance(data, dict) and data.get("format") != FORMAT:
        raise DirectionsError(f"{path.name}: format {data.get('format')!r} is not {FORMAT!r}")
    try:
        return FaceDirections.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in error.errors())
        raise DirectionsError(f"{path.name}: {problems}") from None


def directions_for(video: Path) -> FaceDirections | None:
    """The sidecar of ``video`` if there is one (raises :class:`DirectionsError` if it is bad)."""
    path = sidecar_path(video)
    return load_directions(path) if path.is_file() else None
