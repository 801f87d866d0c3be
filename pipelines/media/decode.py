"""Reading media: probing with ffprobe, one decode pass of a source with PyAV, clip frames.

Times are seconds on the source's own clock, counted from the container's start time,
so video at any frame rate and audio at any sample rate line up without frame-index drift.
"""

from __future__ import annotations

import collections
import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import cv2
import ffmpeg
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from pipelines.media.encode import ENCODER_COLOURS, ENCODER_PIXEL_FORMAT, EXACT_SCALING
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
# libswscale filter of the detection frame and of the shot detector's picture, made straight from
# the decoded planes. Area averaging: the detector and the shot detector see an anti-aliased
# picture of the frame (SCRFD's own resize of a full frame is bilinear without a footprint,
# which aliases at 3x).
DETECTION_INTERPOLATION = "AREA"
# Building a libswscale context costs more than converting a face-sized region with it (about
# 1 ms against 0.2 ms for 490x490 px), and PyAV builds one per frame unless a reformatter is
# reused: contexts are kept by geometry, and region cuts are rounded up to this many pixels so
# a track's slowly changing crop keeps hitting one.
_CUT_STEP_PX = 32
_MAX_REFORMATTERS = 32
_REFORMATTERS: dict[tuple, VideoReformatter] = {}


def _reformatter(key: tuple) -> VideoReformatter:
    reformatter = _REFORMATTERS.get(key)
    if reformatter is None:
        if len(_REFORMATTERS) >= _MAX_REFORMATTERS:
            del _REFORMATTERS[next(iter(_REFORMATTERS))]
        reformatter = _REFORMATTERS[key] = VideoReformatter()
    return reformatter


def _converted(frame: av.VideoFrame, width: int | None = None, height: int | None = None,
               interpolation: str | None = None, pixel_format: str = "rgb24") -> np.ndarray:
    """``frame`` as an RGB (or ``pixel_format``) array, scaled to width x height when given, through a
    kept libswscale context: the same conversion as ``frame.to_ndarray(format="rgb24")`` / ``frame.reformat``."""
    key = (frame.width, frame.height, frame.format.name, frame.colorspace, frame.color_range, width, height,
           interpolation, pixel_format)
    return _reformatter(key).reformat(frame, width=width, height=height, format=pixel_format,
                                      interpolation=interpolation).to_ndarray()


def _turned(picture: av.VideoFrame, turns: int) -> av.VideoFrame:
    """A planar picture turned by ``turns`` quarter turns counter-clockwise (as np.rot90), same colours."""
    width, height = (picture.height, picture.width) if turns % 2 else (picture.width, picture.height)
    out = av.VideoFrame(width, height, picture.format.name)
    out.colorspace, out.color_range = picture.colorspace, picture.color_range
    for plane, target in zip(picture.planes, out.planes):
        turned = np.rot90(_plane_rows(plane)[:, :plane.width], turns)
        _plane_rows(target)[:, :target.width] = turned
    return out


