"""Trainer data loader throughput: windows of 200 frames per second per worker, before and after.

    python bench/bench_loader.py [--shards DIR] [--conversation-shards DIR] [--seconds S] [--rounds N]
                                 [--out-dir bench/results]

Without --shards it builds pipeline shards of the 12 s training fixture (one GRID clip played
four times, face stage with real SCRFD, FLAME stage with the scripted SHeaP stand-in; not
timed): one sample of 288 frames at 24 fps per shard, so every sample read also opens a shard.
Without --conversation-shards it builds conversation shards the same way from two such sources
(two GRID clips, each played four times) with pipelines/fixtures/conversation_shards.py: two
actors of one session, each seeing and hearing the other, one sample per shard.

The conversation fields (issue 16): "previous" is training/data.py as of PREVIOUS_COMMIT, the
loader without them, measured in the same rounds; previous_default vs after_default on the
speaking-only shards is what the new fields (roles, zero partner streams) cost a speaking-only
dataset, after_conversation_default what windows with real partner streams cost. The
conversation breakdown times reading the three conversation members of one sample, cutting a
window and collating a batch with them, beside the speaking-only and previous figures.

"Before" is training/data.py as of BEFORE_COMMIT, loaded from git into its own module, so both
loaders are measured in one run on the same shards and the same load. Each rate is windows
through ``batches`` (collate included) for at least --seconds after one warm-up batch per
worker, best of --rounds alternating rounds; per-worker rate = rate / workers. The breakdown
times each step of reading one sample on its own (mean of repeated calls): tar reading, record
JSON parse + SampleRecord validation, npz arrays, WAV, cutting one window, collating a batch.
The loader computes no audio features (the audio encoder runs in the trainer on the batch).
The stream check compares the first windows of the before loader with the after loader run
with windows_per_clip=1 and window_shuffle_buffer=1 (the old stream): keys, starts, seeds,
motion and audio must be identical.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/bench_loader.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

import numpy as np
import torch

import training.data as after
from training.config import DataConfig

# The last commit of training/data.py before the loader rework (issue 15, part 5).
BEFORE_COMMIT = "f2f44d05cc2b3f588674ef6cea2c37c026760f6b"
# The last commit of training/data.py before the conversation fields (issue 16).
PREVIOUS_COMMIT = "f5a94636753e9e75648e4de8f60cc7228f6c1369"
BATCH = 8
CHECKED_WINDOWS = 48


def load_before(commit: str = BEFORE_COMMIT, name: str = "training_data_before") -> object:
    """training/data.py as of ``commit``, as the module ``name``."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:training/data.py"],
                            check=True, capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    exec(compile(source, f"{commit[:8]}:training/data.py", "exec"), module.__dict__)
    return module


def build_shards(root: Path, speakers: int = 1) -> Path:
    """FLAME shards of ``speakers`` GRID clips, each played four times (one source and sample each)."""
    from pipelines.fixtures.media import concatenated
    from pipelines.fixtures.shards import build_flame_shards

    shared = Path(os.environ.get("TALKINGHEAD_SHARED_DIR") or REPO.parent / "shared")
    clips = sorted((shared / "media" / "grid").glob("*.mpg"))
    root.mkdir(parents=True, exist_ok=True)
    names = ["grid-one-four-times.mp4", "grid-two-four-times.mp4"]
    sources = [concatenated([clips[n]] * 4, root / names[n]) for n in range(speakers)]
    return build_flame_shards(root / "build", sources, shared / "models")


def build_conversation_shards(root: Path) -> Path:
    """Conversation shards of two speakers' 12 s samples, one sample per shard."""
    from pipelines.fixtures.conversation_shards import build_conversation_shards as build

    return build(root / "conversation", build_shards(root / "speakers", speakers=2), shard_samples=1)


