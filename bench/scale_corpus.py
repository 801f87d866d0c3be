"""The scale bench's inputs: the 1x source from GRID clips, its N-times copies, and the model folder.

FLAME and captions use whatever the model folder has; a missing SHeaP or Qwen-VL is replaced
by the tiny stand-ins of pipelines/fixtures, built into a folder of links beside the real weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipelines.fixtures.media import AUDIO_RATE, FPS, H264_AAC, run_ffmpeg
from pipelines.media import decode as media

TINY_SHEAP = "tiny scripted SHeaP stand-in (pipelines/fixtures/sheap.py build_scripted_sheap), random weights"
TINY_QWEN = "tiny random Qwen2-VL (pipelines/fixtures/qwen_vl.py build_tiny_qwen2vl)"


def make_base_source(clips: list[Path], out: Path) -> Path:
    """``clips`` joined end to end as one H.264/AAC mp4 (each clip's audio cut/padded to its video)."""
    inputs, graph, labels = [], [], []
    for n, clip in enumerate(clips):
        inputs += ["-i", str(clip)]
        graph.append(f"[{n}:v]fps={FPS},format=yuv420p,setsar=1[v{n}];"
                     f"[{n}:a]aresample={AUDIO_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo,"
                     f"apad,atrim=duration={media.probe(clip).duration_s:.6f}[a{n}]")
        labels.append(f"[v{n}][a{n}]")
    filters = ";".join(graph) + ";" + "".join(labels) + f"concat=n={len(clips)}:v=1:a=1[v][a]"
    run_ffmpeg([*inputs, "-filter_complex", filters, "-map", "[v]", "-map", "[a]", *H264_AAC, str(out)])
    return out


def make_scaled_source(base: Path, times: int, out: Path) -> Path:
    """``base`` repeated ``times`` times, stream-copied (same content, ``times`` x the duration)."""
    listing = out.with_suffix(".txt")
    listing.write_text("".join(f"file '{base.resolve()}'\n" for _ in range(times)))
    run_ffmpeg(["-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(out)])
    listing.unlink()
    return out


def base_clips(media_dir: Path, count: int) -> list[Path]:
    clips = sorted(media_dir.glob("*.mpg"))
    if not clips:
        raise SystemExit(f"error: no GRID clips (*.mpg) in {media_dir}")
    return [clips[n % len(clips)] for n in range(count)]


def prepare_model_dir(model_dir: Path, work: Path) -> tuple[Path, dict[str, str]]:
    """A model folder with every entry of ``model_dir`` plus tiny FLAME/caption stand-ins where
    the real ones are missing; returns (folder, what each of those two stages runs)."""
    from pipelines.models import ModelStore

    store = ModelStore(model_dir)
    have_flame = store.status("sheap").state in ("ok", "unpinned")
    have_qwen = store.status("qwen_vl").state in ("ok", "unpinned")
    used = {"flame": "SHeaP (real weights)" if have_flame else TINY_SHEAP,
            "captions": "Qwen-VL (real weights)" if have_qwen else TINY_QWEN}
    if have_flame and have_qwen:
        return model_dir, used
    out = work / "models"
    shutil.rmtree(out, ignore_errors=True)  # links and stand-ins only: rebuilt the same way each time
    out.mkdir(parents=True)
    for entry in model_dir.iterdir():  # links, never copies: weights stay where they are
        (out / entry.name).symlink_to(entry.resolve())
    if not have_flame:
        from pipelines.fixtures.sheap import build_scripted_sheap

        build_scripted_sheap(out / "sheap" / "sheap.pt")
    if not have_qwen:
        from pipelines.fixtures.qwen_vl import build_tiny_qwen2vl

        build_tiny_qwen2vl(out / "qwen-vl")
    return out, used
