"""The default 200-frame windows (25 latents at rate 8) on shards the pipeline made from a 12 s source."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch

from pipelines.fixtures.media import concatenated
from pipelines.fixtures.shards import build_flame_shards
from pipelines.media.wav import read_wav
from training.config import load_run_config
from training.data import batches, eval_pipeline, shard_urls, train_pipeline
from training.stats import compute_stats
from training.vae import MotionVAE

CHANNELS = 100 + 3 + 3 + 2 + 6 + 3


@pytest.fixture(scope="module")
def long_shards(tmp_path_factory, composed, grid_clips, model_dir):
    """One GRID clip played four times back to back (12 s, one face throughout: four different
    speakers would be four shots, which the face stage now keeps apart).

    The training fixture's pipeline settings apply: ASD and speech checks are off, so nothing
    cuts the clip into speaking runs and the face track spans the whole source."""
    source = composed.get("grid-one-four-times.mp4", concatenated, [grid_clips[0]] * 4)
    return build_flame_shards(tmp_path_factory.mktemp("long-shards"), [source], model_dir)


def _members(shards) -> dict[str, bytes]:
    out = {}
    for url in shard_urls(str(shards)):
        with tarfile.open(url) as tar:
            out.update({m.name: tar.extractfile(m).read() for m in tar.getmembers()})
    return out


@pytest.mark.slow
def test_default_windows_cut_200_frames_with_aligned_audio_and_encode_to_25_latents(tmp_path, long_shards):
    members = _members(long_shards)
    frames = {name.split(".")[0]: json.loads(data)["flame"]["frames"] for name, data in members.items()
              if name.endswith(".json")}
    assert max(frames.values()) >= 200, frames  # at least one accepted clip holds a default window
    config = load_run_config(None, cpu=True, data={"shards": str(long_shards), "batch_size": 2, "shuffle_buffer": 2})
    assert (config.data.window_frames, config.vae.latent_rate, config.latents_per_window) == (200, 8, 25)

    batch = next(batches(train_pipeline(config.data, seed=0), config.data))
    samples = round(200 / 24 * 16000)
    assert batch["motion"].shape == (2, 200, CHANNELS) and batch["audio"].shape == (2, samples)
    for row, (key, start) in enumerate(zip(batch["key"], batch["start"].tolist())):
        assert frames[key] >= 200 and 0 <= start <= frames[key] - 200
        with np.load(io.BytesIO(members[f"{key}.flame.npz"])) as arrays:
            expected = np.concatenate([arrays[f"smooth/{g}"] for g in config.data.groups], axis=1)
        np.testing.assert_array_equal(batch["motion"][row].numpy(), expected[start:start + 200])
        audio, rate = read_wav(members[f"{key}.wav"])
        a0 = round(start * rate / 24)
        assert rate == 16000 and len(audio) >= a0 + samples  # the clip's audio covers the whole window
        np.testing.assert_array_equal(batch["audio"][row].numpy(), audio[a0:a0 + samples] / 32768.0)

    tiled = next(batches(eval_pipeline(str(long_shards), config.data), config.data, keep_last=True))
    assert tiled["start"].tolist() == [0] * len(tiled["key"])

    stats = compute_stats(config.data)
    small = config.vae.model_copy(update={"width": 32, "layers": 1, "heads": 2, "latent_dim": 8})
    vae = MotionVAE(CHANNELS, small).eval()
    with torch.no_grad():
        mean, logvar = vae.encode(stats.normalise(batch["motion"]))
        decoded = vae.decode(mean)
    assert mean.shape == logvar.shape == (2, 25, 8)
    assert decoded.shape == (2, 200, CHANNELS) and torch.isfinite(decoded).all()
