"""Transcripts that ship beside a video (``talk.mp4`` + ``talk.srt`` / ``.vtt`` / ``.txt``).

Many talking-head datasets come with subtitles in the spoken language; they are a
language-capable transcript at no model cost. Cues carry no word timing, so no word gets a
time of its own: each word is marked untimed and carries its cue's span
(``word_timing = "subtitle_cues"``).
"""

from __future__ import annotations

import re
from pathlib import Path

from pipelines.speech.base import WORD_TIMING_NONE, WORD_TIMING_SUBTITLES, Transcript, Word

SIDECAR_EXTENSIONS = (".srt", ".vtt", ".txt")
_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})")
_TAG = re.compile(r"<[^>]+>|\{[^}]+\}")


def find_sidecar(video: Path) -> Path | None:
    for ext in SIDECAR_EXTENSIONS:
        candidate = video.with_suffix(ext)
        if candidate.is_file():
            return candidate
    return None


def _seconds(match: re.Match) -> float:
    hours, minutes, seconds, millis = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(millis.ljust(3, "0")) / 1000


def parse_cues(text: str) -> list[tuple[float, float, str]]:
    """(start, end, text) cues from SRT or WebVTT text."""
    cues = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").strip()):
        lines = [line.strip() for line in block.split("\n") if line.strip()]
        for n, line in enumerate(lines):
            if "-->" in line:
                times = list(_TIME.finditer(line))
                if len(times) >= 2:
                    body = " ".join(_TAG.sub("", rest) for rest in lines[n + 1:]).strip()
                    if body:
                        cues.append((_seconds(times[0]), _seconds(times[1]), body))
                break
    return cues


def _cue_words(start: float, end: float, text: str) -> list[Word]:
    return [Word(token, round(start, 4), round(end, 4), timed=False) for token in text.split()]


def read_sidecar(path: Path, duration_s: float) -> Transcript:
    """A transcript from a subtitle file; a .txt covers the whole source."""
    text = Path(path).read_text(errors="replace")
    if path.suffix.lower() == ".txt":
        cues = [(0.0, duration_s, " ".join(text.split()))] if text.strip() else []
    else:
        cues = parse_cues(text)
        if not cues:
            raise ValueError(f"{path}: no subtitle cues found")
    words = [w for start, end, body in cues for w in _cue_words(start, end, body)]
    return Transcript(text=" ".join(body for _, _, body in cues), words=words, backend=f"sidecar:{path.suffix[1:]}",
                      language_capable=True, word_timing=WORD_TIMING_SUBTITLES if words else WORD_TIMING_NONE)
