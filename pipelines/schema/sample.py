"""What one sample's JSON in the shards holds (``<key>.json`` beside ``<key>.mp4``, ``.wav``, ...).

The face stage writes the first version of it next to the clip; the shard writer adds each
later stage's payload under the stage's name and its decision under ``filters``, validates
the whole against :class:`SampleRecord`, and packs it. Readers (trainer, annotation,
checks) load it through :meth:`SampleRecord.load` and take the clip's rates from it.

Schema versions:

- ``talkinghead.sample/1``: the layout below without ``stage_fingerprints``.
- ``talkinghead.sample/2``: adds ``stage_fingerprints`` (stage -> fingerprint of the run that
  produced the sample's data), so a sample names the exact stage runs it came from.
- ``talkinghead.sample/3``: ``faces`` gains ``shot`` (index of the shot the track lies in) and
  ``ended_by`` (what ended the track: gap, cut, face_change, end), and the boxes table gains
  the per-frame quality columns (face_px ... shot, see ``faces.boxes_columns``).
- ``talkinghead.sample/4``: adds ``conversation`` (conversation mode only: the actor/partner
  pairing and how each audio stream was made; :mod:`pipelines.schema.conversation`, which also
  names the members ``role.npy``, ``partner.wav`` and ``partner.flame.npz``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pipelines.atomic import atomic_write_bytes
from pipelines.schema.base import StrictModel
from pipelines.schema.conversation import ConversationInfo
from pipelines.schema.records import SourceInfo

SAMPLE_SCHEMA = "talkinghead.sample/4"
# Stages whose payload a sample may carry, in the order they run (pipelines/registry.py).
PAYLOAD_STAGES = ("quality", "asd", "speech", "flame", "captions")


class TimeRange(StrictModel):
    """Where the clip lies in the source, in seconds."""

    start: float
    end: float
    duration: float


class VideoInfo(StrictModel):
    file: str
    width: int
    height: int
    fps: float
    frames: int
    frames_expected: int
    codec: str


class FpsConversion(StrictModel):
    source_fps: float
    output_fps: float
    source_frames: int
    output_frames: int
    method: str


class AudioInfo(StrictModel):
    file: str
    sample_rate: int
    channels: int
    samples: int
    padded_samples: int  # zeros added where the source audio ended before the clip


class SizeStats(StrictModel):
    min: float
    mean: float
    max: float


class FaceTrackInfo(StrictModel):
    """The face track the clip follows: detector, crop rule and track statistics."""

    detector: str
    detector_sha256: str | None
    track_id: int
    frame_size: tuple[int, int]
    crop_scale: float
    smoothing_window_s: float
    boxes_file: str
    boxes_columns: list[str]
    shot: int | None = None  # absent before talkinghead.sample/3
    ended_by: Literal["gap", "cut", "face_change", "end"] | None = None
    duration_s: float
    source_frames: int
    detected_frames: int  # frames showing the face: detected, or interpolated by the detection schedule
    interpolated_frames: int | None = None  # of those, interpolated (absent before the detection schedule)
    bridged_frames: int
    longest_gap_s: float
    mean_score: float
    face_size_px: SizeStats
    crop_side_px: SizeStats
    first_box: list[float]
    last_box: list[float]


class FilterEntry(StrictModel):
    """One stage's accepting decision, with the numbers it decided on."""

    stage: str
    decision: Literal["accepted"]
    numbers: dict[str, Any]


class SampleRecord(StrictModel):
    key: str
    schema_: str = Field(SAMPLE_SCHEMA, alias="schema", pattern=r"^talkinghead\.sample/\d+$")
    pipeline_version: str
    config_hash: str
    parent_key: str | None = None  # set when a stage split the face segment into this clip
    source: SourceInfo
    source_probe: dict[str, Any]  # ProbeInfo.as_dict() of the source (pipelines/media)
    time_range_s: TimeRange
    video: VideoInfo
    fps_conversion: FpsConversion
    audio: AudioInfo
    faces: FaceTrackInfo
    filters: list[FilterEntry]
    stage_fingerprints: dict[str, str] = {}
    # Each later stage's payload plus its flags; the stage module documents its fields.
    quality: dict[str, Any] | None = None
    asd: dict[str, Any] | None = None
    speech: dict[str, Any] | None = None
    flame: dict[str, Any] | None = None
    captions: dict[str, Any] | None = None
    # Conversation mode only (absent in speaking-only samples).
    conversation: ConversationInfo | None = None

    model_config = StrictModel.model_config | {"populate_by_name": True}

    @classmethod
    def load(cls, data: bytes | str | Path) -> SampleRecord:
        """From a sample's JSON bytes or text, or from a path to it."""
        if isinstance(data, Path):
            data = data.read_bytes()
        return cls.model_validate_json(data)

    def as_json_dict(self) -> dict[str, Any]:
        out = self.model_dump(mode="json", by_alias=True)
        for optional in ("parent_key", "conversation", *PAYLOAD_STAGES):
            if out[optional] is None:
                del out[optional]
        return out

    def dumps(self) -> bytes:
        return json.dumps(self.as_json_dict(), indent=1, sort_keys=True).encode()

    def save(self, path: Path) -> None:
        atomic_write_bytes(path, self.dumps())
