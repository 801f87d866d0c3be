"""Each model stage's CUDA path on GRID media, with per-stage throughput, printed as JSON.

    python bench/gpu_check.py [--model-dir DIR] [--media DIR] [--repeat N] [--out FILE] [--smoke-cpu]

For a machine with an NVIDIA GPU. Builds every stage's backend the way the pipeline does
with ``device: cuda`` (pipelines.devices: onnxruntime's CUDA provider first, torch on
``cuda``, CTranslate2 on ``cuda``), runs it on the GRID clips and reports frames per second
(faces, ASD) or the realtime factor (speech: audio seconds per second of compute). A stage
whose weights are not in the model directory is reported as ``skipped`` with the reason (FLAME
and captions, whose weights are not in the shared folder, are only built, not timed); a
stage whose package cannot reach the GPU is reported ``unavailable`` with the package's own
error, and the script exits 1 when any is. Without any CUDA device it stops at once with
"no CUDA" and exit status 2.

Timings: one warm-up call (CUDA context, cuDNN algorithm choice), then the best of
--repeat. GPU deployments install onnxruntime-gpu (not onnxruntime) and a CUDA build of
torch; see bench/README.md, "Batching, CUDA and workers".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/gpu_check.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench.bench_asd import best_time  # noqa: E402
from pipelines.config import MODEL_DIR_ENV  # noqa: E402
from pipelines.devices import CUDA_PROVIDER, DeviceUnavailable  # noqa: E402

SAMPLE_RATE = 16000


def cuda_summary() -> dict:
    """What each package reaches: torch devices, onnxruntime providers, CTranslate2 devices."""
    import ctranslate2
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "torch_devices": [torch.cuda.get_device_name(k) for k in range(torch.cuda.device_count())],
            "onnxruntime": onnxruntime.__version__, "onnxruntime_providers": onnxruntime.get_available_providers(),
            "ctranslate2": ctranslate2.__version__, "ctranslate2_cuda_devices": ctranslate2.get_cuda_device_count()}




def grid_frames(clips: list[Path]) -> list[list[np.ndarray]]:
    import av

    out = []
    for path in clips:
        with av.open(str(path)) as container:
            out.append([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    return out


def grid_audio(path: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vn", "-f", "s16le", "-ac", "1",
                          "-ar", str(SAMPLE_RATE), "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype="<i2").copy()


def check_faces(model_dir: Path, frames: list[np.ndarray], repeat: int, device: str) -> dict:
    from pipelines.faces.detectors import ScrfdDetector, scrfd_graph_with_free_axes

    source = model_dir / "scrfd" / "scrfd_500m_kps.onnx"
    if not source.is_file():
        return {"status": "skipped", "reason": f"{source} not found"}
    detector = ScrfdDetector(source, 640, 0.5, device=device)
    result = {"status": "ok", "providers": detector.session_providers, "frames": len(frames),
              "per_image_fps": len(frames) / best_time(lambda: detector.detect_batch(frames), repeat)}
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "dynamic.onnx").write_bytes(scrfd_graph_with_free_axes(source, batch=True))
        dynamic = ScrfdDetector(Path(scratch) / "dynamic.onnx", 640, 0.5, device=device)
        for batch in (8, 32):
            def run():
                for first in range(0, len(frames), batch):
                    dynamic.detect_batch(frames[first:first + batch])
            result[f"batch_{batch}_fps_dynamic_copy"] = len(frames) / best_time(run, repeat)
    return result


def check_asd(model_dir: Path, clips: list[list[np.ndarray]], audio: list[np.ndarray], repeat: int,
              device: str) -> dict:
    import torch

    from pipelines.asd.features import face_crop_112
    from pipelines.asd.score import ActiveSpeakerScorer
    from pipelines.faces.detectors import ScrfdDetector

    weights = model_dir / "light-asd" / "pretrain_AVA_CVPR.model"
    if not weights.is_file():
        return {"status": "skipped", "reason": f"{weights} not found"}
    detector = ScrfdDetector(model_dir / "scrfd" / "scrfd_500m_kps.onnx", 640, 0.5)  # boxes only, not timed
    tracks = []
    for frames, pcm in zip(clips, audio):
        boxes = [max(d, key=lambda x: x.score).box if d else None for d in detector.detect_batch(frames)]
        kept = [(rgb, box) for rgb, box in zip(frames, boxes) if box is not None]
        tracks.append((np.stack([face_crop_112(rgb, box) for rgb, box in kept]), pcm))
    frames_total = sum(len(f) for f, _ in tracks)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    result = {"status": "ok", "device": name, "frames": frames_total}
    wait = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for batch in (1, 8, 32):
        scorer = ActiveSpeakerScorer(weights, device=device, batch_windows=batch)

        def plain():
            scorer.logits_many(tracks)
            wait()

        def shifted():
            scorer.shifted_scores_many(tracks, 8)
            wait()

        result[f"batch_{batch}_plain_fps"] = frames_total / best_time(plain, repeat)
        result[f"batch_{batch}_shifted_fps"] = frames_total / best_time(shifted, repeat)
    return result


def check_speech(model_dir: Path, audio: list[np.ndarray], repeat: int, device: str) -> dict:
    from faster_whisper import WhisperModel

    from pipelines.devices import ctranslate2_device

    folder = model_dir / "faster-whisper-base"
    if not (folder / "model.bin").is_file():
        return {"status": "skipped", "reason": f"{folder} has no model.bin"}
    compute_type = "float16" if device == "cuda" else "int8"
    model = WhisperModel(str(folder), device=ctranslate2_device(device), compute_type=compute_type,
                         local_files_only=True)
    joined = np.concatenate(audio).astype(np.float32) / 32768.0
    seconds = len(joined) / SAMPLE_RATE

    def transcribe():
        segments, _ = model.transcribe(joined, language="en", word_timestamps=True)
        return list(segments)

    elapsed = best_time(transcribe, repeat)
    return {"status": "ok", "audio_s": seconds, "compute_s": elapsed, "realtime_factor": seconds / elapsed,
            "note": f"faster-whisper base, {compute_type}, word timestamps; the pyannote activity model is not in the "
                    "shared model folder"}


def check_built(name: str, model_dir: Path, device: str) -> dict:
    """The stage's backend built by the pipeline's own builder with ``device: cuda`` (skipped when
    its weights are not installed: the builder returns None)."""
    from pipelines.config import load_config
    from pipelines.registry import stage

    config = load_config(paths={"model_dir": model_dir}, **{name: {"device": device}})
    backend = stage(name).build_backend(config)
    if backend is None:
        return {"status": "skipped", "reason": f"{name}: weights not in {model_dir}"}
    return {"status": "built", "backend": type(backend).__name__,
            "note": "built on cuda by the stage builder; no throughput figure (no input written for it here)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--media", type=Path, default=None, help="folder of GRID *.mpg clips")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--smoke-cpu", action="store_true",
                        help="run the same code on the CPU (checks the script itself; figures are CPU figures)")
    args = parser.parse_args(argv)
    model_dir = args.model_dir or Path(os.environ.get(MODEL_DIR_ENV) or REPO.parent / "shared" / "models")
    media = args.media or REPO.parent / "shared" / "media" / "grid"

    summary = cuda_summary()
    device = "cpu" if args.smoke_cpu else "cuda"
    if not args.smoke_cpu and not summary["torch_devices"] and CUDA_PROVIDER not in summary["onnxruntime_providers"] \
            and not summary["ctranslate2_cuda_devices"]:
        print(f"no CUDA: torch {summary['torch']} sees no device (built for CUDA: {summary['torch_cuda']}), "
              f"onnxruntime {summary['onnxruntime']} has {summary['onnxruntime_providers']}, CTranslate2 "
              f"{summary['ctranslate2']} sees {summary['ctranslate2_cuda_devices']} CUDA devices", file=sys.stderr)
        return 2
    clips = sorted(media.glob("*.mpg"))
    if not clips:
        parser.error(f"no GRID clips in {media}")
    frames = grid_frames(clips)
    audio = [grid_audio(path) for path in clips]
    flat = [f for clip in frames for f in clip]
    report = {"device": device, "cuda": summary, "load_average": open("/proc/loadavg").read().split()[:3], "stages": {}}
    checks = {"faces": lambda: check_faces(model_dir, flat, args.repeat, device),
              "asd": lambda: check_asd(model_dir, frames, audio, args.repeat, device),
              "speech": lambda: check_speech(model_dir, audio, args.repeat, device),
              "flame": lambda: check_built("flame", model_dir, device),
              "captions": lambda: check_built("captions", model_dir, device)}
    for name, check in checks.items():
        try:
            report["stages"][name] = check()
        except DeviceUnavailable as error:
            report["stages"][name] = {"status": "unavailable", "error": str(error)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 1 if any(s["status"] == "unavailable" for s in report["stages"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
