"""Audio-video offset from Light-ASD with shifted audio: offsets, confidences and cost on GRID.

    python bench/bench_sync.py [--clips DIR] [--offsets-ms -200,-100,0,100,200] [--json OUT]

Each GRID clip goes once through the real face stage (SCRFD, 384 px 24 fps crop), and its
face track is read back as the ASD stage reads it (pipelines.asd.stage.face_track_25). The
audio variants are composed by ffmpeg from the GRID audio: delayed by d ms (adelay, cut to
the clip) or advanced (atrim from d ms, then silence). Only the audio differs between the
variants of one clip, so the face stage runs 6 times, not once per variant; the audio is
sliced exactly as the stage slices the source audio (silence beyond the recording).

Prints, per clip and offset, the best shift (frames, refined seconds) and confidence; for
stranger pairs (clip A's face, clip B's 0 ms audio, all 30 ordered pairs) the confidence;
and the cost of one shifted-scoring call (2N + 1 shifts) over one plain ASD pass, each the
best of --repeat in the same run, on each GRID clip and on all six joined into one track.

It also reads the experimental mouth-opening / log-energy curve of pipelines.asd.sync
(``lip_energy_curve``, at 10 ms lags over the same +-N frames) on the same tracks and audio,
alone and restricted to lags near Light-ASD's offset, and prints its accuracy and the peak
correlation of matched and stranger audio.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/bench_sync.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from pipelines.asd.stage import face_track_25  # noqa: E402
from pipelines.asd.sync import (SYNC_FPS, best_shift, lip_energy_curve, log_energy, measure_offset,  # noqa: E402
                                mouth_opening, parabolic_refinement)
from pipelines.config import MODEL_DIR_ENV, PipelineConfig, load_config  # noqa: E402
from pipelines.ingest import SourceRegistry  # noqa: E402
from pipelines.runner import ModelBackends, run_stage  # noqa: E402

RATE = 16000


def audio_variant(clip: Path, offset_ms: int) -> np.ndarray:
    """The clip's audio at 16 kHz mono, delayed (> 0) or advanced (< 0) by ``offset_ms``, by ffmpeg."""
    if offset_ms > 0:
        graph = f"adelay={offset_ms}"
    elif offset_ms < 0:
        graph = f"atrim=start={-offset_ms / 1000},asetpts=PTS-STARTPTS,apad"
    else:
        graph = "anull"
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(clip), "-vn", "-af", graph, "-t", "3.0",
                          "-ac", "1", "-ar", str(RATE), "-f", "s16le", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype="<i2").copy()


def padded_slice(audio: np.ndarray, start_s: float, frames: int, max_shift: int) -> np.ndarray:
    """What the stage hands to shifted_logits: N frames before ``start_s`` to N after, silence outside."""
    first = int(round((start_s - max_shift / SYNC_FPS) * RATE))
    count = int(round((frames + 2 * max_shift) / SYNC_FPS * RATE))
    out = np.zeros(count, dtype=np.int16)
    lo, hi = max(first, 0), min(first + count, len(audio))
    if hi > lo:
        out[lo - first:hi - first] = audio[lo:hi]
    return out


def face_tracks(clips: list[Path], config: PipelineConfig) -> dict[str, tuple[np.ndarray, float]]:
    """Each clip's (25 fps faces, segment start) after the real face stage."""
    backends = ModelBackends(config)
    tracks = {}
    for ref in SourceRegistry(config.paths.registry_path).scan(config.paths.input_dir, config.ingest.extensions):
        record = run_stage("faces", ref, config, backends).result
        segments = record.accepted_segments()
        if not segments:
            print(f"{ref.relpath}: the face stage kept no segment ({[(s.status, s.reason) for s in record.segments]}); "
                  "left out")
            continue
        segment = max(segments, key=lambda s: s.end_s - s.start_s)
        faces, _ = face_track_25(config.paths.work_dir / "sources" / ref.source_id, segment, config)
        tracks[ref.relpath] = (faces, segment.start_s)
    return tracks


def frames_24(faces25: np.ndarray, fps: float = 24.0) -> np.ndarray:
    """The distinct 24 fps frames of a track face_track_25 sampled at 25 fps (one repeat a second)."""
    for n in range(len(faces25) - 3, len(faces25) + 1):
        if int(np.floor(n / fps * SYNC_FPS + 1e-6)) == len(faces25):
            at = np.minimum((np.arange(len(faces25)) / SYNC_FPS * fps + 1e-9).astype(int), n - 1)
            return faces25[[int(np.flatnonzero(at == j)[0]) for j in range(n)]]
    raise ValueError("not a 24 fps track sampled at 25 fps")


