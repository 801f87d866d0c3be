"""VAE history without look-ahead (issue 18): held-out figures for each ``vae.encoder_attention``.

    python bench/bench_vae_history.py [--seeds 0 1 2] [--vae-steps N] [--flow-steps N] [--json OUT] [--md OUT]

For each encoder (full, causal, chunk) and seed: a VAE and then a flow model (speaking-only
layout) are trained on pipeline shards of the first four GRID clips in ../shared/media/grid
(face stage with the real SCRFD weights, FLAME stage with the scripted SHeaP stand-in of
pipelines/fixtures/sheap.py: its "motion" is a fixed random projection of the face crops, so
it follows the video but is no real FLAME fit), with tiny random wav2vec2 / T5 encoders. The
last two clips are held out; windows are cut every 4 frames (48-frame windows, 6 latents of 8
frames). Figures on the held-out windows, and the same on the training clips' windows (the
held-out clips are other speakers: their figures mix the encoder's effect with that shift),
all on the same windows and per-window seeded draws:

- ``vae_recon``: the VAE's reconstruction MSE from its encoder means (normalised channels);
- ``flow_tf``: the flow-matching loss with the ground-truth history (teacher forcing, as in
  training; the encoder's means of the true motion);
- ``flow_gen``: the same loss, same noise and levels, with the history the model generated
  itself (sampling the window latent by latent, CFG 1): what the model faces at inference;
- ``gap`` = flow_gen - flow_tf: how much the teacher-forced history told the model that a
  generated one cannot (look-ahead shows up here);
- ``sample_mse``: MSE of the sampled, decoded motion against the truth (normalised channels),
  and ``dd_*``: the parameter-space dynamic deviations of training/metrics.py.

Flow losses are in each run's standardised latent space (one scale set from its first batch),
so they compare within an encoder better than across; the motion-space figures compare across.
CPU process time per run is printed with the load average; nothing here is a timing figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/bench_vae_history.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

import torch

from training.config import load_run_config

WINDOW, RATE, HOP = 48, 8, 4
ENCODERS = ("full", "causal", "chunk")
FIGURES = ("vae_recon", "flow_tf", "flow_gen", "gap", "sample_mse", "dd_upper_face", "dd_jaw", "dd_head_pose")


def build_inputs(root: Path) -> tuple[Path, Path, tuple[Path, Path]]:
    from pipelines.fixtures.encoders import build_tiny_encoders
    from pipelines.fixtures.shards import build_flame_shards

    shared = Path(os.environ.get("TALKINGHEAD_SHARED_DIR") or REPO.parent / "shared")
    clips = sorted((shared / "media" / "grid").glob("*.mpg"))
    if len(clips) < 6:
        raise SystemExit(f"need 6 GRID clips in {shared / 'media' / 'grid'}, found {len(clips)}")
    train = build_flame_shards(root / "train", clips[:4], shared / "models")
    held_out = build_flame_shards(root / "held-out", clips[4:6], shared / "models")
    return train, held_out, build_tiny_encoders(root / "encoders")


def run_config(kind: str, run_dir: Path, shards: Path, encoders, seed: int, steps: int, **extra):
    return load_run_config(None, kind=kind, run_dir=str(run_dir), seed=seed, steps=steps, save_every=steps,
                           log_every=10 ** 6, cpu=True, progress=False,
                           data={"shards": str(shards), "window_frames": WINDOW, "batch_size": 8, "shuffle_buffer": 8},
                           vae={"latent_rate": RATE, "latent_dim": 16, "width": 64, "layers": 2, "heads": 4,
                                **extra.pop("vae", {})},
                           flow={"width": 64, "layers": 3, "heads": 4, "sample_steps": 8, "partner_streams": False,
                                 "guidance_scale": 1.0, **extra.pop("flow", {})},
                           optim={"lr": 1e-3, "warmup_steps": 20},
                           encoders={"audio_path": str(encoders[0]), "text_path": str(encoders[1])}, **extra)


def windows_of(shards: Path, config) -> dict:
    """Every window of HOP frames' stride of the clips in ``shards``, as one batch."""
    from training.data import collate, cut_window, finite_clips, resolve_rates

    data = resolve_rates(config.data, str(shards))
    windows = []
    for number, clip in enumerate(finite_clips(str(shards), data, per_node=False)):
        for start in range(0, len(clip.motion) - WINDOW + 1, HOP):
            window = cut_window(clip, start, data)
            window["seed"] = 1000 * number + start
            windows.append(window)
    return collate(windows)