def shrunk_rgb_to_bgr(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """An RGB picture area-averaged to width x height (never enlarged), as BGR. Every step-th pixel
    first (a view, no copy), so the area filter reads about 1/step^2 of a large picture: whole-frame
    statistics (the shot detector's) do not need the anti-aliasing of a full-resolution average."""
    h, w = rgb.shape[:2]
    if (width, height) != (w, h):
        step = max(1, w // (2 * width))
        rgb = cv2.resize(rgb[::step, ::step], (width, height), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def area_shrunk(image: np.ndarray, factor: int) -> np.ndarray:
    """``image`` area-averaged by an integer factor (cv2's INTER_AREA fast path), its rows and columns
    past the last whole block dropped; the image itself for a factor of 1."""
    if factor <= 1:
        return image
    height, width = image.shape[:2]
    return cv2.resize(image[:height // factor * factor, :width // factor * factor], (width // factor, height // factor),
                      interpolation=cv2.INTER_AREA)


def scaled_crop_rgb(region: np.ndarray, size_px: int) -> np.ndarray:
    """An RGB square region resized to size_px: area averaging when it shrinks, cubic when it grows."""
    interpolation = cv2.INTER_AREA if region.shape[0] > size_px else cv2.INTER_CUBIC
    return cv2.resize(region, (size_px, size_px), interpolation=interpolation)


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
        self._grey_table = _grey_table(frame.format.name, frame.colorspace, frame.color_range)

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

    def _cut(self, x0: int, y0: int, x1: int, y1: int) -> av.VideoFrame:
        """The stored rectangle [x0, x1) x [y0, y1) as a frame of its own (planes copied, same format
        and colours). Chroma sample k of the cut is the frame's sample x0 >> shift + k: exact when
        x0 and y0 are even; an odd start shows chroma half a chroma sample (one pixel) off."""
        source = self._frame
        cut = av.VideoFrame(x1 - x0, y1 - y0, source.format.name)
        cut.colorspace = source.colorspace
        cut.color_range = source.color_range
        for number, (plane, target) in enumerate(zip(self._planes, cut.planes)):
            shift_x, shift_y = (self._shift_x, self._shift_y) if number else (0, 0)
            row, col = y0 >> shift_y, (x0 >> shift_x) * self._sample_bytes
            width_bytes = target.width * self._sample_bytes
            _plane_rows(target)[:, :width_bytes] = plane[row: row + target.height, col: col + width_bytes]
        return cut

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
        rgb = _converted(self._cut(ax0, ay0, ax1, ay1))[sy0 - ay0: sy1 - ay0, sx0 - ax0: sx1 - ax0]
        return np.ascontiguousarray(np.rot90(rgb, self._turns)) if self._turns else rgb

    def region_grey(self, x0: int, y0: int, x1: int, y1: int, shrink: int = 1) -> np.ndarray | None:
        """Grey pixels of the display rectangle read from the luma plane (see :func:`_grey_table`),
        area-averaged by ``shrink`` first (:func:`area_shrunk`, on the luma, so the table maps the
        few pixels left), or None where the frame's matrix makes grey more than luma."""
        if self._grey_table is None:
            return None
        sx0, sy0, sx1, sy1 = self._stored_rect(x0, y0, x1, y1)
        luma = self._planes[0].view("<u2") if self._sample_bytes == 2 else self._planes[0]
        luma = luma[sy0:sy1, sx0:sx1]
        if self._turns:
            luma = np.ascontiguousarray(np.rot90(luma, self._turns))
        luma = area_shrunk(luma, shrink)
        if self._sample_bytes == 2:
            return self._grey_table[luma]
        return cv2.LUT(luma, self._grey_table)

    def crop(self, x0: int, y0: int, side: int, size_px: int) -> av.VideoFrame:
        """The display square [x0, x0 + side)^2 scaled to size_px, in the encoder's picture format and
        colours (pipelines.media.encode.ENCODER_PIXEL_FORMAT), in one libswscale call from the
        planes: no RGB, nothing left for the encoder to convert.

        Area averaging where the square shrinks, bicubic where it grows (the RGB path's cv2 filters
        have the same footprints). Near the square's edges the filters read only the square's own
        pixels, as cv2.resize of the RGB region does."""
        sx0, sy0, sx1, sy1 = self._stored_rect(x0, y0, x0 + side, y0 + side)
        interpolation = Interpolation.AREA if side > size_px else Interpolation.BICUBIC
        if side >= 2 * size_px and self._frame.format.name in ("yuv420p", "yuvj420p"):
            cut = self._halved_cut(sx0, sy0, side)
        else:
            cut = self._cut(sx0, sy0, sx1, sy1)
        picture = _reformatter(("crop", cut.format.name, size_px, interpolation)).reformat(
            cut, width=size_px, height=size_px, format=ENCODER_PIXEL_FORMAT,
            interpolation=interpolation | EXACT_SCALING, threads=1, **ENCODER_COLOURS)
        return _turned(picture, self._turns) if self._turns else picture

    def _halved_cut(self, x0: int, y0: int, side: int) -> av.VideoFrame:
        """A 4:2:0 square shrunk 2x as a yuv444p frame: the luma area-averaged 2x by cv2 (its fast
        path) straight from the plane, the chroma planes' own samples as they are. A crop that
        shrinks 2x or more reads and scales a quarter of the pixels (an area average of an area
        average: the same picture within rounding). An odd side drops its last row and column."""
        half = side // 2
        luma = area_shrunk(self._planes[0][y0: y0 + 2 * half, x0: x0 + 2 * half], 2)
        cut = av.VideoFrame(half, half, "yuvj444p" if self._frame.format.name == "yuvj420p" else "yuv444p")
        cut.colorspace = self._frame.colorspace
        cut.color_range = self._frame.color_range
        rows = [luma, self._planes[1][y0 >> 1: (y0 >> 1) + half, x0 >> 1: (x0 >> 1) + half],
                self._planes[2][y0 >> 1: (y0 >> 1) + half, x0 >> 1: (x0 >> 1) + half]]
        for plane, source in zip(cut.planes, rows):
            _plane_rows(plane)[:, :half] = source
        return cut


# AVColorSpace values whose luma weights are BT.601's, which cv2's RGB -> grey uses (unspecified:
# libswscale converts with BT.601). Grey of the RGB conversion is then the luma, range-expanded:
# with R, G, B = 1.164 (Y - 16) + BT.601's chroma terms, 0.299 R + 0.587 G + 0.114 B leaves
# 1.164 (Y - 16) (the chroma weights cancel to within 0.0003); it differs where the conversion
# clips a channel, and libswscale's RGB is about one level darker (a constant, which the
# Laplacian does not see).
_BT601_LUMA_SPACES = {2, 5, 6}  # unspecified, BT470BG, SMPTE170M
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


@functools.lru_cache(maxsize=16)
def _grey_table(pixel_format: str, colorspace: int, color_range: int) -> np.ndarray | None:
    """Luma sample -> the grey level cv2 makes of the RGB conversion, or None for other matrices."""
    if colorspace not in _BT601_LUMA_SPACES:
        return None
    bits = 10 if _PLANAR_YUV[pixel_format][2] == 2 else 8  # the 16-bit layouts hold 10-bit samples
    levels = np.arange(2 ** bits, dtype=np.float64) / 2 ** (bits - 8)
    full = color_range == _FULL_RANGE or pixel_format.startswith("yuvj")
    grey = levels if full else (levels - 16.0) * 255.0 / 219.0
    return np.clip(np.round(grey), 0, 255).astype(np.uint8)


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


def _detection_picture(decoded: av.VideoFrame, stored_size: tuple[int, int], rotation_deg: int) -> np.ndarray:
    """The shrunk RGB picture the detector sees, as a channel-reversed view of libswscale's bgr24
    output: its scaled bgr24 path takes 1.2 ms on 1080p where rgb24's takes 3 ms (rgb24 is always
    converted with accurate rounding; bgr24 differs from it by 1 level on average, at most 5)."""
    bgr = _converted(decoded, *stored_size, DETECTION_INTERPOLATION, pixel_format="bgr24")
    return _rotate(bgr[:, :, ::-1], rotation_deg)


class Frame:
    """One decoded video frame shown from ``time_s`` for ``duration_s``.

    Pictures of the whole frame are made from the decoded frame only when asked, each straight
    from its planes by libswscale: :attr:`detection_rgb` (the detector's, only on the frames the
    detection schedule runs it on) and :meth:`shrunk_bgr` (the shot detector's). Full-resolution
    pixels are converted only where asked (:meth:`region_rgb`, :meth:`crop`).
    """

    def __init__(self, index: int, time_s: float, duration_s: float, decoded: av.VideoFrame, rotation_deg: int,
                 detection_max_px: int | None):
        self.index = index
        self.time_s = time_s
        self.duration_s = duration_s
        self._rotation_deg = rotation_deg
        stored_w, stored_h = decoded.width, decoded.height
        turned = rotation_deg % 180 == 90
        self.width, self.height = (stored_h, stored_w) if turned else (stored_w, stored_h)  # display orientation
        small_w, small_h = detection_size(stored_w, stored_h, detection_max_px)
        self._stored_detection_size = (small_w, small_h)
        self.detection_size = (small_h, small_w) if turned else (small_w, small_h)
        self._detection_rgb: np.ndarray | None = None
        self._decoded: av.VideoFrame | None = None  # kept for the pictures made on demand
        self.pixels: RgbPixels | PlanarYuvPixels
        self.is_own_detection_frame = (small_w, small_h) == (stored_w, stored_h)
        if self.is_own_detection_frame:
            # Small enough to detect on as it is: one conversion serves detection and crops alike.
            self.pixels = RgbPixels(_rotate(_converted(decoded), rotation_deg))
            self._detection_rgb = self.pixels.rgb
        elif planar_pixels_apply(decoded):
            self.pixels = PlanarYuvPixels(decoded, rotation_deg)
            self._decoded = decoded  # PlanarYuvPixels holds its buffers anyway
        else:
            # Converted whole (see _PLANAR_YUV): the detection frame is made now, and the decoded
            # frame is not held beside the RGB one.
            self.pixels = RgbPixels(_rotate(_converted(decoded), rotation_deg))
            self._detection_rgb = _detection_picture(decoded, self._stored_detection_size, rotation_deg)

    @property
    def detection_rgb(self) -> np.ndarray:
        """The whole picture, display orientation, shrunk so its longer side is at most the decode's
        detection size (the frame itself when it is that small already); made on first use."""
        if self._detection_rgb is None:
            self._detection_rgb = _detection_picture(self._decoded, self._stored_detection_size, self._rotation_deg)
        return self._detection_rgb

    def shrunk_bgr(self, width: int, height: int) -> np.ndarray:
        """The whole picture (display orientation) area-averaged to width x height, as BGR (the shot
        detector's). From kept planes, by libswscale straight from the decoded frame: 1.1 ms on
        1080p, where the detection frame and its shrinking took 3.6 ms. A frame held in RGB is
        shrunk from its detection frame (:func:`shrunk_rgb_to_bgr`)."""
        if self._decoded is None:
            return shrunk_rgb_to_bgr(self.detection_rgb, width, height)
        stored_w, stored_h = (height, width) if self._rotation_deg % 180 == 90 else (width, height)
        bgr = _converted(self._decoded, stored_w, stored_h, DETECTION_INTERPOLATION, pixel_format="bgr24")
        return _rotate(bgr, self._rotation_deg)

    @property
    def detection_scale(self) -> tuple[float, float]:
        """(x, y) detection-frame pixels per source pixel."""
        return self.detection_size[0] / self.width, self.detection_size[1] / self.height

    def region_rgb(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """RGB pixels of [x0, x1) x [y0, y1) at full resolution (clipped to the frame)."""
        x0, y0 = max(0, int(x0)), max(0, int(y0))
        x1, y1 = min(self.width, int(x1)), min(self.height, int(y1))
        if x1 <= x0 or y1 <= y0:
            return np.zeros((max(0, y1 - y0), max(0, x1 - x0), 3), np.uint8)
        return self.pixels.region(x0, y0, x1, y1)

    def region_grey(self, x0: int, y0: int, x1: int, y1: int, shrink: int = 1) -> np.ndarray:
        """Grey (cv2's RGB -> grey) pixels of [x0, x1) x [y0, y1) at full resolution, inside the frame,
        area-averaged by the integer ``shrink`` (:func:`area_shrunk`): from the luma plane where the
        matrix allows it (no RGB conversion), else from RGB."""
        grey = self.pixels.region_grey(x0, y0, x1, y1, shrink) if isinstance(self.pixels, PlanarYuvPixels) else None
        if grey is None:
            rgb = np.ascontiguousarray(self.region_rgb(x0, y0, x1, y1))
            grey = area_shrunk(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), shrink)
        return grey

    def crop(self, x0: int, y0: int, side: int, size_px: int) -> av.VideoFrame:
        """The square [x0, x0 + side)^2 (inside the frame) scaled to size_px x size_px, for
        :class:`pipelines.media.encode.ClipEncoder`: straight from kept planes in the encoder's
        format (:meth:`PlanarYuvPixels.crop`), else an RGB picture (cv2, :func:`scaled_crop_rgb`)."""
        if not (0 <= x0 and 0 <= y0 and x0 + side <= self.width and y0 + side <= self.height and side > 0):
            raise ValueError(f"crop square {(x0, y0, side)} is not inside the {self.width}x{self.height} frame")
        if isinstance(self.pixels, PlanarYuvPixels):
            return self.pixels.crop(x0, y0, side, size_px)
        rgb = scaled_crop_rgb(self.region_rgb(x0, y0, x0 + side, y0 + side), size_px)
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")

    @property
    def rgb(self) -> np.ndarray:
        """The whole frame at full resolution (converts all of it: previews and tests only)."""
        return self.region_rgb(0, 0, self.width, self.height)

    @property
    def held_bytes(self) -> int:
        """Memory this frame holds while a track keeps it: full-resolution pixels, and the detection
        frame once made (when it is not the frame itself)."""
        small = self._detection_rgb
        if small is None or (isinstance(self.pixels, RgbPixels) and self.pixels.rgb is small):
            return self.pixels.nbytes
        return self.pixels.nbytes + int(small.nbytes)


def detection_size(width: int, height: int, max_side_px: int | None) -> tuple[int, int]:
    """The detection frame's size: the longer side at most ``max_side_px``, never enlarged."""
    longer = max(width, height)
    if max_side_px is None or longer <= max_side_px:
        return width, height
    factor = max_side_px / longer
    return max(1, int(round(width * factor))), max(1, int(round(height * factor)))


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

    Yields video frames (display orientation) with presentation times (:class:`Frame`): each
    makes its detection frame, at most ``detection_max_px`` on its longer side (None: the frame
    itself), when first asked, and converts its full-resolution pixels region by region; audio is
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
                    frame = Frame(outcome.frames, decoded.time - origin, 1.0 / nominal, decoded, rotation_deg,
                                  detection_max_px)
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