def _child_pids() -> list[int]:
    me, out = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me:
                out.append(int(entry.name))
    return out


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of processes (the loader workers), from /proc/<pid>/stat."""
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def window_rate(module, config: DataConfig, seconds: float) -> dict[str, float]:
    """Windows per second through ``module.batches`` (all workers together) after warm-up, and
    windows per CPU second of the process(es) that decode: the main one without workers, the
    workers with (what one worker sustains on a core of its own, whatever the machine's load)."""
    stream = module.batches(module.train_pipeline(config, seed=0), config)
    for _ in range(max(config.num_workers, 1)):
        next(stream)  # workers start, shuffle buffers fill
    workers = _child_pids() if config.num_workers else []
    windows, start = 0, time.perf_counter()
    main_cpu, worker_cpu = time.process_time(), _cpu_seconds(workers)
    while time.perf_counter() - start < seconds:
        windows += len(next(stream)["key"])
    wall = time.perf_counter() - start
    main_cpu, worker_cpu = time.process_time() - main_cpu, _cpu_seconds(workers) - worker_cpu
    del stream
    decoding_cpu = worker_cpu if config.num_workers else main_cpu
    return {"rate": windows / wall, "per_cpu_second": windows / decoding_cpu if decoding_cpu else float("nan"),
            "main_cpu_ms_per_window": main_cpu / windows * 1e3}


def mean_ms(call, repeats: int, blocks: int = 5) -> float:
    """ms per call: the fastest of ``blocks`` blocks of calls (the least disturbed by other load)."""
    call()
    best = float("inf")
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(max(repeats // blocks, 1)):
            call()
        best = min(best, (time.perf_counter() - start) / max(repeats // blocks, 1))
    return best * 1e3


def breakdown(before, shards: Path, config: DataConfig, repeats: int) -> dict[str, dict[str, float]]:
    """ms per call of each step, for one sample of the shards, in both loaders."""
    import webdataset as wds

    from pipelines.media.wav import read_wav_float
    from pipelines.schema.sample import SampleRecord

    url = after.shard_urls(str(shards))[0]
    sample = next(iter(after.read_samples(iter([{"url": url}]))))
    old_clip = before.decode_clip(sample, config)
    new_clip = after.decode_clip(sample, config)
    start = (len(new_clip.motion) - config.window_frames) // 2
    old_windows = [dict(before.cut_window(old_clip, start, config), seed=0) for _ in range(BATCH)]
    new_windows = [dict(after.cut_window(new_clip, start, config), seed=0) for _ in range(BATCH)]
    old_tar = lambda: next(iter(wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples())))  # noqa: E731
    return {
        "before": {
            "tar_read": mean_ms(old_tar, repeats),
            "json_record": mean_ms(lambda: SampleRecord.load(sample["json"]), repeats),
            "npz_motion": mean_ms(lambda: before.motion_array(sample["flame.npz"], config), repeats),
            "wav": mean_ms(lambda: read_wav_float(sample["wav"], config.sample_rate), repeats),
            "audio_features": 0.0,
            "cut_window": mean_ms(lambda: before.cut_window(old_clip, start, config), repeats),
            "collate_batch": mean_ms(lambda: before.collate(old_windows), repeats),
        },
        "after": {
            "tar_read": mean_ms(lambda: next(iter(after.read_samples(iter([{"url": url}])))), repeats),
            "json_record": mean_ms(lambda: SampleRecord.load(sample["json"]), repeats),
            "npz_motion": mean_ms(lambda: after.motion_array(sample["flame.npz"], config), repeats),
            "wav": mean_ms(lambda: after.pcm16_samples(sample["wav"], config.sample_rate, name="k"), repeats),
            "audio_features": 0.0,
            "cut_window": mean_ms(lambda: after.cut_window(new_clip, start, config), repeats),
            "collate_batch": mean_ms(lambda: after.collate(new_windows), repeats),
        },
        "worker_handover": handover(new_windows, repeats),
    }


def conversation_breakdown(previous, shards: Path, conversation: Path | None, config: DataConfig,
                           repeats: int) -> dict[str, float]:
    """ms per call of the steps the conversation fields add or change, on one sample: the previous
    loader's and the after loader's window cut and batch collate on the speaking-only sample, and
    with a conversation sample (when there are conversation shards) its members' reading, cut and
    collate, and the hand-over of its batch through reused shared memory."""
    from pipelines.schema.conversation import PARTNER_AUDIO_MEMBER, PARTNER_FLAME_MEMBER, ROLE_MEMBER, check_roles

    def first_sample(spec: Path) -> dict:
        return next(iter(after.read_samples(iter([{"url": after.shard_urls(str(spec))[0]}]))))

    sample = first_sample(shards)
    old_clip, new_clip = previous.decode_clip(sample, config), after.decode_clip(sample, config)
    start = (len(new_clip.motion) - config.window_frames) // 2
    old_windows = [dict(previous.cut_window(old_clip, start, config), seed=0) for _ in range(BATCH)]
    new_windows = [dict(after.cut_window(new_clip, start, config), seed=0) for _ in range(BATCH)]
    out = {"previous_decode_clip": mean_ms(lambda: previous.decode_clip(sample, config), repeats),
           "speaking_only_decode_clip": mean_ms(lambda: after.decode_clip(sample, config), repeats),
           "previous_cut_window": mean_ms(lambda: previous.cut_window(old_clip, start, config), repeats),
           "speaking_only_cut_window": mean_ms(lambda: after.cut_window(new_clip, start, config), repeats),
           "previous_collate_batch": mean_ms(lambda: previous.collate(old_windows), repeats),
           "speaking_only_collate_batch": mean_ms(lambda: after.collate(new_windows), repeats),
           "speaking_only_handover": mean_ms(_ring_call(new_windows), repeats)}
    if conversation is None:
        return out
    talk = first_sample(conversation)
    clip = after.decode_clip(talk, config)
    frames = len(clip.motion)
    talk_windows = [dict(after.cut_window(clip, start, config), seed=0) for _ in range(BATCH)]
    out.update({
        "conversation_decode_clip": mean_ms(lambda: after.decode_clip(talk, config), repeats),
        "role_npy": mean_ms(lambda: check_roles(after._npy_array(talk[ROLE_MEMBER], "r"), frames), repeats),
        "partner_wav": mean_ms(lambda: after.pcm16_samples(talk[PARTNER_AUDIO_MEMBER], config.sample_rate, name="p"),
                               repeats),
        "partner_npz": mean_ms(lambda: after.partner_motion_array(talk[PARTNER_FLAME_MEMBER], config), repeats),
        "conversation_cut_window": mean_ms(lambda: after.cut_window(clip, start, config), repeats),
        "conversation_collate_batch": mean_ms(lambda: after.collate(talk_windows), repeats),
        "conversation_handover": mean_ms(_ring_call(talk_windows), repeats)})
    return out


def _ring_call(windows: list[dict]):
    ring = after.RingCollate(slots=2)
    ring(windows)
    ring(windows)
    return lambda: ring(windows)


def handover(windows: list[dict], repeats: int) -> dict[str, float]:
    """ms per batch of handing a collated batch from a loader worker to the main process, the
    part the main process does not see: a private batch moved into new shared memory (what
    DataLoader's pickler does; new pages every batch), a batch stacked into a reused shared
    buffer (RingCollate), and the main process's private copy of it (batches)."""
    ring = after.RingCollate(slots=2)
    ring(windows)  # both slots' buffers exist from here on
    ring(windows)
    copy_out = after._copied_out(iter(lambda: ring(windows), None), keep=2)
    def fresh() -> None:
        batch = after.collate(windows)
        for name in ("start", "motion", "audio", "seed"):
            batch[name].share_memory_()

    return {"fresh_shared_memory": mean_ms(fresh, repeats),
            "reused_shared_memory": mean_ms(lambda: ring(windows), repeats),
            "main_process_copy_out": mean_ms(lambda: next(copy_out), repeats) - mean_ms(lambda: ring(windows),
                                                                                         repeats)}


def per_window_ms(steps: dict[str, float], windows_per_clip: int) -> float:
    """Predicted ms per window: the sample's steps shared by its windows, plus cutting and collating."""
    per_sample = steps["tar_read"] + steps["json_record"] + steps["npz_motion"] + steps["wav"]
    return per_sample / windows_per_clip + steps["cut_window"] + steps["collate_batch"] / BATCH


def same_stream(before, config: DataConfig) -> bool:
    """The after loader with one window per clip and no window buffer yields the before loader's windows."""
    old_config = config.model_copy(update={"windows_per_clip": 1, "window_shuffle_buffer": 1})
    old = before.train_pipeline(old_config, seed=5)
    new = after.train_pipeline(old_config, seed=5)
    for _, a, b in zip(range(CHECKED_WINDOWS), old, new):
        if (a["key"], a["start"], a["seed"], a["caption"]) != (b["key"], b["start"], b["seed"], b["caption"]):
            return False
        if not (np.array_equal(a["motion"], b["motion"]) and np.array_equal(a["audio"], b["audio"])):
            return False
    return True


def cases(config: DataConfig, conversation: DataConfig | None = None) -> list[tuple[str, str, DataConfig]]:
    """(name, loader, config) of every measured rate."""
    one = config.model_copy(update={"windows_per_clip": 1, "window_shuffle_buffer": 1})
    out = [("before_default_w0", "before", one), ("after_one_window_per_clip_w0", "after", one),
           ("previous_default_w0", "previous", config), ("after_default_w0", "after", config)]
    if conversation is not None:
        out.append(("after_conversation_default_w0", "after", conversation))
    out += [(f"after_windows_per_clip_{n}_w0", "after", config.model_copy(update={"windows_per_clip": n}))
            for n in (2, 4, 16)]
    for workers in (1, 2):
        out += [(f"before_default_w{workers}", "before", one.model_copy(update={"num_workers": workers})),
                (f"previous_default_w{workers}", "previous", config.model_copy(update={"num_workers": workers})),
                (f"after_default_w{workers}", "after", config.model_copy(update={"num_workers": workers}))]
        if conversation is not None:
            out.append((f"after_conversation_default_w{workers}", "after",
                        conversation.model_copy(update={"num_workers": workers})))
    return out


def markdown(report: dict) -> str:
    rates = report["rates"]
    lines = ["# Loader throughput (bench/bench_loader.py)", "",
             f"Shards: {report['shards_note']}. Windows of {report['window_frames']} frames, batch {BATCH}; "
             f"before = training/data.py at {BEFORE_COMMIT[:8]}, after = {report['after_commit'][:8]} "
             "(working tree). CPU: "
             f"{report['cpus']} cores shared with other engineers; load average {report['loadavg_start']} at "
             f"the start, {report['loadavg_end']} at the end. Best of {report['rounds']} alternating rounds of "
             f"{report['seconds']} s each.", "",
             "Windows/s are wall-clock (what this loaded machine gave); windows per decoding CPU second "
             "count the CPU time of the process that decodes (the main one with 0 workers, the workers "
             "otherwise): the rate one worker sustains on a core of its own.", "",
             "| case | workers | windows/clip | windows/s (all workers) | windows/s per worker | "
             "windows per decoding CPU s (per worker) | main process CPU ms/window | rounds (windows/s) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in rates.items():
        lines.append(f"| {name} | {row['workers']} | {row['windows_per_clip']} | {row['best']:.0f} | "
                     f"{row['per_worker']:.0f} | {row['per_worker_cpu_second']:.0f} | "
                     f"{row['main_cpu_ms_per_window']:.3f} | "
                     f"{', '.join(str(round(r['rate'])) for r in row['rounds'])} |")
    speedup = rates["after_default_w0"]["best"] / rates["before_default_w0"]["best"]
    same = rates["after_one_window_per_clip_w0"]["best"] / rates["before_default_w0"]["best"]
    lines += ["", f"After / before in the main process: {speedup:.1f}x with the defaults, {same:.1f}x with "
              "the old stream (one window per decoded clip).", "",
              f"Old stream reproduced by the after loader (windows_per_clip=1, window_shuffle_buffer=1), first "
              f"{CHECKED_WINDOWS} windows identical: {report['same_stream']}.", "",
              "## Where a window's time goes (ms per call, one sample, main process)", "",
              "| step | before | after |", "|---|---|---|"]
    steps = report["breakdown"]
    for step in steps["before"]:
        lines.append(f"| {step} | {steps['before'][step]:.3f} | {steps['after'][step]:.3f} |")
    lines += [f"| predicted ms per window (before: 1 window/clip; after: {report['windows_per_clip']}) | "
              f"{report['predicted_ms_per_window']['before']:.3f} | "
              f"{report['predicted_ms_per_window']['after']:.3f} |", "",
              f"Worker to main process, ms per batch of {BATCH} windows: "
              + ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in steps["worker_handover"].items()) + ".", ""]
    lines += limits(report)
    lines += conversation_lines(report)
    return "\n".join(lines) + "\n"


def conversation_lines(report: dict) -> list[str]:
    """The conversation fields' cost, in the run's own figures."""
    if "conversation_breakdown" not in report:
        return []
    rates, steps = report["rates"], report["conversation_breakdown"]
    lines = ["## What the conversation fields cost (issue 16)", "",
             f"previous = training/data.py at {PREVIOUS_COMMIT[:8]} (no roles, no partner streams), same shards "
             "and rounds. Conversation shards: " + report["conversation_shards_note"] + ".", "",
             "| workers | previous windows/s (per CPU s) | after, speaking-only (per CPU s) | "
             "after, conversation (per CPU s) |", "|---|---|---|---|"]
    for workers in (0, 1, 2):
        cells = []
        for name in (f"previous_default_w{workers}", f"after_default_w{workers}",
                     f"after_conversation_default_w{workers}"):
            row = rates.get(name)
            cells.append(f"{row['best']:.0f} ({row['per_worker_cpu_second']:.0f})" if row else "not run")
        lines.append(f"| {workers} | " + " | ".join(cells) + " |")
    speaking = (rates["after_default_w0"]["per_worker_cpu_second"]
                / rates["previous_default_w0"]["per_worker_cpu_second"])
    lines += ["", f"Speaking-only windows per CPU second in the main process, after / previous: {speaking:.2f}.", "",
              "| step (ms per call, one sample) | value |", "|---|---|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in steps.items()]
    return lines + [""]


def limits(report: dict) -> list[str]:
    """What bounds the after loader, in the run's own figures."""
    steps, rates = report["breakdown"]["after"], report["rates"]
    per_sample = steps["tar_read"] + steps["json_record"] + steps["npz_motion"] + steps["wav"]
    per_window = steps["cut_window"] + steps["collate_batch"] / BATCH
    share = per_sample / report["windows_per_clip"]
    handover = report["breakdown"]["worker_handover"]
    worker = rates["after_default_w1"]
    main = rates["after_default_w0"]
    return ["## What limits it", "",
            f"- Per sample (tar, record, npz, WAV): {per_sample:.3f} ms, {share:.3f} ms per window at "
            f"{report['windows_per_clip']} windows per clip; per window (cut + collate share): {per_window:.3f} ms. "
            "With one window per clip the sample's reading is the whole cost "
            f"({rates['after_one_window_per_clip_w0']['per_worker_cpu_second']:.0f} windows per CPU second).",
            f"- Each step's sum predicts {1e3 / (share + per_window):.0f} windows/s; the main process measures "
            f"{main['per_worker_cpu_second']:.0f} per CPU second. The difference is outside the isolated step "
            "timings: webdataset stages and shuffle buffers, and the window and batch copies, which touch cold "
            "memory in the stream but warm memory when one step is repeated.",
            f"- A worker measures {worker['per_worker_cpu_second']:.0f} windows per CPU second: the hand-over to the "
            f"main process costs it {handover['reused_shared_memory']:.3f} ms per batch in reused shared memory "
            f"(new shared memory per batch, as DataLoader does by default, costs {handover['fresh_shared_memory']:.3f} "
            "ms here: faulting in fresh pages is slow on this VM), plus pickling and passing file descriptors; "
            f"the main process spends {worker['main_cpu_ms_per_window']:.3f} ms of CPU per window receiving and "
            "copying batches out.",
            f"- Wall-clock rates are below the CPU-second ones by the machine's load (load average "
            f"{report['loadavg_start'].split()[0]} on {report['cpus']} cores at the start): two workers and the main "
            "process share the two cores with other engineers' runs.", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", help="pipeline shard folder with FLAME arrays (default: the 12 s fixture)")
    parser.add_argument("--conversation-shards", help="conversation shard folder (default: built from two "
                        "speakers unless --shards is given; with --shards and without this: not measured)")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per rate and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=200, help="calls per step of the breakdown")
    parser.add_argument("--out-dir", default=str(REPO / "bench" / "results"))
    parser.add_argument("--markdown-from", help="only rewrite the markdown from this loader.json (no measuring)")
    args = parser.parse_args()
    if args.markdown_from:
        report = json.loads(Path(args.markdown_from).read_text())
        (Path(args.out_dir) / "loader.md").write_text(markdown(report))
        print(markdown(report))
        return
    torch.set_num_threads(1)
    loadavg_start = Path("/proc/loadavg").read_text().split()[:3]
    scratch = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    shards = Path(args.shards) if args.shards else build_shards(scratch)
    conversation = Path(args.conversation_shards) if args.conversation_shards else (
        None if args.shards else build_conversation_shards(scratch))
    before = load_before()
    previous = load_before(PREVIOUS_COMMIT, "training_data_previous")
    config = after.resolve_rates(DataConfig(shards=str(shards)))
    conversation_config = config.model_copy(update={"shards": str(conversation)}) if conversation else None
    assert config.window_frames == 200
    report = {"shards": str(shards), "window_frames": config.window_frames, "rounds": args.rounds,
              "seconds": args.seconds, "cpus": os.cpu_count(), "loadavg_start": " ".join(loadavg_start),
              "before_commit": BEFORE_COMMIT, "windows_per_clip": config.windows_per_clip,
              "window_shuffle_buffer": config.window_shuffle_buffer,
              "after_commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], check=True,
                                             capture_output=True, text=True).stdout.strip(),
              "shards_note": ("the 12 s training fixture (one GRID clip four times), 1 sample of 288 frames "
                              "per shard" if not args.shards else str(shards)),
              "previous_commit": PREVIOUS_COMMIT,
              "conversation_shards_note": ("two speakers' 12 s samples (two GRID clips, each four times) as the two "
                                           "actors of one session, 1 sample per shard" if not args.conversation_shards
                                           else str(conversation))}
    report["same_stream"] = same_stream(before, config)
    print(f"old stream reproduced: {report['same_stream']}", flush=True)
    measured: dict[str, list[dict[str, float]]] = {}
    plan = cases(config, conversation_config)
    modules = {"before": before, "previous": previous, "after": after}
    for _ in range(args.rounds):
        for name, loader, case in plan:
            figures = window_rate(modules[loader], case, args.seconds)
            measured.setdefault(name, []).append(figures)
            print(f"{name}: {figures['rate']:.0f} windows/s, {figures['per_cpu_second']:.0f} per decoding CPU "
                  f"second (load {os.getloadavg()[0]:.2f})", flush=True)
    report["rates"] = {}
    for name, loader, case in plan:
        workers = max(case.num_workers, 1)
        rounds = measured[name]
        best = max(r["rate"] for r in rounds)
        per_cpu = max(r["per_cpu_second"] for r in rounds)
        report["rates"][name] = {"loader": loader, "workers": case.num_workers,
                                 "windows_per_clip": case.windows_per_clip, "best": best,
                                 "median": statistics.median(r["rate"] for r in rounds), "per_worker": best / workers,
                                 "per_worker_cpu_second": per_cpu,
                                 "main_cpu_ms_per_window": min(r["main_cpu_ms_per_window"] for r in rounds),
                                 "rounds": rounds}
    report["breakdown"] = breakdown(before, shards, config, args.repeats)
    report["conversation_breakdown"] = conversation_breakdown(previous, shards, conversation, config, args.repeats)
    report["predicted_ms_per_window"] = {
        "before": per_window_ms(report["breakdown"]["before"], 1),
        "after": per_window_ms(report["breakdown"]["after"], config.windows_per_clip)}
    report["loadavg_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "loader.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "loader.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
