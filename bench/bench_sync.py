"""Audio-video offset from Light-ASD with shifted audio: offsets, confidences and cost on GRID.

    python bench/bench_sync.py [--clips DIR] [--offsets-ms -200,-100,0,100,200] [--json OUT]

Each GRID clip goes once through the real face stage (SCRFD, 384 px 24 fps crop), and its
face track is read back as the ASD stage reads it (pipelines.asd.stage.face_track_25). The
audio variants are composed by ffmpeg from the GRID audio: delayed by d ms (adelay, cut to
the clip; ``all=1``: GRID's audio is stereo and a bare adelay delays the first channel only,
so the mono mix held the undelayed voice too) or advanced (atrim from d ms, then silence).
Only the audio differs between the
variants of one clip, so the face stage runs 6 times, not once per variant; the audio is
sliced exactly as the stage slices the source audio (silence beyond the recording).

Prints, per clip and offset, the best shift (frames, refined seconds) and confidence; for
stranger pairs (clip A's face, clip B's 0 ms audio, all 30 ordered pairs) the confidence;
and the cost of one shifted-scoring call (2N + 1 shifts) over one plain ASD pass, each the
best of --repeat in the same run, on each GRID clip and on all six joined into one track.

It also reads the mouth-opening / log-energy curve of pipelines.asd.sync the way the stage
does (pipelines.asd.stage.lip_measure on the same padded audio: the lip curve's peak within
LIP_WINDOW_S of Light-ASD's reading; this is the stage's offset), the lip curve over all lags
alone, and the same reading on the unpadded audio (the clip's own audio from its first sample:
both must agree), and prints their accuracy and the peak correlation of matched and stranger
audio.
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

from pipelines.asd.stage import face_track_25, lip_measure  # noqa: E402
from pipelines.asd.sync import SYNC_FPS, measure_offset  # noqa: E402
from pipelines.config import MODEL_DIR_ENV, PipelineConfig, load_config  # noqa: E402
from pipelines.ingest import SourceRegistry  # noqa: E402
from pipelines.runner import ModelBackends, run_stage  # noqa: E402

RATE = 16000


def audio_variant(clip: Path, offset_ms: int) -> np.ndarray:
    """The clip's audio at 16 kHz mono, delayed (> 0) or advanced (< 0) by ``offset_ms``, by ffmpeg."""
    if offset_ms > 0:
        graph = f"adelay={offset_ms}:all=1"
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


def face_tracks(clips: list[Path], config: PipelineConfig) -> dict[str, tuple[np.ndarray, float, int]]:
    """Each clip's (25 fps faces, segment start, 24 fps frame count) after the real face stage."""
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
        faces, frames = face_track_25(config.paths.work_dir / "sources" / ref.source_id, segment, config)
        tracks[ref.relpath] = (faces, segment.start_s, frames)
    return tracks


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
    parser.add_argument("--no-cost", action="store_true", help="skip the timing of shifted scoring")
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
        faces, start, frames = tracks[face_clip]
        sliced = padded_slice(audio[audio_key], start, len(faces), n)
        logits, visual = scorer.shifted_scores(faces, sliced, n)
        dumped[f"{face_clip}|{audio_key[0]}|{audio_key[1]}|logits"] = logits
        dumped[f"{face_clip}|{audio_key[0]}|{audio_key[1]}|visual"] = visual
        if args.dump:
            np.savez(args.dump, **dumped)
        m = measure_offset(logits, visual, threshold)
        if m is None:
            lips[(face_clip, audio_key)] = {k: (float("nan"), float("nan")) for k in ("stage", "alone", "unpadded")}
            return m
        stage = lip_measure(faces, frames, start, sliced, m, config)
        alone = lip_measure(faces, frames, start, sliced, m, config, window_s=np.inf)
        # The clip's own audio from its first sample, no padding: the same reading as the stage's path.
        unpadded = lip_measure(faces, frames, start, padded_slice(audio[audio_key], start, len(faces), 0), m,
                               config, audio_start_s=start)
        lips[(face_clip, audio_key)] = {
            "stage": (stage.offset_s, float(np.interp(stage.offset_s, stage.lags_s, stage.scores))),
            "alone": (alone.offset_s, float(np.interp(alone.offset_s, alone.lags_s, alone.scores))),
            "unpadded": (unpadded.offset_s, float(np.interp(unpadded.offset_s, unpadded.lags_s, unpadded.scores)))}
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
    cost = []
    if not args.no_cost:
        cost = [cost_row(scorer, tracks[c.name][0], padded_slice(audio[(c.name, 0)], tracks[c.name][1],
                                                                 len(tracks[c.name][0]), n), n, args.repeat)
                for c in clips[:2]]
        joined_faces = np.concatenate([tracks[c.name][0] for c in clips])
        joined_audio = np.concatenate([padded_slice(audio[(c.name, 0)], tracks[c.name][1], len(tracks[c.name][0]), 0)
                                       for c in clips])
        cost.append(cost_row(scorer, joined_faces, padded_slice(joined_audio, 0.0, len(joined_faces), n), n,
                             args.repeat))
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
    disagree = [key for key, v in lips.items() if abs(v["stage"][0] - v["unpadded"][0]) > 0.005]
    print(f"\nstage path (padded) vs unpadded audio: {len(lips) - len(disagree)}/{len(lips)} readings within 5 ms"
          + (f"; differ: {disagree}" if disagree else ""))
    if args.json:
        args.json.write_text(json.dumps({"matched": matched, "strangers": strangers, "cost": cost,
                                         "lips": [{"face": f, "voice": v, "true_ms": d, **lips[(f, (v, d))]}
                                                  for f, (v, d) in lips]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
