"""Reading media: probing with ffprobe, one decode pass of a source with PyAV, clip frames.

Times are seconds on the source's own clock, counted from the container's start time,
so video at any frame rate and audio at any sample rate line up without frame-index drift.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import ffmpeg
import numpy as np
from av.video.reformatter import VideoReformatter

from pipelines.media.wav import WavSink

# Source decodes per path: a performance figure (goal: one per source), read by bench/.
DECODE_COUNTS: collections.Counter[str] = collections.Counter()


class MediaRejection(Exception):
    """A source that cannot be used; ``reason`` is machine-readable, ``numbers`` decided it."""

    def __init__(self, reason: str, detail: str, **numbers):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.numbers = numbers


@dataclass(frozen=True)
class ProbeInfo:
    format_name: str
    duration_s: float
    start_time_s: float
    width: int  # display size, after rotation
    height: int
    rotation_deg: int
    video_codec: str
    frame_rate: float
    audio_codec: str
    audio_sample_rate: int
    audio_channels: int
    size_bytes: int
    # The video stream's own length: a single still frame under minutes of audio is no video.
    video_duration_s: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _rotation(stream: dict) -> int:
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            return int(round(float(side["rotation"]))) % 360
    tag = (stream.get("tags") or {}).get("rotate")
    return int(tag) % 360 if tag else 0


# First box types of an ISO-BMFF (mp4/mov) file: only such a file can be a truncated one.
_ISO_BMFF_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"}


def _classify_probe_error(stderr: str, head: bytes = b"") -> str:
    text = stderr.lower()
    if "moov atom not found" in text:
        # ffprobe picks the mov demuxer from a .mp4/.mov name even for a text file, which then
        # reports "moov atom not found" too: look at the first box before calling it truncated.
        return "truncated_container" if head[4:8] in _ISO_BMFF_BOXES else "not_a_media_file"
    if "end of file" in text or "truncat" in text:
        return "truncated_container"
    if "invalid data found" in text:
        return "not_a_media_file"
    return "unreadable_container"


def probe(path: Path) -> ProbeInfo:
    """Probe a source with ffprobe; raise :class:`MediaRejection` with a specific reason."""
    path = Path(path)
    if not path.is_file():
        raise MediaRejection("missing_file", f"{path.name} is not a file")
    size = path.stat().st_size
    if size == 0:
        raise MediaRejection("empty_file", f"{path.name} has zero bytes", size_bytes=0)
    try:
        info = ffmpeg.probe(str(path))
    except ffmpeg.Error as error:
        # Records carry no absolute path: they must not change when the input folder moves.
        stderr = (error.stderr or b"").decode(errors="replace").strip().replace(str(path), path.name)
        with open(path, "rb") as handle:
            head = handle.read(12)
        raise MediaRejection(_classify_probe_error(stderr, head), stderr.splitlines()[-1] if stderr else "ffprobe failed",
                             size_bytes=size) from None
    streams = info.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    fmt = info.get("format", {})
    # A damaged track header (or a codec this FFmpeg lacks) leaves a stream unidentifiable:
    # when that stream is the one missing, say so rather than "no audio stream".
    unknown = [s for s in streams if s.get("codec_name", "unknown") == "unknown"
               or (s.get("codec_type") == "audio" and not int(s.get("sample_rate") or 0))]
    if unknown and (video is None or audio is None or video in unknown or audio in unknown):
        raise MediaRejection("unknown_codec", f"stream {unknown[0].get('index')} ({unknown[0].get('codec_type')}) has "
                             "a codec that cannot be identified", size_bytes=size,
                             stream_index=unknown[0].get("index"), codec_tag=unknown[0].get("codec_tag_string", ""))
    if video is None:
        raise MediaRejection("no_video_stream", "the container has no video stream", size_bytes=size)
    if audio is None:
        raise MediaRejection("no_audio_stream", "the container has no audio stream", size_bytes=size)
    duration = float(fmt.get("duration") or video.get("duration") or 0.0)
    rotation = _rotation(video)
    width, height = int(video.get("width", 0)), int(video.get("height", 0))
    if rotation in (90, 270):
        width, height = height, width
    rate = video.get("avg_frame_rate") or video.get("r_frame_rate") or "0/1"
    try:
        frame_rate = float(Fraction(rate)) if rate != "0/0" else 0.0
    except (ValueError, ZeroDivisionError):
        frame_rate = 0.0
    return ProbeInfo(
        format_name=fmt.get("format_name", ""),
        duration_s=duration,
        start_time_s=float(fmt.get("start_time") or 0.0),
        width=width,
        height=height,
        rotation_deg=rotation,
        video_codec=video.get("codec_name", ""),
        frame_rate=frame_rate,
        audio_codec=audio.get("codec_name", ""),
        audio_sample_rate=int(audio.get("sample_rate", 0) or 0),
        audio_channels=int(audio.get("channels", 0) or 0),
        size_bytes=size,
        video_duration_s=float(video.get("duration") or duration),
    )


# Planar YUV layouts whose planes are kept and converted to RGB one region at a time:
# (horizontal chroma shift, vertical chroma shift, bytes per sample, context px). 8-bit layouts
# take libswscale's unscaled converters, which read each pixel's own samples only; 10-bit ones
# take its scaler, which interpolates chroma across neighbours, so their cut is grown by a
# context margin (16 px: exact on 1280x720 GRID, where 2 px already was) and trimmed after.
# Any other layout (semi-planar nv12 from hardware decoders, packed RGB, palettes, grey) is
# converted to RGB whole at decode, as before, and regions are slices of that array.
_PLANAR_YUV: dict[str, tuple[int, int, int, int]] = {
    "yuv420p": (1, 1, 1, 0), "yuvj420p": (1, 1, 1, 0), "yuv422p": (1, 0, 1, 0), "yuvj422p": (1, 0, 1, 0),
    "yuv444p": (0, 0, 1, 0), "yuvj444p": (0, 0, 1, 0),
    "yuv420p10le": (1, 1, 2, 16), "yuv422p10le": (1, 0, 2, 16), "yuv444p10le": (0, 0, 2, 16),
}
# libswscale filter of the detection frame, made in the same pass as the colour conversion.
# Area averaging: the detector and the shot detector see an anti-aliased picture of the frame
# (SCRFD's own resize of a full frame is bilinear without a footprint, which aliases at 3x).
DETECTION_INTERPOLATION = "AREA"
# Building a libswscale context costs more than converting a face-sized region with it (about
# 1 ms against 0.2 ms for 490x490 px), and PyAV builds one per frame unless a reformatter is
# reused: contexts are kept by geometry, and region cuts are rounded up to this many pixels so
# a track's slowly changing crop keeps hitting one.
_CUT_STEP_PX = 32
_MAX_REFORMATTERS = 32
_REFORMATTERS: dict[tuple, VideoReformatter] = {}


def _converted(frame: av.VideoFrame, width: int | None = None, height: int | None = None,
               interpolation: str | None = None) -> np.ndarray:
    """``frame`` as an RGB array (scaled to width x height when given) through a kept libswscale
    context: the same conversion as ``frame.to_ndarray(format="rgb24")`` / ``frame.reformat``."""
    key = (frame.width, frame.height, frame.format.name, frame.colorspace, frame.color_range, width, height,
           interpolation)
    reformatter = _REFORMATTERS.get(key)
    if reformatter is None:
        if len(_REFORMATTERS) >= _MAX_REFORMATTERS:
            del _REFORMATTERS[next(iter(_REFORMATTERS))]
        reformatter = _REFORMATTERS[key] = VideoReformatter()
    return reformatter.reformat(frame, width=width, height=height, format="rgb24",
                                interpolation=interpolation).to_ndarray()


def _rotate(rgb: np.ndarray, rotation_deg: int) -> np.ndarray:
    # The display matrix angle is counter-clockwise; np.rot90 with k>0 is counter-clockwise too.
    k = {0: 0, 90: 1, 180: 2, 270: 3}.get(rotation_deg % 360, 0)
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


class RgbPixels:
    """Full-resolution pixels already converted to RGB (small sources, non-planar formats)."""

    def __init__(self, rgb: np.ndarray):
        self.rgb = rgb

    @property
    def nbytes(self) -> int:
        return int(self.rgb.nbytes)

    def region(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        return self.rgb[y0:y1, x0:x1]


class PlanarYuvPixels:
    """A decoded frame's own YUV planes (no copy), converted to RGB one region at a time.

    A region is cut from each plane, starting on a chroma sample so every chroma sample covers
    the same pixels as in the whole frame, and converted by libswscale with the frame's
    colourspace and range: the same conversion, pixel for pixel, as the whole frame's.
    Regions are asked for in display orientation and cut from the stored (unrotated) planes.
    """

    def __init__(self, frame: av.VideoFrame, rotation_deg: int):
        self._frame = frame
        self._turns = {0: 0, 90: 1, 180: 2, 270: 3}.get(rotation_deg % 360, 0)
        self._shift_x, self._shift_y, self._sample_bytes, self._context = _PLANAR_YUV[frame.format.name]
        self._planes = [_plane_rows(plane) for plane in frame.planes]

    @property
    def nbytes(self) -> int:
        return int(sum(plane.nbytes for plane in self._planes))

    def _stored_rect(self, x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
        """The stored-orientation rectangle that rot90(., turns) shows as the display rectangle."""
        w, h = self._frame.width, self._frame.height
        if self._turns == 1:
            return w - y1, x0, w - y0, x1
        if self._turns == 2:
            return w - x1, h - y1, w - x0, h - y0
        if self._turns == 3:
            return y0, h - x1, y1, h - x0
        return x0, y0, x1, y1

    def region(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        sx0, sy0, sx1, sy1 = self._stored_rect(x0, y0, x1, y1)
        # The cut (grown by the layout's context) starts and ends on even pixels (the frame's size is even, see
        # planar_pixels_apply): libswscale converts an odd-sized picture by another path, which
        # interpolates chroma, so an odd cut would not match the whole frame's conversion.
        source, context = self._frame, self._context
        ax0, ay0 = max(0, sx0 - context) & ~1, max(0, sy0 - context) & ~1
        ax1, ay1 = min(source.width, sx1 + context), min(source.height, sy1 + context)
        ax0, ax1 = _rounded_cut(ax0, ax1 + (ax1 & 1), source.width)
        ay0, ay1 = _rounded_cut(ay0, ay1 + (ay1 & 1), source.height)
        cut = av.VideoFrame(ax1 - ax0, ay1 - ay0, source.format.name)
        cut.colorspace = source.colorspace
        cut.color_range = source.color_range
        for number, (plane, target) in enumerate(zip(self._planes, cut.planes)):
            shift_x, shift_y = (self._shift_x, self._shift_y) if number else (0, 0)
            row, col = ay0 >> shift_y, (ax0 >> shift_x) * self._sample_bytes
            width_bytes = target.width * self._sample_bytes
            _plane_rows(target)[:, :width_bytes] = plane[row: row + target.height, col: col + width_bytes]
        rgb = _converted(cut)[sy0 - ay0: sy1 - ay0, sx0 - ax0: sx1 - ax0]
        return np.ascontiguousarray(np.rot90(rgb, self._turns)) if self._turns else rgb


def _rounded_cut(start: int, end: int, limit: int) -> tuple[int, int]:
    """[start, end) grown to a multiple of _CUT_STEP_PX (at most ``limit``), moved back inside
    the frame where it would leave it; both ends stay even when start, end and limit are."""
    length = min(limit, -(-(end - start) // _CUT_STEP_PX) * _CUT_STEP_PX)
    start = min(start, limit - length)
    return start, start + length


def planar_pixels_apply(frame: av.VideoFrame) -> bool:
    """Whether :class:`PlanarYuvPixels` can hold this frame: a planar YUV layout it knows, even
    width and height (an odd-sized frame is converted whole by libswscale's interpolating path,
    which a region cut cannot reproduce; such frames are converted whole, as before)."""
    return frame.format.name in _PLANAR_YUV and frame.width % 2 == 0 and frame.height % 2 == 0


def _plane_rows(plane) -> np.ndarray:
    """A plane's bytes as (rows, line size) without a copy."""
    return np.frombuffer(plane, np.uint8)[:plane.line_size * plane.height].reshape(plane.height, plane.line_size)


