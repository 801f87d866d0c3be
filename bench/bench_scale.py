"""Scale benchmark: every stage on the same talking-head content at 1x, 4x and 16x duration.

    python bench/bench_scale.py [--durations 1,4] [--append] [--base-clips N] [--out-dir DIR]
        [--model-dir DIR] [--keep DIR]

The 1x source is the GRID clips in ../shared/media/grid concatenated (H.264/AAC, 360x288,
25 fps; ``--base-clips`` of them, repeated in order when more are asked for than exist);
the Nx source is that file repeated N times (ffmpeg concat demuxer, stream copy), so
every scale holds the same content. For each scale, in a fresh data folder, each stage
runs in its own child process, in pipeline order (face_clips = probe + one decode +
faces + crops, asd, speech, flame, captions, shards), and the parent records:

- wall time of the stage's work (model loading excluded, reported apart) and its
  realtime factor (wall / source seconds), time inside the model calls, and the rest;
- source decodes (``pipelines.media.decode.DECODE_COUNTS``, summed over the children);
- the child's peak memory: its own VmHWM (exact) and the peak of the summed RSS of its
  whole process tree (x264 encoders included), polled from /proc; the larger is "peak";
- the ffmpeg floor of bench_pipeline.py (one ffmpeg decoding the source and encoding as
  many 384 px 24 fps frames with the config's x264 settings) and non-model time over it;
- shard read throughput through the trainer's loader against a raw sequential read of
  the same tar files (bytes/s and samples/s).

FLAME and captions run with whatever models the model folder has; when SHeaP or Qwen-VL
is missing, the tiny stand-ins of pipelines/fixtures/sheap.py and pipelines/fixtures/qwen_vl.py
are built into a temporary model folder and the output says so. Results go to
``bench/results/scale.json`` and ``scale.md`` and are printed; ``--append`` merges the
scales measured now into an existing JSON (each command stays short).

This module is the command line and one scale's sequence; the rest lives beside it:
scale_corpus.py (sources, model folder), scale_stages.py (one stage, child side),
scale_measure.py (memory, ffmpeg floor, shard read) and scale_report.py (JSON, table).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/bench_scale.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from bench.bench_pipeline import DEFAULT_MEDIA_DIR, DEFAULT_MODEL_DIR  # noqa: E402
from bench.scale_corpus import base_clips, make_base_source, make_scaled_source, prepare_model_dir  # noqa: E402
from bench.scale_measure import MIB, measure_floor, measure_shard_read, process_peak_rss_bytes  # noqa: E402
from bench.scale_measure import run_stage_in_child  # noqa: E402
from bench.scale_report import build_payload, derive, markdown, memory_summary, merge  # noqa: E402
from bench.scale_stages import STAGES, run_stage  # noqa: E402
from pipelines.config import MODEL_DIR_ENV, PipelineConfig, load_config  # noqa: E402
from pipelines.media import decode as media  # noqa: E402

DEFAULT_DURATIONS = (1, 4, 16)
DEFAULT_BASE_CLIPS = 5  # 5 GRID clips of 3 s: 1x = 15 s, 16x = 4 min
RESULTS_DIR = REPO / "bench" / "results"
JSON_NAME, MARKDOWN_NAME = "scale.json", "scale.md"


def scale_config(base: PipelineConfig, root: Path) -> PipelineConfig:
    return PipelineConfig.model_validate({**base.model_dump(), "paths": {
        **base.paths.model_dump(), "input_dir": root / "input", "data_dir": root / "data"}})


def write_config(config: PipelineConfig, path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=True))
    return path


def bench_scale(scale: int, base_source: Path, config: PipelineConfig, root: Path,
                stages: Iterable[str] = STAGES, in_process: bool = False) -> dict:
    """The ``stages`` on ``base_source`` repeated ``scale`` times, in the data folder under ``root``.

    Running face_clips starts from a fresh data folder; later stages alone reuse the one a
    previous invocation left there (``--keep``), so a long scale can be split over commands.
    ``in_process`` runs the stages in this process (no memory figures): for tests.
    """
    root.mkdir(parents=True, exist_ok=True)
    cfg = scale_config(config, root)
    stages = list(stages)
    if "face_clips" in stages:
        shutil.rmtree(cfg.paths.data_dir, ignore_errors=True)
    cfg.paths.input_dir.mkdir(parents=True, exist_ok=True)
    source = cfg.paths.input_dir / f"talk-x{scale}.mp4"
    if not source.exists():
        if scale > 1:
            make_scaled_source(base_source, scale, source)
        else:
            shutil.copy(base_source, source)
    info = media.probe(source)
    config_path = write_config(cfg, root / "config.yaml")
    results: dict[str, dict] = {}
    for stage in stages:
        if in_process:
            results[stage] = run_stage(stage, cfg)
        else:
            results[stage] = run_stage_in_child(stage, config_path, root / f"{stage}.result.json")
        results[stage]["rtf"] = results[stage]["wall_s"] / info.duration_s
        results[stage]["loadavg_1m"] = os.getloadavg()[0]
        print(f"  x{scale} {stage}: {results[stage]['wall_s']:.2f} s (RTF {results[stage]['rtf']:.3f})"
              + (f", peak {results[stage]['peak_mib']:.0f} MiB" if not in_process else ""), flush=True)
    run: dict[str, Any] = {"scale": scale, "source": {"duration_s": info.duration_s, "width": info.width,
                                                      "height": info.height, "fps": info.frame_rate,
                                                      "bytes": info.size_bytes},
                           "stages": results}
    if "face_clips" in results:
        run["floor"] = measure_floor(source, cfg, results["face_clips"])
    if "shards" in results:
        run["shard_read"] = measure_shard_read(cfg.paths.shards_dir)
    return derive(run)


def worker_main(stage: str, config_path: Path, out: Path) -> int:
    result = run_stage(stage, load_config(config_path))
    out.write_text(json.dumps({**result, "peak_process_rss_mib": process_peak_rss_bytes() / MIB}))
    return 0


def parse_durations(text: str) -> list[int]:
    values = sorted({int(v) for v in text.split(",") if v.strip()})
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("durations are positive integers, e.g. 1,4,16")
    return values


def parse_stages(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = sorted(set(names) - set(STAGES))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"stages are among {', '.join(STAGES)}; got {text!r}")
    return [s for s in STAGES if s in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--durations", type=parse_durations, default=list(DEFAULT_DURATIONS),
                        help="multiples of the 1x source to run (default: 1,4,16)")
    parser.add_argument("--append", action="store_true", help="merge into the existing JSON instead of replacing it")
    parser.add_argument("--base-clips", type=int, default=DEFAULT_BASE_CLIPS, help="GRID clips joined into 1x")
    parser.add_argument("--media-dir", type=Path, default=DEFAULT_MEDIA_DIR)
    parser.add_argument("--model-dir", type=Path, default=Path(os.environ.get(MODEL_DIR_ENV) or DEFAULT_MODEL_DIR))
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--stages", type=parse_stages, default=list(STAGES),
                        help="comma-separated stages to run (default: all); later stages alone need --keep "
                             "with the folder of an earlier invocation that ran the stages before them")
    parser.add_argument("--keep", type=Path, help="keep the work folders here (default: a temporary folder)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: re-render the markdown from the existing JSON (with --findings)")
    parser.add_argument("--findings", type=Path, help="text file, one finding per line, stored in the JSON and table")
    parser.add_argument("--worker", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.config, args.worker_out)
    json_path, md_path = args.out_dir / JSON_NAME, args.out_dir / MARKDOWN_NAME
    if args.report_only:
        if not json_path.exists():
            parser.error(f"--report-only: {json_path} does not exist")
        return write_results(json.loads(json_path.read_text()), args.findings, json_path, md_path)
    if shutil.which("ffmpeg") is None:
        parser.error("ffmpeg is not on PATH")

    work = Path(tempfile.mkdtemp(prefix="bench-scale-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        payload = run_benchmark(args, work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    previous = json.loads(json_path.read_text()) if args.append and json_path.exists() else None
    return write_results(merge(previous, payload), args.findings, json_path, md_path)


def write_results(payload: dict, findings: Path | None, json_path: Path, md_path: Path) -> int:
    payload["memory"] = memory_summary(payload["runs"])
    if findings is not None:
        payload["findings"] = [line.strip() for line in findings.read_text().splitlines() if line.strip()]
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(payload, indent=1, sort_keys=True))
    text = markdown(payload)
    md_path.write_text(text)
    print(text)
    print(f"wrote {json_path} and {md_path}")
    return 0


def run_benchmark(args: argparse.Namespace, work: Path) -> dict:
    model_dir, used = prepare_model_dir(args.model_dir.resolve(), work)
    config = load_config(paths={"model_dir": model_dir})
    clips = base_clips(args.media_dir, args.base_clips)
    base = work / f"base-{args.base_clips}.mp4"
    if not base.exists():
        make_base_source(clips, base)
    load_start = os.getloadavg()
    runs = {}
    for scale in args.durations:
        print(f"scale x{scale}: {', '.join(args.stages)}", flush=True)
        runs[str(scale)] = bench_scale(scale, base, config, work / f"x{scale}", args.stages)
    invocation = {"durations": args.durations, "stages": args.stages, "loadavg_start": list(load_start)}
    return build_payload(runs, config, used, clips, base, invocation)


if __name__ == "__main__":
    sys.exit(main())
