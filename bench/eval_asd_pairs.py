"""How often active speaker detection keeps the right face of two.

    python bench/eval_asd_pairs.py [--clips DIR] [--json OUT]

For every pair of GRID clips, both side by side with the audio of only one of them, it
runs the face stage and the ASD stage through the stage runner and checks that the face
whose audio plays is kept and the other dropped. Every GRID face moves its lips in the same
window, so this is a hard case for Light-ASD; the figure is what the stage achieves, not a
test threshold.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/eval_asd_pairs.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from pipelines.config import MODEL_DIR_ENV, PipelineConfig, load_config  # noqa: E402
from pipelines.ingest import SourceRegistry  # noqa: E402
from pipelines.runner import ModelBackends, close_backends, run_stage  # noqa: E402
from pipelines.schema.records import ACCEPTED, SourceRef  # noqa: E402


def side_by_side(left: Path, right: Path, out: Path, audio_from: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(left), "-i", str(right),
                    "-filter_complex", "[0:v][1:v]hstack=inputs=2,format=yuv420p[v]", "-map", "[v]",
                    "-map", "0:a:0" if audio_from == "left" else "1:a:0", "-c:v", "libx264", "-preset", "veryfast",
                    "-c:a", "aac", "-shortest", str(out)], check=True)


def pair_row(ref: SourceRef, config: PipelineConfig, backends: ModelBackends, audio_from: str) -> dict:
    """The face and ASD stages on one side-by-side input, through the stage runner: which faces ASD kept."""
    record = run_stage("faces", ref, config, backends).result
    result = run_stage("asd", ref, config, backends).result
    faces = sorted(record.accepted_segments(), key=lambda s: s.numbers["first_box"][0])
    kept = [result.segments[f.key].decision == ACCEPTED for f in faces]
    means = [result.segments[f.key].numbers["mean_probability"] for f in faces]
    want = [audio_from == "left", audio_from == "right"]
    # The smoothed curves go into --json so a rule for shared time can be replayed without the models.
    curves = [{"start_s": f.start_s, "end_s": f.end_s, "smooth": result.segments[f.key].payload["probability"]}
              for f in faces]
    return {"input": ref.relpath, "audio_from": audio_from, "kept_left": kept[0], "kept_right": kept[1],
            "mean_p_left": means[0], "mean_p_right": means[1], "correct": kept == want,
            "curve_left": curves[0], "curve_right": curves[1]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=Path, default=REPO.parent / "shared" / "media" / "grid")
    parser.add_argument("--model-dir", default=os.environ.get(MODEL_DIR_ENV) or str(REPO.parent / "shared" / "models"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    clips = sorted(args.clips.glob("*.mpg"))
    with tempfile.TemporaryDirectory(prefix="asd-pairs-") as tmp:
        inputs = Path(tmp) / "input"
        inputs.mkdir()
        expected = {}
        for left, right in itertools.combinations(clips, 2):
            for side in ("left", "right"):
                name = f"{left.stem}+{right.stem}.{side}.mp4"
                side_by_side(left, right, inputs / name, side)
                expected[name] = side
        config = load_config(paths={"input_dir": inputs, "data_dir": Path(tmp) / "data", "model_dir": args.model_dir},
                             speech={"enabled": False})
        backends = ModelBackends(config)
        try:
            refs = SourceRegistry(config.paths.registry_path).scan(inputs, config.ingest.extensions)
            rows = [pair_row(ref, config, backends, expected[ref.relpath]) for ref in refs]
        finally:
            close_backends()
    for row in rows:
        print(f"{row['input']:<32} audio {row['audio_from']:<5}  kept L={row['kept_left']!s:<5} R={row['kept_right']!s:<5}"
              f"  mean P L={row['mean_p_left']:.3f} R={row['mean_p_right']:.3f}  {'ok' if row['correct'] else 'WRONG'}")
    pairs = {}
    for row in rows:
        pairs.setdefault(row["input"].rsplit(".", 2)[0], []).append(row["correct"])
    correct = sum(r["correct"] for r in rows)
    print(f"right face kept (and only it): {correct}/{len(rows)}; pairs right both ways: "
          f"{sum(all(v) for v in pairs.values())}/{len(pairs)}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
