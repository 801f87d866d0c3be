"""Whisper's first window: the 30 s window against the config's short one, clip by clip, in one run.

    flock /tmp/bench.lock python bench/bench_whisper_window.py [--out bench/results/whisper_window]

Inputs: the six GRID clips (their sentence is in their file name, GRID's grammar) and espeak-ng
sentences in four languages with a second of silence either side (tests/speech_fixtures.py's
WHISPER_SENTENCES, the Whisper tests' inputs). Each clip is transcribed three ways with one loaded
faster-whisper-base, each in this process, CPU (all threads) and wall timed: ``full`` (always 30 s), ``short``
(the config's short window, with the fallback to 30 s below the config's language probability)
and ``short only`` (the short window whatever the probability: what the fallback guards
against). Per clip: encoder passes and their frames, language and probability, word error rate
against the spoken sentence (digits and letter+digit tokens spelled out; homophones count as
errors, so the rate is high for the base model on GRID: compare the columns), CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402

from pipelines.config import MODEL_DIR_ENV, load_config  # noqa: E402
from pipelines.fixtures.media import SHARED_DIR_ENV, espeak_wav  # noqa: E402
from pipelines.speech.base import SAMPLE_RATE  # noqa: E402

GRID_WORDS = [
    {"b": "bin", "l": "lay", "p": "place", "s": "set"},
    {"b": "blue", "g": "green", "r": "red", "w": "white"},
    {"a": "at", "b": "by", "i": "in", "w": "with"},
    None,  # the letter itself
    {**{str(d): w for d, w in enumerate("zero one two three four five six seven eight nine".split())},
     "z": "zero"},
    {"a": "again", "n": "now", "p": "please", "s": "soon"},
]
DIGITS = dict(zip("0123456789", "zero one two three four five six seven eight nine".split()))


def grid_sentence(name: str) -> str:
    """GRID's sentence from its six-character file name, e.g. bbaf2n -> 'bin blue at f two now'."""
    return " ".join(code if words is None else words[code] for code, words in zip(name, GRID_WORDS))


def normalise(text: str) -> list[str]:
    """Lower-case words; digits spelled out and 'K7' split into 'k seven'."""
    words = []
    for token in re.findall(r"[\w']+", text.lower()):
        for part in re.findall(r"\d|[^\W\d]+|'", token):
            words.append(DIGITS.get(part, part))
    return [w for w in words if w != "'"]


def word_error_rate(reference: list[str], hypothesis: list[str]) -> float:
    d = np.arange(len(hypothesis) + 1)
    for i, ref in enumerate(reference, 1):
        previous, d[0] = d.copy(), i
        for j, hyp in enumerate(hypothesis, 1):
            d[j] = min(previous[j] + 1, d[j - 1] + 1, previous[j - 1] + (ref != hyp))
    return float(d[-1]) / max(1, len(reference))


