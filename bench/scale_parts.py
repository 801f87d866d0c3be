"""Where the ASD and speech stages spend their time on a bench_scale data folder, part by part.

    python bench/scale_parts.py --keep /tmp/bench-scale-profile [--scale 1] [--stages asd,speech]
        [--repeat 3] [--no-warmup] [--json OUT] [--label NAME]
    python bench/scale_parts.py --compare BEFORE.json AFTER.json [BEFORE.json AFTER.json ...]
        [--out-dir bench/results]

``--keep`` is the folder a ``bench_scale.py --keep`` run left (its face_clips and quality
stages must have run there). Each stage runs in this process through the stage runner
(``force=True``), after its models are loaded and once for warm-up (unless ``--no-warmup``);
then ``--repeat`` times with the parts below wrapped in timers. Per part: calls, wall seconds
and process CPU seconds (all threads of this process; x264 and ffmpeg children are counted
apart), the median over the repeats. Parts nest (the visual encoder is inside the shifted scores): the
table says which part holds which. Wall time depends on the machine's load, printed with
the figures; CPU seconds much less so.

A part that the code measured does not have (a function renamed or removed by a change) is
left out, so the same script times the code before and after a change (run a copy of it in a
worktree of the earlier commit). ``--compare`` puts pairs of such JSON files side by side in
``scale_parts.{json,md}``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/scale_parts.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class Part:
    """One timed callable: ``owner`` (module path, optionally ``:Class``) and its attribute."""

    label: str
    owner: str
    attribute: str
    inside: str = ""  # the part that holds this one, for the table


# The parts of each stage, outermost first. Several targets may share a label (the same work
# under its old and its new name); each existing one is wrapped.
PARTS: dict[str, tuple[Part, ...]] = {
    "asd": (
        Part("read crops (decode + 112 px grey faces)", "pipelines.asd.stage", "face_track_25", "stage"),
        Part("face crop", "pipelines.asd.features", "face_crop_112", "read crops (decode + 112 px grey faces)"),
        Part("face crop", "pipelines.asd.features", "face_crops_112", "read crops (decode + 112 px grey faces)"),
        Part("padded audio read", "pipelines.asd.stage", "shifted_audio", "stage"),
        Part("Light-ASD scores (all shifts)", "pipelines.asd.score:ActiveSpeakerScorer", "shifted_scores_many", "stage"),
        Part("MFCC", "pipelines.asd.score", "audio_features_for_frames", "Light-ASD scores (all shifts)"),
        Part("visual encoder", "pipelines.asd.model:LightASD", "encode_visual", "Light-ASD scores (all shifts)"),
        Part("audio encoder", "pipelines.asd.model:LightASD", "encode_audio", "Light-ASD scores (all shifts)"),
        Part("GRU + head, 2N+1 shifts", "pipelines.asd.model:LightASD", "logits_from_embeddings",
             "Light-ASD scores (all shifts)"),
        Part("offset curve (Light-ASD)", "pipelines.asd.stage", "measure_offset", "stage"),
        Part("lip-energy offset", "pipelines.asd.stage", "lip_measure", "stage"),
        Part("decide + write child clips", "pipelines.asd.stage", "decide", "stage"),
        Part("write child clips (decode, x264, mux)", "pipelines.asd.stage", "write_runs", "decide + write child clips"),
    ),
    "speech": (
        Part("pyannote segmentation", "pipelines.speech.segmentation:PyannoteSegmentationActivity", "activity", "stage"),
        Part("silero VAD", "faster_whisper.transcribe", "get_speech_timestamps", "stage"),
        Part("silero VAD", "pipelines.speech.asr_whisperx", "get_speech_timestamps", "stage"),
        Part("log-mel features", "faster_whisper.feature_extractor:FeatureExtractor", "__call__", "stage"),
        Part("Whisper encoder pass", "faster_whisper.transcribe:WhisperModel", "encode", "stage"),
        Part("language from encoder output", "pipelines.speech.asr_whisperx", "language_of_encoding", "stage"),
        Part("decoding (beam search)", "faster_whisper.transcribe:WhisperModel", "generate_with_fallback", "stage"),
        Part("word timestamps (alignment heads)", "faster_whisper.transcribe:WhisperModel", "add_word_timestamps",
             "stage"),
        Part("lingua on text", "pipelines.speech.language:LinguaIdentifier", "identify", "stage"),
    ),
}


@dataclass
class Timer:
    calls: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    depth: int = 0  # a part re-entered (e.g. under two names) is timed once, outermost


@dataclass
class Timers:
    by_label: dict[str, Timer] = field(default_factory=dict)

    def wrap(self, label: str, fn: Callable) -> Callable:
        timer = self.by_label.setdefault(label, Timer())

        def timed(*args, **kwargs):
            if timer.depth:
                return fn(*args, **kwargs)
            timer.depth += 1
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                timer.wall_s += time.perf_counter() - wall
                timer.cpu_s += time.process_time() - cpu
                timer.calls += 1
                timer.depth -= 1

        timed.__wrapped__ = fn
        return timed

    def reset(self) -> None:
        for timer in self.by_label.values():
            timer.calls, timer.wall_s, timer.cpu_s = 0, 0.0, 0.0


def install(parts: tuple[Part, ...], timers: Timers) -> tuple[list[str], Callable[[], None]]:
    """Wrap every part that exists; the labels wrapped and a function that puts the originals back."""
    wrapped, originals = [], []
    for part in parts:
        module_name, _, class_name = part.owner.partition(":")
        try:
            owner = importlib.import_module(module_name)
        except ImportError:
            continue
        if class_name:
            owner = getattr(owner, class_name, None)
        fn = getattr(owner, part.attribute, None) if owner is not None else None
        if fn is None:
            continue
        # The owner's own entry (None: inherited), so that restoring copies nothing down a class tree.
        originals.append((owner, part.attribute, vars(owner).get(part.attribute)))
        setattr(owner, part.attribute, timers.wrap(part.label, fn))
        wrapped.append(part.label)

    def restore() -> None:
        for owner, attribute, original in reversed(originals):
            if original is None:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, original)

    return wrapped, restore


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def profile_stage(stage: str, config, repeat: int, warmup: bool = True) -> dict:
    """Part-by-part figures of ``stage`` over every source of ``config``'s input folder (see the module)."""
    from bench.timed_backends import TimedBackends
    from bench.scale_stages import _load_models, _scan
    from pipelines import runner

    refs = _scan(config)
    backends = TimedBackends(config)
    _load_models(stage, backends)
    for ref in refs if warmup else ():  # first-call costs (lazy imports, allocator) are not the stage's
        runner.run_stage(stage, ref, config, backends, force=True)
    timers = Timers()
    labels, restore = install(PARTS[stage], timers)
    runs = []
    try:
        for _ in range(repeat):
            timers.reset()
            children, wall, cpu = children_cpu_s(), time.perf_counter(), time.process_time()
            for ref in refs:
                runner.run_stage(stage, ref, config, backends, force=True)
            whole = {"calls": len(refs), "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
            runs.append({"children_cpu_s": children_cpu_s() - children, "load_1m": os.getloadavg()[0],
                         "parts": {"stage": whole,
                                   **{label: vars(timer).copy() for label, timer in timers.by_label.items()}}})
    finally:
        restore()
        runner.close_backends()
    parts = {}
    for part in (Part("stage", "", ""), *PARTS[stage]):
        if part.label in parts or part.label not in ("stage", *labels):
            continue
        rows = [run["parts"][part.label] for run in runs]
        parts[part.label] = {"inside": part.inside, "calls": rows[0]["calls"],
                             "wall_s": statistics.median(r["wall_s"] for r in rows),
                             "cpu_s": statistics.median(r["cpu_s"] for r in rows)}
    return {"stage": stage, "repeat": repeat, "parts": parts,
            "children_cpu_s": statistics.median(r["children_cpu_s"] for r in runs),
            "load_1m": [round(r["load_1m"], 2) for r in runs]}


def markdown(result: dict, source_s: float, label: str) -> str:
    lines = [f"### {result['stage']} ({label}; median of {result['repeat']}, load 1m {result['load_1m']})", "",
             "| part | inside | calls | wall s | CPU s | wall / source s |", "|---|---|---|---|---|---|"]
    for name, part in result["parts"].items():
        lines.append(f"| {name} | {part['inside']} | {part['calls']} | {part['wall_s']:.3f} | {part['cpu_s']:.3f} | "
                     f"{part['wall_s'] / source_s:.3f} |")
    lines.append(f"| (x264/ffmpeg children, CPU) | stage | | | {result['children_cpu_s']:.3f} | |")
    return "\n".join(lines) + "\n"


def compare(before: dict, after: dict) -> str:
    """Markdown: per stage and part, calls and CPU/wall seconds before and after, CPU after / before."""
    lines = [f"## {after['scale']}x source ({after['source_s']:.1f} s)", "",
             f"Before: {before['label']}. After: {after['label']}.", ""]
    for old, new in zip(before["results"], after["results"]):
        if old["stage"] != new["stage"]:
            raise ValueError(f"the two runs measured different stages: {old['stage']} and {new['stage']}")
        lines += [f"### {new['stage']}, {after['scale']}x (median of {new['repeat']}; "
                  f"load 1m before {old['load_1m']}, after "
                  f"{new['load_1m']})", "",
                  "| part | inside | calls before | calls after | CPU s before | CPU s after | CPU after / before "
                  "| wall s before | wall s after |", "|---|---|---|---|---|---|---|---|---|"]
        for name in dict.fromkeys([*old["parts"], *new["parts"]]):
            a, b = old["parts"].get(name), new["parts"].get(name)
            cell = lambda part, key, fmt: fmt.format(part[key]) if part else "-"  # noqa: E731
            ratio = f"{b['cpu_s'] / a['cpu_s']:.2f}" if a and b and a["cpu_s"] > 0 else "-"
            lines.append(f"| {name} | {(a or b)['inside']} | {cell(a, 'calls', '{}')} | {cell(b, 'calls', '{}')} | "
                         f"{cell(a, 'cpu_s', '{:.3f}')} | {cell(b, 'cpu_s', '{:.3f}')} | {ratio} | "
                         f"{cell(a, 'wall_s', '{:.3f}')} | {cell(b, 'wall_s', '{:.3f}')} |")
        lines.append(f"| (x264/ffmpeg children, CPU) | stage | | | {old['children_cpu_s']:.3f} | "
                     f"{new['children_cpu_s']:.3f} | | | |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="the --keep folder of a bench_scale.py run")
    parser.add_argument("--compare", type=Path, nargs="+", metavar="JSON",
                        help="BEFORE AFTER [BEFORE AFTER ...]: write scale_parts.{json,md} comparing --json outputs "
                             "pairwise; runs nothing")
    parser.add_argument("--notes", type=Path, help="with --compare: a text file whose lines go under the title")
    parser.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--stages", default="asd,speech")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the untimed first run (a long source is its own warm-up)")
    parser.add_argument("--label", default="", help="what is measured (e.g. a commit), for the table")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if args.compare:
        if len(args.compare) % 2:
            parser.error("--compare takes pairs: BEFORE AFTER [BEFORE AFTER ...]")
        runs = [json.loads(path.read_text()) for path in args.compare]
        pairs = [{"before": before, "after": after} for before, after in zip(runs[::2], runs[1::2])]
        notes = args.notes.read_text().strip() + "\n\n" if args.notes else ""
        text = ("# Speech and ASD stages part by part (bench/scale_parts.py)\n\n" + notes
                + "\n".join(compare(pair["before"], pair["after"]) for pair in pairs))
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "scale_parts.json").write_text(json.dumps({"pairs": pairs, "notes": notes.strip()}, indent=1))
        (args.out_dir / "scale_parts.md").write_text(text)
        print(text)
        return 0
    if args.keep is None:
        parser.error("--keep is required (or --compare)")
    from pipelines.config import load_config
    from pipelines.media import decode as media

    root = args.keep / f"x{args.scale}"
    config = load_config(root / "config.yaml")
    source_s = media.probe(root / "input" / f"talk-x{args.scale}.mp4").duration_s
    results = []
    for stage in [s.strip() for s in args.stages.split(",") if s.strip()]:
        if stage not in PARTS:
            parser.error(f"--stages: {stage!r} is not one of {', '.join(PARTS)}")
        result = profile_stage(stage, config, args.repeat, warmup=not args.no_warmup)
        results.append(result)
        print(markdown(result, source_s, args.label or "this tree"), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"label": args.label, "scale": args.scale, "source_s": source_s,
                                         "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
