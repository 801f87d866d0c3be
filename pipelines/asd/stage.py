"""The active speaker stage for one source: keep only the frames where the visible face speaks.

It reads the small 384 px, 24 fps crops the face stage wrote (never the source), samples
them at Light-ASD's 25 fps by time, crops each face with the training-time rule from the
per-frame boxes, and scores it against the clip's audio. The speaking probability (softmax
of the audio-visual head) is mapped back to the 24 fps frames, smoothed, and compared with
the threshold; where several faces are visible at once, each stretch of the time they share
goes to the face that speaks most over it. Contiguous kept runs of at least ``min_segment_s``
become the clips: a segment kept whole stays as it is, otherwise it is split into children.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.asd.sync import (LIP_WINDOW_S, LipSyncMeasure, SyncMeasure, lip_offset, measure_offset,
                                mouth_opening)
from pipelines.asd.syncnet import SyncNetReading
from pipelines.config import PipelineConfig
from pipelines.faces.crop import boxes_in_crop, smooth_params
from pipelines.media.decode import iter_video_frames
from pipelines.media.wav import read_wav, read_wav_slice
from pipelines.models import ModelStore
from pipelines.schema.records import ACCEPTED, REJECTED, ChildSegment, Segment, StageDecision, StageResult
from pipelines.segment_runs import ShiftedAudio, child_file_pattern, kept_runs, write_runs
from pipelines.stage_spec import StageContext, StageSpec
from pipelines.workdir import SOURCE_AUDIO_FILE

STAGE = "asd"
ASD_FPS = 25.0
CHILD_TAG = "_a"


@dataclass
class ScoredSegment:
    segment: Segment
    times: np.ndarray  # absolute centre time of each 24 fps frame
    raw: np.ndarray  # speaking probability per 24 fps frame
    smooth: np.ndarray
    # The offset, when config.sync is on and the face speaks at some shift: the lip curve's reading
    # in the window Light-ASD's curve allows (pipelines.asd.sync).
    sync: LipSyncMeasure | SyncMeasure | None = None
    # SyncNet's reading (pipelines.asd.syncnet), when config.sync is on and its weights are in the
    # model directory: its confidence decides av_sync_mismatch.
    syncnet: SyncNetReading | None = None

    def smooth_at(self, times: np.ndarray) -> np.ndarray:
        """This face's smoothed probability at ``times``; 0 where the face is not on screen."""
        inside = (times >= self.segment.start_s) & (times < self.segment.end_s)
        return np.where(inside, np.interp(times, self.times, self.smooth), 0.0)


def face_track_25(folder: Path, segment: Segment, config: PipelineConfig) -> tuple[np.ndarray, int]:
    """(T, 112, 112) grey faces of ``segment`` sampled at 25 fps, and its number of 24 fps frames."""
    from pipelines.asd.features import face_crop_112

    fps = config.crops.fps
    boxes = boxes_in_crop(np.load(folder / segment.files["boxes.npy"]), config.crops.size_px)
    # Streamed: only the 112 px grey face of each frame is kept (about 1/36 of the RGB frame).
    small = [face_crop_112(frame, tuple(boxes[j]))
             for j, frame in zip(range(len(boxes)), iter_video_frames(folder / segment.files["mp4"]))]
    n = len(small)
    # Light-ASD was trained at 25 fps: sample the 24 fps clip at 25 fps by time.
    t25 = np.arange(int(np.floor(n / fps * ASD_FPS + 1e-6))) / ASD_FPS
    at = np.minimum((t25 * fps + 1e-9).astype(int), n - 1)
    return np.stack([small[j] for j in at]), n


def shifted_audio(folder: Path, segment: Segment, frames: int, audio_start_s: float,
                  config: PipelineConfig) -> np.ndarray:
    """The source's audio from N frames before the segment to N frames after its ``frames`` 25 fps
    frames (N = config.sync.max_shift_frames), read from the whole-source wav so that shifted
    alignments hear the real sound beyond the segment; silence only beyond the recording."""
    pad = config.sync.max_shift_frames / ASD_FPS
    start = segment.start_s - pad
    samples, _ = read_wav_slice(folder / SOURCE_AUDIO_FILE, config.audio.sample_rate, start,
                                start + frames / ASD_FPS + 2 * pad, audio_start_s)
    return samples


