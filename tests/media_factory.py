"""Compose test media from the real GRID clips with ffmpeg, into a folder given by the caller.

Nothing here is stored in the repository: tests call these functions into pytest's tmp
folders. :class:`MediaCache` makes each composed file once per test session.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Callable

FFMPEG = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
H264_AAC = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac"]
GAP_COLOUR = "blue"
FPS = 25
AUDIO_RATE = 44100


def run_ffmpeg(args: list[str]) -> None:
    proc = subprocess.run([*FFMPEG, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")


def ffprobe(path: Path, *extra: str) -> dict:
    """ffprobe's JSON for streams and format (plus ``extra`` options such as -count_frames)."""
    proc = subprocess.run(["ffprobe", "-v", "error", *extra, "-show_streams", "-show_format", "-of", "json", str(path)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def _video_info(clip: Path) -> tuple[int, int, float]:
    info = ffprobe(clip)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    duration = float(video.get("duration") or info["format"]["duration"])
    return int(video["width"]), int(video["height"]), duration


def concat_with_gap(clip: Path, gap_s: float, out: Path) -> Path:
    """``clip`` + ``gap_s`` seconds of a solid blue frame (no face, silent audio) + ``clip``, as H.264/AAC mp4.

    The clip's audio is padded/trimmed to its video duration so the three parts stay in sync.
    """
    width, height, duration = _video_info(clip)
    audio_norm = f"aresample={AUDIO_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo"
    graph = (
        f"[0:v]fps={FPS},format=yuv420p,setsar=1,split[v0][v2];"
        f"[1:v]format=yuv420p,setsar=1[v1];"
        f"[0:a]{audio_norm},apad,atrim=duration={duration:.6f},asplit[a0][a2];"
        f"[2:a]{audio_norm},atrim=duration={gap_s:.6f}[a1];"
        "[v0][a0][v1][a1][v2][a2]concat=n=3:v=1:a=1[v][a]"
    )
    run_ffmpeg(["-i", str(clip),
                "-f", "lavfi", "-i", f"color=c={GAP_COLOUR}:s={width}x{height}:r={FPS}:d={gap_s:.6f}",
                "-f", "lavfi", "-i", f"anullsrc=r={AUDIO_RATE}:cl=stereo",
                "-filter_complex", graph, "-map", "[v]", "-map", "[a]", *H264_AAC, str(out)])
    return out


def side_by_side(left: Path, right: Path, out: Path, audio_from: str = "left") -> Path:
    """Two clips of equal height next to each other (two faces), audio from one of them only."""
    run_ffmpeg(["-i", str(left), "-i", str(right),
                "-filter_complex", "[0:v][1:v]hstack=inputs=2,format=yuv420p[v]",
                "-map", "[v]", "-map", "0:a:0" if audio_from == "left" else "1:a:0", *H264_AAC, "-shortest", str(out)])
    return out


def silenced(clip: Path, out: Path) -> Path:
    """``clip``'s video with its audio replaced by digital silence of the same length."""
    run_ffmpeg(["-i", str(clip), "-f", "lavfi", "-i", f"anullsrc=r={AUDIO_RATE}:cl=mono",
                "-map", "0:v", "-map", "1:a", "-shortest", *H264_AAC, str(out)])
    return out


def to_mp4(clip: Path, out: Path, faststart: bool = True) -> Path:
    """Re-encode ``clip`` to H.264/AAC mp4 (moov atom first when ``faststart``)."""
    run_ffmpeg(["-i", str(clip), *H264_AAC, *(["-movflags", "+faststart"] if faststart else []), str(out)])
    return out


def truncated_copy(clip: Path, out: Path, keep_fraction: float, faststart: bool = True) -> Path:
    """An mp4 of ``clip`` cut after ``keep_fraction`` of its bytes (a download that stopped).

    With ``faststart`` the index survives, so the file probes fine and fails while decoding;
    without it the moov atom at the end is lost and even probing fails.
    """
    full = out.with_name(out.stem + ".full.mp4")
    to_mp4(clip, full, faststart=faststart)
    data = full.read_bytes()
    full.unlink()
    out.write_bytes(data[: int(len(data) * keep_fraction)])
    return out


def text_as_mp4(out: Path) -> Path:
    """A plain text file with a video file name."""
    out.write_text("This is not a video, whatever its name says.\n" * 20)
    return out


def empty_file(out: Path) -> Path:
    out.write_bytes(b"")
    return out


def audio_only(clip: Path, out: Path) -> Path:
    run_ffmpeg(["-i", str(clip), "-vn", "-c:a", "aac", str(out)])
    return out


def video_only(clip: Path, out: Path) -> Path:
    run_ffmpeg(["-i", str(clip), "-an", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(out)])
    return out


def rotated_copy(clip: Path, out: Path, degrees: int = 90) -> Path:
    """An mp4 of ``clip`` whose pixels are stored unchanged, with a display rotation of ``degrees``.

    ``-display_rotation`` (ffmpeg >= 6) is tried first; ffmpeg 5.1 only has the legacy
    ``rotate`` stream tag, which its mov muxer turns into a display matrix.
    """
    plain = out.with_name(out.stem + ".plain.mp4")
    to_mp4(clip, plain)
    try:
        run_ffmpeg(["-display_rotation", str(degrees), "-i", str(plain), "-c", "copy", str(out)])
    except RuntimeError:
        run_ffmpeg(["-i", str(plain), "-c", "copy", "-metadata:s:v", f"rotate={degrees}", str(out)])
    plain.unlink()
    return out


def mixed_speakers(clip: Path, other: Path, out: Path, delay_s: float = 0.0) -> Path:
    """``clip``'s video with its audio mixed with ``other``'s speech (optionally delayed): two voices at once."""
    delay_ms = int(delay_s * 1000)
    run_ffmpeg(["-i", str(clip), "-i", str(other), "-filter_complex",
                f"[1:a]adelay={delay_ms}|{delay_ms}[b];[0:a][b]amix=inputs=2:duration=first:normalize=0[a]",
                "-map", "0:v", "-map", "[a]", *H264_AAC, str(out)])
    return out


def espeak_wav(text: str, voice: str, out: Path) -> Path:
    """Synthetic speech from espeak-ng (a real voice for ``voice``: en, de, fr, ...)."""
    proc = subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(out), text], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"espeak-ng failed: {proc.stderr}")
    return out


def dubbed(clip: Path, speech: Path, out: Path, lead_in_s: float = 0.3, loops: int = 1) -> Path:
    """``clip``'s video (played ``loops`` + 1 times) with its audio replaced by ``speech`` after
    ``lead_in_s`` of silence, cut to the video."""
    delay_ms = int(lead_in_s * 1000)
    run_ffmpeg(["-stream_loop", str(loops), "-i", str(clip), "-i", str(speech), "-filter_complex",
                f"[1:a]aresample={AUDIO_RATE},adelay={delay_ms}|{delay_ms},apad[a]",
                "-map", "0:v", "-map", "[a]", "-shortest", *H264_AAC, str(out)])
    return out


class MediaCache:
    """Makes each named composed file once in ``root`` and hands back its path afterwards."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def get(self, name: str, make: Callable[..., Path], *args, **kwargs) -> Path:
        """``make(*args, out, **kwargs)`` into ``root/name`` unless that file already exists."""
        out = self.root / name
        if not out.exists():
            tmp = out.with_name(".tmp-" + name)
            make(*args, tmp, **kwargs)
            tmp.rename(out)
        return out
