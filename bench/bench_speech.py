"""Speech stage throughput on CPU: realtime factor of each backend, in one run.

    python bench/bench_speech.py [AUDIO_OR_VIDEO ...] [--repeat N] [--json OUT] [--asr auto|pocketsphinx|whisperx]
    python bench/bench_speech.py --whisper [--repeat N]      # the Whisper table only

Default inputs: the six GRID clips and pyannote.audio's 30 s sample. Each input is
converted once to 16 kHz mono (not timed); then, best of --repeat, it times speaker
activity (pyannote segmentation from the whisperx wheel), transcription (the backend --asr
picks; default: the config's, auto), language identification (lingua on the transcript
text, to measure its cost) and the whole-stage decision. RTF = seconds spent / seconds of
audio (lower is faster).

``--whisper`` (or --asr whisperx) adds a table for the Whisper folder of the config
(faster-whisper-base by default) through faster-whisper on CPU: model load, language
detection alone, transcription without and with word timestamps (VAD filter on, as the
stage runs it), per input and for the GRID clips joined into one longer clip.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/bench_speech.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from pipelines.config import MODEL_DIR_ENV, load_config  # noqa: E402
from pipelines.speech.base import SAMPLE_RATE  # noqa: E402
from pipelines.speech.decide import decide_segment  # noqa: E402
from pipelines.speech.stage import build_backend  # noqa: E402


def load_audio(path: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1",
                          "-ar", str(SAMPLE_RATE), "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


def best_time(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def bench_input(path: Path, backends, config, repeat: int) -> dict:
    audio = load_audio(path)
    seconds = len(audio) / SAMPLE_RATE
    t_activity, activity = best_time(lambda: backends.activity.activity(audio), repeat)
    t_asr, transcript = best_time(lambda: backends.transcriber.transcribe(audio), repeat)
    t_lang, _ = best_time(lambda: backends.identifier.identify(transcript.text), repeat)
    t_decide, _ = best_time(lambda: decide_segment(0.0, seconds, activity, transcript, backends.identifier,
                                                   config.speech), repeat)
    total = t_activity + t_asr + t_decide
    return {"input": path.name, "audio_s": round(seconds, 3), "activity_s": t_activity, "asr_s": t_asr,
            "language_s": t_lang, "decide_s": t_decide, "total_s": total,
            "rtf_activity": t_activity / seconds, "rtf_asr": t_asr / seconds, "rtf_total": total / seconds}


def bench_whisper(transcriber, inputs: list[tuple[str, np.ndarray]], repeat: int) -> list[dict]:
    """Per input: language detection alone, transcription without and with word timestamps."""
    model = transcriber.whisper_model()
    options = {"vad_filter": transcriber.vad_filter, **transcriber.whisper_options()}

    def transcribe(audio, words: bool) -> list:
        segments, _ = model.transcribe(audio, word_timestamps=words, **options)
        return [w for s in segments for w in (s.words or [])]  # decoding happens while iterating

    rows = []
    for name, audio in inputs:
        seconds = len(audio) / SAMPLE_RATE
        t_detect, (language, probability) = best_time(lambda: transcriber.detect_language(audio), repeat)
        t_plain, _ = best_time(lambda: transcribe(audio, False), repeat)
        t_words, words = best_time(lambda: transcribe(audio, True), repeat)
        rows.append({"input": name, "audio_s": round(seconds, 3), "language": f"{language}:{probability:.2f}",
                     "words": len(words), "detect_s": t_detect, "asr_s": t_plain, "asr_words_s": t_words,
                     "rtf_asr": t_plain / seconds, "rtf_asr_words": t_words / seconds})
    return rows


def whisper_table(rows: list[dict], header: str) -> str:
    cols = [("input", "input", "{}"), ("audio s", "audio_s", "{:.2f}"), ("language", "language", "{}"),
            ("words", "words", "{}"), ("detect s", "detect_s", "{:.2f}"), ("asr s", "asr_s", "{:.2f}"),
            ("asr+words s", "asr_words_s", "{:.2f}"), ("RTF asr", "rtf_asr", "{:.3f}"),
            ("RTF asr+words", "rtf_asr_words", "{:.3f}")]
    return format_rows(rows, cols, header)


def default_inputs() -> list[Path]:
    grid = sorted((REPO.parent / "shared" / "media" / "grid").glob("*.mpg"))
    try:
        import pyannote.audio

        sample = Path(pyannote.audio.__file__).parent / "sample" / "sample.wav"
        grid += [sample] if sample.is_file() else []
    except ImportError:
        pass
    return grid


def format_table(rows: list[dict], header: str) -> str:
    cols = [("input", "input", "{}"), ("audio s", "audio_s", "{:.2f}"), ("activity s", "activity_s", "{:.3f}"),
            ("asr s", "asr_s", "{:.3f}"), ("lingua s", "language_s", "{:.4f}"), ("RTF activity", "rtf_activity", "{:.3f}"),
            ("RTF asr", "rtf_asr", "{:.3f}"), ("RTF stage", "rtf_total", "{:.3f}")]
    return format_rows(rows, cols, header)


def format_rows(rows: list[dict], cols: list[tuple[str, str, str]], header: str) -> str:
    cells = [[fmt.format(row[key]) for _, key, fmt in cols] for row in rows]
    widths = [max(len(name), *(len(c[i]) for c in cells)) for i, (name, _, _) in enumerate(cols)]
    lines = [header, "  ".join(name.rjust(w) for (name, _, _), w in zip(cols, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(cell, widths)) for cell in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model-dir", default=os.environ.get(MODEL_DIR_ENV) or str(REPO.parent / "shared" / "models"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--asr", choices=("auto", "pocketsphinx", "whisperx"), default="auto",
                        help="transcription backend of the stage table (default: auto, as the config)")
    parser.add_argument("--whisper", action="store_true", help="only the Whisper table")
    args = parser.parse_args(argv)
    inputs = args.inputs or default_inputs()
    if not inputs:
        parser.error("no inputs given and no default media found")
    config = load_config(paths={"model_dir": args.model_dir}, speech={"transcription_backend": args.asr})
    report = {}
    if not args.whisper:
        start = time.perf_counter()
        backends = build_backend(config)
        backends.identifier.identify("warm up the language models with a sentence")  # lingua loads lazily
        load_s = time.perf_counter() - start
        rows = [bench_input(path, backends, config, args.repeat) for path in inputs]
        audio = sum(r["audio_s"] for r in rows)
        total = {"input": f"TOTAL ({len(rows)})", "audio_s": audio,
                 **{k: sum(r[k] for r in rows) for k in ("activity_s", "asr_s", "language_s", "decide_s", "total_s")}}
        total.update(rtf_activity=total["activity_s"] / audio, rtf_asr=total["asr_s"] / audio,
                     rtf_total=total["total_s"] / audio)
        names = backends.names()
        header = (f"speech backends: activity={names['activity']}  asr={names['transcription']} "
                  f"({names['transcription_choice']})  language={names['language']}  (load {load_s:.1f} s)  "
                  f"repeat={args.repeat} (best)  cpus={os.cpu_count()}  loadavg={os.getloadavg()[0]:.2f}")
        print(format_table(rows + [total], header))
        print("RTF = seconds spent / seconds of audio; 'RTF stage' covers activity + asr + decision (lingua included)")
        report.update(backends=names, rows=rows, total=total)
    if args.whisper or args.asr == "whisperx":
        from pipelines.speech.asr_whisperx import WhisperxTranscriber, whisper_folder_status

        status = whisper_folder_status(Path(args.model_dir), config.speech.whisper_model)
        if status.state not in ("ok", "unpinned"):
            parser.error(f"{status.name} is {status.state}: {status.detail}")
        transcriber = WhisperxTranscriber(status.path, compute_type=config.speech.whisper_compute_type)
        start = time.perf_counter()
        transcriber.whisper_model()
        load_s = time.perf_counter() - start
        audios = [(path.name, load_audio(path)) for path in inputs]
        grid = [a for name, a in audios if name.endswith(".mpg")]
        if len(grid) > 1:
            audios.append((f"{len(grid)} GRID clips joined", np.concatenate(grid)))
        rows = bench_whisper(transcriber, audios, args.repeat)
        header = (f"whisper: {status.name} ({status.state}) compute_type={transcriber.compute_type} "
                  f"cpu_threads={transcriber.cpu_threads} vad_filter={transcriber.vad_filter}  load {load_s:.2f} s  "
                  f"repeat={args.repeat} (best)  cpus={os.cpu_count()}  loadavg={os.getloadavg()[0]:.2f}")
        print(whisper_table(rows, header))
        print("detect = language detection alone (one 30 s encoder window + one decoder step); asr = transcription "
              "with beam 5; asr+words = the same with word_timestamps=True (what the speech stage runs)")
        report.update(whisper={"model": status.name, "load_s": load_s, "rows": rows})
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
