"""The ``train`` command group: ``train sft``, ``train rl``, ``train evaluate``, ``train generate``
and ``train convert-flame``.

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


def _generate(args: argparse.Namespace) -> int:
    from training.generate import command

    return command(args)


def _convert_flame(args: argparse.Namespace) -> int:
    from training.flame_model import convert_flame_pickle

    print(f"wrote {convert_flame_pickle(args.flame, args.masks, args.out, args.expression)}")
    return 0


def _add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="flow or RL run folder (config.yaml + checkpoints/)")
    parser.add_argument("--shards", help="held-out shards; default: the run's data.eval_shards")
    parser.add_argument("--guidance-scale", type=float, help="CFG scale of the sampled windows; default: the run's "
                        "metrics.guidance_scale (1.0, as the papers report)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="flow or RL run folder (config.yaml + checkpoints/)")
    parser.add_argument("--audio", required=True, help="speech audio: any file FFmpeg reads (its first audio stream)")
    parser.add_argument("--out", required=True, help="the .npz to write (the shard's FLAME array names)")
    parser.add_argument("--text", default="", help="caption prompt (the text condition); default: none")
    parser.add_argument("--guidance-scale", type=float, help="CFG scale; default: the run's flow.guidance_scale")
    parser.add_argument("--seconds", type=float, help="length; default: the audio's (cut, or padded with silence)")
    parser.add_argument("--steps", type=int, help="Euler steps per latent; default: the run's flow.sample_steps")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")


def _add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--flame", required=True, help="FLAME 2020 generic_model.pkl")
    parser.add_argument("--masks", required=True, help="FLAME_masks.pkl (vertex indices per region)")
    parser.add_argument("--out", required=True, help="the .npz to write (metrics.flame_model)")
    parser.add_argument("--expression", type=int, default=100, help="expression components kept")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` with its sub-commands to ``subparsers``."""
    train = subparsers.add_parser("train", help="train the motion VAE, the flow model or its RL stage; evaluate; "
                                  "generate")
    commands = train.add_subparsers(dest="train_command", required=True,
                                    metavar="{sft,rl,evaluate,generate,convert-flame}")
    for name, description, add_arguments, run in (
            ("sft", "supervised training (config kind: vae or flow)", add_run_arguments, _sft),
            ("rl", "RL post-training of a flow run (config kind: rl)", add_run_arguments, _rl),
            ("evaluate", "metrics of a flow or RL run on held-out shards, as JSON", _add_evaluate_arguments,
             _evaluate),
            ("generate", "a FLAME sequence for an audio file (npz, shard array names)", _add_generate_arguments,
             _generate),
            ("convert-flame", "FLAME 2020's pickles -> the metrics' FLAME model file", _add_convert_arguments,
             _convert_flame)):
        command = commands.add_parser(name, help=description)
        add_arguments(command)
        command.set_defaults(func=run)