@torch.no_grad()
def figures(flow_dir: Path, batch: dict) -> dict[str, float]:
    from training.checkpoint import load_weights
    from training.data import group_slices
    from training.flow import NOISE_SALT, TAU_SALT, sample_window
    from training.flow_parts import build_flow, flow_inputs, flow_parts
    from training.layers import seeded
    from training.metrics import region_deviations

    config = load_run_config(flow_dir / "config.yaml")
    device = torch.device("cpu")
    parts = flow_parts(config, device)
    model = build_flow(config, parts)
    load_weights(flow_dir, model)
    model.eval()
    inputs = flow_inputs(parts, batch, device, partner=False)
    motion, cond = inputs["motion"], inputs["conditions"]
    recon = parts.vae.decode(inputs["latents"])
    x0 = model.standardise(inputs["latents"])
    shape = tuple(x0.shape[1:])
    tau = seeded(batch["seed"], TAU_SALT, shape[:1], kind="uniform")
    noise = seeded(batch["seed"], NOISE_SALT, shape)
    noisy = (1 - tau[..., None]) * x0 + tau[..., None] * noise
    keep = torch.zeros(len(x0), dtype=torch.bool)

    def loss(history: torch.Tensor) -> float:
        return float((model.velocity(noisy, tau, history, cond, keep, keep, keep) - (noise - x0)).pow(2).mean())

    sampled = sample_window(model, cond, config.flow.sample_steps, 1.0, torch.Generator().manual_seed(0))
    decoded = parts.vae.decode(model.unstandardise(sampled))
    out = {"vae_recon": float((recon - motion).pow(2).mean()), "flow_tf": loss(x0), "flow_gen": loss(sampled),
           "sample_mse": float((decoded - motion).pow(2).mean())}
    out["gap"] = out["flow_gen"] - out["flow_tf"]
    slices = group_slices(parts.stats.groups, parts.stats.dims)
    out.update(region_deviations(parts.stats.denormalise(decoded), batch["motion"], slices))
    return out


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| windows | encoder | " + " | ".join(FIGURES) + " |", "|---" * (len(FIGURES) + 2) + "|"]
    for split in ("held_out", "train"):
        for encoder in ENCODERS:
            mine = [r for r in rows if r["encoder"] == encoder and r["windows"] == split]
            cells = []
            for name in FIGURES:
                values = [r[name] for r in mine]
                spread = statistics.pstdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.fmean(values):.4f} ± {spread:.4f}")
            lines.append(f"| {split} | {encoder} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--vae-steps", type=int, default=400)
    parser.add_argument("--flow-steps", type=int, default=400)
    parser.add_argument("--json", help="write every run's figures here")
    parser.add_argument("--md", help="write the summary table here")
    args = parser.parse_args()
    from training.sft import run_sft

    root = Path(tempfile.mkdtemp(prefix="bench-vae-history-"))
    train, held_out, encoders = build_inputs(root)
    torch.set_num_threads(1)
    header = (f"torch {torch.__version__}, 1 thread, windows {WINDOW} frames (rate {RATE}), "
              f"VAE {args.vae_steps} steps, flow {args.flow_steps} steps, seeds {args.seeds}; "
              f"load average at start {os.getloadavg()[0]:.2f}")
    print(header)
    rows = []
    splits: dict[str, dict] = {}
    for seed in args.seeds:
        for encoder in ENCODERS:
            started = time.process_time()
            vae_dir, flow_dir = root / f"vae-{encoder}-{seed}", root / f"flow-{encoder}-{seed}"
            run_sft(run_config("vae", vae_dir, train, encoders, seed, args.vae_steps,
                               vae={"encoder_attention": encoder}))
            flow = run_config("flow", flow_dir, train, encoders, seed, args.flow_steps, flow={"vae_run": str(vae_dir)})
            run_sft(flow)
            splits = splits or {"held_out": windows_of(held_out, flow), "train": windows_of(train, flow)}
            for split, batch in splits.items():
                row = {"windows": split, "encoder": encoder, "seed": seed, **figures(flow_dir, batch)}
                rows.append(row)
                print(json.dumps(row))
            print(f"cpu {time.process_time() - started:.1f} s, load {os.getloadavg()[0]:.2f}")
    counts = ", ".join(f"{split} {len(batch['key'])}" for split, batch in splits.items())
    summary = markdown(rows, f"windows: {counts} (held out: 2 clips, train: 4); mean ± population std over seeds")
    print(summary)
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    if args.md:
        Path(args.md).write_text(summary)


if __name__ == "__main__":
    main()
