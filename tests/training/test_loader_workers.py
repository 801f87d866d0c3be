"""Loader workers hand batches over in reused shared memory; what the consumer holds stays intact."""

from __future__ import annotations

import numpy as np
import torch
from training_fixtures import flame_shards_fixture, one_sample_per_shard, tiny_config  # noqa: F401

from training.config import load_run_config
from training.data import PREFETCH_BATCHES, batches, eval_pipeline


def test_batches_from_a_worker_equal_the_main_process_ones_after_the_ring_wraps(tmp_path, flame_shards):
    folder = one_sample_per_shard(flame_shards, tmp_path / "split")
    held = {}
    for workers in (0, 1, 2):
        data = load_run_config(None, **tiny_config("vae", tmp_path / "run", folder, data={
            "window_frames": 8, "batch_size": 2, "num_workers": workers})).data
        # Every batch is kept: a reused shared buffer must not change one the consumer still holds.
        held[workers] = list(batches(eval_pipeline(str(folder), data), data, keep_last=True))
    assert len(held[1]) == 3 * 72 // 8 // 2 + 1 > PREFETCH_BATCHES * 2 + 2  # the worker's ring wraps
    one = held[1]
    for main, worker in zip(held[0], one):
        assert main["key"] == worker["key"]
        for name in ("start", "seed", "motion", "audio"):
            assert worker[name].dtype == main[name].dtype
            torch.testing.assert_close(worker[name], main[name], rtol=0, atol=0)
    # Two workers: shards are split between them, so compare window by window.
    windows = lambda held_batches: {(k, int(s)): (m.numpy(), a.numpy()) for b in held_batches  # noqa: E731
                                    for k, s, m, a in zip(b["key"], b["start"], b["motion"], b["audio"])}
    two, zero = windows(held[2]), windows(held[0])
    assert two.keys() == zero.keys()
    assert all(np.array_equal(two[w][0], zero[w][0]) and np.array_equal(two[w][1], zero[w][1]) for w in zero)
