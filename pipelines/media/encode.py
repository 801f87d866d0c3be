"""Writing media: face crops streamed into H.264 at the output rate, and the final mp4 with its audio."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from pipelines.config import PipelineConfig


def run_ffmpeg(args: list[str]) -> None:
    """Run ffmpeg quietly; raise with its last error lines on failure."""
    proc = subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")


class ClipEncoder:
    """Turns source-rate crops into an H.264 stream at a fixed output rate.

    Output frame k shows the source frame displayed at the centre of its slot,
    ``start + (k + 0.5) / fps``, which resamples any input rate (VFR included) without
    drift. ffmpeg is started only once ``start_after`` frames exist, so spurious short
    tracks never spawn an encoder.
    """

    def __init__(self, path: Path, config: PipelineConfig, start_s: float, start_after: int):
        self.path = path
        self.config = config
        self.start_s = start_s
        self.start_after = start_after
        self.frames_out = 0
        self._pending: list[np.ndarray] = []
        self._proc: subprocess.Popen | None = None
        self._log = None
        self._finished: bool | None = None

    def _spawn(self) -> None:
        size, enc = self.config.crops.size_px, self.config.encode
        self._log = open(self.path.with_suffix(".ffmpeg.log"), "w")
        self._proc = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
             "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size}x{size}", "-r", f"{self.config.crops.fps:g}",
             "-i", "-", "-an", "-c:v", enc.video_codec, "-preset", enc.preset, "-crf", str(enc.crf),
             "-pix_fmt", "yuv420p", "-threads", str(enc.threads), "-x264-params", f"threads={enc.threads}",
             "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1", str(self.path)],
            stdin=subprocess.PIPE, stderr=self._log,
        )

    def _write(self, rgb: np.ndarray) -> None:
        if self._proc is None:
            self._pending.append(rgb)
            if len(self._pending) < self.start_after:
                return
            self._spawn()
            pending, self._pending = self._pending, []
            for item in pending:
                self._proc.stdin.write(item.tobytes())
            return
        self._proc.stdin.write(rgb.tobytes())

    def add(self, time_s: float, duration_s: float, rgb: np.ndarray) -> None:
        fps = self.config.crops.fps
        end = time_s + duration_s
        while self.start_s + (self.frames_out + 0.5) / fps < end:
            self._write(rgb)
            self.frames_out += 1

    def finish(self) -> bool:
        """Close the stream; False when too few frames arrived to be worth encoding. Called as soon
        as a track ends, so a source with many shots never holds an encoder per shot; later calls
        return the first answer."""
        if self._finished is None:
            self._finished = self._close()
        return self._finished

    def _close(self) -> bool:
        if self._proc is None:
            self._pending = []
            return False
        self._proc.stdin.close()
        code = self._proc.wait()
        self._log.close()
        if code != 0:
            raise RuntimeError(f"ffmpeg encoder failed for {self.path}: "
                               f"{self.path.with_suffix('.ffmpeg.log').read_text()[-2000:]}")
        self.path.with_suffix(".ffmpeg.log").unlink(missing_ok=True)
        return True

    def abort(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._log:
            self._log.close()


def mux_clip(video_only: Path, wav: Path, out: Path, config: PipelineConfig) -> None:
    """Final clip: the encoded video stream copied, the audio as AAC mono; bit-exact, temp video removed."""
    run_ffmpeg(["-i", str(video_only), "-i", str(wav), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
                "-c:a", config.encode.audio_codec, "-b:a", config.encode.audio_bitrate,
                "-ar", str(config.audio.sample_rate), "-ac", "1", "-fflags", "+bitexact",
                "-flags:a", "+bitexact", "-map_metadata", "-1", "-movflags", "+faststart", str(out)])
    video_only.unlink()
