"""The `talkinghead` command: pipeline, models, annotation server and trainers in one group.

    talkinghead models status [--json]
    talkinghead scan                          # register the input folder's videos
    talkinghead run [--input DIR] [--stage S] [--force] [--workers N]   # every stage on every source
                                              # (+ the conversation pairing in conversation mode) + shards
    talkinghead annotation server start|stop|status
    talkinghead train sft|rl|evaluate ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

from pipelines.config import INPUT_DIR_ENV, load_config
from pipelines.models import ModelStore, format_report, report_json
from pipelines.registry import STAGES


def _models_status(args) -> int:
    from pipelines.speech.asr_whisperx import registered_whisper, whisper_folder_status

    config = load_config(args.config)
    store = ModelStore(config.paths.model_dir)
    statuses = store.report()
    if registered_whisper(config.speech.whisper_model) is None:  # a user's own Whisper folder: files checked
        statuses.append(whisper_folder_status(config.paths.model_dir, config.speech.whisper_model, store))
    print(report_json(statuses) if args.json else format_report(statuses, config.paths.model_dir))
    needed = "scrfd_500m" if config.faces.backend == "scrfd" else f"mediapipe_{config.faces.mediapipe_model}"
    return 0 if next(s for s in statuses if s.name == needed).state in ("ok", "unpinned") else 1


def _scan(args) -> int:
    from pipelines.ingest import SourceRegistry

    config = load_config(args.config)
    registry = SourceRegistry(config.paths.registry_path)
    for ref in registry.scan(config.paths.input_dir, config.ingest.extensions, progress=True):
        print(f"{ref.source_id}\t{ref.relpath}")
    for relpath, why in registry.skipped().items():
        print(f"skipped ({why['reason']})\t{relpath}")
    return 0


def _print_pairing(pairing) -> None:
    """Conversation mode: each session's outcome and its actors' seconds per role; refused sidecars."""
    for sidecar, why in pairing.refused.items():
        print(f"REFUSED sidecar {sidecar}: {why} (its videos are shared-video sources)", file=sys.stderr)
    for outcome in pairing.sessions:
        if outcome.status in ("empty", "unchanged"):
            continue
        line = f"session {outcome.plan.input} {outcome.plan.name}: {outcome.status}"
        print(line + (f" ({outcome.detail})" if outcome.detail else ""),
              file=sys.stderr if outcome.status == "failed" else sys.stdout)
        for actor in outcome.summary.actors if outcome.summary else ():
            seconds = actor.info.role_seconds
            print(f"  {actor.key} {actor.info.actor} (partner {actor.info.partner}): speaking {seconds.speaking:.2f} s, "
                  f"listening {seconds.listening:.2f} s, both {seconds.both:.2f} s, silent {seconds.silent:.2f} s")
    counts = Counter(outcome.status for outcome in pairing.sessions)
    print("conversations: " + (", ".join(f"{status} {n}" for status, n in sorted(counts.items())) or "no session"))


def _run(args) -> int:
    from pipelines.conversation.pairing import PairingReport, pair_sessions
    from pipelines.ingest import SourceRegistry
    from pipelines.runner import ModelBackends, close_backends, run_sources
    from pipelines.shards import write_shards

    config = load_config(args.config)
    refs = SourceRegistry(config.paths.registry_path).scan(config.paths.input_dir, config.ingest.extensions,
                                                           progress=not args.quiet)
    pairing = PairingReport()
    try:
        report = run_sources(refs, config, stages=args.stage or None, force=args.force, progress=not args.quiet,
                             workers=args.workers)
        if config.conversation.mode == "conversation":  # after every per-source stage, before the shards
            pairing = pair_sessions(config, refs, ModelBackends(config), progress=not args.quiet)
    finally:
        close_backends()
    for record in report.records:
        print(f"{record.source_id}: {record.status}" + (f" ({record.reason})" if record.reason else ""))
    ran = Counter((o.stage, o.status) for o in report.outcomes)
    print("stages: " + ", ".join(f"{stage} {status} {n}" for (stage, status), n in sorted(ran.items())))
    for source_id, error in report.failures.items():
        print(f"FAILED {source_id}: {error}", file=sys.stderr)
    if config.conversation.mode == "conversation":
        _print_pairing(pairing)
    summary = write_shards(report.records, config, progress=not args.quiet)
    print(json.dumps(summary.stats.model_dump(mode="json"), indent=1))
    print(json.dumps({"shards_added": summary.added, "sources_retired": summary.retired,
                      "sources_unpackable": summary.unpackable}, indent=1))
    for source_id, why in summary.unpackable.items():
        print(f"UNPACKABLE {source_id}: {why} (tried again on the next run)", file=sys.stderr)
    return 1 if report.failures or pairing.failures or summary.unpackable else 0


def _compact(args) -> int:
    from pipelines.shards import compact_shards

    result = compact_shards(load_config(args.config), progress=not args.quiet)
    print(json.dumps({"replaced": result.replaced, "added": result.added, "samples_kept": result.samples_kept,
                      "samples_dropped": result.samples_dropped}, indent=1))
    return 0


def _verify_shards(args) -> int:
    from pipelines.shards import verify_shards

    config = load_config(args.config)
    problems = verify_shards(config.paths.shards_dir)
    for problem in problems:
        print(problem)
    print(f"{config.paths.shards_dir}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from annotation.cli import register as register_annotation
    from training.cli import register as register_training

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
    run = sub.add_parser("run", help="process all sources and write shards without Dagster")
    run.add_argument("--stage", action="append", choices=[spec.name for spec in STAGES],
                     help="run only this stage and what it needs (repeatable); default: every stage")
    run.add_argument("--force", action="store_true", help="re-run stages whose output is current")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--workers", type=_positive_int, default=None,
                     help="processes running sources in parallel, each with its own models "
                          "(default: runtime.workers in the config)")
    run.set_defaults(func=_run)
    compact = sub.add_parser("compact", help="re-pack small or largely retired shards (shards.compact_* in the config)")
    compact.add_argument("--quiet", action="store_true", help="no progress bar")
    compact.set_defaults(func=_compact)
    sub.add_parser("verify-shards", help="stream every indexed shard: sha256, members, live samples "
                   "(exit 1 on a problem)").set_defaults(func=_verify_shards)
    register_annotation(sub)
    register_training(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.input:
        os.environ[INPUT_DIR_ENV] = str(Path(args.input).resolve())
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