def frames_24_of_25(faces25: np.ndarray, n: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct frames, their 24 fps frame numbers) of a track face_track_25 sampled at 25 fps
    from ``n`` frames at ``fps``: each output frame once, at the first 25 fps sample that shows it."""
    at = np.minimum((np.arange(len(faces25)) / ASD_FPS * fps + 1e-9).astype(int), n - 1)
    numbers, first = np.unique(at, return_index=True)
    return faces25[first], numbers


def lip_measure(faces25: np.ndarray, n: int, start_s: float, audio: np.ndarray, coarse: SyncMeasure,
                config: PipelineConfig, window_s: float = LIP_WINDOW_S,
                audio_start_s: float | None = None) -> LipSyncMeasure:
    """The lip-energy offset of a track starting at ``start_s`` (pipelines.asd.sync.lip_offset) from
    its 25 fps faces and the padded audio shifted_audio read (first sample N frames before the
    track, unless ``audio_start_s`` says when), at lags of up to N frames."""
    fps = config.crops.fps
    faces, numbers = frames_24_of_25(faces25, n, fps)
    pad = config.sync.max_shift_frames / ASD_FPS
    return lip_offset(mouth_opening(faces), start_s + (numbers + 0.5) / fps, audio, config.audio.sample_rate,
                      start_s - pad if audio_start_s is None else audio_start_s, coarse, max_lag_s=pad,
                      window_s=window_s)


def syncnet_weights(config: PipelineConfig) -> Path | None:
    """The SyncNet weights (registry ``syncnet``) when the model directory has them, else None."""
    status = ModelStore(config.paths.model_dir).status("syncnet")
    return status.path if status.state in ("ok", "unpinned") else None


def syncnet_measure(folder: Path, segment: Segment, audio: np.ndarray, frames: int, config: PipelineConfig,
                    weights: Path) -> SyncNetReading | None:
    """SyncNet's offset and confidence of a segment: its 224 px crops (the authors' crop rule on the
    per-frame boxes in the 384 px clip, sampled at 25 fps by time) against the segment's own audio,
    cut from the padded ``audio`` shifted_audio read for ``frames`` 25 fps frames. None when the
    segment is too short for one SyncNet window."""
    from pipelines.asd import syncnet

    boxes = boxes_in_crop(np.load(folder / segment.files["boxes.npy"]), config.crops.size_px)
    video = syncnet.face_video_25(iter_video_frames(folder / segment.files["mp4"]), boxes, config.crops.fps)
    rate = config.audio.sample_rate
    if rate != syncnet.SYNCNET_RATE:
        raise ValueError(f"SyncNet needs {syncnet.SYNCNET_RATE} Hz audio, config.audio.sample_rate is {rate}")
    lead = int(round(config.sync.max_shift_frames / ASD_FPS * rate))
    own = audio[lead:lead + int(round(frames / ASD_FPS * rate))]
    if syncnet.window_count(len(video), len(own)) == 0:
        return None
    return syncnet.measure(syncnet.cached_syncnet(weights, config.asd.device), video, own)


@dataclass
class _TrackInput:
    """What one segment is scored from: its 25 fps faces, its 24 fps frame count and its audio
    (padded by N frames each side when config.sync is on)."""

    segment: Segment
    faces: np.ndarray
    frames_24: int
    audio: np.ndarray


def _track_input(folder: Path, segment: Segment, config: PipelineConfig, audio_start_s: float) -> _TrackInput:
    faces, n = face_track_25(folder, segment, config)
    if config.sync.enabled:
        return _TrackInput(segment, faces, n, shifted_audio(folder, segment, len(faces), audio_start_s, config))
    pcm, rate = read_wav(folder / segment.files["wav"])
    if rate != config.audio.sample_rate:
        raise ValueError(f"{segment.files['wav']}: expected {config.audio.sample_rate} Hz audio, got {rate} Hz")
    return _TrackInput(segment, faces, n, pcm)


def score_segment(folder: Path, segment: Segment, scorer, config: PipelineConfig,
                  audio_start_s: float = 0.0) -> ScoredSegment:
    """Speaking probability per 24 fps frame of one segment (:func:`score_segments`)."""
    return score_segments(folder, [segment], scorer, config, audio_start_s)[0]


def score_segments(folder: Path, segments: list[Segment] | tuple[Segment, ...], scorer, config: PipelineConfig,
                   audio_start_s: float = 0.0) -> list[ScoredSegment]:
    """Speaking probability per 24 fps frame of each segment. With ``config.sync`` on, each face
    is also scored against its audio shifted by every k in -N..N to measure its offset; the
    speaking probability is the one with the audio as recorded.

    The segments' windows are scored together (``scorer.*_many``): segments are gathered until
    they fill at least one batch of ``scorer.batch_windows`` windows, so a source with many
    short tracks costs few forward passes while only about one batch of faces is held at once.
    """
    scored: list[ScoredSegment] = []
    pending: list[_TrackInput] = []
    windows = 0
    for segment in segments:
        item = _track_input(folder, segment, config, audio_start_s)
        pending.append(item)
        windows += scorer.window_count(len(item.faces))
        if windows >= scorer.batch_windows:
            scored.extend(_score_together(folder, pending, scorer, config))
            pending, windows = [], 0
    if pending:
        scored.extend(_score_together(folder, pending, scorer, config))
    return scored


def _score_together(folder: Path, items: list[_TrackInput], scorer, config: PipelineConfig) -> list[ScoredSegment]:
    from pipelines.asd.score import probability_from_logits  # torch only when the stage runs

    tracks = [(item.faces, item.audio) for item in items]
    if not config.sync.enabled:
        return [_scored(item, np.asarray(p25, dtype=np.float64), None, None, config)
                for item, p25 in zip(items, scorer.probabilities_many(tracks))]
    out = []
    for item, (logits, visual) in zip(items, scorer.shifted_scores_many(tracks, config.sync.max_shift_frames)):
        measure = measure_offset(logits, visual, config.asd.threshold)
        if measure is not None:
            measure = lip_measure(item.faces, item.frames_24, item.segment.start_s, item.audio, measure, config)
        # Speaking is decided on the audio as recorded (the unshifted row), not at the measured
        # offset: a silent face next to the speaker gets a bogus offset whose shifted score can
        # rival the speaker's (measured on two GRID faces side by side: 0.398 against 0.400).
        p25 = np.asarray(probability_from_logits(logits[config.sync.max_shift_frames]), dtype=np.float64)
        weights = syncnet_weights(config)
        reading = (syncnet_measure(folder, item.segment, item.audio, len(item.faces), config, weights)
                   if weights is not None else None)
        out.append(_scored(item, p25, measure, reading, config))
    return out


def _scored(item: _TrackInput, p25: np.ndarray, measure: LipSyncMeasure | SyncMeasure | None,
            reading: SyncNetReading | None, config: PipelineConfig) -> ScoredSegment:
    fps, n = config.crops.fps, item.frames_24
    centres = (np.arange(n) + 0.5) / fps
    raw = p25[np.clip((centres * ASD_FPS).astype(int), 0, len(p25) - 1)]
    radius = int(round(config.asd.smoothing_window_s / 2 * fps))
    smooth = smooth_params(raw[:, None], radius)[:, 0]
    return ScoredSegment(item.segment, item.segment.start_s + centres, raw, smooth, measure, reading)


def _window_means(probs: np.ndarray, on_screen: np.ndarray, radius: int) -> np.ndarray:
    """Each row's centred mean over its on-screen frames within ``radius``; -inf where it is off screen."""
    n = probs.shape[1]
    values = np.concatenate([np.zeros((len(probs), 1)), np.cumsum(np.where(on_screen, probs, 0.0), axis=1)], axis=1)
    counts = np.concatenate([np.zeros((len(probs), 1)), np.cumsum(on_screen, axis=1)], axis=1)
    lo, hi = np.maximum(np.arange(n) - radius, 0), np.minimum(np.arange(n) + radius + 1, n)
    means = (values[:, hi] - values[:, lo]) / np.maximum(counts[:, hi] - counts[:, lo], 1)
    return np.where(on_screen, means, -np.inf)


