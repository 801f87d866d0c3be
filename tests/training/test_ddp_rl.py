"""RL under DDP: two CPU processes (gloo) launched by torchrun draw their own rollout noise and train
identical weights."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
import yaml
from training_fixtures import (  # noqa: F401
    REPO_ROOT,
    flame_shards_fixture,
    flow_run_fixture,
    tiny_config,
    tiny_encoders_fixture,
    vae_run_fixture,
)

from training.rl import rollout_seed

PROBE = REPO_ROOT / "tests" / "ddp_rl_probe.py"
STEPS = 2


def test_each_rank_draws_its_own_rollout_noise_and_the_ranks_train_identical_weights(tmp_path, flame_shards,
                                                                                      flow_run):
    config_file = tmp_path / "rl.yaml"
    config_file.write_text(yaml.safe_dump(tiny_config(
        "rl", tmp_path / "run", flame_shards, steps=STEPS, save_every=100, data={"batch_size": 2},
        optim={"lr": 1e-3, "grad_clip": None},
        rl={"init_run": str(flow_run), "group_size": 4, "listener_only": False, "window": 2, "window_start": 0,
            "behaviour_sync_every": 1})))
    # torchrun, as tests/training/test_ddp.py explains: accelerate builds a gloo group from its RANK/WORLD_SIZE.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(PROBE), str(config_file), str(tmp_path)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [(d["rank"], d["world"]) for d in ranks] == [(0, 2), (1, 2)]

    for step in range(STEPS):
        first, second = ranks[0]["noise"][step], ranks[1]["noise"][step]
        assert first.shape == second.shape == (8, 6, 8)
        assert not torch.equal(first, second), step
        for rank, data in enumerate(ranks):  # position 0's first draw comes from the rank's own seed
            expected = torch.randn(8, 8, generator=torch.Generator().manual_seed(rollout_seed(0, rank, step)))
            assert torch.equal(data["noise"][step][:, 0], expected), (rank, step)
        assert ranks[0]["keys"][step] != ranks[1]["keys"][step]

    # Different data and noise, yet bit-identical policies (gradients averaged) and behaviour copies.
    for name in ("weights", "behaviour"):
        first, second = ranks[0][name], ranks[1][name]
        assert first.keys() == second.keys() and first
        assert all(torch.equal(first[key], second[key]) for key in first), name
