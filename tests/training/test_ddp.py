"""SFT under DDP: two CPU processes (gloo) launched by torchrun, one run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
import yaml
from safetensors.torch import load_file
from training_fixtures import REPO_ROOT, flame_shards_fixture, tiny_config  # noqa: F401

from training.checkpoint import checkpoint_dirs
from training.trainer_base import LOG_FILE

PROBE = REPO_ROOT / "tests" / "ddp_sft_probe.py"
STEPS = 3


def _launch(config_file, out_dir) -> subprocess.CompletedProcess:
    # torchrun, not `accelerate launch --cpu` (that one starts a single process without mpirun);
    # accelerate picks up torchrun's RANK/WORLD_SIZE and builds a gloo group on CPU.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(PROBE), str(config_file), str(out_dir)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_two_processes_train_identical_weights_on_different_data_and_write_one_checkpoint(tmp_path, flame_shards):
    run_dir = tmp_path / "run"
    config_file = tmp_path / "vae.yaml"
    config_file.write_text(yaml.safe_dump(tiny_config("vae", run_dir, flame_shards, steps=STEPS, save_every=100)))
    done = _launch(config_file, tmp_path)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [(d["rank"], d["world"], d["distributed"]) for d in ranks] == [
        (0, 2, "DistributedType.MULTI_CPU"), (1, 2, "DistributedType.MULTI_CPU")]

    # Each rank draws its own window stream (seed + rank): different windows every step.
    assert all(len(d["seen"]) == STEPS for d in ranks)
    for step in range(STEPS):
        assert ranks[0]["seen"][step] != ranks[1]["seen"][step], step
    assert ranks[0]["losses"] != ranks[1]["losses"]

    # Different data, yet bit-identical weights: gradients were averaged across the ranks.
    first, second = ranks[0]["weights"], ranks[1]["weights"]
    assert first.keys() == second.keys() and first
    assert all(torch.equal(first[name], second[name]) for name in first)

    assert [p.name for p in checkpoint_dirs(run_dir)] == [f"step-{STEPS:06d}"]
    assert not list((run_dir / "checkpoints").glob("*.tmp"))
    saved = load_file(str(checkpoint_dirs(run_dir)[0] / "model.safetensors"))
    assert all(torch.equal(saved[name], first[name]) for name in saved)
    logged = [json.loads(line) for line in (run_dir / LOG_FILE).read_text().splitlines()]
    assert [row["step"] for row in logged] == list(range(1, STEPS + 1))  # the main process logs, once
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["frames"] == 3 * 72  # every shard's frames, not one rank's share