LAGS_S = np.arange(-32, 33) * 0.01  # +-320 ms every 10 ms, the span of shifts -8..8


def lip_reading(faces25: np.ndarray, start_s: float, audio: np.ndarray, max_shift: int,
                centre_s: float | None = None, window_s: float | None = None) -> tuple[float, float]:
    """(offset s, peak correlation) of the mouth-opening / log-energy curve (pipelines.asd.sync);
    with ``centre_s`` and ``window_s`` only lags within ``window_s`` of ``centre_s`` count."""
    faces = frames_24(faces25)
    times = start_s + (np.arange(len(faces)) + 0.5) / 24.0
    energy, energy_times = log_energy(audio, RATE)
    curve = lip_energy_curve(mouth_opening(faces), times, energy, energy_times + start_s - max_shift / SYNC_FPS,
                             LAGS_S)
    if centre_s is not None:
        curve = np.where(np.abs(LAGS_S - centre_s) <= window_s + 1e-9, curve, -np.inf)
    index = best_shift(curve)
    refine = parabolic_refinement(curve, index) if np.isfinite(curve[max(index - 1, 0):index + 2]).all() else 0.0
    return float(LAGS_S[index] + refine * (LAGS_S[1] - LAGS_S[0])), float(curve[index])


def best_of(repeat: int, call) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def cost_row(scorer, faces: np.ndarray, audio: np.ndarray, max_shift: int, repeat: int) -> dict:
    """Seconds of one plain pass and of one shifted call (2N + 1 shifts) on the same track."""
    plain_audio = audio[max_shift * RATE // int(SYNC_FPS):]
    scorer.probabilities(faces, plain_audio)  # warm-up
    plain = best_of(repeat, lambda: scorer.probabilities(faces, plain_audio))
    shifted = best_of(repeat, lambda: scorer.shifted_scores(faces, audio, max_shift))
    return {"frames": len(faces), "plain_s": round(plain, 3), "shifted_s": round(shifted, 3),
            "multiple": round(shifted / plain, 2), "naive_multiple": 2 * max_shift + 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=Path, default=REPO.parent / "shared" / "media" / "grid")
    parser.add_argument("--model-dir", default=os.environ.get(MODEL_DIR_ENV) or str(REPO.parent / "shared" / "models"))
    parser.add_argument("--offsets-ms", default="-200,-100,0,100,200")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--dump", type=Path, help="also save every call's shifted logits (npz) to replay curve rules")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    clips = sorted(args.clips.glob("*.mpg"))
    offsets = [int(v) for v in args.offsets_ms.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "input").mkdir()
        for clip in clips:
            shutil.copyfile(clip, root / "input" / clip.name)  # the registry does not follow links
        config = load_config(paths={"input_dir": root / "input", "data_dir": root / "data",
                                    "model_dir": args.model_dir})
        tracks = face_tracks(clips, config)
        scorer = ModelBackends(config).get("asd")
    clips = [clip for clip in clips if clip.name in tracks]
    n, threshold = config.sync.max_shift_frames, config.asd.threshold
    audio = {(clip.name, d): audio_variant(clip, d) for clip in clips for d in offsets}

    dumped: dict[str, np.ndarray] = {}

    def measure(face_clip: str, audio_key: tuple[str, int]):
        faces, start = tracks[face_clip]
        logits, visual = scorer.shifted_scores(faces, padded_slice(audio[audio_key], start, len(faces), n), n)
        dumped[f"{face_clip}|{audio_key[0]}|{audio_key[1]}|logits"] = logits
        dumped[f"{face_clip}|{audio_key[0]}|{audio_key[1]}|visual"] = visual
        if args.dump:
            np.savez(args.dump, **dumped)
        m = measure_offset(logits, visual, threshold)
        sliced = padded_slice(audio[audio_key], start, len(faces), n)
        lips[(face_clip, audio_key)] = {"lips": lip_reading(faces, start, sliced, n)}
        for w in (0.12, 0.16, 0.2):
            lips[(face_clip, audio_key)][f"lips_near_asd_{w}"] = (
                lip_reading(faces, start, sliced, n, m.offset_s, w) if m else (float("nan"), float("nan")))
        return m

    lips: dict = {}

    print(f"shifts -{n}..{n} at 25 fps; threshold {threshold}; curve = corr(visual margin, AV probability at k); confidence = peak - median")
    matched = []
    for clip in clips:
        for d in offsets:
            m = measure(clip.name, (clip.name, d))
            row = {"clip": clip.name, "true_ms": d, "best_frames": m.best_frames if m else None,
                   "offset_ms": round(m.offset_s * 1000, 1) if m else None,
                   "error_ms": round(m.offset_s * 1000 - d, 1) if m else None,
                   "integer_error_ms": round(m.best_frames * 40 - d, 1) if m else None,
                   "confidence": round(m.confidence, 3) if m else None, "curve": m.summary() if m else None}
            matched.append(row)
            print(f"{clip.name} audio {d:+4d} ms: best {row['best_frames']:+d} fr, refined {row['offset_ms']:+7.1f} ms "
                  f"(err {row['error_ms']:+6.1f}), conf {row['confidence']:.3f}, "
                  f"speaking frames {m.speaking_frames if m else 0}")
    strangers = []
    for a, b in itertools.permutations([c.name for c in clips], 2):
        m = measure(a, (b, 0))
        strangers.append({"face": a, "voice": b, "best_frames": m.best_frames if m else None,
                          "confidence": round(m.confidence, 3) if m else 0.0, "curve": m.summary() if m else None})
        print(f"face {a} voice {b}: best {strangers[-1]['best_frames']}, conf {strangers[-1]['confidence']:.3f}")
    own = np.array([r["confidence"] for r in matched if r["confidence"] is not None])
    other = np.array([r["confidence"] for r in strangers])
    print(f"\nconfidence matched (n={len(own)}): min {own.min():.3f} median {np.median(own):.3f} max {own.max():.3f}")
    print(f"confidence stranger (n={len(other)}): min {other.min():.3f} median {np.median(other):.3f} "
          f"max {other.max():.3f}")
    errors = np.array([abs(r["error_ms"]) for r in matched if r["error_ms"] is not None])
    print(f"|offset error| refined: max {errors.max():.1f} ms, mean {errors.mean():.1f} ms; integer: max "
          f"{max(abs(r['integer_error_ms']) for r in matched):.1f} ms")
    cost = [cost_row(scorer, *tracks[c.name][:1], padded_slice(audio[(c.name, 0)], tracks[c.name][1],
                                                               len(tracks[c.name][0]), n), n, args.repeat)
            for c in clips[:2]]
    joined_faces = np.concatenate([tracks[c.name][0] for c in clips])
    joined_audio = np.concatenate([padded_slice(audio[(c.name, 0)], tracks[c.name][1], len(tracks[c.name][0]), 0)
                                   for c in clips])
    cost.append(cost_row(scorer, joined_faces, padded_slice(joined_audio, 0.0, len(joined_faces), n), n, args.repeat))
    for row in cost:
        print(f"cost, {row['frames']} frames: plain {row['plain_s']} s, {2 * n + 1} shifts {row['shifted_s']} s "
              f"-> x{row['multiple']} (naive x{row['naive_multiple']})")
    one_frame = 1000 / 24
    for name in lips[next(iter(lips))]:
        errors = [lips[(r["clip"], (r["clip"], r["true_ms"]))][name][0] * 1000 - r["true_ms"] for r in matched]
        print(f"\n{name}: within one 24 fps frame {sum(abs(e) <= one_frame for e in errors)}/{len(errors)}; errors ms "
              + " ".join(f"{e:+.0f}" for e in errors))
        own = [lips[(r["clip"], (r["clip"], r["true_ms"]))][name][1] for r in matched]
        other = [lips[(r["face"], (r["voice"], 0))][name][1] for r in strangers]
        print(f"  peak correlation matched {min(own):.3f}-{max(own):.3f} (median {np.median(own):.3f}), "
              f"strangers {min(other):.3f}-{max(other):.3f} (median {np.median(other):.3f}); strangers below the "
              f"lowest matched: {sum(o < min(own) for o in other)}/{len(other)}")
    if args.json:
        args.json.write_text(json.dumps({"matched": matched, "strangers": strangers, "cost": cost}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
