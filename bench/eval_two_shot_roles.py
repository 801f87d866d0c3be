"""How close shared-video role timelines come to composed conversations, by voice and by face.

    python bench/eval_two_shot_roles.py [--clips DIR] [--work DIR] [--out bench/results/two_shot_roles.md]

Every pair of a GRID man (bbaf2n, brbk7n) and a GRID woman (lbax4n, lbbc2a, lrwp9a, lwbsza), in
both turn orders (a b a b and b a b a, each saying their sentence twice; pipelines/fixtures/
conversation.py), gives 16 conversations. Each is run through the real stages in conversation
mode (SCRFD, quality, Light-ASD, the pyannote speaker count) as

- a two-shot: both people side by side with the mixed track (two actors each), and
- two one-face shots: one person's picture with the same mixed track, the other off screen.

Then the pairing runs twice on the same stage outputs, with ``conversation.shared_video_voices``
on (voice turns, pipelines/conversation/voices.py) and off (Light-ASD per frame), and each actor's
role.npy is compared with the composition: the frames that differ more than two frames away from
a turn change (the test's tolerance) and all frames that differ.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/...` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from pipelines.config import MODEL_DIR_ENV, PipelineConfig, load_config  # noqa: E402
from pipelines.conversation.pairing import pair_sessions  # noqa: E402
from pipelines.conversation.summary import conversations_dir  # noqa: E402
from pipelines.fixtures.conversation import (  # noqa: E402
    ComposedConversation,
    frames_off_beyond,
    plan_turns,
    two_shot,
    write_session,
)
from pipelines.fixtures.media import H264_AAC, run_ffmpeg  # noqa: E402
from pipelines.ingest import SourceRegistry  # noqa: E402
from pipelines.runner import ModelBackends, close_backends, run_sources  # noqa: E402
from pipelines.schema.conversation import ROLE_MEMBER, check_roles  # noqa: E402
from pipelines.schema.sample import SampleRecord  # noqa: E402

MEN = ("bbaf2n", "brbk7n")
WOMEN = ("lbax4n", "lbbc2a", "lrwp9a", "lwbsza")
FPS = 24.0
TOLERANCE = 2
WEIGHTS = ("scrfd/scrfd_500m_kps.onnx", "light-asd/pretrain_AVA_CVPR.model")


def compose(man: str, woman: str, first: str, clips: Path, folder: Path) -> tuple[ComposedConversation, dict[str, Path]]:
    """The conversation, and its input folders: "two_shot" and "a_only" / "b_only" (one face, the other off screen)."""
    order = ["a", "b", "a", "b"] if first == "a" else ["b", "a", "b", "a"]
    conversation = plan_turns({"a": [clips / f"{man}.mpg"] * 2, "b": [clips / f"{woman}.mpg"] * 2}, order)
    inputs = {view: folder / view / "input" for view in ("two_shot", "a_only", "b_only")}
    if not (inputs["two_shot"] / "shot.mp4").is_file():
        recordings = folder / "recordings"
        write_session(conversation, recordings)
        for path in inputs.values():
            path.mkdir(parents=True, exist_ok=True)
        two_shot(recordings / "duo_a.mp4", recordings / "duo_b.mp4", inputs["two_shot"] / "shot.mp4")
        for who in ("a", "b"):
            run_ffmpeg(["-i", str(recordings / f"duo_{who}.mp4"), "-i", str(inputs["two_shot"] / "shot.mp4"),
                        "-map", "0:v", "-map", "1:a", *H264_AAC, str(inputs[f"{who}_only"] / "shot.mp4")])
    return conversation, inputs


def view_config(inputs: Path, model_dir: str, voices: bool) -> PipelineConfig:
    return load_config(paths={"input_dir": inputs, "data_dir": inputs.parent / "data", "model_dir": model_dir},
                       captions={"enabled": False}, flame={"enabled": False},
                       speech={"transcription_backend": "none"},
                       conversation={"mode": "conversation", "shared_video_voices": voices})


def actor_roles(config: PipelineConfig, outcome) -> list[tuple[float, np.ndarray]]:
    """(first box's left edge, role codes) of every actor the pairing wrote."""
    out = []
    for actor in outcome.summary.actors if outcome.summary else ():
        folder = config.paths.work_dir / "sources" / actor.source_id
        record = SampleRecord.load(folder / f"{actor.key}.json")
        roles = check_roles(np.load(io.BytesIO((folder / actor.files[ROLE_MEMBER]).read_bytes())), record.video.frames)
        out.append((record.faces.first_box[0], roles))
    return out


def evaluate(conversation: ComposedConversation, inputs: dict[str, Path], model_dir: str,
             backends: ModelBackends) -> list[dict]:
    rows = []
    for view, folder in inputs.items():
        stages = view_config(folder, model_dir, True)
        refs = SourceRegistry(stages.paths.registry_path).scan(folder, stages.ingest.extensions)
        report = run_sources(refs, stages, backends=backends, progress=False)
        if report.failures:
            raise RuntimeError(f"{folder}: {report.failures}")
        for voices in (True, False):
            config = view_config(folder, model_dir, voices)
            shutil.rmtree(conversations_dir(config), ignore_errors=True)  # pair again even where nothing changed
            started = time.process_time()
            (outcome,) = pair_sessions(config, refs).sessions
            cpu = time.process_time() - started
            for left, roles in actor_roles(config, outcome):
                actor = ("a" if left < 360 else "b") if view == "two_shot" else view[0]
                truth = conversation.roles(actor, FPS)
                # The composed video can run a frame past the conversation (its mixed audio's length).
                roles, truth = roles[: len(truth)], truth[: len(roles)]
                rows.append({"view": view, "voices": voices, "actor": actor, "frames": len(roles),
                             "beyond": len(frames_off_beyond(roles, truth, TOLERANCE)),
                             "differ": int((roles != truth).sum()),
                             "source": outcome.summary.actors[0].info.role_source, "pairing_cpu_s": cpu})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=Path, default=REPO.parent / "shared" / "media" / "grid")
    parser.add_argument("--model-dir", default=os.environ.get(MODEL_DIR_ENV) or str(REPO.parent / "shared" / "models"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/eval_two_shot_roles"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "two_shot_roles.md")
    args = parser.parse_args(argv)
    missing = [w for w in WEIGHTS if not (Path(args.model_dir) / w).is_file()]
    if missing:
        parser.error(f"missing weights in {args.model_dir}: {missing}")
    backends = ModelBackends(view_config(args.work, args.model_dir, True))
    table = []
    try:
        for man, woman, first in itertools.product(MEN, WOMEN, ("a", "b")):
            name = f"{man}-{woman}-{first}"
            conversation, inputs = compose(man, woman, first, args.clips, args.work / name)
            for row in evaluate(conversation, inputs, args.model_dir, backends):
                table.append({"conversation": name, **row})
                print(f"{name:20s} {row['view']:8s} voices={row['voices']!s:5s} actor {row['actor']}: "
                      f"{row['beyond']:3d} beyond {TOLERANCE}, {row['differ']:3d} differ of {row['frames']}"
                      f" ({row['source']})", flush=True)
    finally:
        close_backends()
    write_report(table, args.out)
    print(f"wrote {args.out}")
    return 0


def write_report(table: list[dict], out: Path) -> None:
    lines = ["# Shared-video role timelines against composed conversations", "",
             "`python bench/eval_two_shot_roles.py` (" + time.strftime("%Y-%m-%d") + "; 2-core CPU). "
             "16 GRID conversations (2 men x 4 women x 2 turn orders, each saying their sentence twice); "
             f"frames of an actor's role.npy that differ from the composition more than {TOLERANCE} frames away "
             "from a turn change, and all that differ. `voices`: conversation.shared_video_voices.", ""]
    lines += ["| view | voices | actors | actors with 0 beyond | frames beyond | max per actor | frames differ | frames |",
              "|---|---|---|---|---|---|---|---|"]
    for view in ("two_shot", "a_only", "b_only"):
        for voices in (True, False):
            rows = [r for r in table if r["view"] == view and r["voices"] == voices]
            if not rows:
                continue
            lines.append(f"| {view} | {'on' if voices else 'off'} | {len(rows)} | "
                         f"{sum(r['beyond'] == 0 for r in rows)} | {sum(r['beyond'] for r in rows)} | "
                         f"{max(r['beyond'] for r in rows)} | {sum(r['differ'] for r in rows)} | "
                         f"{sum(r['frames'] for r in rows)} |")
    fallback = [r for r in table if r["voices"] and r["source"] != "speaker_count+voice_turns+light_asd"]
    lines += ["", f"Actors where voices were on but fewer than two voices could be enrolled (per-frame rule used): "
              f"{len(fallback)}.", "", "Per actor:", "",
              "| conversation | view | voices | actor | beyond | differ | frames | pairing CPU s |", "|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['conversation']} | {r['view']} | {'on' if r['voices'] else 'off'} | {r['actor']} | "
                     f"{r['beyond']} | {r['differ']} | {r['frames']} | {r['pairing_cpu_s']:.2f} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
