"""Test helpers for training/: tiny run configs and session fixtures over the package's builders.

The shards (``build_flame_shards``), the conversation shards made from them
(``build_conversation_shards``) and the tiny encoders (``build_tiny_encoders``) come from
pipelines/fixtures, which the training benches use too; each is made once per pytest session.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines.fixtures.conversation_shards import build_conversation_shards, build_pipeline_conversation_shards
from pipelines.fixtures.encoders import build_tiny_encoders
from pipelines.fixtures.shards import build_flame_shards

REPO_ROOT = Path(__file__).resolve().parents[1]
WINDOW = 48  # GRID clips are 72 frames at 24 fps: windows shorter than the clip
RATE = 8


def tiny_config(kind: str, run_dir: Path, shards: Path, encoders: tuple[Path, Path] | None = None,
                vae_run: Path | None = None, **overrides) -> dict:
    """A tiny run config as a dict (for load_run_config(None, **cfg) or a YAML file)."""
    config = {
        "kind": kind, "run_dir": str(run_dir), "seed": 0, "steps": 4, "log_every": 1, "save_every": 100, "cpu": True,
        "data": {"shards": str(shards), "window_frames": WINDOW, "batch_size": 4, "shuffle_buffer": 4},
        "vae": {"latent_rate": RATE, "latent_dim": 8, "width": 32, "layers": 1, "heads": 2},
        "flow": {"width": 32, "layers": 2, "heads": 4, "sample_steps": 4, "guidance_scale": 1.5,
                 "vae_run": str(vae_run) if vae_run else None},
        "optim": {"lr": 1e-3, "grad_clip": 1.0},
    }
    if encoders:
        config["encoders"] = {"audio_path": str(encoders[0]), "text_path": str(encoders[1])}
    for key, value in overrides.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and key in config else value
    return config


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


# Session fixtures: a test module imports ``<name>_fixture`` and asks for ``<name>``. Each module that
# imports one gets its own copy of it, so the work is cached here, once per pytest session.
_CACHE: dict[str, Path] = {}


def _once(name: str, make) -> Path:
    if name not in _CACHE:
        _CACHE[name] = make()
    return _CACHE[name]


@pytest.fixture(scope="session", name="flame_shards")
def flame_shards_fixture(tmp_path_factory, grid_clips, model_dir) -> Path:
    """Pipeline-written shards of three GRID clips with FLAME arrays (72 frames each)."""
    return _once("shards", lambda: build_flame_shards(tmp_path_factory.mktemp("train-shards"), grid_clips[:3],
                                                      model_dir))


@pytest.fixture(scope="session", name="conversation_shards")
def conversation_shards_fixture(tmp_path_factory, flame_shards) -> Path:
    """The three FLAME samples as conversation samples: one session of two actors who see and hear
    each other, and one actor whose partner is heard but never seen (see conversation_shards.py)."""
    return _once("conversation", lambda: build_conversation_shards(tmp_path_factory.mktemp("conversation"),
                                                                   flame_shards))


@pytest.fixture(scope="session", name="pipeline_conversation_shards")
def pipeline_conversation_shards_fixture(tmp_path_factory, grid_dir, model_dir) -> Path:
    """Shards of the pipeline's conversation mode: two GRID speakers taking turns, one recording each."""
    pytest.importorskip("pyannote.audio")  # the speech activity the per-participant roles come from
    return _once("pipeline-conversation", lambda: build_pipeline_conversation_shards(
        tmp_path_factory.mktemp("pipeline-conversation"), grid_dir, model_dir))


@pytest.fixture(scope="session", name="conversation_flow_run")
def conversation_flow_run_fixture(tmp_path_factory, conversation_shards, tiny_encoders) -> Path:
    """A tiny VAE (20 steps) and a tiny flow model with partner streams (4 steps), both trained on the
    conversation shards; returns the flow run (its config names the VAE run)."""
    from training.config import load_run_config
    from training.sft import run_sft

    def make() -> Path:
        vae_dir, flow_dir = tmp_path_factory.mktemp("conversation-vae"), tmp_path_factory.mktemp("conversation-flow")
        run_sft(load_run_config(None, **tiny_config("vae", vae_dir, conversation_shards, steps=20, save_every=20)))
        run_sft(load_run_config(None, **tiny_config("flow", flow_dir, conversation_shards, tiny_encoders, vae_dir,
                                                    steps=4, save_every=4)))
        return flow_dir
    return _once("conversation-flow", make)


@pytest.fixture(scope="session", name="tiny_encoders")
def tiny_encoders_fixture(tmp_path_factory) -> tuple[Path, Path]:
    return _once("encoders", lambda: build_tiny_encoders(tmp_path_factory.mktemp("encoders")))


@pytest.fixture(scope="session", name="vae_run")
def vae_run_fixture(tmp_path_factory, flame_shards) -> Path:
    """A tiny VAE trained for 20 steps on the fixture shards."""
    from training.config import load_run_config
    from training.sft import run_sft

    def make() -> Path:
        run_dir = tmp_path_factory.mktemp("vae-run")
        run_sft(load_run_config(None, **tiny_config("vae", run_dir, flame_shards, steps=20, save_every=20)))
        return run_dir
    return _once("vae", make)


@pytest.fixture(scope="session", name="flow_run")
def flow_run_fixture(tmp_path_factory, flame_shards, tiny_encoders, vae_run) -> Path:
    """A tiny flow model trained for 4 steps on the VAE's latents (the RL starting point)."""
    from training.config import load_run_config
    from training.sft import run_sft

    def make() -> Path:
        run_dir = tmp_path_factory.mktemp("flow-run")
        run_sft(load_run_config(None, **tiny_config("flow", run_dir, flame_shards, tiny_encoders, vae_run,
                                                    steps=4, save_every=4)))
        return run_dir
    return _once("flow", make)


def one_sample_per_shard(shards, folder: Path) -> Path:
    """The pipeline's shards repacked with one sample per tar (members byte for byte): loader
    workers need several shards to share."""
    import collections
    import io
    import tarfile

    from training.data import shard_urls

    samples = collections.defaultdict(dict)
    for url in shard_urls(str(shards)):
        with tarfile.open(url) as tar:
            for member in tar.getmembers():
                key, suffix = member.name.split(".", 1)
                samples[key][suffix] = tar.extractfile(member).read()
    folder.mkdir()
    for number, (key, members) in enumerate(sorted(samples.items())):
        with tarfile.open(folder / f"shard-{number:06d}.tar", "w") as tar:
            for suffix, data in members.items():
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return folder
