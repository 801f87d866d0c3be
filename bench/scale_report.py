"""The scale bench's results: per-scale totals, memory summary, JSON payload, markdown table, merging."""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import subprocess
from pathlib import Path

from bench.scale_stages import STAGES
from pipelines.config import PipelineConfig
from pipelines.media import decode as media

REPO = Path(__file__).resolve().parents[1]
# Peak memory counts as flat when the largest scale needs at most this much more than 1x.
FLAT_RATIO = 1.25


def derive(run: dict) -> dict:
    """``run`` with its totals and non-model / floor ratios (re)computed from its stages."""
    results, duration = run["stages"], run["source"]["duration_s"]
    wall = sum(r["wall_s"] for r in results.values())
    model = sum(r["model_s"] for r in results.values())
    sources = results["face_clips"]["sources"] if "face_clips" in results else 1
    run["totals"] = {"stages": [s for s in STAGES if s in results], "wall_s": wall, "rtf": wall / duration,
                     "model_s": model, "non_model_s": wall - model,
                     "decodes_per_source": sum(r["decodes"] for r in results.values()) / max(sources, 1)}
    floor = (run.get("floor") or {}).get("crop_encode_floor_s")
    if floor:
        run["non_model_over_floor"] = {"face_clips": results["face_clips"]["non_model_s"] / floor,
                                       "all_stages": (wall - model) / floor}
    return run


def machine_info() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())
    return {"cores": os.cpu_count(), "cpu_model": cpu, "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform(),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "memory_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3, 1)}


