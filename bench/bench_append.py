"""Benchmark the append-only dataset: adding one source to a dataset of 100.

One real GRID clip goes through the real face stage (SCRFD) and the quality stage; its work
folder is copied under 100 synthetic source ids (pipelines/fixtures/append_dataset.py) and
packed. Then, ``--repeat`` times, one more source is added and ``write_shards`` is called with
all records (the append), and the same source is packed alone into an empty folder (the
floor); both in this one run, alternating. Reported: the median of each, wall clock and CPU time
of the process, their ratios (target <= 2), how many existing shards changed bytes (target 0),
and, for scale, the time to pack all sources from scratch (what every materialisation cost
before appends). Exit status 0 when no shard was rewritten and a median ratio is <= 2.

    python bench/bench_append.py [--sources 100] [--repeat 5] [--clip PATH] [--model-dir DIR]
        [--out bench/results/append]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/bench_append.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from pipelines.fixtures.append_dataset import append_config, clone_source, process_templates, synthetic_id  # noqa: E402
from pipelines.shards import write_shards  # noqa: E402

SHARED = Path(os.environ.get("TALKINGHEAD_SHARED_DIR", REPO.parent / "shared"))


@dataclass
class AppendBench:
    sources: int
    repeats: int
    max_samples_per_shard: int
    shards_before: int
    append_s: list[float]  # wall clock
    alone_s: list[float]
    append_cpu_s: list[float]  # CPU time of this process: what other load on the machine does not inflate
    alone_cpu_s: list[float]
    full_repack_s: float
    append_median_s: float
    alone_median_s: float
    ratio_append_to_alone: float  # of the medians: the target
    ratio_of_minimums: float  # wall clock, fastest of each
    ratio_cpu_medians: float  # CPU time, medians
    existing_shards_rewritten: int
    shards_added_per_append: list[int]
    loadavg_before: str
    loadavg_after: str
    cpu: str


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.tar")}


def _timed(fn) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process, result)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - start, time.process_time() - cpu, out


def run(root: Path, clip: Path, model_dir: Path, sources: int, repeats: int, per_shard: int) -> AppendBench:
    loadavg_before = Path("/proc/loadavg").read_text().strip()
    templates = process_templates(root / "template", [clip], model_dir)
    (template,) = templates.source_ids
    config = append_config(root / "dataset", model_dir, max_samples_per_shard=per_shard)
    alone = append_config(root / "alone", model_dir, max_samples_per_shard=per_shard)
    for target in (config, alone):
        shutil.copytree(templates.config.paths.work_dir / "sources" / template,
                        target.paths.work_dir / "sources" / template, copy_function=os.link)
    records = [clone_source(config, template, synthetic_id(n)) for n in range(sources)]
    write_shards(records, config)
    shards_before = len(list(config.paths.shards_dir.glob("*.tar")))

    append_s, alone_s, append_cpu, alone_cpu, added, rewritten = [], [], [], [], [], 0
    for step in range(repeats):
        new_id = synthetic_id(sources + step)
        records.append(clone_source(config, template, new_id))
        before = _hashes(config.paths.shards_dir)
        seconds, cpu, summary = _timed(lambda: write_shards(records, config))
        after = _hashes(config.paths.shards_dir)
        rewritten += sum(after.get(name) != digest for name, digest in before.items())
        append_s.append(seconds)
        append_cpu.append(cpu)
        added.append(len(summary.added))

        shutil.rmtree(alone.paths.shards_dir, ignore_errors=True)  # an empty folder each time
        single = clone_source(alone, template, new_id)
        seconds, cpu, _ = _timed(lambda: write_shards([single], alone))
        alone_s.append(seconds)
        alone_cpu.append(cpu)

    shutil.rmtree(config.paths.shards_dir)
    full_repack_s, _, _ = _timed(lambda: write_shards(records, config))
    append_median, alone_median = statistics.median(append_s), statistics.median(alone_s)
    return AppendBench(
        sources=sources, repeats=repeats, max_samples_per_shard=per_shard, shards_before=shards_before,
        append_s=[round(s, 4) for s in append_s], alone_s=[round(s, 4) for s in alone_s],
        append_cpu_s=[round(s, 4) for s in append_cpu], alone_cpu_s=[round(s, 4) for s in alone_cpu],
        full_repack_s=round(full_repack_s, 4), append_median_s=round(append_median, 4),
        alone_median_s=round(alone_median, 4), ratio_append_to_alone=round(append_median / alone_median, 3),
        ratio_of_minimums=round(min(append_s) / min(alone_s), 3),
        ratio_cpu_medians=round(statistics.median(append_cpu) / statistics.median(alone_cpu), 3),
        existing_shards_rewritten=rewritten, shards_added_per_append=added,
        loadavg_before=loadavg_before, loadavg_after=Path("/proc/loadavg").read_text().strip(),
        cpu=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")


def markdown(result: AppendBench) -> str:
    def verdict(ratio: float) -> str:
        return "meets" if ratio <= 2 else "MISSES"
    return "\n".join([
        "# Append one source to a dataset of {} (bench/bench_append.py)".format(result.sources),
        "",
        f"Real GRID clip through the face and quality stages, copied under {result.sources} source ids, "
        f"{result.max_samples_per_shard} samples per shard ({result.shards_before} shards). "
        f"{result.repeats} appends, each followed by packing the same source alone into an empty folder.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| append one source, median | {result.append_median_s:.4f} s |",
        f"| pack that source alone into an empty folder, median | {result.alone_median_s:.4f} s |",
        f"| ratio append / alone, medians (target <= 2) | {result.ratio_append_to_alone:.3f} |",
        f"| ratio append / alone, fastest of each | {result.ratio_of_minimums:.3f} |",
        f"| CPU time of the process, medians: append / alone | {statistics.median(result.append_cpu_s):.4f} s / "
        f"{statistics.median(result.alone_cpu_s):.4f} s = {result.ratio_cpu_medians:.3f} |",
        f"| existing shards whose bytes changed (target 0) | {result.existing_shards_rewritten} |",
        f"| shards added per append | {result.shards_added_per_append} |",
        f"| pack all {result.sources + result.repeats} sources from scratch (the old cost of every materialisation) "
        f"| {result.full_repack_s:.4f} s |",
        "",
        f"Verdict: no existing shard rewritten: {'yes' if result.existing_shards_rewritten == 0 else 'NO'}; "
        f"wall-clock median ratio {verdict(result.ratio_append_to_alone)} the target (<= 2); CPU-time median ratio "
        f"{verdict(result.ratio_cpu_medians)} it. On a loaded machine the wall clock of the longer call absorbs "
        "more waits for the CPU than the short one's; the CPU time of the process does not. "
        f"Load average before / after: `{result.loadavg_before}` / `{result.loadavg_after}`; {result.cpu}.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--per-shard", type=int, default=8, help="max samples per shard of the dataset")
    parser.add_argument("--clip", type=Path, default=SHARED / "media" / "grid" / "bbaf2n.mpg")
    parser.add_argument("--model-dir", type=Path, default=SHARED / "models")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "append")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-append-") as tmp:
        result = run(Path(tmp), args.clip, args.model_dir, args.sources, args.repeat, args.per_shard)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(asdict(result), indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0 if result.existing_shards_rewritten == 0 and min(result.ratio_append_to_alone,
                                                             result.ratio_cpu_medians) <= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
