"""The clip encoder (x264 in a thread of the stage's process) and the mux (pipelines/media/encode.py).

Pictures are real: face crops of a GRID clip (RGB, as the RGB path and the stages cutting clips
give them) and crops scaled from the planes of a 1080p frame composed from it (yuv420p frames).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from pipelines.config import PipelineConfig
from pipelines.fixtures import media as mf
from pipelines.media.decode import decode_source, probe, read_video_frames, scaled_crop_rgb
from pipelines.media.encode import ClipEncoder, mux_clip
from pipelines.media.wav import WavSink, read_wav, write_wav

CONFIG = PipelineConfig()
SIZE = CONFIG.crops.size_px
FPS = CONFIG.crops.fps


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _frames(path: Path, tmp_path: Path, count: int):
    sink = WavSink(tmp_path / f"{path.stem}.wav", CONFIG.audio.sample_rate)
    out = []
    for frame in decode_source(path, sink, probe(path).rotation_deg, detection_max_px=CONFIG.faces.detection_frame_px):
        out.append(frame)
        if len(out) == count:
            break
    sink.close()
    return out


@pytest.fixture(scope="module")
def grid_crops(grid_clip: Path, tmp_path_factory) -> list[np.ndarray]:
    """RGB face crops of a GRID clip's first 30 frames (a 200 px square enlarged to 384)."""
    frames = _frames(grid_clip, tmp_path_factory.mktemp("grid"), 30)
    return [scaled_crop_rgb(frame.region_rgb(80, 40, 280, 240), SIZE) for frame in frames]


def _encode(path: Path, pictures, start_after: int = 1) -> ClipEncoder:
    encoder = ClipEncoder(path, CONFIG, 0.0, start_after)
    for number, picture in enumerate(pictures):
        encoder.add(number / FPS, 1 / FPS, picture)
    return encoder


