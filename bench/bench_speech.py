"""Speech stage throughput on CPU: realtime factor of each offline backend, in one run.

    python bench/bench_speech.py [AUDIO_OR_VIDEO ...] [--repeat N] [--json OUT]

Default inputs: the six GRID clips and pyannote.audio's 30 s sample. Each input is
converted once to 16 kHz mono (not timed); then, best of --repeat, it times speaker
activity (pyannote segmentation from the whisperx wheel), transcription (pocketsphinx),
language identification (lingua on the pocketsphinx text, to measure its cost) and the
whole-stage decision. RTF = seconds spent / seconds of audio (lower is faster).
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
from pipelines.speech.stage import build_backends  # noqa: E402


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
    args = parser.parse_args(argv)
    inputs = args.inputs or default_inputs()
    if not inputs:
        parser.error("no inputs given and no default media found")
    config = load_config(paths={"model_dir": args.model_dir})
    start = time.perf_counter()
    backends = build_backends(config)
    backends.identifier.identify("warm up the language models with a sentence")  # lingua loads lazily
    load_s = time.perf_counter() - start
    rows = [bench_input(path, backends, config, args.repeat) for path in inputs]
    audio = sum(r["audio_s"] for r in rows)
    total = {"input": f"TOTAL ({len(rows)})", "audio_s": audio,
             **{k: sum(r[k] for r in rows) for k in ("activity_s", "asr_s", "language_s", "decide_s", "total_s")}}
    total.update(rtf_activity=total["activity_s"] / audio, rtf_asr=total["asr_s"] / audio,
                 rtf_total=total["total_s"] / audio)
    names = backends.names()
    header = (f"speech backends: activity={names['activity']}  asr={names['transcription']}  "
              f"language={names['language']}  (load {load_s:.1f} s)  repeat={args.repeat} (best)  "
              f"cpus={os.cpu_count()}  loadavg={os.getloadavg()[0]:.2f}")
    print(format_table(rows + [total], header))
    print("RTF = seconds spent / seconds of audio; 'RTF stage' covers activity + asr + decision (lingua included)")
    if args.json:
        args.json.write_text(json.dumps({"backends": names, "rows": rows, "total": total}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
