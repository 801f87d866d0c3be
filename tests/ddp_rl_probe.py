"""Run under torchrun by the RL DDP test: RL steps on this rank, then dump what it drew.

``python ddp_rl_probe.py CONFIG.yaml OUT_DIR`` writes ``OUT_DIR/rank<N>.pt`` with the rank's
rollout inputs of every step (the window starts at step 0, so they are the initial noise of
every position), the keys of its windows, its advantages and its final policy and behaviour
weights (from the trainer's model, not the checkpoint only rank 0 writes).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from training.config import load_run_config
from training.rl import RLRun


def main(config_path: str, out_dir: str) -> None:
    config = load_run_config(config_path)
    run = RLRun(config)
    stream = run.stream(0)
    noise, keys, advantages = [], [], []
    for _ in range(config.steps):
        batch = next(stream)
        out = run.step(batch)
        noise.append(out["rollouts"].inputs[0].clone())
        keys.append([(key, int(start)) for key, start in zip(batch["key"], batch["start"])])
        advantages.append(out["advantages"].clone())
    accelerator = run.trainer.accelerator
    weights = {name: value.detach().clone() for name, value in run.trainer.unwrapped.state_dict().items()}
    behaviour = {name: value.detach().clone() for name, value in run.behaviour.state_dict().items()}
    torch.save({"rank": accelerator.process_index, "world": accelerator.num_processes, "noise": noise, "keys": keys,
                "advantages": advantages, "weights": weights, "behaviour": behaviour},
               Path(out_dir) / f"rank{accelerator.process_index}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
