"""Writing media: face crops streamed into H.264 at the output rate, and the final mp4 with its audio.

Both run in this process with PyAV (its FFmpeg's libx264 and native AAC encoder): an ffmpeg
process per track and another per clip cost more to start than the work of a short clip
(0.09 s each, and a clip's mux took 0.19 s against 0.05 s; bench/results/decode_less.md).
"""

from __future__ import annotations

import math
import queue
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation, VideoReformatter

from pipelines.config import PipelineConfig
from pipelines.media.wav import read_wav

# What x264 is given: yuv420p in BT.601's matrix and limited range. The clips are written without
# colour tags, which decoders read as exactly this (ffmpeg's rgb24 -> yuv420p default, which made
# the clips before). Pictures in other formats or colours are converted by libswscale with
# bit-exact, accurately rounded arithmetic, so the same crops give the same bytes on every CPU.
ENCODER_PIXEL_FORMAT = "yuv420p"
ENCODER_COLOURS = {"dst_colorspace": Colorspace.ITU601, "dst_color_range": ColorRange.MPEG}
EXACT_SCALING = Interpolation.BITEXACT | Interpolation.ACCURATE_RND
# Pictures waiting for the encoder thread: enough to ride over x264's uneven frame times.
_QUEUE_PICTURES = 8


def _is_encoder_ready(picture: av.VideoFrame) -> bool:
    return (picture.format.name == ENCODER_PIXEL_FORMAT and picture.colorspace in (5, 6)
            and picture.color_range == ColorRange.MPEG)