def stretch_owners(probs: np.ndarray, on_screen: np.ndarray, radius: int, min_stretch: int) -> np.ndarray:
    """Per frame, the row (face) that speaks most over the stretch of time around it.

    ``probs`` and ``on_screen`` are (faces, frames). The owner is the argmax of each face's mean
    probability over a centred window of ``2 * radius + 1`` frames, so a turn changes hands where
    the other face has spoken more over the last and next ``radius`` frames, not at every frame
    where two moving mouths cross. A change of owner shorter than ``min_stretch`` frames is one
    noisy window: it goes back to the owner before it (or after it, at the start) where that
    face is on screen, so it does not cut the runs on either side.
    """
    owner = np.argmax(_window_means(probs, on_screen, radius), axis=0)
    edges = np.flatnonzero(np.diff(owner)) + 1
    bounds = list(zip(np.concatenate([[0], edges]), np.concatenate([edges, [len(owner)]])))
    for a, b in bounds:
        if b - a >= min_stretch or len(bounds) == 1:
            continue
        before = owner[a - 1] if a > 0 else None
        after = owner[b] if b < len(owner) else None
        for face in (before, after):
            if face is not None and on_screen[face, a:b].all():
                owner[a:b] = face
                break
    return owner


def lost_to_rivals(scored: list[ScoredSegment], config: PipelineConfig) -> list[np.ndarray]:
    """For each face track, its frames that another face on screen at the same time owns.

    Decided per stretch of time (:func:`stretch_owners` on one 24 fps grid over all tracks,
    so two tracks see the same decision): two people taking turns each keep their own turns.
    A per-frame argmax fragments the runs when two faces move their lips at once, and one
    decision per pair of tracks over all their shared time gives every turn to one of them.
    Measured with bench/eval_asd_pairs.py (all 15 GRID pairs x 2 audio choices, both faces
    moving their lips for the whole 3 s): right face kept 10/30 per frame, 19/30 per pair of
    tracks, 20/30 per stretch with a 2.5 s window and 1 s minimum turn (16/30 with 1.5 s,
    18/30 with 2 s: on these short clips a longer window is closer to a per-track mean).
    """
    fps = config.crops.fps
    radius = int(round(config.asd.turn_window_s / 2 * fps))
    min_stretch = max(1, int(round(config.asd.min_turn_s * fps)))
    lost = [np.zeros(len(item.times), dtype=bool) for item in scored]
    # Tracks chained by overlapping time share one grid; the grid never spans a whole long
    # source with every track of it (that would grow with tracks x duration).
    groups: list[list[int]] = []
    end = -np.inf
    for index in sorted(range(len(scored)), key=lambda k: scored[k].segment.start_s):
        segment = scored[index].segment
        if groups and segment.start_s < end:
            groups[-1].append(index)
            end = max(end, segment.end_s)
        else:
            groups.append([index])
            end = segment.end_s
    for group in (g for g in groups if len(g) > 1):
        items = [scored[k] for k in group]
        t0 = min(item.segment.start_s for item in items)
        grid = t0 + (np.arange(int(np.ceil((max(item.segment.end_s for item in items) - t0) * fps))) + 0.5) / fps
        on_screen = np.stack([(grid >= item.segment.start_s) & (grid < item.segment.end_s) for item in items])
        owner = stretch_owners(np.stack([item.smooth_at(grid) for item in items]), on_screen, radius, min_stretch)
        for row, (index, item) in enumerate(zip(group, items)):
            lost[index] = owner[np.clip(((item.times - t0) * fps).astype(int), 0, len(grid) - 1)] != row
    return lost


