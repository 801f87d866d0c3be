"""Face clips from one source in a single decode pass.

decode (video + audio, once) -> shot cuts -> detect -> track -> smooth crop -> 24 fps -> H.264 + 16 kHz audio.

A track never crosses a shot cut (PySceneDetect on the decoded frames) nor a change of the
face it follows (the appearance check in pipelines/faces/shots.py), so crop smoothing never
blends two shots. Each kept frame is measured for the quality gates (pipelines/faces/quality.py:
face size, sharpness, head pose) while its pixels are in memory; the figures go into the
boxes table, and pipelines/quality decides on them later without decoding again.

Frames are held only while an active track may still need them (at most the bridging
gap plus the smoothing look-ahead, plus the frames the detection schedule holds until the next
detection: fewer than ``detection_schedule.every_k``), so memory does not grow with the source's length.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines import __version__
from pipelines.config import FaceDetectionConfig, PipelineConfig
from pipelines.faces.crop import fit_square, square_params, window_mean
from pipelines.faces.detectors import Detection, FaceDetector, filter_detections
from pipelines.faces.quality import FaceMeasure, measure_frame_face
from pipelines.faces.schedule import DetectionSchedule, PlannedFrame
from pipelines.faces.shots import ShotCutDetector, face_signature
from pipelines.faces.tracking import IouTracker, Track
from pipelines.media.decode import DecodeOutcome, Frame, MediaRejection, ProbeInfo, decode_source, frames_needed
from pipelines.media.encode import ClipEncoder, mux_clip
from pipelines.media.wav import WavSink, read_wav_slice, write_wav
from pipelines.schema.records import ACCEPTED, REJECTED, Segment, SourceRecord, SourceRef
from pipelines.schema.sample import (AudioInfo, FaceTrackInfo, FilterEntry, FpsConversion, SampleRecord, TimeRange,
                                     VideoInfo)
from pipelines.stage_spec import ProgressFn
from pipelines.workdir import SOURCE_AUDIO_FILE

# One row per output frame. Columns after crop_side are the quality figures of the source frame
# shown: face_px is the box's longer side in source pixels, upscale = crops.size_px / crop_side;
# sharpness and the head pose are NaN on bridged frames (no detection to measure). Source frames
# no output frame shows (the rate conversion drops them) are neither cropped nor measured. A frame the
# detection schedule skipped (pipelines/faces/schedule.py) has its box and keypoints interpolated
# between two detections, score INTERPOLATED_SCORE, and is measured like a detected frame.
INTERPOLATED_SCORE = -2.0
# The clips of a source are muxed this many at a time once its decode is over: the AAC encoder
# releases the GIL, so two muxes use both of this machine's cores (12 ms per second of audio each).
MUX_THREADS = 2
BOXES_COLUMNS = ["t_out", "x1", "y1", "x2", "y2", "score_-1_bridged_-2_interpolated", "crop_x", "crop_y", "crop_side",
                 "face_px", "upscale", "sharpness", "yaw_deg", "pitch_deg", "roll_deg", "shot"]
UNMEASURED = FaceMeasure(face_px=float("nan"), sharpness=float("nan"), yaw_deg=float("nan"), pitch_deg=float("nan"),
                         roll_deg=float("nan"))


@dataclass
class TrackCropper:
    """Emits the smoothed square crop of each frame of one track once its look-ahead is known."""

    track: Track
    frame_w: int
    frame_h: int
    radius: int
    encoder: ClipEncoder
    scale: float
    size_px: int
    shot: int
    params: list[tuple[float, float, float]] = field(default_factory=list)
    boxes: list[tuple[float, ...]] = field(default_factory=list)
    measures: list[FaceMeasure] = field(default_factory=list)
    crops: list[tuple[int, int, int]] = field(default_factory=list)
    next_pos: int = 0

    def _extend_params(self, frames: dict[int, Frame]) -> None:
        """Fill square parameters (and quality figures) up to the track's last detection,
        interpolating bridged gaps."""
        obs = self.track.observations
        last = self.track.last_detected
        prev = len(self.params) - 1
        if last <= prev:
            return
        end_box = np.array(obs[last].detection.box)
        if prev >= 0:
            start_box, t0 = np.array(self.boxes[prev][:4]), obs[prev].time_s
        for pos in range(prev + 1, last + 1):
            det = obs[pos].detection
            if det is not None:
                box, score = np.array(det.box), INTERPOLATED_SCORE if obs[pos].interpolated else det.score
                # A frame no output frame shows is in no boxes table row: it is not measured.
                shown = self.encoder.shows(obs[pos].time_s, obs[pos].duration_s)
                self.measures.append(measure_frame_face(frames[obs[pos].frame_index], det) if shown else UNMEASURED)
            else:
                w = (obs[pos].time_s - t0) / (obs[last].time_s - t0)
                box, score = start_box + w * (end_box - start_box), -1.0
                self.measures.append(UNMEASURED)
            self.boxes.append((*map(float, box), float(score)))
            self.params.append(square_params(tuple(box), self.scale))

    def next_frame_index(self) -> int:
        obs = self.track.observations
        return obs[self.next_pos].frame_index if self.next_pos < len(obs) else obs[-1].frame_index + 1

    def emit(self, frames: dict[int, Frame], final: bool) -> None:
        self._extend_params(frames)
        last = len(self.params) - 1
        limit = last if final else last - self.radius
        while self.next_pos <= limit:
            i = self.next_pos
            # Only the window is converted: a long track must not cost O(length) per frame.
            lo, hi = max(0, i - self.radius), min(last, i + self.radius)
            cx, cy, side = window_mean(np.asarray(self.params[lo: hi + 1]), i - lo, self.radius)
            square = fit_square(cx, cy, side, self.frame_w, self.frame_h)
            obs = self.track.observations[i]
            if self.encoder.shows(obs.time_s, obs.duration_s):
                # Only the square is read, scaled straight to the encoder's picture (Frame.crop).
                crop = frames[obs.frame_index].crop(square.x, square.y, square.side, self.size_px)
                self.encoder.add(obs.time_s, obs.duration_s, crop)
            self.crops.append((square.x, square.y, square.side))
            self.next_pos += 1


def detect_frame(detector: FaceDetector, frame: Frame, config: FaceDetectionConfig) -> list[Detection]:
    """The kept detections of one decoded frame, in source pixels (the detector runs on the
    frame's detection image; boxes and keypoints are scaled back before the size filter)."""
    scale_x, scale_y = frame.detection_scale
    found = detector.detect(frame.detection_rgb)
    if (scale_x, scale_y) != (1.0, 1.0):
        found = [_scaled_detection(d, 1.0 / scale_x, 1.0 / scale_y) for d in found]
    return filter_detections(found, config)


def frame_face_signature(frame: Frame, detection: Detection) -> np.ndarray:
    """:func:`face_signature` of a source-pixel detection, read from the frame's detection image:
    the 32 px template needs no more pixels, and no full-resolution RGB is made for it."""
    scale_x, scale_y = frame.detection_scale
    if (scale_x, scale_y) != (1.0, 1.0):
        detection = _scaled_detection(detection, scale_x, scale_y)
    return face_signature(frame.detection_rgb, detection)


def _scaled_detection(detection: Detection, scale_x: float, scale_y: float) -> Detection:
    x1, y1, x2, y2 = detection.box
    points = (tuple((x * scale_x, y * scale_y) for x, y in detection.keypoints)
              if detection.keypoints is not None else None)
    return Detection((x1 * scale_x, y1 * scale_y, x2 * scale_x, y2 * scale_y), detection.score, points)


def _summarise_track(cropper: TrackCropper) -> dict:
    boxes = np.asarray(cropper.boxes, dtype=np.float64)
    detected = boxes[:, 4] >= 0
    # Frames the schedule interpolated show the face: they count as detected frames, not as bridged
    # ones (the detector's calls per source are in the record's detection_schedule numbers).
    bridged = boxes[:, 4] == -1.0
    sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    crops = np.asarray(cropper.crops, dtype=np.float64)
    return {
        "shot": cropper.shot,
        "ended_by": cropper.track.ended_by,
        "source_frames": int(len(boxes)),
        "detected_frames": int((~bridged).sum()),
        "interpolated_frames": int((boxes[:, 4] == INTERPOLATED_SCORE).sum()),
        "bridged_frames": int(bridged.sum()),
        "longest_gap_s": round(cropper.track.longest_gap_s, 4),
        "mean_score": round(float(boxes[detected, 4].mean()), 4),
        "face_size_px": {"min": round(float(sizes.min()), 1), "mean": round(float(sizes.mean()), 1),
                         "max": round(float(sizes.max()), 1)},
        "crop_side_px": {"min": int(crops[:, 2].min()), "mean": round(float(crops[:, 2].mean()), 1),
                         "max": int(crops[:, 2].max())},
        "first_box": [round(v, 1) for v in boxes[0, :4].tolist()],
        "last_box": [round(v, 1) for v in boxes[-1, :4].tolist()],
    }


def extract_face_clips(
    source: SourceRef,
    probe_info: ProbeInfo,
    detector: FaceDetector,
    config: PipelineConfig,
    out_dir: Path,
    progress: ProgressFn | None = None,
) -> SourceRecord:
    """Write one mp4 + wav + json + boxes.npy per accepted face segment of ``source`` into ``out_dir``.

    Returns the source record that accounts for every candidate segment. A corrupt
    source raises :class:`MediaRejection`; the caller records it.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    crop_cfg, track_cfg, shot_cfg = config.crops, config.tracking, config.shots
    sink = WavSink(out_dir / SOURCE_AUDIO_FILE, config.audio.sample_rate)
    tracker = IouTracker(track_cfg.iou_threshold, track_cfg.max_gap_s,
                         max_face_distance=shot_cfg.max_face_distance if shot_cfg.face_check else None)
    nominal_fps = probe_info.frame_rate if probe_info.frame_rate > 0 else 25.0
    shots = ShotCutDetector(shot_cfg, nominal_fps)
    schedule = DetectionSchedule(
        config.detection_schedule, lambda frame: detect_frame(detector, frame, config.faces),
        (lambda frame, found: [frame_face_signature(frame, d) for d in found]) if shot_cfg.face_check else None,
        shot_cfg.max_face_distance)
    radius = int(round(crop_cfg.smoothing_window_s / 2 * nominal_fps))
    start_after = max(1, int(np.ceil(track_cfg.min_segment_s * crop_cfg.fps)))
    croppers: dict[int, TrackCropper] = {}
    finished: list[TrackCropper] = []
    frames: dict[int, Frame] = {}
    waiting: deque[Frame] = deque()  # decoded, not yet tracked: the shot detector may still cut before them
    cut_frames: set[int] = set()
    cut_times: list[float] = []
    decoded_frames, decoded_until, last_report = 0, 0.0, time.monotonic()
    frame_w = frame_h = 0

    def close_track(track: Track) -> None:
        cropper = croppers.pop(track.track_id)
        cropper.emit(frames, final=True)
        # Its x264 flushes now, in its thread: one live encoder per open track, not per shot.
        cropper.encoder.close()
        finished.append(cropper)

    def track_frame(frame: Frame) -> None:
        for planned in schedule.push(frame, starts_shot=frame.index in cut_frames):
            track_planned(planned)

    def track_planned(planned: PlannedFrame) -> None:
        frame = planned.frame
        frames[frame.index] = frame
        if frame.index in cut_frames:
            cut_times.append(round(frame.time_s, 6))
            for track in tracker.cut():
                close_track(track)
        ended, started = tracker.step(frame.time_s, frame.duration_s, frame.index, planned.detections,
                                      planned.signatures, planned.interpolated)
        for track in started:
            encoder = ClipEncoder(out_dir / f"_track{track.track_id:04d}.video.mp4", config,
                                  track.observations[0].time_s, start_after)
            croppers[track.track_id] = TrackCropper(track, frame_w, frame_h, radius, encoder,
                                                    crop_cfg.scale, crop_cfg.size_px, shot=len(cut_times))
        for track in ended:
            close_track(track)
        for cropper in croppers.values():
            cropper.emit(frames, final=False)
        keep_from = min((c.next_frame_index() for c in croppers.values()), default=frame.index + 1)
        for index in [i for i in frames if i < keep_from]:
            del frames[index]

    outcome = DecodeOutcome()
    try:
        for frame in decode_source(source.path, sink, probe_info.rotation_deg, outcome,
                                   detection_max_px=config.faces.detection_frame_px):
            decoded_frames += 1
            decoded_until = frame.time_s + frame.duration_s
            frame_h, frame_w = frame.height, frame.width
            waiting.append(frame)
            cut_frames.update(shots.step_frame(frame))
            while waiting and waiting[0].index <= frame.index - shots.delay_frames:
                track_frame(waiting.popleft())
            if progress and time.monotonic() - last_report > 5:
                progress(decoded_until, probe_info.duration_s)
                last_report = time.monotonic()
        while waiting:
            track_frame(waiting.popleft())
        for planned in schedule.finish():
            track_planned(planned)
        for track in tracker.finish():
            close_track(track)
    except BaseException:
        for cropper in list(croppers.values()) + finished:
            cropper.encoder.abort()
        sink.close()
        raise
    sink.close()
    if progress:
        progress(decoded_until, probe_info.duration_s)

    declared = probe_info.duration_s
    decode_numbers = {"decoded_frames": decoded_frames, "decoded_duration_s": round(decoded_until, 4),
                      "declared_duration_s": round(declared, 4),
                      "audio_seconds": round(sink.samples / sink.sample_rate, 4)}
    rejection = _decode_rejection(outcome, decoded_until, declared, config.ingest.min_decoded_fraction,
                                  decode_numbers)
    if rejection is not None:
        for cropper in finished:
            cropper.encoder.abort()
            cropper.encoder.path.unlink(missing_ok=True)
        raise rejection

    segments = _finalise_segments(source, probe_info, detector, config, out_dir, finished, sink, frame_w, frame_h)
    numbers = {**decode_numbers, "audio_start_s": round(sink.start_time_s or 0.0, 6), "shot_detector": shots.name,
               "shot_cuts_s": cut_times, "detection_schedule": schedule.counts.as_dict()}
    return SourceRecord.from_segments(source, probe_info.as_dict(), segments, numbers)


def _decode_rejection(outcome: DecodeOutcome, decoded_s: float, declared_s: float, min_fraction: float,
                      numbers: dict) -> MediaRejection | None:
    """Why a decode cannot be used, or None.

    An error on a packet inside the file is damage (``decode_error``), wherever it falls;
    a decode that ends early at the end of the file, with or without an error, is truncation.
    """
    if outcome.frames == 0:
        return MediaRejection("no_decodable_frames", outcome.error or "no video frame could be decoded", **numbers)
    if outcome.error and not outcome.error_at_end_of_file:
        return MediaRejection("decode_error", f"{outcome.error} after {decoded_s:.2f} s of a declared {declared_s:.2f} s",
                              **numbers)
    if declared_s > 0 and decoded_s < min_fraction * declared_s:
        cause = f" ({outcome.error})" if outcome.error else ""
        return MediaRejection("truncated_stream", f"decoded {decoded_s:.2f} s of a declared {declared_s:.2f} s{cause}",
                              **numbers, min_decoded_fraction=min_fraction)
    if outcome.error:
        return MediaRejection("decode_error", outcome.error, **numbers)
    return None


def _quality_columns(cropper: TrackCropper, size_px: int) -> np.ndarray:
    """(source frames, 7) float32: face_px, upscale, sharpness, yaw, pitch, roll, shot (BOXES_COLUMNS)."""
    boxes = np.asarray(cropper.boxes, dtype=np.float64)
    face_px = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    upscale = size_px / np.asarray(cropper.crops, dtype=np.float64)[:, 2]
    measured = np.array([(m.sharpness, m.yaw_deg, m.pitch_deg, m.roll_deg) for m in cropper.measures],
                        dtype=np.float64).reshape(-1, 4)
    shot = np.full(len(boxes), cropper.shot, dtype=np.float64)
    return np.column_stack([face_px, upscale, measured, shot]).astype(np.float32)


def _finalise_segments(source: SourceRef, probe_info: ProbeInfo, detector: FaceDetector, config: PipelineConfig,
                       out_dir: Path, finished: list[TrackCropper], sink: WavSink,
                       frame_w: int, frame_h: int) -> list[Segment]:
    crop_cfg = config.crops
    ordered = sorted(finished, key=lambda c: (c.track.observations[0].time_s, c.boxes[0][0]))
    segments: list[Segment] = []
    muxes: list[Future] = []
    with ThreadPoolExecutor(max_workers=MUX_THREADS, thread_name_prefix="mux") as pool:
        for number, cropper in enumerate(ordered):
            segments.append(_finalise_segment(source, probe_info, detector, config, out_dir, number, cropper, sink,
                                              frame_w, frame_h, pool, muxes))
        for mux in muxes:
            mux.result()
    return segments


def _finalise_segment(source: SourceRef, probe_info: ProbeInfo, detector: FaceDetector, config: PipelineConfig,
                      out_dir: Path, number: int, cropper: TrackCropper, sink: WavSink, frame_w: int, frame_h: int,
                      pool: ThreadPoolExecutor, muxes: list[Future]) -> Segment:
    """The segment of one finished track: rejected when too short, else its wav, boxes table and
    sample JSON written here and its mp4 muxed by ``pool`` (appended to ``muxes``)."""
    crop_cfg = config.crops
    obs = cropper.track.observations
    start_s, end_s = obs[0].time_s, obs[-1].end_s
    key = f"{source.source_id}_s{number:03d}"
    numbers = {"duration_s": round(end_s - start_s, 4), **_summarise_track(cropper)}
    encoded = cropper.encoder.finish()
    tmp_video = cropper.encoder.path
    if not encoded or end_s - start_s < config.tracking.min_segment_s:
        tmp_video.unlink(missing_ok=True)
        return Segment(key=key, track_id=cropper.track.track_id, start_s=round(start_s, 6), end_s=round(end_s, 6),
                       status=REJECTED, reason="segment_too_short",
                       numbers={**numbers, "min_segment_s": config.tracking.min_segment_s})
    n_expected = frames_needed(start_s, end_s, crop_cfg.fps)
    samples, padded = read_wav_slice(sink.path, sink.sample_rate, start_s, end_s, sink.start_time_s or 0.0)
    wav_path = out_dir / f"{key}.wav"
    write_wav(wav_path, samples, sink.sample_rate)
    muxes.append(pool.submit(mux_clip, tmp_video, wav_path, out_dir / f"{key}.mp4", config))
    out_times = start_s + (np.arange(cropper.encoder.frames_out) + 0.5) / crop_cfg.fps
    src_times = np.array([o.time_s for o in obs])
    src_pos = np.clip(np.searchsorted(src_times, out_times, side="right") - 1, 0, len(obs) - 1)
    boxes = np.asarray(cropper.boxes, dtype=np.float32)[src_pos]
    crops = np.asarray(cropper.crops, dtype=np.float32)[src_pos]
    table = np.concatenate([out_times[:, None].astype(np.float32), boxes, crops,
                            _quality_columns(cropper, crop_cfg.size_px)[src_pos]], axis=1)
    np.save(out_dir / f"{key}.boxes.npy", table)
    sample = SampleRecord(
        key=key, pipeline_version=__version__, config_hash=config.content_hash(), source=source.info(),
        source_probe=probe_info.as_dict(),
        time_range_s=TimeRange(start=round(start_s, 6), end=round(end_s, 6), duration=round(end_s - start_s, 6)),
        video=VideoInfo(file=f"{key}.mp4", width=crop_cfg.size_px, height=crop_cfg.size_px, fps=crop_cfg.fps,
                        frames=cropper.encoder.frames_out, codec="h264", frames_expected=n_expected),
        fps_conversion=FpsConversion(
            source_fps=round(probe_info.frame_rate, 6), output_fps=crop_cfg.fps, source_frames=len(obs),
            output_frames=cropper.encoder.frames_out,
            method="output frame k shows the source frame displayed at start+(k+0.5)/fps"),
        audio=AudioInfo(file=f"{key}.wav", sample_rate=sink.sample_rate, channels=1, samples=int(len(samples)),
                        padded_samples=int(padded)),
        faces=FaceTrackInfo(detector=detector.name, detector_sha256=detector.model_sha256,
                            track_id=cropper.track.track_id, frame_size=(frame_w, frame_h),
                            crop_scale=crop_cfg.scale, smoothing_window_s=crop_cfg.smoothing_window_s,
                            boxes_file=f"{key}.boxes.npy", boxes_columns=BOXES_COLUMNS, **numbers),
        filters=[FilterEntry(stage="faces", decision=ACCEPTED, numbers=numbers)],
    )
    (out_dir / f"{key}.json").write_bytes(sample.dumps())
    return Segment(key=key, track_id=cropper.track.track_id, start_s=round(start_s, 6), end_s=round(end_s, 6),
                   status=ACCEPTED, numbers=numbers, files={"mp4": f"{key}.mp4", "wav": f"{key}.wav",
                                                            "json": f"{key}.json", "boxes.npy": f"{key}.boxes.npy"})
