"""Wall time of `run_sources` over the GRID clips with one worker process and with N.

    python bench/bench_workers.py [--workers 1,2] [--stages asd] [--out bench/results/workers.json]

Each setting runs on a fresh data folder (nothing cached), over the six GRID clips in
../shared/media/grid, with the stages named by --stages and what they need (default: asd,
i.e. faces, quality and ASD; add speech with --stages speech, it runs pocketsphinx here).
One worker runs in this process; N > 1 spawns N processes (each loads its models once and
gets cores // N threads). Timed: the whole run_sources call, including the workers' start
and model loading, because that is what a user waits for. The load average is read before
and after each setting: the CPU is shared, so compare the ratio within one run. Checks that
every setting produces the same records. Writes JSON and markdown next to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/bench_workers.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from pipelines.config import MODEL_DIR_ENV, load_config  # noqa: E402
from pipelines.ingest import SourceRegistry  # noqa: E402
from pipelines.runner import close_backends, run_sources  # noqa: E402


def load_average() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def run_once(inputs: Path, scratch: Path, model_dir: Path, workers: int, stages: list[str]) -> dict:
    data = scratch / f"data-{workers}"
    config = load_config(paths={"input_dir": inputs, "data_dir": data, "model_dir": model_dir},
                         speech={"transcription_backend": "pocketsphinx"}, flame={"enabled": False},
                         captions={"enabled": False})
    refs = SourceRegistry(config.paths.registry_path).scan(config.paths.input_dir, config.ingest.extensions)
    before = load_average()
    start = time.perf_counter()
    report = run_sources(refs, config, stages=stages, progress=False, workers=workers)
    seconds = time.perf_counter() - start
    close_backends()  # one worker built its models in this process: the next setting starts cold too
    records = {r.source_id: r.model_dump(mode="json") for r in report.records}
    return {"workers": workers, "seconds": seconds, "sources": len(refs), "failures": report.failures,
            "load_before": before, "load_after": load_average(), "records": records}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--stages", default="asd", help="comma-separated stages to run (and what they need)")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "workers.json")
    args = parser.parse_args(argv)
    model_dir = args.model_dir or Path(os.environ.get(MODEL_DIR_ENV) or REPO.parent / "shared" / "models")
    clips = sorted((REPO.parent / "shared" / "media" / "grid").glob("*.mpg"))
    stages = args.stages.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as scratch:
        inputs = Path(scratch) / "input"
        inputs.mkdir()
        for clip in clips:
            shutil.copyfile(clip, inputs / clip.name)
        for workers in [int(v) for v in args.workers.split(",")]:
            rows.append(run_once(inputs, Path(scratch), model_dir, workers, stages))
            print(f"workers {workers}: {rows[-1]['seconds']:.1f} s, load {rows[-1]['load_before']} -> "
                  f"{rows[-1]['load_after']}", flush=True)
    same = all(row["records"] == rows[0]["records"] for row in rows)
    base = rows[0]["seconds"]
    result = {"clips": len(clips), "stages": stages, "cores": os.cpu_count(), "same_records": same,
              "runs": [{k: v for k, v in row.items() if k != "records"} | {"speedup_vs_first": base / row["seconds"]}
                       for row in rows]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Workers on one machine", "",
             f"`run_sources` over {len(clips)} GRID clips (3 s each), stages {', '.join(stages)} and what they need, "
             f"fresh data folder per setting, {os.cpu_count()} cores shared with other work. Timed: the whole call, "
             "including worker start and model loading. Written by `python bench/bench_workers.py`.", "",
             "| workers | seconds | speed-up vs first | load average before | after | failures |",
             "|---|---|---|---|---|---|"]
    for row in result["runs"]:
        lines.append(f"| {row['workers']} | {row['seconds']:.1f} | {row['speedup_vs_first']:.2f} | "
                     f"{row['load_before']} | {row['load_after']} | {len(row['failures'])} |")
    lines += ["", f"Same records from every setting: {same}."]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
