"""The decoder's small detection frame, full-resolution regions and crops (pipelines/media/decode.py).

Every source here is composed from a real GRID clip with ffmpeg: upscaled to 1080 rows,
rotated by the display matrix, an odd size, pixel formats other than yuv420p, a BT.709 tag. A
region read from a frame must equal the same region of the whole frame converted to RGB,
detections made on the small frame must land where detections on the full frame do, and a crop
scaled straight from the planes must show what the RGB path showed the encoder.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from av.video.reformatter import VideoReformatter

from pipelines.config import FaceDetectionConfig
from pipelines.faces.clips import detect_frame
from pipelines.fixtures import media as mf
from pipelines.media.decode import (Frame, PlanarYuvPixels, RgbPixels, area_shrunk, decode_source, detection_size,
                                    probe, scaled_crop_rgb, shrunk_rgb_to_bgr)
from pipelines.media.encode import ClipEncoder
from pipelines.media.wav import WavSink

DETECTION_PX = FaceDetectionConfig().detection_frame_px


def _encoded(clip: Path, out: Path, scale: str, video_args: list[str], audio_args: list[str]) -> Path:
    mf.run_ffmpeg(["-i", str(clip), "-t", "1", "-vf", f"scale={scale},setsar=1", *video_args, *audio_args, str(out)])
    return out


# The stored picture is turned the other way, so the display matrix shows GRID upright: the
# detector finds the face in the display orientation whatever the rotation.
_UNTURN = {0: "null", 90: "transpose=clock", 180: "hflip,vflip", 270: "transpose=cclock"}


def _rotated(clip: Path, out: Path, degrees: int) -> Path:
    plain = _encoded(clip, out.with_name(out.stem + ".plain.mp4"), f"1280:720,{_UNTURN[degrees]}",
                     ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"], ["-c:a", "aac"])
    # ffmpeg 5.1 has no -display_rotation; its mov muxer turns the rotate tag into a display matrix.
    mf.run_ffmpeg(["-i", str(plain), "-c", "copy", "-metadata:s:v", f"rotate={degrees}", str(out)])
    plain.unlink()
    return out


X264 = ["-c:v", "libx264", "-preset", "veryfast"]
PCM = ["-c:a", "pcm_s16le"]
# name -> (ffmpeg scale, video args, audio args, pixel format decoded, pixel holder)
SOURCES = {
    "upscaled_1080p.mp4": ("-2:1080", [*X264, "-pix_fmt", "yuv420p"], ["-c:a", "aac"], "yuv420p", PlanarYuvPixels),
    # Tagged BT.709 (as HD cameras and sites tag theirs): RGB and the encoder's BT.601 picture are
    # converted from that matrix.
    "bt709_1080p.mp4": ("-2:1080", [*X264, "-pix_fmt", "yuv420p", "-colorspace", "bt709", "-color_primaries",
                                    "bt709", "-color_trc", "bt709"], ["-c:a", "aac"], "yuv420p", PlanarYuvPixels),
    "yuv444p.mp4": ("1280:720", [*X264, "-pix_fmt", "yuv444p"], ["-c:a", "aac"], "yuv444p", PlanarYuvPixels),
    "yuvj422p.avi": ("1280:720", ["-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj422p"], PCM, "yuvj422p",
                     PlanarYuvPixels),
    "yuv420p10le.mkv": ("1280:720", ["-c:v", "ffv1", "-pix_fmt", "yuv420p10le"], PCM, "yuv420p10le",
                        PlanarYuvPixels),
    # Odd sizes: libswscale converts them by an interpolating path a region cannot reproduce,
    # so the frame is converted whole (as before this change).
    "odd_1001x721.mkv": ("1001:721", ["-c:v", "ffv1", "-pix_fmt", "yuv420p"], PCM, "yuv420p", RgbPixels),
    # Packed RGB: not a planar YUV layout, converted whole.
    "bgr0.mkv": ("1001:721", ["-c:v", "ffv1", "-pix_fmt", "bgr0"], PCM, "bgr0", RgbPixels),
}


def _source(composed, grid_clip: Path, name: str) -> Path:
    # The session's media cache is shared with other test files: these names are this file's own.
    cached = f"decode_regions_{name}"
    if name.startswith("rotated"):
        degrees = int(name.removeprefix("rotated").split(".")[0])
        return composed.get(cached, _rotated, grid_clip, degrees=degrees)
    scale, video_args, audio_args, _, _ = SOURCES[name]
    return composed.get(cached, _encoded, grid_clip, scale=scale, video_args=video_args, audio_args=audio_args)


def _frames(path: Path, tmp_path: Path, count: int, detection_max_px: int | None = DETECTION_PX) -> list[Frame]:
    info = probe(path)
    sink = WavSink(tmp_path / f"{path.stem}-{detection_max_px}.wav", 16000)
    frames = []
    for frame in decode_source(path, sink, info.rotation_deg, detection_max_px=detection_max_px):
        frames.append(frame)
        if len(frames) == count:
            break
    sink.close()
    return frames


def _whole_frames_rgb(path: Path, count: int) -> tuple[list[np.ndarray], str]:
    """The first frames converted whole by PyAV, turned to display orientation: the reference."""
    turns = {0: 0, 90: 1, 180: 2, 270: 3}[probe(path).rotation_deg]
    out, pixel_format = [], ""
    with av.open(str(path)) as container:
        for decoded in container.decode(video=0):
            pixel_format = decoded.format.name
            out.append(np.rot90(decoded.to_ndarray(format="rgb24"), turns))
            if len(out) == count:
                break
    return out, pixel_format


def _rectangles(width: int, height: int, rng: np.random.Generator, count: int) -> list[tuple[int, int, int, int]]:
    """Random rectangles (odd and even corners, some touching the frame's edges), plus the whole frame."""
    rects = [(0, 0, width, height), (0, 0, 1, 1), (width - 1, height - 1, width, height), (1, 1, width - 1, height)]
    for _ in range(count):
        x0, y0 = int(rng.integers(0, width - 1)), int(rng.integers(0, height - 1))
        rects.append((x0, y0, int(rng.integers(x0 + 1, width + 1)), int(rng.integers(y0 + 1, height + 1))))
    return rects


def _check_regions(frames: list[Frame], reference: list[np.ndarray], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for frame, whole in zip(frames, reference, strict=True):
        assert whole.shape == (frame.height, frame.width, 3)
        for x0, y0, x1, y1 in _rectangles(frame.width, frame.height, rng, 40):
            region = frame.region_rgb(x0, y0, x1, y1)
            assert region.shape == (y1 - y0, x1 - x0, 3) and region.dtype == np.uint8
            difference = np.abs(region.astype(np.int16) - whole[y0:y1, x0:x1]).max()
            assert difference <= 1, f"region {(x0, y0, x1, y1)} differs by {difference} from the whole conversion"


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_region_equals_the_whole_frame_conversion(composed, grid_clip: Path, tmp_path: Path, name: str):
    path = _source(composed, grid_clip, name)
    frames = _frames(path, tmp_path, 3)
    reference, pixel_format = _whole_frames_rgb(path, 3)
    assert pixel_format == SOURCES[name][3]
    assert all(isinstance(frame.pixels, SOURCES[name][4]) for frame in frames)
    _check_regions(frames, reference, seed=len(name))
    frame = frames[0]
    small_w, small_h = detection_size(frame.width, frame.height, DETECTION_PX)
    assert frame.detection_rgb.shape == (small_h, small_w, 3)
    assert max(small_w, small_h) == DETECTION_PX  # all of these are larger than the detection size


def test_grid_frame_is_its_own_detection_frame(grid_clip: Path, tmp_path: Path):
    # 360x288 is below the detection size: nothing is scaled, regions are slices of the one RGB array.
    frames = _frames(grid_clip, tmp_path, 5)
    reference, _ = _whole_frames_rgb(grid_clip, 5)
    for frame, whole in zip(frames, reference):
        assert (frame.width, frame.height) == (360, 288)
        assert frame.detection_scale == (1.0, 1.0)
        assert np.array_equal(frame.detection_rgb, whole)
        assert isinstance(frame.pixels, RgbPixels)
    _check_regions(frames, reference, seed=7)


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotated_source_regions_are_in_display_orientation(composed, grid_clip: Path, tmp_path: Path,
                                                           degrees: int):
    path = _source(composed, grid_clip, f"rotated{degrees}.mp4")
    info = probe(path)
    assert info.rotation_deg == degrees and (info.width, info.height) == (1280, 720)
    frames = _frames(path, tmp_path, 2)
    assert (frames[0].width, frames[0].height) == (1280, 720)
    assert frames[0].detection_rgb.shape == (360, 640, 3)
    assert isinstance(frames[0].pixels, PlanarYuvPixels)
    reference, _ = _whole_frames_rgb(path, 2)
    _check_regions(frames, reference, seed=degrees)
    # Same orientation as ffmpeg's own display (the CLI applies the display matrix itself), and the
    # same picture as the unrotated source's.
    shown = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-frames:v", "1",
                            "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    displayed = np.frombuffer(shown, dtype=np.uint8).reshape(720, 1280, 3).astype(np.int16)
    assert np.abs(frames[0].rgb.astype(np.int16) - displayed).mean() < 2.0
    upright = _frames(_source(composed, grid_clip, "rotated0.mp4"), tmp_path, 1)[0]
    assert np.abs(frames[0].rgb.astype(np.int16) - upright.rgb).mean() < 3.0
    assert np.abs(frames[0].detection_rgb.astype(np.int16) - upright.detection_rgb).mean() < 3.0


def test_planar_frames_hold_half_the_memory_of_rgb(composed, grid_clip: Path, tmp_path: Path):
    frame = _frames(_source(composed, grid_clip, "upscaled_1080p.mp4"), tmp_path, 1)[0]
    full_rgb = frame.width * frame.height * 3
    # yuv420p planes: 1.5 bytes per pixel (plus any row padding of the decoder's buffers).
    assert frame.pixels.nbytes >= frame.width * frame.height * 3 // 2
    # The detection frame is made only when asked (the detection schedule skips most frames).
    assert frame.held_bytes == frame.pixels.nbytes < 0.55 * full_rgb
    small = frame.detection_rgb.nbytes
    assert frame.held_bytes == frame.pixels.nbytes + small
    # With the 640 px detection frame (0.2 of a 1350x1080 frame's pixels) it is still well under RGB.
    assert frame.held_bytes < 0.8 * full_rgb


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


# A crop scaled from the planes against the RGB path's picture (RGB region, cv2 resize, then the
# encoder's conversion to yuv420p): measured 41-55 dB mean, 36.4 dB worst (a bicubic enlargement
# across the black bar of a padded 1080p frame); below these the paths show different pictures.
CROP_MIN_PSNR_DB = 35.0
CROP_MEAN_PSNR_DB = 40.0


@pytest.mark.parametrize("name", ["upscaled_1080p.mp4", "bt709_1080p.mp4", "yuv444p.mp4", "yuvj422p.avi",
                                  "yuv420p10le.mkv", "rotated90.mp4", "rotated270.mp4"])
def test_crop_from_the_planes_shows_the_rgb_paths_pixels(composed, grid_clip: Path, tmp_path: Path, name: str):
    frames = _frames(_source(composed, grid_clip, name), tmp_path, 2)
    size = 384
    rng = np.random.default_rng(len(name))
    scaler_psnr, shrunk, enlarged = [], 0, 0
    for frame in frames:
        assert isinstance(frame.pixels, PlanarYuvPixels)
        # Odd and even corners and sides, squares that shrink and squares that grow, edge to edge.
        squares = [(0, 0, min(frame.width, frame.height)), (frame.width - 201, frame.height - 201, 201)]
        for _ in range(10):
            side = int(rng.integers(120, min(frame.width, frame.height) + 1))
            squares.append((int(rng.integers(0, frame.width - side + 1)), int(rng.integers(0, frame.height - side + 1)),
                            side))
        for x0, y0, side in squares:
            crop = frame.crop(x0, y0, side, size)
            assert (crop.width, crop.height, crop.format.name) == (size, size, "yuv420p")
            rgb = scaled_crop_rgb(frame.region_rgb(x0, y0, x0 + side, y0 + side), size)
            previous = ClipEncoder._encoder_frame(rgb, size, VideoReformatter()).to_ndarray(format="rgb24")
            scaler_psnr.append(_psnr(crop.to_ndarray(format="rgb24"), previous))
            shrunk, enlarged = shrunk + (side > size), enlarged + (side <= size)
    assert shrunk and enlarged
    assert min(scaler_psnr) >= CROP_MIN_PSNR_DB, sorted(scaler_psnr)[:3]
    assert np.mean(scaler_psnr) >= CROP_MEAN_PSNR_DB


def test_crop_of_a_face_on_a_1080p_frame_matches_the_rgb_path(composed, grid_clip: Path, tmp_path: Path,
                                                              scrfd_detector):
    """The face stage's own square (crops.scale around the detected face) on a real 1080p frame."""
    from pipelines.faces.crop import square_crop

    frames = _frames(_source(composed, grid_clip, "upscaled_1080p.mp4"), tmp_path, 3)
    for frame in frames:
        (face,) = detect_frame(scrfd_detector, frame, FaceDetectionConfig())
        square = square_crop(face.box, frame.width, frame.height, 1.5)
        assert square.side > 384  # a 1080p face: the crop shrinks
        crop = frame.crop(square.x, square.y, square.side, 384).to_ndarray(format="rgb24")
        rgb = scaled_crop_rgb(frame.region_rgb(square.x, square.y, square.x + square.side, square.y + square.side), 384)
        previous = ClipEncoder._encoder_frame(rgb, 384, VideoReformatter()).to_ndarray(format="rgb24")
        assert _psnr(crop, previous) >= CROP_MEAN_PSNR_DB


def test_small_and_unplanar_frames_crop_from_rgb(composed, grid_clip: Path, tmp_path: Path):
    """GRID (its own detection frame) and packed RGB keep the RGB path: the crop is the cv2 resize."""
    for frame in [*_frames(grid_clip, tmp_path, 1), *_frames(_source(composed, grid_clip, "bgr0.mkv"), tmp_path, 1)]:
        assert isinstance(frame.pixels, RgbPixels)
        crop = frame.crop(10, 20, 201, 384)
        assert crop.format.name == "rgb24"
        expected = scaled_crop_rgb(frame.region_rgb(10, 20, 211, 221), 384)
        assert np.array_equal(crop.to_ndarray(), expected)
    with pytest.raises(ValueError, match="not inside"):
        frame.crop(frame.width - 100, 0, 101, 384)


@pytest.mark.parametrize("name", ["upscaled_1080p.mp4", "bt709_1080p.mp4", "yuvj422p.avi", "yuv420p10le.mkv",
                                  "rotated90.mp4", "bgr0.mkv"])
def test_region_grey_is_the_grey_of_the_rgb_region(composed, grid_clip: Path, tmp_path: Path, name: str):
    """Grey read from the luma plane (BT.601 sources) is cv2's grey of the RGB region up to
    libswscale's constant offset of about one level and clipping; other matrices convert RGB."""
    from pipelines.faces.quality import _box_sharpness, frame_face_sharpness

    frame = _frames(_source(composed, grid_clip, name), tmp_path, 1)[0]
    x0, y0 = frame.width // 3 + 1, frame.height // 4 + 1
    x1, y1 = x0 + frame.width // 4, y0 + frame.height // 2
    grey = frame.region_grey(x0, y0, x1, y1)
    expected = cv2.cvtColor(np.ascontiguousarray(frame.region_rgb(x0, y0, x1, y1)), cv2.COLOR_RGB2GRAY)
    assert grey.shape == expected.shape and grey.dtype == np.uint8
    shrunk = frame.region_grey(x0, y0, x1, y1, shrink=3)
    assert shrunk.shape == ((y1 - y0) // 3, (x1 - x0) // 3)
    difference = grey.astype(np.int16) - expected
    shrunk_difference = shrunk.astype(np.int16) - area_shrunk(expected, 3)
    if name in ("bt709_1080p.mp4", "bgr0.mkv"):
        assert not difference.any() and not shrunk_difference.any()
        return
    offset = np.median(difference)
    assert abs(offset) <= 2 and np.mean(np.abs(difference - offset) > 1) < 0.02
    assert np.mean(np.abs(shrunk_difference - offset) > 1) < 0.02
    # The sharpness measure read from either is the same figure within a few percent.
    box = (x0 + 0.3, y0 + 0.6, x1 - 0.2, y1 - 0.4)
    assert frame_face_sharpness(frame, box) == pytest.approx(_box_sharpness(frame.region_rgb(x0, y0, x1, y1)),
                                                             rel=0.05)


def test_shot_detector_picture_straight_from_the_planes(composed, grid_clip: Path, tmp_path: Path):
    """The shot detector's 320 px picture from libswscale shows what shrinking the detection frame showed."""
    for name in ("upscaled_1080p.mp4", "rotated90.mp4"):
        frame = _frames(_source(composed, grid_clip, name), tmp_path, 1)[0]
        width, height = 320, round(frame.height * 320 / frame.width)
        direct = frame.shrunk_bgr(width, height)
        assert direct.shape == (height, width, 3)
        via_detection_frame = shrunk_rgb_to_bgr(frame.detection_rgb, width, height)
        assert np.abs(direct.astype(np.int16) - via_detection_frame).mean() < 2.0


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_detections_on_the_small_frame_map_back_to_source_pixels(composed, grid_clip: Path, tmp_path: Path,
                                                                  scrfd_detector):
    config = FaceDetectionConfig()
    path = _source(composed, grid_clip, "upscaled_1080p.mp4")
    small = _frames(path, tmp_path, 10)
    full = _frames(path, tmp_path, 10, detection_max_px=None)
    assert small[0].detection_rgb.shape[1] == DETECTION_PX and full[0].detection_rgb.shape[0] == 1080
    for a, b in zip(small, full):
        (on_small,), (on_full,) = detect_frame(scrfd_detector, a, config), detect_frame(scrfd_detector, b, config)
        assert _iou(on_small.box, on_full.box) >= 0.9
        assert on_small.longer_side > 300  # in source pixels, not the detection frame's
        spread = np.abs(np.array(on_small.keypoints) - np.array(on_full.keypoints)).max()
        assert spread < 0.05 * on_full.longer_side


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_detections_on_a_rotated_source_are_in_display_pixels(composed, grid_clip: Path, tmp_path: Path,
                                                              scrfd_detector, degrees: int):
    config = FaceDetectionConfig()
    upright = _frames(_source(composed, grid_clip, "rotated0.mp4"), tmp_path, 5)
    rotated = _frames(_source(composed, grid_clip, f"rotated{degrees}.mp4"), tmp_path, 5)
    for a, b in zip(upright, rotated):
        (expected,) = detect_frame(scrfd_detector, a, config)
        (found,) = detect_frame(scrfd_detector, b, config)
        assert _iou(found.box, expected.box) >= 0.9
        assert np.abs(np.array(found.keypoints) - np.array(expected.keypoints)).max() < 0.05 * expected.longer_side
        # The face's pixels, read from the turned planes, are the upright face.
        box = tuple(int(round(v)) for v in expected.box)
        difference = np.abs(b.region_rgb(*box).astype(np.int16) - a.region_rgb(*box)).mean()
        assert difference < 3.0


@pytest.mark.parametrize("name", ["yuv444p.mp4", "yuvj422p.avi", "yuv420p10le.mkv", "odd_1001x721.mkv", "bgr0.mkv"])
def test_other_pixel_formats_detect_the_face(composed, grid_clip: Path, tmp_path: Path, scrfd_detector, name: str):
    frames = _frames(_source(composed, grid_clip, name), tmp_path, 3)
    for frame in frames:
        (face,) = detect_frame(scrfd_detector, frame, FaceDetectionConfig())
        # GRID's face fills about half the frame's height once scaled to 720 rows.
        assert 0.3 * frame.height < face.longer_side < 0.9 * frame.height
        crop = frame.region_rgb(*map(int, face.box))
        assert crop.shape[0] > 100 and crop.std() > 10  # real face pixels, not a blank plane
