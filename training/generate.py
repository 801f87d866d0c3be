"""Inference: audio (and a caption, a CFG scale, a length) in, a FLAME motion sequence out.

``python -m training train generate --run RUN --audio FILE --out motion.npz [--text "..."]
[--guidance-scale S] [--seconds S] [--steps N] [--seed N]`` with a flow or RL run folder. The
audio (any file FFmpeg reads; its first audio stream) is decoded to 16-bit mono at the run's
sample rate, as the pipeline stores it. The sequence has round(seconds x fps) frames at the
run's frame rate, seconds = the audio's duration unless ``--seconds`` is given (the audio is
then cut or padded with silence). Latents are sampled by the sliding window of
:func:`training.flow.sample_long` (the first window whole, then one latent per slide with the
previous L - 1 as history), all frames as the actor speaking (CFG ``--guidance-scale``, default
the run's ``flow.guidance_scale``), without partner. They are decoded by the VAE in windows of
L latents overlapping by half, blended with triangular weights (the VAE was trained on windows
of L latents, its own window; one pass over a longer sequence would be out of its range).

Output: an npz with the shard's FLAME array names, ``<array_prefix>/<group>`` (e.g.
``smooth/jaw``), float32 (frames, width), plus ``meta/fps``. A group the model learned narrower
than the pipeline stores (``data.expression_coefficients``) is padded with zeros to the stored
width, so the file reads like a shard's ``flame.npz``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import av
import numpy as np
import torch

from pipelines.flame.groups import MOTION_GROUPS, group_dims
from training.config import load_run_config
from training.data import PCM16_SCALE, group_slices
from training.evaluate import load_run_model, model_config
from training.flow import Conditions, sample_long
from training.vae import MotionVAE


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """float32 samples in [-1, 1) of the first audio stream of ``path``, mono 16-bit at ``sample_rate``."""
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as error:
        raise ValueError(f"{path}: not a readable media file ({error})") from None
    with container:
        if not container.streams.audio:
            raise ValueError(f"{path}: no audio stream")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
        chunks = []
        for frame in container.decode(container.streams.audio[0]):
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    if not chunks:
        raise ValueError(f"{path}: the audio stream decodes to no samples")
    return np.concatenate(chunks).astype(np.float32) / PCM16_SCALE


def decode_long(vae: MotionVAE, latents: torch.Tensor, length: int) -> torch.Tensor:
    """(B, N, D) latents -> (B, N * rate, C): windows of ``length`` latents, hop length // 2,
    blended with triangular frame weights (module docstring)."""
    total = latents.shape[1]
    if total <= length:
        return vae.decode(latents)
    starts = list(range(0, total - length + 1, max(1, length // 2)))
    if starts[-1] != total - length:
        starts.append(total - length)
    span = length * vae.rate
    ramp = torch.arange(span, device=latents.device, dtype=latents.dtype)
    weights = torch.minimum(ramp + 1, span - ramp)  # positive everywhere: every frame is covered
    out = latents.new_zeros(latents.shape[0], total * vae.rate, vae.channels)
    covered = latents.new_zeros(total * vae.rate)
    for start in starts:
        frames = slice(start * vae.rate, start * vae.rate + span)
        out[:, frames] += vae.decode(latents[:, start:start + length]) * weights[:, None]
        covered[frames] += weights
    return out / covered[:, None]


@torch.no_grad()
def generate(run_dir: str | Path, audio_path: str | Path, out: str | Path, text: str = "",
             guidance_scale: float | None = None, seconds: float | None = None, steps: int | None = None,
             seed: int = 0) -> dict:
    """Write the FLAME sequence for ``audio_path`` (module docstring); returns what was made."""
    run_dir = Path(run_dir)
    config = load_run_config(run_dir / "config.yaml", progress=False)
    built = model_config(config)
    fps, sample_rate = built.data.fps, built.data.sample_rate
    if fps is None or sample_rate is None:
        raise ValueError(f"{run_dir}/config.yaml states no data.fps / data.sample_rate: not a trained run's config")
    device = torch.device("cuda" if torch.cuda.is_available() and not config.cpu else "cpu")
    model, parts = load_run_model(run_dir, config, device)
    audio = read_audio(audio_path, sample_rate)
    duration = len(audio) / sample_rate if seconds is None else seconds
    frames = round(duration * fps)
    if frames < 1:
        raise ValueError(f"{audio_path}: {duration:.3f} s make no frame at {fps:g} fps")
    rate = parts.vae_config.vae.latent_rate
    latent_count = math.ceil(frames / rate)
    padded_frames = latent_count * rate
    wanted = round(padded_frames * sample_rate / fps)  # as training/data.py cuts a window's audio
    audio = np.pad(audio[:wanted], (0, max(0, wanted - len(audio))))
    features = parts.encoders.audio_features(torch.from_numpy(audio)[None], padded_frames, rate,
                                             parts.audio_per_frame)
    cond = Conditions(features.to(device), parts.encoders.text_features([text]).to(device))
    scale = config.flow.guidance_scale if guidance_scale is None else guidance_scale
    generator = torch.Generator().manual_seed(seed)
    latents = sample_long(model, cond, steps or config.flow.sample_steps, scale, generator)
    vae_window = parts.vae_config.data.window_frames // rate
    normalised = decode_long(parts.vae, model.unstandardise(latents), vae_window)
    motion = parts.stats.denormalise(normalised)[0, :frames].float().cpu().numpy()
    arrays = {"meta/fps": np.asarray(fps, dtype=np.float32)}
    for group, columns in group_slices(parts.stats.groups, parts.stats.dims).items():
        values = motion[:, columns]
        stored = group_dims(group) if group in MOTION_GROUPS else values.shape[1]
        arrays[f"{built.data.array_prefix}/{group}"] = np.pad(values, ((0, 0), (0, max(0, stored - values.shape[1]))))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    return {"out": str(out), "frames": frames, "fps": fps, "latents": latent_count, "seconds": duration,
            "guidance_scale": scale, "arrays": sorted(arrays)}


def command(args: argparse.Namespace) -> int:
    """``train generate``: write the sequence and print what was made."""
    made = generate(args.run, args.audio, args.out, args.text, args.guidance_scale, args.seconds, args.steps,
                    args.seed)
    print(f"wrote {made['out']}: {made['frames']} frames at {made['fps']:g} fps ({made['seconds']:.2f} s, "
          f"{made['latents']} latents, CFG {made['guidance_scale']:g})")
    return 0