def outside_tolerance(measure: LipSyncMeasure | SyncMeasure | None, config: PipelineConfig) -> bool:
    """Whether a measured offset is large enough to act on: smaller ones are within the
    measure's own error (about one frame)."""
    return measure is not None and abs(measure.offset_s) >= config.sync.min_correction_s


def corrects(measure: LipSyncMeasure | SyncMeasure | None, config: PipelineConfig) -> bool:
    """Whether the clip is written with its audio moved to zero offset (and decided so)."""
    return config.sync.correction == "shift" and outside_tolerance(measure, config)


def sync_numbers(measure: SyncMeasure, corrected: bool) -> dict:
    """The decision numbers of an offset curve (keys read by the QC report)."""
    return {"av_offset_frames": measure.best_frames, "av_offset_s": round(measure.offset_s, 4),
            "av_confidence": round(measure.confidence, 4), "av_corrected": corrected}


def syncnet_numbers(reading: SyncNetReading) -> dict:
    """The decision numbers of SyncNet's reading."""
    return {"av_syncnet_offset_frames": reading.offset_frames, "av_syncnet_confidence": round(reading.confidence, 4)}


def sync_rejection(measure: LipSyncMeasure | SyncMeasure | None, config: PipelineConfig,
                   syncnet: SyncNetReading | None = None) -> str | None:
    """Why a speaking face fails the sync check: no alignment stands out (a voice that is not
    this face's), or the best one is further than the training data allows. With SyncNet's
    reading, its confidence decides the first (LatentSync's rule, sync.syncnet_min_confidence); the
    offset stays the lip-energy measure's (SyncNet's when there is none)."""
    if syncnet is not None:
        if syncnet.confidence < config.sync.syncnet_min_confidence:
            return "av_sync_mismatch"
    elif measure is not None and measure.confidence < config.sync.min_confidence:
        return "av_sync_mismatch"
    offset = measure.best_frames if measure is not None else syncnet.offset_frames if syncnet is not None else 0
    if abs(offset) > config.sync.max_offset_frames:
        return "av_offset_too_large"
    return None


