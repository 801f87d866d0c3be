"""Cutting one written clip into the runs of frames a stage keeps, each a clip of its own.

A stage that keeps only part of a segment (the quality gates, active speaker detection)
decides per 24 fps frame and hands the [start, end) frame runs it keeps to
:func:`write_runs`: one streaming pass over the parent clip feeds each run's frames to its
own encoder, then each child gets its wav, mp4, boxes table and sample JSON, every file
appearing under its final name only when complete. The source is never decoded again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.atomic import atomic_path
from pipelines.config import PipelineConfig
from pipelines.media.decode import iter_video_frames
from pipelines.media.encode import ClipEncoder, mux_clip
from pipelines.media.wav import read_wav, read_wav_slice, write_wav
from pipelines.schema.records import Segment
from pipelines.schema.sample import SampleRecord, TimeRange


@dataclass(frozen=True)
class WrittenRun:
    """A child clip on disk: its key, absolute time range and files (extension -> file name)."""

    key: str
    lo: int
    hi: int
    start_s: float
    end_s: float
    files: dict[str, str]


@dataclass(frozen=True)
class ShiftedAudio:
    """Where a child's audio comes from when it is moved against its video (audio-video sync).

    ``path`` is the source's whole audio (it begins at ``origin_s`` on the source clock);
    the child of frames [lo, hi) gets the audio of [start + offset_s, end + offset_s), so a
    clip whose sound came ``offset_s`` late is written in sync. Reading the whole-source file,
    not the parent clip's wav, gives real sound (not silence) for the moved part wherever the
    source has it.
    """

    path: Path
    origin_s: float
    offset_s: float


def kept_runs(keep: np.ndarray, min_frames: int) -> list[tuple[int, int]]:
    """[start, end) frame runs of True at least ``min_frames`` long."""
    edges = np.diff(np.concatenate([[0], keep.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(int(a), int(b)) for a, b in zip(starts, ends) if b - a >= min_frames]


def child_keys(parent_key: str, tag: str, count: int) -> list[str]:
    return [f"{parent_key}{tag}{number:02d}" for number in range(count)]


def child_file_pattern(tag: str) -> str:
    """Glob of every file a stage using ``tag`` may have written (to clear an earlier run's)."""
    return f"*{tag}[0-9][0-9].*"


def _child_video(folder: Path, key: str) -> Path:
    return folder / f".{key}.video.mp4"


def _encode_runs(folder: Path, parent: Segment, runs: list[tuple[int, int]], keys: list[str],
                 config: PipelineConfig) -> None:
    """One streaming pass over the parent clip feeds each kept run's frames to its own encoder."""
    fps = config.crops.fps
    encoders = [ClipEncoder(_child_video(folder, key), config, start_s=0.0, start_after=1) for key in keys]

    def close(run: int) -> None:
        # Each run's encoder ends as soon as its last frame is in: one x264 process at a time.
        if not encoders[run].finish():
            raise ValueError(f"{parent.files['mp4']}: no frames decoded for the kept run {keys[run]}")

    try:
        run = 0
        for j, frame in enumerate(iter_video_frames(folder / parent.files["mp4"])):
            while run < len(runs) and j >= runs[run][1]:
                close(run)
                run += 1
            if run == len(runs):
                break
            lo = runs[run][0]
            if j >= lo:
                encoders[run].add((j - lo) / fps, 1.0 / fps, frame)
        for rest in range(run, len(runs)):
            close(rest)
    except BaseException:
        for encoder in encoders:
            encoder.abort()
        raise


def _shifted_samples(audio: ShiftedAudio, parent: Segment, lo: int, hi: int,
                     config: PipelineConfig) -> tuple[np.ndarray, int]:
    """The child's samples from the whole-source audio, moved by ``audio.offset_s``; the same
    sample count as the unshifted slice of the parent's wav would have."""
    fps, rate = config.crops.fps, config.audio.sample_rate
    count = int(round(hi / fps * rate)) - int(round(lo / fps * rate))
    start = parent.start_s + lo / fps + audio.offset_s
    samples, _ = read_wav_slice(audio.path, rate, start, start + count / rate, audio.origin_s)
    return samples[:count], rate


def _write_child(folder: Path, parent: Segment, key: str, lo: int, hi: int, config: PipelineConfig,
                 audio: ShiftedAudio | None = None) -> WrittenRun:
    """The child's wav, mp4 (from the video _encode_runs wrote), boxes and sample JSON."""
    fps = config.crops.fps
    start_s, end_s = parent.start_s + lo / fps, parent.start_s + hi / fps
    video_tmp = _child_video(folder, key)
    if audio is None:
        pcm, rate = read_wav(folder / parent.files["wav"])
        samples = pcm[int(round(lo / fps * rate)): int(round(hi / fps * rate))]
    else:
        samples, rate = _shifted_samples(audio, parent, lo, hi, config)
    with atomic_path(folder / f"{key}.wav") as tmp:
        write_wav(tmp, samples, rate)
    with atomic_path(folder / f"{key}.mp4") as tmp:
        mux_clip(video_tmp, folder / f"{key}.wav", tmp, config)
    with atomic_path(folder / f"{key}.boxes.npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.load(folder / parent.files["boxes.npy"])[lo:hi])
    sample = SampleRecord.load(folder / parent.files["json"])
    sample.model_copy(update={
        "key": key, "parent_key": parent.key,
        "time_range_s": TimeRange(start=round(start_s, 6), end=round(end_s, 6), duration=round(end_s - start_s, 6)),
        "video": sample.video.model_copy(update={"file": f"{key}.mp4", "frames": hi - lo, "frames_expected": hi - lo}),
        "audio": sample.audio.model_copy(update={"file": f"{key}.wav", "samples": int(len(samples))}),
        "faces": sample.faces.model_copy(update={"boxes_file": f"{key}.boxes.npy"}),
    }).save(folder / f"{key}.json")
    files = {"mp4": f"{key}.mp4", "wav": f"{key}.wav", "json": f"{key}.json", "boxes.npy": f"{key}.boxes.npy"}
    return WrittenRun(key, lo, hi, round(start_s, 6), round(end_s, 6), files)


def write_runs(folder: Path, parent: Segment, runs: list[tuple[int, int]], tag: str,
               config: PipelineConfig, audio: ShiftedAudio | None = None) -> list[WrittenRun]:
    """Write each [lo, hi) frame run of ``parent`` as a child clip keyed ``<parent><tag>NN``
    (its audio cut from the parent's wav, or moved against the video as ``audio`` says)."""
    keys = child_keys(parent.key, tag, len(runs))
    _encode_runs(folder, parent, runs, keys, config)
    return [_write_child(folder, parent, key, lo, hi, config, audio) for (lo, hi), key in zip(runs, keys)]