@dataclass
class Frame:
    """One decoded video frame shown from ``time_s`` for ``duration_s``.

    ``detection_rgb`` is the whole picture, display orientation, shrunk so its longer side is
    at most the decode's detection size (the frame itself when it is that small already).
    Full-resolution pixels are converted to RGB only where asked (:meth:`region_rgb`).
    """

    index: int
    time_s: float
    duration_s: float
    detection_rgb: np.ndarray  # (h, w, 3) uint8
    width: int  # full resolution, display orientation
    height: int
    pixels: RgbPixels | PlanarYuvPixels

    @property
    def detection_scale(self) -> tuple[float, float]:
        """(x, y) detection-frame pixels per source pixel."""
        return self.detection_rgb.shape[1] / self.width, self.detection_rgb.shape[0] / self.height

    def region_rgb(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """RGB pixels of [x0, x1) x [y0, y1) at full resolution (clipped to the frame)."""
        x0, y0 = max(0, int(x0)), max(0, int(y0))
        x1, y1 = min(self.width, int(x1)), min(self.height, int(y1))
        if x1 <= x0 or y1 <= y0:
            return np.zeros((max(0, y1 - y0), max(0, x1 - x0), 3), np.uint8)
        return self.pixels.region(x0, y0, x1, y1)

    @property
    def rgb(self) -> np.ndarray:
        """The whole frame at full resolution (converts all of it: previews and tests only)."""
        return self.region_rgb(0, 0, self.width, self.height)

    @property
    def held_bytes(self) -> int:
        """Memory this frame holds while a track keeps it: full-resolution pixels + detection frame."""
        if isinstance(self.pixels, RgbPixels) and self.pixels.rgb is self.detection_rgb:
            return self.pixels.nbytes
        return self.pixels.nbytes + int(self.detection_rgb.nbytes)


def detection_size(width: int, height: int, max_side_px: int | None) -> tuple[int, int]:
    """The detection frame's size: the longer side at most ``max_side_px``, never enlarged."""
    longer = max(width, height)
    if max_side_px is None or longer <= max_side_px:
        return width, height
    factor = max_side_px / longer
    return max(1, int(round(width * factor))), max(1, int(round(height * factor)))


def _decoded_frame(decoded: av.VideoFrame, index: int, time_s: float, duration_s: float, rotation_deg: int,
                   detection_max_px: int | None) -> Frame:
    stored_w, stored_h = decoded.width, decoded.height
    small_w, small_h = detection_size(stored_w, stored_h, detection_max_px)
    if (small_w, small_h) == (stored_w, stored_h):
        # Small enough to detect on as it is: one conversion serves detection and crops alike.
        rgb = _rotate(_converted(decoded), rotation_deg)
        small, pixels = rgb, RgbPixels(rgb)
    else:
        small = _rotate(_converted(decoded, small_w, small_h, DETECTION_INTERPOLATION), rotation_deg)
        if planar_pixels_apply(decoded):
            pixels = PlanarYuvPixels(decoded, rotation_deg)
        else:
            pixels = RgbPixels(_rotate(_converted(decoded), rotation_deg))
    width, height = (stored_h, stored_w) if rotation_deg % 180 == 90 else (stored_w, stored_h)
    return Frame(index, time_s, duration_s, small, width, height, pixels)


@dataclass
class DecodeOutcome:
    """Filled in by :func:`decode_source` as it runs: the error that stopped decoding, if any."""

    error: str | None = None
    frames: int = 0
    # The packet that failed reached the end of the file: the file was cut off, not damaged inside.
    error_at_end_of_file: bool = False


def decode_source(path: Path, audio_sink: WavSink, rotation_deg: int = 0,
                  outcome: DecodeOutcome | None = None, detection_max_px: int | None = None) -> Iterator[Frame]:
    """Decode video and audio of ``path`` in one demux pass.

    Yields video frames (display orientation) with presentation times: each with its detection
    frame, at most ``detection_max_px`` on its longer side (None: the frame itself), and its
    full-resolution pixels, converted to RGB region by region (:class:`Frame`); audio is
    resampled to the sink's rate, mono, and written to the sink on the way. A corrupt or
    cut-off stream ends the iteration early with the decoder's error in ``outcome``, so
    the caller can weigh how much decoded before deciding (truncated vs corrupt).
    """
    DECODE_COUNTS[str(path)] += 1
    outcome = outcome if outcome is not None else DecodeOutcome()
    try:
        # Damaged tags must not stop a decode: PyAV's strict default raises UnicodeDecodeError.
        container = av.open(str(path), metadata_errors="replace")
    except av.error.FFmpegError as error:
        raise MediaRejection("unreadable_container", str(error)) from None
    with container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        video.thread_type = "AUTO"
        origin = (container.start_time or 0) / av.time_base
        resampler = av.AudioResampler(format="s16", layout="mono", rate=audio_sink.sample_rate)
        pending: Frame | None = None
        nominal = float(video.average_rate) if video.average_rate else 25.0
        size = Path(path).stat().st_size
        packet = None
        try:
            for packet in container.demux(video, audio):
                for decoded in packet.decode():
                    if packet.stream.type == "audio":
                        t = decoded.time - origin if decoded.time is not None else None
                        for out in resampler.resample(decoded):
                            audio_sink.write(t, out.to_ndarray().reshape(-1))
                        continue
                    if decoded.time is None:
                        continue
                    frame = _decoded_frame(decoded, outcome.frames, decoded.time - origin, 1.0 / nominal,
                                           rotation_deg, detection_max_px)
                    outcome.frames += 1
                    if pending is not None:
                        # A frame lasts until the next one starts (variable frame rate safe).
                        step = frame.time_s - pending.time_s
                        if step > 0:
                            pending.duration_s = step
                        yield pending
                    pending = frame
            for out in resampler.resample(None):
                audio_sink.write(None, out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as error:
            outcome.error = f"{type(error).__name__}: {error}"
            outcome.error_at_end_of_file = packet is not None and (packet.pos is not None and packet.pos >= 0
                                                              and packet.pos + packet.size >= size)
        if pending is not None:
            yield pending


def frames_needed(start_s: float, end_s: float, fps: float) -> int:
    """Output frames whose centre falls inside [start_s, end_s) at ``fps``."""
    return max(0, math.ceil((end_s - start_s) * fps - 0.5))


def iter_video_frames(path: Path) -> Iterator[np.ndarray]:
    """The frames of a clip (the 384 px crops) as RGB arrays, one at a time, so a stage's
    memory does not grow with the clip's length."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def read_video_frames(path: Path) -> list[np.ndarray]:
    """All frames of a short clip at once (previews, tests); stages stream with iter_video_frames."""
    return list(iter_video_frames(path))


def count_video_frames(path: Path) -> int:
    """Frames in a clip: the container's count when it records one, else by decoding."""
    with av.open(str(path)) as container:
        declared = container.streams.video[0].frames
    return declared if declared > 0 else sum(1 for _ in iter_video_frames(path))