def decide(scored: list[ScoredSegment], config: PipelineConfig, folder: Path,
           audio_start_s: float = 0.0) -> tuple[dict[str, StageDecision], dict[str, dict]]:
    """Decisions per segment (writing child clips where a segment splits or its audio is moved
    into sync), and the curves to plot (start, fps, raw and smoothed probability per 24 fps
    frame, kept runs)."""
    fps, threshold = config.crops.fps, config.asd.threshold
    min_frames = max(1, int(np.ceil(config.asd.min_segment_s * fps)))
    # Conversation mode keeps every frame of the track (the pairing gives each frame its role
    # later); the sync check is measured and flagged only, since a listener's lips follow no audio.
    whole_tracks = config.conversation.mode == "conversation"
    decisions, plots = {}, {}
    for item, item_lost in zip(scored, lost_to_rivals(scored, config)):
        speaking = item.smooth >= threshold
        keep = speaking & ~item_lost
        runs = [(0, len(item.smooth))] if whole_tracks else kept_runs(keep, min_frames)
        n = len(item.smooth)
        kept = sum(b - a for a, b in runs)
        measure = item.sync
        shift = corrects(measure, config) and not whole_tracks
        numbers = {"mean_probability": round(float(item.raw.mean()), 4), "max_probability": round(float(item.raw.max()), 4),
                   "kept_s": round(kept / fps, 4), "dropped_s": round((n - kept) / fps, 4),
                   "threshold": threshold, "lost_to_other_face_s": round(float((speaking & ~keep).sum()) / fps, 4)}
        payload = {"model": config.asd.model, "probability_definition": "softmax of Light-ASD's audio-visual logits",
                   "probability": [round(float(p), 3) for p in item.smooth], "fps": fps, **numbers}
        if measure is not None:
            numbers.update(sync_numbers(measure, corrected=shift))
            payload.update(numbers, av_curve=measure.summary())
        if item.syncnet is not None:
            numbers.update(syncnet_numbers(item.syncnet))
            payload.update(numbers, av_syncnet_curve=item.syncnet.summary(),
                           av_sync_decided_by={"mismatch": "syncnet",
                                               "offset": "lip_energy" if measure is not None else "syncnet"})
        key = item.segment.key
        plots[key] = {"start_s": item.segment.start_s, "fps": fps, "raw": [round(float(p), 3) for p in item.raw],
                      "smooth": payload["probability"], "runs": runs}
        reason = None
        if not runs:
            reason = ("no_active_speaker" if not speaking.any()
                      else "another_face_speaking" if (speaking & ~keep).any() and not keep.any()
                      else "active_speech_too_short")
        elif (measure is not None or item.syncnet is not None) and not whole_tracks:
            reason = sync_rejection(measure, config, item.syncnet)
        if reason is not None:
            if "av_corrected" in numbers:  # nothing is written for a rejected clip, so nothing was corrected
                numbers["av_corrected"] = payload["av_corrected"] = False
            decisions[key] = StageDecision(decision=REJECTED, reason=reason, numbers=numbers, payload=payload)
            continue
        flags = ["av_offset"] if outside_tolerance(measure, config) and not shift else []
        children = []
        if runs != [(0, n)] or shift:
            # A clip kept whole but with its audio moved is rewritten too: a child with new files.
            audio = (ShiftedAudio(folder / SOURCE_AUDIO_FILE, audio_start_s, measure.offset_s) if shift else None)
            for child in write_runs(folder, item.segment, runs, CHILD_TAG, config, audio=audio):
                lo, hi = child.lo, child.hi
                child_numbers = {**numbers, "kept_s": round((hi - lo) / fps, 4), "dropped_s": 0.0,
                                 "mean_probability": round(float(item.raw[lo:hi].mean()), 4)}
                children.append(ChildSegment(key=child.key, start_s=child.start_s, end_s=child.end_s,
                                             files=child.files, numbers=child_numbers,
                                             payload={**payload, **child_numbers, "parent": key,
                                                      "probability": payload["probability"][lo:hi]}))
        decisions[key] = StageDecision(decision=ACCEPTED, numbers=numbers, payload=payload, flags=flags,
                                       children=children)
    return decisions, plots