def test_rgb_crops_are_encoded_at_the_output_rate(grid_crops, tmp_path: Path):
    encoder = _encode(tmp_path / "clip.mp4", grid_crops)
    assert encoder.finish() and not encoder.running
    decoded = read_video_frames(tmp_path / "clip.mp4")
    assert len(decoded) == encoder.frames_out == len(grid_crops)
    with av.open(str(tmp_path / "clip.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", SIZE, SIZE)
        assert stream.average_rate == FPS and stream.codec_context.pix_fmt == "yuv420p"
    # crf 18 over real crops: the clip shows the crops (chroma subsampling and x264 lose little).
    assert min(_psnr(a, b) for a, b in zip(decoded, grid_crops)) > 35


def _upscaled_1080p(clip: Path, out: Path) -> Path:
    mf.run_ffmpeg(["-i", str(clip), "-t", "1", "-vf", "scale=-2:1080,setsar=1", "-c:v", "libx264", "-preset",
                   "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(out)])
    return out


def test_frames_scaled_from_the_planes_pass_through_to_x264(composed, grid_clip: Path, tmp_path: Path):
    path = composed.get("encode_upscaled_1080p.mp4", _upscaled_1080p, grid_clip)
    crops = [frame.crop(300, 150, 700, SIZE) for frame in _frames(path, tmp_path, 12)]
    assert all(crop.format.name == "yuv420p" for crop in crops)
    encoder = _encode(tmp_path / "clip.mp4", crops)
    assert encoder.finish()
    decoded = read_video_frames(tmp_path / "clip.mp4")
    assert len(decoded) == len(crops)
    assert min(_psnr(a, crop.to_ndarray(format="rgb24")) for a, crop in zip(decoded, crops)) > 38


def test_the_same_crops_give_the_same_bytes(grid_crops, tmp_path: Path):
    for name in ("a.mp4", "b.mp4"):
        assert _encode(tmp_path / name, grid_crops[:12]).finish()
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


def test_close_ends_the_stream_without_waiting_and_finish_waits_for_the_file(grid_crops, tmp_path: Path):
    encoder = _encode(tmp_path / "clip.mp4", grid_crops)
    encoder.close()
    assert encoder.closed
    with pytest.raises(RuntimeError, match="after the stream was closed"):
        encoder.add(len(grid_crops) / FPS, 1 / FPS, grid_crops[0])
    assert encoder.finish() and not encoder.running
    assert len(read_video_frames(tmp_path / "clip.mp4")) == len(grid_crops)


@pytest.mark.parametrize("source_fps", [25.0, 30.0, 60.0, 24000 / 1001, 12.5])
def test_shows_is_whether_add_writes_the_picture(grid_crops, tmp_path: Path, source_fps: float):
    """The face stage crops and measures only the source frames an output frame shows."""
    encoder = ClipEncoder(tmp_path / "unstarted.mp4", CONFIG, 1.0, start_after=1000)
    shown_count = 0
    for number in range(120):
        time_s, duration_s = 1.0 + number / source_fps, 1 / source_fps
        written_before = encoder.frames_out
        shown = encoder.shows(time_s, duration_s)
        encoder.add(time_s, duration_s, grid_crops[0])
        assert shown == (encoder.frames_out > written_before)
        shown_count += shown
    assert shown_count == min(120, encoder.frames_out)  # slower sources repeat frames, faster ones drop some
    assert encoder.finish() is False


def test_too_few_frames_start_no_encoder(grid_crops, tmp_path: Path):
    encoder = _encode(tmp_path / "short.mp4", grid_crops[:5], start_after=24)
    assert not encoder.running
    assert encoder.finish() is False and encoder.finish() is False
    assert not (tmp_path / "short.mp4").exists()


def test_a_failing_encoder_raises_in_the_caller_instead_of_hanging(grid_crops, tmp_path: Path):
    encoder = _encode(tmp_path / "bad.mp4", grid_crops[:3])
    with pytest.raises(RuntimeError, match="x264 encoder failed.*200x200"):
        for number in range(3, 3 + 40):  # more than the queue holds: a dead thread must not block add()
            encoder.add(number / FPS, 1 / FPS, grid_crops[0][:200, :200])
        encoder.finish()
    encoder.abort()
    assert not encoder.running


def test_abort_stops_the_thread(grid_crops, tmp_path: Path):
    encoder = _encode(tmp_path / "aborted.mp4", grid_crops)
    assert encoder.running
    encoder.abort()
    assert not encoder.running


def test_mux_copies_the_video_and_adds_the_wav_as_aac(grid_crops, tmp_path: Path):
    assert _encode(tmp_path / "video.mp4", grid_crops).finish()
    rng = np.random.default_rng(0)
    rate = CONFIG.audio.sample_rate
    samples = (np.sin(np.arange(rate) * 2 * np.pi * 220 / rate) * 8000 + rng.normal(0, 200, rate)).astype(np.int16)
    write_wav(tmp_path / "audio.wav", samples, rate)
    with av.open(str(tmp_path / "video.mp4")) as container:
        video_packets = [bytes(p) for p in container.demux(video=0) if p.size]
    outputs = []
    for name in ("a", "b"):
        (tmp_path / f"{name}_video.mp4").write_bytes((tmp_path / "video.mp4").read_bytes())
        mux_clip(tmp_path / f"{name}_video.mp4", tmp_path / "audio.wav", tmp_path / f"{name}.mp4", CONFIG)
        assert not (tmp_path / f"{name}_video.mp4").exists()
        outputs.append((tmp_path / f"{name}.mp4").read_bytes())
    assert outputs[0] == outputs[1]  # bit-exact: no version strings, no dates
    with av.open(str(tmp_path / "a.mp4")) as container:
        assert [bytes(p) for p in container.demux(video=0) if p.size] == video_packets
    with av.open(str(tmp_path / "a.mp4")) as container:
        audio = container.streams.audio[0]
        assert (audio.codec_context.name, audio.rate, audio.channels) == ("aac", rate, 1)
        decoded = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])
    # AAC at 64 kbit/s keeps the tone: the decoded samples (priming trimmed) correlate with the wav's.
    reference = read_wav(tmp_path / "audio.wav")[0].astype(np.float32) / 32768
    assert abs(len(decoded) - len(reference)) <= 1024
    count = min(len(decoded), len(reference))
    assert np.corrcoef(decoded[:count], reference[:count])[0, 1] > 0.95


def test_mux_refuses_audio_at_another_rate(grid_crops, tmp_path: Path):
    assert _encode(tmp_path / "video.mp4", grid_crops[:5]).finish()
    write_wav(tmp_path / "audio.wav", np.zeros(8000, np.int16), 8000)
    with pytest.raises(ValueError, match="8000 Hz"):
        mux_clip(tmp_path / "video.mp4", tmp_path / "audio.wav", tmp_path / "out.mp4", CONFIG)
