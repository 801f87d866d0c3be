"""Trainer throughput: SFT steps/s (VAE and flow) and RL rollouts/s and steps/s per sampler, on whatever
device accelerate picks.

    python bench/bench_training.py [--shards DIR] [--conversation] [--preset tiny|medium] [--steps N]
                                   [--rl-only] [--repeats R] [--threads T] [--json OUT]

Without --shards it builds pipeline shards from the GRID clips in ../shared/media/grid
(face stage with the real SCRFD weights, FLAME stage with the scripted SHeaP stand-in of
pipelines/fixtures/sheap.py) and tiny random wav2vec2 / T5 encoders, none of it timed;
--conversation turns those shards into conversation shards
(pipelines/fixtures/conversation_shards.py) and runs RL with ``rl.listener_only`` on (off on
speaking-only shards, which have no listening frame). The presets differ in model size (see
PRESETS); windows are 64 frames (GRID clips are 72). Each figure leaves out setup and one
warm-up step: SFT steps/s = optimizer steps / s (batch of the preset, frozen VAE and condition
encoders included), for the flow model with its partner streams (the default) and without
(``flow.partner_streams: false``, the speaking-only layout: what the partner tokens cost);
RL rollouts/s = rollouts (conditions x group size) sampled per second, and RL steps/s for whole
steps (rollouts, rewards, replay and ``rl.inner_epochs`` updates), for each sampler of SAMPLERS
(Flow-GRPO's em window and FlowPortrait's CPS window over the preset's inference steps,
GDPO-Listener's constant-sigma EM on all of 4 RL steps), each with its ratio to the first; with
--repeats R the samplers run R times in alternating order within the one process and the
figures are medians. CPU figures depend on the machine's load: the header prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/bench_training.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

import torch

from training.config import load_run_config

WINDOW = 64
PRESETS = {
    "tiny": {"vae": {"latent_dim": 8, "width": 32, "layers": 1, "heads": 2},
             "flow": {"width": 32, "layers": 2, "heads": 4, "sample_steps": 4},
             "batch": 4, "conditions": 2},
    "medium": {"vae": {"latent_dim": 32, "width": 128, "layers": 2, "heads": 4},
               "flow": {"width": 256, "layers": 4, "heads": 8, "sample_steps": 10},
               "batch": 16, "conditions": 4},
}
# RL samplers compared (rl.* overrides); the first is the ratios' denominator.
SAMPLERS = {
    "em_window1": {"sde": "em", "window": 1},
    "cps_window1": {"sde": "cps", "window": 1},
    "em_constant_all4": {"sde": "em_constant", "window": None, "sample_steps": 4},
}


def build_inputs(root: Path, conversation: bool) -> tuple[Path, tuple[Path, Path]]:
    from pipelines.fixtures.conversation_shards import build_conversation_shards
    from pipelines.fixtures.encoders import build_tiny_encoders
    from pipelines.fixtures.shards import build_flame_shards

    shared = Path(os.environ.get("TALKINGHEAD_SHARED_DIR") or REPO.parent / "shared")
    clips = sorted((shared / "media" / "grid").glob("*.mpg"))
    shards = build_flame_shards(root / "data", clips, shared / "models")
    if conversation:
        shards = build_conversation_shards(root / "conversation", shards)
    return shards, build_tiny_encoders(root / "encoders")


def run_config(kind: str, root: Path, shards: Path, encoders, preset: dict, steps: int, batch: int,
               name: str | None = None, **extra):
    return load_run_config(None, kind=kind, run_dir=str(root / (name or kind)), steps=steps, save_every=10 ** 6,
                           log_every=10 ** 6, data={"shards": str(shards), "window_frames": WINDOW,
                                                    "batch_size": batch, "shuffle_buffer": 8},
                           vae={**preset["vae"], "latent_rate": 8}, flow={**preset["flow"], **extra.pop("flow", {})},
                           encoders={"audio_path": str(encoders[0]), "text_path": str(encoders[1])}, **extra)


def time_sft(config) -> float:
    """Steps/s between the first and the last logged step (setup and the first step not counted)."""
    from training.sft import run_sft
    from training.trainer_base import LOG_FILE

    run_sft(config)
    rows = [json.loads(line) for line in (Path(config.run_dir) / LOG_FILE).read_text().splitlines()]
    return (len(rows) - 1) / (rows[-1]["time"] - rows[0]["time"])


def time_rl(config) -> tuple[float, float]:
    """(rollouts/s of sampling alone, whole RL steps/s), one warm-up step not counted."""
    from training.flow_parts import flow_inputs
    from training.rl import RLRun, collect_rollouts

    run = RLRun(config)
    stream = run.stream(0)
    run.step(next(stream))  # warm-up
    steps, start, rollouts, sampling = config.steps, time.perf_counter(), 0, 0.0
    for _ in range(steps):
        run.step(next(stream))
    whole = time.perf_counter() - start
    for _ in range(steps):
        batch = next(stream)
        group = config.rl.group_size
        inputs = flow_inputs(run.parts, batch, run.trainer.device, run.behaviour.partner)
        guidance = run.guidance(inputs["roles"].repeat_interleave(group, 0))
        t0 = time.perf_counter()
        collect_rollouts(run.behaviour_velocity, run.behaviour.latent_dim, inputs["conditions"].repeat(group),
                         guidance, config, torch.Generator().manual_seed(0))
        sampling += time.perf_counter() - t0
        rollouts += len(batch["key"]) * group
    return rollouts / sampling, steps / whole


def time_samplers(root: Path, shards: Path, encoders, preset: dict, steps: int, conversation: bool,
                  repeats: int) -> dict:
    """Rollouts/s and steps/s per sampler (medians over ``repeats`` alternating passes) and their ratios to the
    first sampler's."""
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in SAMPLERS}
    names = list(SAMPLERS)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            config = run_config("rl", root, shards, encoders, preset, steps, preset["conditions"],
                                name=f"rl-{name}-{repeat}",
                                rl={"init_run": str(root / "flow"), "listener_only": conversation, **SAMPLERS[name]})
            figures[name].append(time_rl(config))
    out: dict = {}
    base = names[0]
    for name in names:
        rollouts = statistics.median(r for r, _ in figures[name])
        steps_per_s = statistics.median(s for _, s in figures[name])
        out[f"rl_{name}_rollouts_per_s"], out[f"rl_{name}_steps_per_s"] = rollouts, steps_per_s
        if name != base:
            out[f"rl_{name}_rollouts_ratio"] = rollouts / statistics.median(r for r, _ in figures[base])
            out[f"rl_{name}_steps_ratio"] = steps_per_s / statistics.median(s for _, s in figures[base])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", help="pipeline shard folder with FLAME arrays (default: build from GRID)")
    parser.add_argument("--encoders", nargs=2, metavar=("AUDIO", "TEXT"), help="local encoder folders")
    parser.add_argument("--conversation", action="store_true",
                        help="conversation shards (built ones, or --shards holding them): RL with listener_only on")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rl-only", action="store_true", help="train the SFT runs RL starts from, time RL only")
    parser.add_argument("--repeats", type=int, default=1, help="alternating passes over the RL samplers (medians)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1: steadier figures on a shared machine)")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    root = Path(tempfile.mkdtemp(prefix="bench-training-"))
    shards, encoders = build_inputs(root, args.conversation) if not args.shards else (Path(args.shards),
                                                                                      tuple(args.encoders))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f}, preset {args.preset}, window {WINDOW} frames, "
          f"{'conversation' if args.conversation else 'speaking-only'} shards")
    figures = {"device": device, "preset": args.preset, "conversation": args.conversation,
               "load_average_1min": os.getloadavg()[0]}
    vae = run_config("vae", root, shards, encoders, preset, args.steps, preset["batch"])
    flow = run_config("flow", root, shards, encoders, preset, args.steps, preset["batch"],
                      flow={"vae_run": str(root / "vae")})
    vae_steps, flow_steps = time_sft(vae), time_sft(flow)
    if not args.rl_only:
        figures["vae_sft_steps_per_s"], figures["flow_sft_steps_per_s"] = vae_steps, flow_steps
        without_partner = run_config("flow", root, shards, encoders, preset, args.steps, preset["batch"],
                                     name="flow-no-partner",
                                     flow={"vae_run": str(root / "vae"), "partner_streams": False})
        figures["flow_sft_no_partner_steps_per_s"] = time_sft(without_partner)
    figures.update(time_samplers(root, shards, encoders, preset, args.steps, args.conversation, args.repeats))
    figures["load_average_1min_end"] = os.getloadavg()[0]
    for key, value in figures.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
