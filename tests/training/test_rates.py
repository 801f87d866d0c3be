"""Frame and sample rate come from the samples' records; a sample at other rates is skipped, logged."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path

import pytest
from training_fixtures import WINDOW, flame_shards_fixture, tiny_config  # noqa: F401

from training.config import load_run_config
from training.data import batches, finite_clips, inherit_rates, resolve_rates, shard_urls, train_pipeline


def _data(tmp_path: Path, shards: Path, **data):
    return load_run_config(None, **tiny_config("vae", tmp_path / "run", shards, data=data)).data


def _with_fps(shards: Path, folder: Path, fps: float) -> tuple[Path, str]:
    """A copy of the shards in which the first sample's record says ``fps``; returns (folder, its key)."""
    folder.mkdir()
    changed = None
    for number, url in enumerate(shard_urls(str(shards))):
        with tarfile.open(url) as source, tarfile.open(folder / f"shard-{number:06d}.tar", "w") as target:
            for member in source.getmembers():
                data = source.extractfile(member).read()
                if member.name.endswith(".json") and changed in (None, member.name.split(".")[0]):
                    record = json.loads(data)
                    record["video"]["fps"] = fps
                    data, changed = json.dumps(record).encode(), member.name.split(".")[0]
                member.size = len(data)
                target.addfile(member, io.BytesIO(data))
    return folder, changed


def test_rates_left_open_are_the_first_samples(tmp_path, flame_shards):
    data = _data(tmp_path, flame_shards)
    assert (data.fps, data.sample_rate) == (None, None)
    resolved = resolve_rates(data)
    assert (resolved.fps, resolved.sample_rate) == (24.0, 16000)
    stated = _data(tmp_path, flame_shards, fps=25.0, sample_rate=8000)
    assert resolve_rates(stated) is stated


def test_a_sample_at_another_frame_rate_is_skipped_with_its_reason(tmp_path, flame_shards, caplog):
    folder, key = _with_fps(flame_shards, tmp_path / "mixed", 25.0)
    with caplog.at_level(logging.WARNING, logger="training.data"):
        keys = {clip.key for clip in finite_clips(str(folder), _data(tmp_path, folder, fps=24.0), per_node=False)}
    assert len(keys) == 2 and key not in keys
    assert f"{key}: skipped: video at 25 fps, the run expects 24 (data.fps)" in caplog.text


def test_windows_take_their_audio_length_from_the_rates(tmp_path, flame_shards):
    folder, key = _with_fps(flame_shards, tmp_path / "mixed", 25.0)
    data = _data(tmp_path, folder, fps=25.0, batch_size=2)
    batch = next(batches(train_pipeline(data, seed=0), data))
    assert batch["key"] == [key, key]  # the only sample at 25 fps
    assert batch["audio"].shape == (2, WINDOW * 16000 // 25)


def test_a_later_stage_inherits_the_rates_it_was_trained_at(tmp_path, flame_shards):
    trained = _data(tmp_path, flame_shards, fps=24.0, sample_rate=16000)
    open_rates = inherit_rates(_data(tmp_path, flame_shards), trained, "the VAE run")
    assert (open_rates.fps, open_rates.sample_rate) == (24.0, 16000)
    with pytest.raises(ValueError, match="data.fps is 25.0 but the VAE run was trained at 24.0"):
        inherit_rates(_data(tmp_path, flame_shards, fps=25.0), trained, "the VAE run")
