"""The ``train`` command group: ``train sft``, ``train rl`` and ``train evaluate``.

``register`` adds it to a parent parser's sub-commands (the ``talkinghead`` command and
``python -m training`` both call it); each sub-command sets ``func``, which takes the parsed
arguments and returns the exit status.
"""

from __future__ import annotations

import argparse

from training.trainer_base import add_run_arguments


def _sft(args: argparse.Namespace) -> int:
    # Trainers import torch and accelerate: loaded when a command runs, so ``--help`` stays fast.
    from training.sft import command

    return command(args)


def _rl(args: argparse.Namespace) -> int:
    from training.rl import command

    return command(args)


def _evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import command

    return command(args)


def _add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="flow run folder (config.yaml + checkpoints/)")
    parser.add_argument("--shards", help="held-out shards; default: the run's data.eval_shards")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` with its sub-commands to ``subparsers``."""
    train = subparsers.add_parser("train", help="train the motion VAE, the flow model or its RL stage; evaluate")
    commands = train.add_subparsers(dest="train_command", required=True, metavar="{sft,rl,evaluate}")
    sft = commands.add_parser("sft", help="supervised training (config kind: vae or flow)")
    add_run_arguments(sft)
    sft.set_defaults(func=_sft)
    rl = commands.add_parser("rl", help="RL post-training of a flow run (config kind: rl)")
    add_run_arguments(rl)
    rl.set_defaults(func=_rl)
    evaluate = commands.add_parser("evaluate", help="metrics of a flow run on held-out shards, as JSON")
    _add_evaluate_arguments(evaluate)
    evaluate.set_defaults(func=_evaluate)
