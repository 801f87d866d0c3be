"""Test helpers for training/: shards made by the real pipeline, tiny encoders, tiny run configs.

``build_flame_shards`` runs the face stage (real SCRFD weights) and the FLAME stage (the
SHeaP stand-in with the published interface, from flame_fixtures) on GRID clips and packs the shards with
``write_shards``: the trainers read exactly what the pipeline writes. ``build_tiny_encoders``
saves a random tiny wav2vec2 and a tiny T5 encoder with a word-level tokenizer, loaded back by
training/encoders.py through ``from_pretrained`` like real checkpoints.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from flame_fixtures import build_scripted_sheap
from media_factory import AUDIO_RATE, FPS, H264_AAC, run_ffmpeg

REPO_ROOT = Path(__file__).resolve().parents[1]
WINDOW = 48  # GRID clips are 72 frames at 24 fps: windows shorter than the clip
RATE = 8


def build_flame_shards(root: Path, clips: list[Path], shared_models: Path, detector) -> Path:
    """Shards of ``clips`` with FLAME arrays, written by the pipeline; returns the shard folder."""
    from pipelines.config import load_config
    from pipelines.flame.stage import build_backend, run_flame_stage
    from pipelines.ingest import SourceRegistry
    from pipelines.shards import write_shards
    from pipelines.sources import process_source

    models = root / "models"
    build_scripted_sheap(models / "sheap" / "sheap.pt")
    (models / "scrfd").mkdir(parents=True)
    (models / "scrfd" / "scrfd_500m_kps.onnx").symlink_to(shared_models / "scrfd" / "scrfd_500m_kps.onnx")
    inputs = root / "input"
    inputs.mkdir()
    for clip in clips:
        shutil.copy(clip, inputs / clip.name)  # links out of the input folder are not followed
    config = load_config(paths={"input_dir": inputs, "data_dir": root / "data", "model_dir": models},
                         speech={"enabled": False}, asd={"enabled": False}, captions={"enabled": False})
    backend = build_backend(config)
    assert backend is not None, "the scripted SHeaP was not picked up"
    records = []
    for ref in SourceRegistry(config.paths.registry_path).scan(inputs, config.ingest.extensions):
        record = process_source(ref, config, detector)
        run_flame_stage(ref, record, config, backend)
        records.append(record)
    write_shards(records, config)
    return config.paths.shards_dir


def concatenated(clips: list[Path], out: Path) -> Path:
    """``clips`` played one after another as one H.264/AAC mp4 (frame rate and audio format unified)."""
    inputs, graph, pads = [], "", ""
    for number, clip in enumerate(clips):
        inputs += ["-i", str(clip)]
        graph += (f"[{number}:v]fps={FPS},format=yuv420p,setsar=1[v{number}];"
                  f"[{number}:a]aresample={AUDIO_RATE},aformat=sample_fmts=fltp:channel_layouts=stereo[a{number}];")
        pads += f"[v{number}][a{number}]"
    graph += f"{pads}concat=n={len(clips)}:v=1:a=1[v][a]"
    run_ffmpeg([*inputs, "-filter_complex", graph, "-map", "[v]", "-map", "[a]", *H264_AAC, str(out)])
    return out


def _word_tokenizer(path: Path, words: list[str]):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    # T5 appends </s>: an empty caption still has one token to pool.
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(path)


def build_tiny_encoders(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """(audio folder, text folder) of random tiny wav2vec2 / T5 encoders saved with save_pretrained."""
    import torch
    from transformers import T5Config, T5EncoderModel, Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(seed)
    audio_dir, text_dir = root / "wav2vec2-tiny", root / "t5-tiny"
    audio = Wav2Vec2Model(Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16, 16, 16, 16, 16, 16), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        do_stable_layer_norm=True, feat_extract_norm="layer", apply_spec_augment=False))
    audio.save_pretrained(audio_dir)
    words = ["a", "the", "smiles", "frowns", "eyebrows", "raised", "eyes", "wide", "mouth", "neutral", "calm", "angry", "happy", "sad"]
    text = T5EncoderModel(T5Config(vocab_size=len(words) + 3, d_model=32, d_kv=8, d_ff=64, num_layers=1,
                                   num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    text.save_pretrained(text_dir)
    _word_tokenizer(text_dir, words)
    return audio_dir, text_dir


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
def flame_shards_fixture(tmp_path_factory, grid_clips, model_dir, scrfd_detector) -> Path:
    """Pipeline-written shards of three GRID clips with FLAME arrays (72 frames each)."""
    return _once("shards", lambda: build_flame_shards(tmp_path_factory.mktemp("train-shards"), grid_clips[:3],
                                                      model_dir, scrfd_detector))


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
