"""A corpus of messy inputs, composed from the real GRID clips with ffmpeg and espeak-ng.

Each entry of :data:`CORPUS` names one file in the input folder, the kind of bad input it
stands for, and what the pipeline must make of it: ``accepted`` (a source with at least
one clip in the shards), ``rejected`` with the exact source-level reason, or ``skipped``
(never registered as a source, listed in the manifest as a file with its reason).

    python tests/bad_input_corpus.py OUT_DIR      # build the corpus on disk for a manual run

builds ``OUT_DIR/input`` (the folder to point the pipeline at) and ``OUT_DIR/outside``
(the target of the symlink that leaves the input folder).
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from media_factory import (AUDIO_RATE, H264_AAC, MediaCache, audio_only, dubbed, empty_file, espeak_wav, ffprobe,
                           mixed_speakers, rotated_copy, run_ffmpeg, silenced, text_as_mp4, to_mp4, truncated_copy,
                           video_only)

ACCEPTED, REJECTED, SKIPPED = "accepted", "rejected", "skipped"
# A shell would run this if a name were ever pasted into a command line: no file may appear.
SHELL_NAME = "a b ü $(touch pwned);'x' `touch pwned2`.mp4"
TWO_HOURS_S = 7200
GERMAN = "Guten Morgen. Heute sprechen wir über das Wetter in Berlin und die Züge nach Hamburg."
FRENCH = "Bonjour à tous. Aujourd'hui nous parlons du temps qu'il fait à Paris et des trains pour Lyon."

Maker = Callable[[list[Path], Path, Path], None]  # (GRID clips, output file, scratch folder)


@dataclass(frozen=True)
class CorpusEntry:
    name: str  # file name inside the input folder
    kind: str
    status: str  # accepted / rejected / skipped
    reason: str | None  # the source's (or skipped file's) reason; None when accepted
    make: Maker
    note: str = ""


def _keep(maker: Callable[[Path, Path], Path], clip: int) -> Maker:
    return lambda clips, out, _scratch: maker(clips[clip], out) and None


def _variable_frame_rate(clips: list[Path], out: Path, _scratch: Path) -> None:
    # Dropping every third frame while keeping the timestamps gives 40 ms and 80 ms frame steps.
    run_ffmpeg(["-i", str(clips[2]), "-vf", r"select='not(eq(mod(n\,3)\,2))'", "-fps_mode", "vfr",
                *H264_AAC, str(out)])


def _very_large(clips: list[Path], out: Path, _scratch: Path) -> None:
    run_ffmpeg(["-i", str(clips[0]), "-t", "1", "-vf", "scale=7680:4320,fps=5", "-c:v", "libx264", "-preset",
                "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(out)])


def _one_frame(clips: list[Path], out: Path, scratch: Path) -> None:
    # Made in two steps: with -frames:v in the same command ffmpeg 5.1 writes no audio packets.
    still = scratch / "one-frame-video.mp4"
    run_ffmpeg(["-i", str(clips[0]), "-an", "-frames:v", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(still)])
    run_ffmpeg(["-i", str(still), "-i", str(clips[0]), "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac",
                str(out)])


def _rotated_phone(clips: list[Path], out: Path, scratch: Path) -> None:
    """Stored sideways with a display matrix that turns it upright, as a phone records portrait video.

    The sign of the matrix ffmpeg writes differs between versions: probe it, then store the
    pixels turned the other way so that the displayed picture is the upright clip.
    """
    probe_copy = rotated_copy(clips[3], scratch / "rotation-probe.mp4", 90)
    video = next(s for s in ffprobe(probe_copy)["streams"] if s["codec_type"] == "video")
    rotation = next((int(float(d["rotation"])) for d in video.get("side_data_list", []) if "rotation" in d), 0)
    sideways = scratch / "sideways.mp4"
    # transpose=2 turns the picture 90 degrees counter-clockwise, transpose=1 clockwise.
    run_ffmpeg(["-i", str(clips[3]), "-vf", "transpose=2" if rotation % 360 == 270 else "transpose=1",
                *H264_AAC, str(sideways)])
    rotated_copy(sideways, out, 90)


def _music(clips: list[Path], out: Path, _scratch: Path) -> None:
    # A melody of pure tones (four notes a second) over a chord: music-like, no voice.
    tone = r"0.25*sin(2*PI*(262+131*mod(floor(t*4)\,4))*t)+0.12*sin(2*PI*330*t)+0.12*sin(2*PI*392*t)"
    run_ffmpeg(["-i", str(clips[3]), "-f", "lavfi", "-i", f"aevalsrc={tone}:s={AUDIO_RATE}:d=3",
                "-map", "0:v", "-map", "1:a", "-shortest", *H264_AAC, str(out)])


def _dubbed_speech(text: str, voice: str, clip: int) -> Maker:
    def make(clips: list[Path], out: Path, scratch: Path) -> None:
        dubbed(clips[clip], espeak_wav(text, voice, scratch / f"{voice}.wav"), out, lead_in_s=0.2, loops=0)
    return make


def _german_subtitles(_clips: list[Path], out: Path, _scratch: Path) -> None:
    out.write_text(f"1\n00:00:00,200 --> 00:00:03,000\n{GERMAN}\n")


def _overlapping(clips: list[Path], out: Path, _scratch: Path) -> None:
    mixed_speakers(clips[1], clips[4], out, delay_s=0.0)


def _no_face(clips: list[Path], out: Path, _scratch: Path) -> None:
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=s=360x288:r=25:d=3", "-i", str(clips[2]),
                "-map", "0:v", "-map", "1:a", "-shortest", *H264_AAC, str(out)])


def _many_small_faces(clips: list[Path], out: Path, _scratch: Path) -> None:
    # 4x4 tiles of 180x144 (faces about 50 px), the six speakers in turn; audio of the first.
    inputs, chains = [], []
    for n in range(16):
        inputs += ["-i", str(clips[n % len(clips)])]
        chains.append(f"[{n}:v]scale=180:144,setsar=1[t{n}]")
    layout = "|".join(f"{180 * (n % 4)}_{144 * (n // 4)}" for n in range(16))
    graph = ";".join(chains) + ";" + "".join(f"[t{n}]" for n in range(16)) + f"xstack=inputs=16:layout={layout}[v]"
    run_ffmpeg([*inputs, "-filter_complex", graph, "-map", "[v]", "-map", "0:a", *H264_AAC, str(out)])


def _iso_boxes(data: bytes) -> dict[str, tuple[int, int]]:
    boxes, pos = {}, 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        boxes[kind.decode("latin-1")] = (pos, size)
        if size < 8:
            break
        pos += size
    return boxes


def _corrupted(box: str, count: int, clip: int) -> Maker:
    """A faststart mp4 of a clip with ``count`` seeded random bytes written over the middle of ``box``."""
    def make(clips: list[Path], out: Path, scratch: Path) -> None:
        plain = to_mp4(clips[clip], scratch / f"plain-{box}.mp4")
        data = bytearray(plain.read_bytes())
        start, size = _iso_boxes(bytes(data))[box]
        middle = start + size // 2
        data[middle:middle + count] = random.Random(box).randbytes(count)
        out.write_bytes(bytes(data))
    return make


def _valid_mp4_named(clip: int) -> Maker:
    return lambda clips, out, scratch: out.write_bytes(to_mp4(clips[clip], scratch / f"named-{clip}.mp4").read_bytes())


def _two_hours_sparse(_clips: list[Path], out: Path, scratch: Path) -> None:
    # One minute of black 64x64 at 1 fps with near-empty audio, then the packets repeated 120 times
    # without re-encoding: a real 2-hour file in well under a second.
    minute = scratch / "minute.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "color=c=black:s=64x64:r=1", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono",
                "-t", "60", "-c:v", "libx264", "-preset", "ultrafast", "-g", "600", "-pix_fmt", "yuv420p",
                "-c:a", "aac", "-b:a", "8k", str(minute)])
    run_ffmpeg(["-stream_loop", str(TWO_HOURS_S // 60 - 1), "-i", str(minute), "-c", "copy",
                "-movflags", "+faststart", str(out)])


def _not_made(_clips: list[Path], _out: Path, _scratch: Path) -> None:
    raise AssertionError("made by build_corpus itself")


def _outside_target(clips: list[Path], out: Path, scratch: Path) -> None:
    to_mp4(clips[4], out)


SYMLINK_NAME = "link to outside.mp4"
OUTSIDE_NAME = "secret.mp4"
DUPLICATE_OF = "control.mp4"

CORPUS: tuple[CorpusEntry, ...] = (
    CorpusEntry("control.mp4", "plain talking head (control)", ACCEPTED, None, _keep(to_mp4, 0)),
    CorpusEntry("truncated_no_index.mp4", "truncated file, index at the end lost", REJECTED, "truncated_container",
                lambda c, o, s: truncated_copy(c[1], o, 0.6, faststart=False) and None),
    CorpusEntry("truncated_after_index.mp4", "truncated file, index first, media cut", REJECTED, "truncated_stream",
                lambda c, o, s: truncated_copy(c[2], o, 0.5, faststart=True) and None),
    CorpusEntry("zero_bytes.mp4", "zero bytes", REJECTED, "empty_file", lambda c, o, s: empty_file(o) and None),
    CorpusEntry("audio_only.mp4", "audio only", REJECTED, "no_video_stream", _keep(audio_only, 1)),
    CorpusEntry("video_only.mp4", "video only", REJECTED, "no_audio_stream", _keep(video_only, 1)),
    CorpusEntry("variable_frame_rate.mp4", "variable frame rate", ACCEPTED, None, _variable_frame_rate,
                "frame times are used as they are; output is resampled to 24 fps"),
    CorpusEntry("very_large_8k.mp4", "very large resolution (7680x4320)", REJECTED, "resolution_too_large",
                _very_large, "beyond ingest.max_frame_pixels: a frame buffer would hold ~100 MB per frame"),
    CorpusEntry("rotated_90.mp4", "rotated (display matrix)", ACCEPTED, None, _rotated_phone,
                "frames are turned upright before detection"),
    CorpusEntry("one_frame.mp4", "1-frame video", REJECTED, "source_too_short", _one_frame,
                "the video stream lasts one frame although the audio lasts 3 s"),
    CorpusEntry("silence.mp4", "silence under a speaking face", REJECTED, "no_active_speaker", _keep(silenced, 4)),
    CorpusEntry("music.mp4", "music without speech", REJECTED, "active_speech_too_short", _music,
                "Light-ASD scores a few frames above 0.5, no run reaches asd.min_segment_s"),
    CorpusEntry("german_speech.mp4", "non-English speech (German, no transcript)", ACCEPTED, None,
                _dubbed_speech(GERMAN, "de", 0),
                "kept, flagged language_unknown: pocketsphinx is English-only; Whisper would reject it"),
    CorpusEntry("german_subtitled.mp4", "non-English speech (German, with subtitles)", REJECTED, "non_english_speech",
                _dubbed_speech(GERMAN, "de", 2), "lingua reads the German subtitles beside the video"),
    CorpusEntry("german_subtitled.srt", "subtitles of the German video", SKIPPED, "sidecar_transcript",
                _german_subtitles),
    CorpusEntry("french_dubbed.mp4", "non-English speech (French) dubbed out of sync with the lips", REJECTED,
                "no_active_speaker", _dubbed_speech(FRENCH, "fr", 5),
                "Light-ASD sees that the voice does not belong to the face, before the speech stage"),
    CorpusEntry("two_speakers.mp4", "two overlapping speakers", REJECTED, "overlapping_speech", _overlapping),
    CorpusEntry("no_face.mp4", "no face (test pattern with speech)", REJECTED, "no_face_found", _no_face),
    CorpusEntry("many_small_faces.mp4", "many small faces (4x4 tiles)", ACCEPTED, None, _many_small_faces),
    CorpusEntry("corrupt_index.mp4", "corrupt container (bytes overwritten inside moov)", REJECTED, "unknown_codec",
                _corrupted("moov", 64, 2), "the overwritten bytes fall in the audio track's codec description"),
    CorpusEntry("corrupt_media.mp4", "corrupt container (bytes overwritten inside mdat)", REJECTED, "decode_error",
                _corrupted("mdat", 4096, 3)),
    CorpusEntry("valid_video.mov", "wrong extension (an mp4 named .mov)", ACCEPTED, None, _valid_mp4_named(5),
                "the demuxer goes by content, not by name"),
    CorpusEntry("renamed_video.txt", "wrong extension (an mp4 named .txt)", SKIPPED, "unsupported_extension",
                _valid_mp4_named(1), "only ingest.extensions are taken as videos"),
    CorpusEntry("text_named.mp4", "wrong extension (a text file named .mp4)", REJECTED, "not_a_media_file",
                lambda c, o, s: text_as_mp4(o) and None),
    CorpusEntry(SHELL_NAME, "name with spaces, unicode and shell metacharacters", ACCEPTED, None, _keep(to_mp4, 2)),
    CorpusEntry(SYMLINK_NAME, "symlink pointing outside the input folder", SKIPPED, "symlink_outside_input", _not_made,
                "never followed: its target is not read"),
    CorpusEntry("two_hours_sparse.mp4", "2-hour sparse video", REJECTED, "source_too_long", _two_hours_sparse,
                "beyond ingest.max_duration_s, decided from the header before any decode"),
    CorpusEntry("duplicate of control.mp4", "same content as another input", SKIPPED, "duplicate_content", _not_made,
                "registered once, under the first name in sorted order"),
)


def build_corpus(clips: list[Path], root: Path, cache: MediaCache | None = None) -> Path:
    """Make every corpus file under ``root/input`` (and the symlink target under ``root/outside``).

    Composed files come from ``cache`` when given (made once per test session); returns the input folder.
    """
    if len(clips) < 6:
        raise ValueError(f"the corpus needs 6 GRID clips, got {len(clips)}")
    cache = cache or MediaCache(root / "cache")
    scratch = root / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    inputs, outside = root / "input", root / "outside"
    inputs.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    for n, entry in enumerate(CORPUS):
        if entry.make is _not_made:
            continue
        made = cache.get(f"corpus-{n:02d}{Path(entry.name).suffix}", lambda out, e=entry: e.make(clips, out, scratch))
        shutil.copyfile(made, inputs / entry.name)
    shutil.copyfile(inputs / DUPLICATE_OF, inputs / "duplicate of control.mp4")
    target = cache.get("corpus-outside.mp4", lambda out: _outside_target(clips, out, scratch))
    shutil.copyfile(target, outside / OUTSIDE_NAME)
    (inputs / SYMLINK_NAME).symlink_to(outside / OUTSIDE_NAME)
    shutil.rmtree(scratch, ignore_errors=True)
    return inputs


def expected_counts() -> dict[tuple[str, str | None], int]:
    """(status, reason) -> number of corpus files expected with it."""
    counts: dict[tuple[str, str | None], int] = {}
    for entry in CORPUS:
        counts[(entry.status, entry.reason)] = counts.get((entry.status, entry.reason), 0) + 1
    return counts


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    shared = os.environ.get("TALKINGHEAD_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared"
    grid = Path(shared) / "media" / "grid"
    inputs = build_corpus(sorted(grid.glob("*.mpg")), Path(argv[1]).resolve())
    for entry in CORPUS:
        print(f"{entry.status:9} {entry.reason or '':24} {entry.name}")
    print(f"input folder: {inputs}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