def inputs(media_dir: Path, scratch: Path) -> dict[str, tuple[np.ndarray, str]]:
    from faster_whisper.audio import decode_audio
    from speech_fixtures import WHISPER_SENTENCES

    clips = {path.stem: (decode_audio(str(path), SAMPLE_RATE), grid_sentence(path.stem))
             for path in sorted(media_dir.glob("*.mpg"))}
    pad = np.zeros(SAMPLE_RATE, np.float32)
    for code, text in WHISPER_SENTENCES.items():
        audio = decode_audio(str(espeak_wav(text, code, scratch / f"{code}.wav")), SAMPLE_RATE)
        clips[f"espeak {code}"] = (np.concatenate([pad, audio, pad]), text)
    return clips


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path(os.environ.get(MODEL_DIR_ENV, "../shared/models")))
    parser.add_argument("--media-dir", type=Path,
                        default=Path(os.environ.get(SHARED_DIR_ENV, "../shared")) / "media" / "grid")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "whisper_window")
    args = parser.parse_args(argv)

    from faster_whisper import WhisperModel

    from pipelines.speech.asr_whisperx import WhisperxTranscriber

    speech = load_config().speech
    folder = args.model_dir / speech.whisper_model
    threads = min(4, os.cpu_count() or 1)
    ways = {"full": (0.0, 0.0), "short": (speech.whisper_short_window_s, speech.whisper_short_window_min_probability),
            "short only": (speech.whisper_short_window_s, 0.0)}
    transcribers = {name: WhisperxTranscriber(folder, cpu_threads=threads, short_window_s=seconds,
                                              short_window_min_probability=probability)
                    for name, (seconds, probability) in ways.items()}
    frames: list[int] = []
    encode = WhisperModel.encode
    WhisperModel.encode = lambda model, features: frames.append(features.shape[-1]) or encode(model, features)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for transcriber in transcribers.values():  # load and warm up on a second of silence
            transcriber.transcribe_clip(np.zeros(SAMPLE_RATE, np.float32))
        for clip, (audio, sentence) in inputs(args.media_dir, Path(scratch)).items():
            for name, transcriber in transcribers.items():
                frames.clear()
                start, wall = time.process_time(), time.perf_counter()
                transcript, heard = transcriber.transcribe_clip(audio)
                cpu, wall = time.process_time() - start, time.perf_counter() - wall
                rows.append({"clip": clip, "way": name, "encoder_frames": list(frames), "language": heard[0],
                             "probability": round(heard[1], 3), "text": transcript.text,
                             "wer": round(word_error_rate(normalise(sentence), normalise(transcript.text)), 3),
                             "cpu_s": round(cpu, 3), "wall_s": round(wall, 3)})
                print(f"{clip:10s} {name:10s} {str(frames):14s} {heard[0]} {heard[1]:.3f} wall {wall:.2f}s "
                      f"wer {rows[-1]['wer']:.2f} cpu {cpu:.2f}s | {transcript.text}", flush=True)
    totals = {name: {"cpu_s": round(sum(r["cpu_s"] for r in rows if r["way"] == name), 2),
                     "wall_s": round(sum(r["wall_s"] for r in rows if r["way"] == name), 2),
                     "encoder_frames": sum(sum(r["encoder_frames"]) for r in rows if r["way"] == name),
                     "mean_wer": round(float(np.mean([r["wer"] for r in rows if r["way"] == name])), 3)}
              for name in ways}
    payload = {"config": {"whisper_short_window_s": speech.whisper_short_window_s,
                          "whisper_short_window_min_probability": speech.whisper_short_window_min_probability},
               "threads": threads, "loadavg_1m": round(os.getloadavg()[0], 2), "rows": rows, "totals": totals}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    lines = ["# Whisper's first window: 30 s against the short window (bench/bench_whisper_window.py)", "",
             f"faster-whisper-base, int8, {threads} threads; short window {speech.whisper_short_window_s:g} s, kept "
             f"when the language probability is at least {speech.whisper_short_window_min_probability:g}; "
             f"load (1 min) {payload['loadavg_1m']} at the end. CPU: this process's CPU (all threads) during the call.", "",
             "| clip | way | encoder frames | language | probability | WER | CPU s | text |",
             "|---|---|---|---|---:|---:|---:|---|"]
    lines += [f"| {r['clip']} | {r['way']} | {' + '.join(map(str, r['encoder_frames']))} | {r['language']} | "
              f"{r['probability']:.3f} | {r['wer']:.2f} | {r['cpu_s']:.2f} | {r['text']} |" for r in rows]
    lines += ["", "| way | CPU s, all clips | CPU / full | wall s | wall / full | encoder frames | mean WER |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {name} | {t['cpu_s']:.2f} | {t['cpu_s'] / totals['full']['cpu_s']:.2f} | {t['wall_s']:.2f} | "
              f"{t['wall_s'] / totals['full']['wall_s']:.2f} | {t['encoder_frames']} | "
              f"{t['mean_wer']:.3f} |" for name, t in totals.items()]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-5:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
