"""The loader reads pipeline-written shards as they are: windows, aligned audio, captions, statistics."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from training_fixtures import RATE, WINDOW, flame_shards_fixture, one_sample_per_shard, tiny_config  # noqa: F401

from pipelines.media.wav import read_wav
from pipelines.schema.sample import SampleRecord
from training.config import load_run_config
from training.data import (
    batches,
    caption_for,
    eval_pipeline,
    shard_urls,
    train_pipeline,
)
from training.stats import compute_stats


def _config(tmp_path, shards, **data):
    return load_run_config(None, **tiny_config("vae", tmp_path / "run", shards, data=data))


def _members(shards):
    out = {}
    for url in shard_urls(str(shards)):
        with tarfile.open(url) as tar:
            for member in tar.getmembers():
                out[member.name] = tar.extractfile(member).read()
    return out


def test_windows_come_straight_from_the_pipeline_shards(tmp_path, flame_shards):
    config = _config(tmp_path, flame_shards)
    batch = next(batches(train_pipeline(config.data, seed=0), config.data))
    assert batch["motion"].shape == (4, WINDOW, 100 + 3 + 3 + 2 + 6 + 3)
    assert batch["audio"].shape == (4, WINDOW * 16000 // 24)
    members = _members(flame_shards)
    key, start = batch["key"][0], int(batch["start"][0])
    with np.load(io.BytesIO(members[f"{key}.flame.npz"])) as arrays:
        expected = np.concatenate([arrays[f"smooth/{g}"] for g in config.data.groups], axis=1)[start:start + WINDOW]
    np.testing.assert_array_equal(batch["motion"][0].numpy(), expected)
    audio, rate = read_wav(members[f"{key}.wav"])
    a0 = round(start * rate / 24)
    np.testing.assert_array_equal(batch["audio"][0].numpy(), audio[a0:a0 + WINDOW * rate // 24] / 32768.0)
    assert json.loads(members[f"{key}.json"])["flame"]["frames"] == 72


def test_the_stream_is_a_function_of_the_seed_and_skipping_resumes_it(tmp_path, flame_shards):
    config = _config(tmp_path, flame_shards, batch_size=2)
    first = [b for _, b in zip(range(4), batches(train_pipeline(config.data, seed=3), config.data))]
    again = [b for _, b in zip(range(4), batches(train_pipeline(config.data, seed=3), config.data))]
    skipped = [b for _, b in zip(range(2), batches(train_pipeline(config.data, seed=3), config.data, skip=2))]
    other = [b for _, b in zip(range(4), batches(train_pipeline(config.data, seed=4), config.data))]
    same = lambda a, b: a["key"] == b["key"] and bool((a["start"] == b["start"]).all())
    assert all(same(a, b) for a, b in zip(first, again))
    assert same(first[2], skipped[0]) and same(first[3], skipped[1])
    assert not all(same(a, b) for a, b in zip(first, other))
    assert len({(k, int(s)) for b in first for k, s in zip(b["key"], b["start"])}) > 1


def test_statistics_cover_every_frame_with_population_std(tmp_path, flame_shards):
    config = _config(tmp_path, flame_shards)
    stats = compute_stats(config.data)
    frames = []
    for name, data in sorted(_members(flame_shards).items()):
        if name.endswith(".flame.npz"):
            with np.load(io.BytesIO(data)) as arrays:
                frames.append(np.concatenate([arrays[f"smooth/{g}"] for g in config.data.groups], axis=1))
    every = np.concatenate(frames).astype(np.float64)
    assert stats.frames == len(every) == 3 * 72
    np.testing.assert_allclose(stats.mean, every.mean(0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats.std, np.maximum(every.std(0, ddof=0), config.data.stats_eps), rtol=1e-6)
    assert stats.dims == {"expression": 100, "jaw": 3, "neck": 3, "eyelids": 2, "eye_pose": 6, "global_rotation": 3}
    saved = stats.save(tmp_path)
    assert type(stats).load(saved.parent).as_dict() == stats.as_dict()


def test_evaluation_windows_tile_each_clip_once(tmp_path, flame_shards):
    config = _config(tmp_path, flame_shards, batch_size=2)
    windows = [(k, int(s)) for b in batches(eval_pipeline(str(flame_shards), config.data), config.data, keep_last=True)
               for k, s in zip(b["key"], b["start"])]
    assert len(windows) == 3 and {s for _, s in windows} == {0}  # 72 frames hold one 48-frame window


def test_caption_of_a_window_is_the_most_overlapping_one():
    captions = {"status": "ok", "windows": [
        {"start": 0, "end": 200, "caption": "a calm face"}, {"start": 200, "end": 330, "caption": "raised brows"}]}
    assert caption_for(captions, 150, 350) == "raised brows"
    assert caption_for(captions, 50, 250) == "a calm face"
    assert caption_for({"status": "model not installed"}, 0, 48) == ""
    assert caption_for(None, 0, 48) == ""


@pytest.mark.parametrize("prefix", ["raw"])
def test_raw_arrays_are_selectable(tmp_path, flame_shards, prefix):
    config = _config(tmp_path, flame_shards, array_prefix=prefix)
    batch = next(batches(train_pipeline(config.data, seed=0), config.data))
    smooth = _config(tmp_path, flame_shards)
    other = next(batches(train_pipeline(smooth.data, seed=0), smooth.data))
    assert batch["key"] == other["key"] and not np.array_equal(batch["motion"].numpy(), other["motion"].numpy())


def test_audio_of_a_window_has_one_length_whatever_its_start():
    from training.data import Clip, cut_window

    # 64 / 24 s is not a whole sample count
    config = load_run_config(None, data={"window_frames": 64, "fps": 24, "sample_rate": 16000}).data
    clip = Clip("k", np.zeros((100, 3), np.float32), np.arange(70000, dtype=np.float32),
                SampleRecord.model_construct(captions=None))
    lengths = {len(cut_window(clip, start, config)["audio"]) for start in range(37)}
    assert lengths == {round(64 * 16000 / 24)}
    window = cut_window(clip, 3, config)
    assert window["audio"][0] == 2000.0 and window["motion"].shape == (64, 3)


def test_two_loader_workers_share_a_finite_epoch_without_duplicates_or_losses(tmp_path, flame_shards):
    folder = one_sample_per_shard(flame_shards, tmp_path / "split")
    assert len(shard_urls(str(folder))) == 3
    windows = {}
    for workers in (0, 2):
        config = _config(tmp_path, folder, window_frames=24, batch_size=2, num_workers=workers)
        windows[workers] = [(k, int(s)) for b in batches(eval_pipeline(str(folder), config.data), config.data,
                                                         keep_last=True) for k, s in zip(b["key"], b["start"])]
    assert len(windows[2]) == len(set(windows[2])) == 9  # 3 clips x 72 frames / 24
    assert set(windows[2]) == set(windows[0])
    assert {s for _, s in windows[2]} == {0, 24, 48}


def test_two_loader_workers_draw_different_training_windows(tmp_path, flame_shards):
    """One shard, two workers: each resamples that shard, so only their own RNGs can tell them apart."""
    config = _config(tmp_path, flame_shards, batch_size=3, num_workers=2)
    first = [b for _, b in zip(range(4), batches(train_pipeline(config.data, seed=0), config.data))]
    again = [b for _, b in zip(range(4), batches(train_pipeline(config.data, seed=0), config.data))]
    drawn = [list(zip(b["key"], b["start"].tolist(), b["seed"].tolist())) for b in first]
    # The loader alternates workers: batches 0 and 2 come from worker 0, 1 and 3 from worker 1.
    assert drawn[0] != drawn[1] and drawn[2] != drawn[3]
    assert all(a["key"] == b["key"] and torch.equal(a["start"], b["start"]) for a, b in zip(first, again))