def git_state() -> str:
    """The commit measured, with '+dirty' when the working tree has changes (others' work in progress)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def memory_summary(runs: dict[str, dict]) -> dict:
    """Peak memory per scale and stage, the largest scale over the smallest, and which stages grow.

    A scale's peak is the largest stage peak over the stages measured at every scale, so a
    scale measured in parts is compared like for like; ``complete`` says whether all ran.
    """
    scales = sorted(int(s) for s in runs)
    if not scales or any("peak_mib" not in r for s in scales for r in runs[str(s)]["stages"].values()):
        return {}
    common = [stage for stage in STAGES if all(stage in runs[str(s)]["stages"] for s in scales)]
    per_stage = {stage: {str(s): runs[str(s)]["stages"][stage]["peak_mib"] for s in scales
                         if stage in runs[str(s)]["stages"]} for stage in STAGES}
    peak = {str(s): max((runs[str(s)]["stages"][stage]["peak_mib"] for stage in common), default=0.0)
            for s in scales}
    lo, hi = str(scales[0]), str(scales[-1])
    ratios = {stage: values[hi] / values[lo] for stage, values in per_stage.items() if lo in values and hi in values}
    ratio = peak[hi] / peak[lo] if peak[lo] else math.nan
    several = len(scales) > 1 and bool(common)
    return {"metric": "per stage, the larger of the Python process's VmHWM and the polled summed RSS of its "
                      "process tree (MiB); per scale, the largest stage", "scales": scales,
            "stages_compared": common, "complete": common == list(STAGES),
            "peak_mib": peak, "per_stage_peak_mib": per_stage,
            f"ratio_{hi}x_over_{lo}x": ratio, "per_stage_ratio": ratios, "flat_threshold": FLAT_RATIO,
            "flat": bool(ratio <= FLAT_RATIO) if several else None,
            "growing_stages": sorted(s for s, r in ratios.items() if r > FLAT_RATIO) if several else []}


def markdown(payload: dict) -> str:
    m = payload["machine"]
    lines = [f"# Scale benchmark ({m['date']})", "",
             (f"{m['cores']} cores ({m['cpu_model']}), {m['memory_total_gib']} GiB, Python {m['python']}, "
             f"torch {m['torch']}. {payload['contention_note']}"), "",
             "Models: " + ", ".join(f"{k}: {v}" for k, v in payload["models"].items()) + ".", "",
             ("| scale | source s | stage | wall s | RTF | model s | non-model s | decodes | peak MiB "
             "| process VmHWM MiB | tree RSS MiB (polled) | load avg 1m |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for scale in sorted(payload["runs"], key=int):
        run = payload["runs"][scale]
        for stage in [name for name in STAGES if name in run["stages"]]:  # JSON keys come back sorted
            r = run["stages"][stage]
            lines.append(f"| {scale}x | {run['source']['duration_s']:.1f} | {stage} | {r['wall_s']:.2f} | "
                         f"{r['rtf']:.3f} | {r['model_s']:.2f} | {r['non_model_s']:.2f} | {r['decodes']} | "
                         f"{r.get('peak_mib', math.nan):.0f} | {r.get('peak_process_rss_mib', math.nan):.0f} | "
                         f"{r.get('peak_tree_rss_mib', math.nan):.0f} "
                         f"| {r.get('loadavg_1m', float('nan')):.2f} |")
        t = run["totals"]
        lines.append(f"| {scale}x | {run['source']['duration_s']:.1f} | **all** | {t['wall_s']:.2f} | {t['rtf']:.3f} | "
                     f"{t['model_s']:.2f} | {t['non_model_s']:.2f} | {t['decodes_per_source']:g}/source | | | | |")
    lines += ["", ("| scale | ffmpeg decode s | ffmpeg floor s | face non-model / floor | all non-model / floor "
              "| raw read MB/s | loader MB/s | raw samples/s | loader samples/s | loader / raw |"),
              "|---|---|---|---|---|---|---|---|---|---|"]
    for scale in sorted(payload["runs"], key=int):
        run = payload["runs"][scale]
        floor, ratio, read = run.get("floor", {}), run.get("non_model_over_floor", {}), run.get("shard_read") or {}
        lines.append(f"| {scale}x | {floor.get('decode_only_s', float('nan')):.2f} | "
                     f"{floor.get('crop_encode_floor_s', float('nan')):.2f} | {ratio.get('face_clips', float('nan')):.2f} | "
                     f"{ratio.get('all_stages', float('nan')):.2f} | {read.get('raw_bytes_per_s', math.nan) / 1e6:.0f} | "
                     f"{read.get('loader_bytes_per_s', math.nan) / 1e6:.1f} | {read.get('raw_samples_per_s', math.nan):.0f} | "
                     f"{read.get('loader_samples_per_s', math.nan):.2f} | {read.get('loader_over_raw', math.nan):.4f} |")
    mem = payload.get("memory") or {}
    if mem:
        key = next(k for k in mem if k.startswith("ratio_"))
        lines += ["", f"Peak memory ({mem['metric']}): " + ", ".join(f"{s}x {v:.0f}" for s, v in mem["peak_mib"].items())
                  + f"; {key.removeprefix('ratio_').replace('_over_', ' / ')} = {mem[key]:.2f} -> "
                  + ("flat" if mem["flat"] else "NOT flat" if mem["flat"] is False else "one scale only")
                  + ("" if mem.get("complete") else f" (stages compared: {', '.join(mem.get('stages_compared', []))})")
                  + f" (threshold {FLAT_RATIO}). Per stage: "
                  + ", ".join(f"{s} {mem['per_stage_ratio'][s]:.2f}" for s in STAGES if s in mem["per_stage_ratio"]) + "."]
        if mem.get("growing_stages"):
            lines.append(f"Growing: {', '.join(mem['growing_stages'])}.")
    loader = next((r["shard_read"]["loader"] for r in payload["runs"].values() if r.get("shard_read")), None)
    lines += ["", ("RTF = stage wall (model loading excluded) / source seconds. Floor = one ffmpeg decoding the source "
              "and encoding as many 384x384 24 fps frames with the config's x264 settings (bench_pipeline.py). "
              f"Shard loader: {loader}.")]
    if payload.get("findings"):
        lines += ["", "## Findings", "", *[f"- {f}" for f in payload["findings"]]]
    return "\n".join(lines) + "\n"


def merge(previous: dict | None, payload: dict) -> dict:
    """``payload`` plus what ``previous`` measured and it did not (for ``--append``): other
    scales whole, and for a scale measured in parts, the stages (and floor, shard read) of each part."""
    if previous is None:
        return payload
    runs = dict(previous.get("runs", {}))
    for scale, run in payload["runs"].items():
        old = runs.get(scale)
        if old is None or "face_clips" in run["stages"]:
            runs[scale] = run
            continue
        merged = {**old, **{k: v for k, v in run.items() if k != "stages"},
                  "stages": {**old["stages"], **run["stages"]}}
        merged["stages"] = {s: merged["stages"][s] for s in STAGES if s in merged["stages"]}
        runs[scale] = derive(merged)
    history = previous.get("invocations", []) + payload["invocations"]
    return {**payload, "runs": runs, "invocations": history, "findings": previous.get("findings", [])}


def build_payload(runs: dict[str, dict], config: PipelineConfig, used: dict[str, str], clips: list[Path],
                  base: Path, invocation: dict) -> dict:
    """The JSON document for ``runs`` (scale -> bench_scale result), with machine and model facts."""
    from pipelines.models import ModelStore

    store = ModelStore(config.paths.model_dir)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return {
        "benchmark": "bench/bench_scale.py",
        "machine": machine_info(),
        "contention_note": "Measured on a machine shared with other agents' jobs (see the load averages): absolute "
                           "timings are inflated and noisy; compare ratios taken within one run.",
        "invocations": [{**invocation, "git": git_state(), "date": now, "loadavg_end": list(os.getloadavg())}],
        "base_source": {"clips": [p.name for p in clips], "duration_s": media.probe(base).duration_s},
        "config": {"hash": config.content_hash(), "encode": config.encode.model_dump(),
                   "crops": config.crops.model_dump(), "faces_backend": config.faces.backend},
        "models": {"faces": f"{config.faces.backend} ({store.status('scrfd_500m').state})",
                   "asd": f"{config.asd.model} ({store.status(config.asd.model).state})",
                   "speech": f"{config.speech.activity_backend} + {config.speech.transcription_backend} + "
                             f"{config.speech.language_identifier}", **used},
        "runs": runs,
        "memory": memory_summary(runs),
    }
