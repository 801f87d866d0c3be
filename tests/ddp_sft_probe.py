"""Run under ``accelerate launch`` by the DDP test: ``run_sft`` on this rank, then dump what it saw.

``python ddp_sft_probe.py CONFIG.yaml OUT_DIR`` writes ``OUT_DIR/rank<N>.pt`` with the rank's
final weights (from the trainer's model, not the checkpoint only rank 0 writes), the
(key, start) of every window it trained on and its logged losses. The trainer and the batch
stream of ``training.sft`` are wrapped to be observed; they run unchanged.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from training import sft
from training.config import load_run_config


def main(config_path: str, out_dir: str) -> None:
    seen: list[list[tuple[str, int]]] = []
    trainers: list[sft.Trainer] = []
    real_batches = sft.batches

    def observed_batches(*args, **kwargs):
        for batch in real_batches(*args, **kwargs):
            seen.append([(key, int(start)) for key, start in zip(batch["key"], batch["start"])])
            yield batch

    class ObservedTrainer(sft.Trainer):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            trainers.append(self)

    sft.batches, sft.Trainer = observed_batches, ObservedTrainer
    rows = sft.run_sft(load_run_config(config_path))
    accelerator = trainers[0].accelerator
    weights = {name: value.detach().clone() for name, value in trainers[0].unwrapped.state_dict().items()}
    torch.save({"rank": accelerator.process_index, "world": accelerator.num_processes,
                "distributed": str(accelerator.distributed_type), "seen": seen,
                "losses": [row["loss"] for row in rows], "weights": weights},
               Path(out_dir) / f"rank{accelerator.process_index}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