class ClipEncoder:
    """Turns source-rate crops into an H.264 stream at a fixed output rate.

    Output frame k shows the source frame displayed at the centre of its slot,
    ``start + (k + 0.5) / fps``, which resamples any input rate (VFR included) without
    drift. The encoder starts only once ``start_after`` frames exist, so spurious short
    tracks never open one.

    A picture is an (size, size, 3) RGB array or an ``av.VideoFrame`` of size x size (a crop
    made straight in ENCODER_PIXEL_FORMAT passes through untouched). x264 runs in a thread of
    this encoder's own, fed through a short queue: libx264 and libswscale release the GIL, so
    encoding overlaps the caller's decoding and cropping.
    """

    def __init__(self, path: Path, config: PipelineConfig, start_s: float, start_after: int):
        self.path = path
        self.config = config
        self.start_s = start_s
        self.start_after = start_after
        self.frames_out = 0
        self._pending: list[np.ndarray | av.VideoFrame] = []
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._aborted = False
        self._closed = False
        self._finished: bool | None = None

    @property
    def running(self) -> bool:
        """Whether the encoder thread is alive (started and not yet finished or aborted)."""
        return self._thread is not None and self._thread.is_alive()

    def _start(self) -> None:
        self._queue = queue.Queue(maxsize=_QUEUE_PICTURES)
        self._thread = threading.Thread(target=self._encode_all, name=f"x264 {self.path.name}", daemon=True)
        self._thread.start()

    def _encode_all(self) -> None:
        """The encoder thread: opens the output, encodes every queued picture, flushes and closes."""
        size, enc = self.config.crops.size_px, self.config.encode
        rate = Fraction(self.config.crops.fps).limit_denominator(1001)
        time_base = 1 / rate
        scaler = VideoReformatter()
        try:
            with av.open(str(self.path), "w", format="mp4", container_options={"fflags": "+bitexact"}) as output:
                stream = output.add_stream(enc.video_codec, rate=rate, options={
                    "preset": enc.preset, "crf": str(enc.crf), "x264-params": f"threads={enc.threads}",
                    "flags": "+bitexact"})
                stream.width = stream.height = size
                stream.pix_fmt = ENCODER_PIXEL_FORMAT
                # x264's output depends on its threads (config.encode.threads): frame threads, as the
                # ffmpeg CLI's -threads gave it (PyAV's default would make sliced threads).
                stream.codec_context.thread_count = enc.threads
                stream.codec_context.thread_type = "FRAME"
                number = 0
                while (picture := self._queue.get()) is not None:
                    if self._aborted:
                        continue
                    frame = self._encoder_frame(picture, size, scaler)
                    frame.pts, frame.time_base = number, time_base
                    number += 1
                    output.mux(stream.encode(frame))
                if not self._aborted:
                    output.mux(stream.encode(None))
        except BaseException as error:  # raised in the caller's thread by the next add() or finish()
            self._error = error
            while self._queue.get() is not None:  # unblock a caller waiting on a full queue
                pass

    @staticmethod
    def _encoder_frame(picture: np.ndarray | av.VideoFrame, size: int, scaler: VideoReformatter) -> av.VideoFrame:
        if isinstance(picture, np.ndarray):
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
        if (picture.width, picture.height) != (size, size):
            raise ValueError(f"a {picture.width}x{picture.height} picture for a {size}x{size} clip")
        if _is_encoder_ready(picture):
            return picture
        return scaler.reformat(picture, format=ENCODER_PIXEL_FORMAT,
                               interpolation=Interpolation.BICUBIC | EXACT_SCALING, threads=1, **ENCODER_COLOURS)

    def _put(self, picture: np.ndarray | av.VideoFrame | None) -> None:
        while True:
            if self._error is not None:
                raise RuntimeError(f"x264 encoder failed for {self.path}: {self._error}") from self._error
            try:
                self._queue.put(picture, timeout=0.5)
                return
            except queue.Full:
                continue

    def _write(self, picture: np.ndarray | av.VideoFrame) -> None:
        if self._closed:
            raise RuntimeError(f"{self.path.name}: a picture after the stream was closed")
        if self._thread is None:
            self._pending.append(picture)
            if len(self._pending) < self.start_after:
                return
            self._start()
            pending, self._pending = self._pending, []
            for item in pending:
                self._put(item)
            return
        self._put(picture)

    def _slots_before(self, time_s: float) -> int:
        """Output frames whose slot centre comes before ``time_s`` (add()'s own comparison)."""
        fps = self.config.crops.fps
        slots = max(0, math.ceil((time_s - self.start_s) * fps - 0.5))
        while slots > 0 and not self.start_s + (slots - 0.5) / fps < time_s:
            slots -= 1
        while self.start_s + (slots + 0.5) / fps < time_s:
            slots += 1
        return slots

    def shows(self, time_s: float, duration_s: float) -> bool:
        """Whether a picture shown from ``time_s`` for ``duration_s`` fills an output frame: at 24 fps
        one source frame in 25 is never shown (one in 5 of 30 fps, more than half of 60 fps), and
        its crop need not be made."""
        return self._slots_before(time_s + duration_s) > self._slots_before(time_s)

    def add(self, time_s: float, duration_s: float, picture: np.ndarray | av.VideoFrame) -> None:
        """The source picture shown from ``time_s`` for ``duration_s``."""
        fps = self.config.crops.fps
        end = time_s + duration_s
        while self.start_s + (self.frames_out + 0.5) / fps < end:
            self._write(picture)
            self.frames_out += 1

    @property
    def closed(self) -> bool:
        """Whether the stream has ended (:meth:`close`): no picture is taken after this."""
        return self._closed

    def close(self) -> None:
        """End the stream without waiting: x264 flushes in its thread while the caller goes on.
        Called as soon as a track ends, so a source of many shots never holds an encoder per shot."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            self._pending = []
        else:
            self._put(None)

    def finish(self) -> bool:
        """Close the stream and wait for the file; False when too few frames arrived to be worth
        encoding. Later calls return the first answer."""
        if self._finished is None:
            self.close()
            if self._thread is not None:
                self._thread.join()
                if self._error is not None:
                    raise RuntimeError(f"x264 encoder failed for {self.path}: {self._error}") from self._error
            self._finished = self._thread is not None
        return self._finished

    def abort(self) -> None:
        """Stop without flushing (the caller removes the file); never raises."""
        self._aborted = True
        if self.running:
            if not self._closed:
                # The thread takes it: it skips the pictures before it, or drains after an error.
                self._queue.put(None)
            self._closed = True
            self._thread.join()


def mux_clip(video_only: Path, wav: Path, out: Path, config: PipelineConfig) -> None:
    """Final clip: the encoded video stream copied, the audio (a PCM16 mono wav) as AAC mono;
    bit-exact, temp video removed.

    Muxed in this process by PyAV (its FFmpeg's native AAC encoder, as ffmpeg's ``-c:a aac``).
    The AAC encoder is most of the cost: 12 ms per second of audio.
    """
    samples, rate = read_wav(wav)
    if rate != config.audio.sample_rate:
        raise ValueError(f"{wav.name}: {rate} Hz audio, the clips' audio is {config.audio.sample_rate} Hz")
    with av.open(str(video_only)) as source, av.open(str(out), "w", format="mp4", container_options={
            "movflags": "+faststart", "fflags": "+bitexact"}) as target:
        video_in = source.streams.video[0]
        video_out = target.add_stream_from_template(video_in)
        audio = target.add_stream(config.encode.audio_codec, rate=rate, options={
            "b": config.encode.audio_bitrate, "flags": "+bitexact"})
        audio.layout = "mono"
        for packet in source.demux(video_in):
            if packet.dts is None:  # the demuxer's empty packet at the end of the stream
                continue
            packet.stream = video_out
            target.mux(packet)
        if len(samples):
            # s16 -> the encoder's float planar samples exactly as libswresample converts them (x / 32768).
            frame = av.AudioFrame.from_ndarray((samples.astype(np.float32) / 32768.0).reshape(1, -1),
                                               format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
            target.mux(audio.encode(frame))
        target.mux(audio.encode(None))
    video_only.unlink()