def build_backend(config: PipelineConfig):
    """Light-ASD from the model directory (sha256-verified)."""
    from pipelines.asd.score import ActiveSpeakerScorer

    from pipelines.devices import torch_device

    asd = config.asd
    return ActiveSpeakerScorer(ModelStore(config.paths.model_dir).path(asd.model), device=torch_device(asd.device),
                               window_frames=asd.window_frames, overlap_frames=asd.overlap_frames,
                               batch_windows=asd.batch_windows_cuda if asd.device == "cuda" else asd.batch_windows_cpu)


def run(ctx: StageContext) -> StageResult:
    """Score every candidate segment; write the child clips. ``details["plots"]``: the curves."""
    for stale in ctx.folder.glob(child_file_pattern(CHILD_TAG)):
        stale.unlink()  # children of an earlier run are rewritten below (its asd.json is withdrawn)
    audio_start_s = float(ctx.record.numbers.get("audio_start_s", 0.0)) if ctx.record is not None else 0.0
    scored = score_segments(ctx.folder, ctx.candidates, ctx.backend, ctx.config, audio_start_s)
    decisions, plots = decide(scored, ctx.config, ctx.folder, audio_start_s)
    return StageResult(stage=STAGE, segments=decisions, details={"model": ctx.config.asd.model, "plots": plots})


SPEC = StageSpec(
    name=STAGE, needs=("quality",), config_sections=("asd", "encode", "sync", "conversation.mode"), version="7", build_backend=build_backend, run=run,
    description="Light-ASD speaking probability per frame of every face track; segments cut to the speaking frames; "
                "audio-video offset (config.sync): mouth opening vs audio energy, in the window Light-ASD's shifted scores allow.",
)
