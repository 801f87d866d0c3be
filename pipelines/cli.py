"""`talkinghead` command line: model status and engine-free runs of the stage library.

    talkinghead models status [--json]
    talkinghead scan                       # register the input folder's videos
    talkinghead run [--input DIR]          # process every source and write shards, no Dagster
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pipelines.config import INPUT_DIR_ENV, load_config
from pipelines.models import ModelStore, format_report, report_json


def _models_status(args, config) -> int:
    from pipelines.speech.asr_whisperx import registered_whisper, whisper_folder_status

    store = ModelStore(config.paths.model_dir)
    statuses = store.report()
    if registered_whisper(config.speech.whisper_model) is None:  # a user's own Whisper folder: files checked
        statuses.append(whisper_folder_status(config.paths.model_dir, config.speech.whisper_model, store))
    print(report_json(statuses) if args.json else format_report(statuses, config.paths.model_dir))
    needed = "scrfd_500m" if config.faces.backend == "scrfd" else f"mediapipe_{config.faces.mediapipe_model}"
    return 0 if next(s for s in statuses if s.name == needed).state in ("ok", "unpinned") else 1


def _scan(args, config) -> int:
    from pipelines.ingest import SourceRegistry

    registry = SourceRegistry(config.paths.registry_path)
    for ref in registry.scan(config.paths.input_dir, config.ingest.extensions):
        print(f"{ref.source_id}\t{ref.relpath}")
    for relpath, why in registry.skipped().items():
        print(f"skipped ({why['reason']})\t{relpath}")
    return 0


def _run(args, config) -> int:
    from pipelines.faces.detectors import build_detector
    from pipelines.ingest import SourceRegistry
    from pipelines.shards import write_shards
    from pipelines.sources import process_source
    from pipelines.asd.score import ActiveSpeakerScorer
    from pipelines.asd.stage import run_asd_stage
    from pipelines.captions.stage import build_captioner, run_caption_stage
    from pipelines.flame.stage import build_backend as build_flame_backend
    from pipelines.flame.stage import run_flame_stage
    from pipelines.speech.stage import build_backends, run_speech_stage

    refs = SourceRegistry(config.paths.registry_path).scan(config.paths.input_dir, config.ingest.extensions)
    detector = build_detector(config.faces, ModelStore(config.paths.model_dir))
    speech = build_backends(config) if config.speech.enabled else None
    scorer = ActiveSpeakerScorer(ModelStore(config.paths.model_dir).path(config.asd.model), device=config.asd.device,
                                 window_frames=config.asd.window_frames,
                                 overlap_frames=config.asd.overlap_frames) if config.asd.enabled else None
    flame = build_flame_backend(config) if config.flame.enabled else None
    captioner = build_captioner(config) if config.captions.enabled else None
    records = []
    try:
        for n, ref in enumerate(refs, 1):
            record = process_source(ref, config, detector)
            if scorer is not None:
                run_asd_stage(ref, record, config, scorer)
            if speech is not None:
                run_speech_stage(ref, record, config, speech)
            if config.flame.enabled:
                run_flame_stage(ref, record, config, flame)
            if config.captions.enabled:
                run_caption_stage(ref, record, config, captioner)
            records.append(record)
            print(f"[{n}/{len(refs)}] {ref.source_id}: {record.status}" + (f" ({record.reason})" if record.reason else ""))
    finally:
        detector.close()
    summary = write_shards(records, config)
    print(json.dumps(summary.stats, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="talkinghead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (default: $TALKINGHEAD_CONFIG or built-in defaults)")
    parser.add_argument("--input", help="override paths.input_dir")
    sub = parser.add_subparsers(dest="command", required=True)
    models = sub.add_parser("models", help="model directory")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    status = models_sub.add_parser("status", help="list models present, missing or with a wrong hash")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_models_status)
    sub.add_parser("scan", help="register the input folder's videos").set_defaults(func=_scan)
    sub.add_parser("run", help="process all sources and write shards without Dagster").set_defaults(func=_run)
    args = parser.parse_args(argv)
    if args.input:
        os.environ[INPUT_DIR_ENV] = str(Path(args.input).resolve())
    config = load_config(args.config)
    return args.func(args, config)


if __name__ == "__main__":
    sys.exit(main())
