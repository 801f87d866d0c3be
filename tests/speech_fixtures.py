"""Test helpers for the speech stage: pyannote's sample with its reference, and a random pipeline.

``pyannote_sample()`` / ``read_rttm()``: pyannote.audio's bundled sample
(30 s, two speakers) and its reference turns.

``build_random_diarization_pipeline(dir)`` writes, with no download, the same layout as a
real pyannote pipeline folder (pyannote/speaker-diarization-community-1)::

    dir/config.yaml                      pipeline: SpeakerDiarization, "$model/<subfolder>" entries
    dir/segmentation/pytorch_model.bin   PyanNet, powerset (3 speakers, at most 2 at once), 5 s chunks
    dir/embedding/pytorch_model.bin      WeSpeakerResNet34 (256-d)
    dir/plda/xvec_transform.npz          identity-like LDA transform for VBx
    dir/plda/plda.npz                    identity PLDA

Checkpoints are written the way pyannote's own training would (a Lightning checkpoint with a
"pyannote.audio" entry filled by ``Model.on_save_checkpoint``), so ``Model.from_pretrained``
and ``Pipeline.from_pretrained`` load them through their real code paths. Weights are seeded:
the folder is the same on every run. The output of such a pipeline is noise; its structure is real.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

# pyannote.audio 4 sends usage telemetry to otel.pyannote.ai unless told not to.
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

SEGMENTATION_DURATION_S = 5.0
EMBEDDING_DIM = 256
LDA_DIM = 128


def _save_checkpoint(model, path: Path) -> None:
    import lightning
    import torch

    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
        "epoch": 0,
        "global_step": 0,
    }
    model.on_save_checkpoint(checkpoint)  # adds checkpoint["pyannote.audio"] (versions, class, specifications)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)


def _segmentation_model(seed: int):
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.segmentation import PyanNet

    torch.manual_seed(seed)
    model = PyanNet(lstm={"hidden_size": 32, "num_layers": 1}, linear={"hidden_size": 32, "num_layers": 1})
    model.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION, resolution=Resolution.FRAME,
        duration=SEGMENTATION_DURATION_S, classes=["speaker#1", "speaker#2", "speaker#3"],
        powerset_max_classes=2, permutation_invariant=True)
    model.build()  # adds the task-dependent classifier (7 powerset classes) and activation
    with torch.no_grad():
        # Random weights would often pick "nobody speaks" everywhere (the pipeline then exits
        # early). Bias the powerset classes so that speakers 1, 2 and the pair {1, 2} win
        # somewhere: the pipeline then runs embeddings, clustering and reconstruction too.
        model.classifier.weight.mul_(4.0)
        model.classifier.bias.copy_(torch.tensor([-2.0, 1.0, 1.0, -1.0, 0.5, -1.0, -1.0]))
    return model


def _embedding_model(seed: int):
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import WeSpeakerResNet34

    torch.manual_seed(seed)
    model = WeSpeakerResNet34()
    model.specifications = Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK,
                                          duration=SEGMENTATION_DURATION_S)
    return model


def _write_plda(folder: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lda = np.linalg.qr(rng.standard_normal((EMBEDDING_DIM, EMBEDDING_DIM)))[0][:, :LDA_DIM]
    np.savez(folder / "xvec_transform.npz", mean1=np.zeros(EMBEDDING_DIM), mean2=np.zeros(LDA_DIM), lda=lda)
    np.savez(folder / "plda.npz", mu=np.zeros(LDA_DIM), tr=np.eye(LDA_DIM),
             psi=np.linspace(2.0, 0.5, LDA_DIM))


CONFIG_YAML = """\
# pyannote.audio 4 SpeakerDiarization from local random-weight checkpoints (tests only).
dependencies:
  pyannote.audio: {version}
pipeline:
  name: pyannote.audio.pipelines.SpeakerDiarization
  params:
    segmentation: $model/segmentation
    segmentation_step: 0.5
    segmentation_batch_size: 16
    embedding: $model/embedding
    embedding_batch_size: 16
    embedding_exclude_overlap: true
    plda: $model/plda
    clustering: VBxClustering
params:
  segmentation:
    min_duration_off: 0.0
  clustering:
    threshold: 0.6
    Fa: 0.07
    Fb: 0.8
"""


def build_random_diarization_pipeline(directory: Path, seed: int = 0) -> Path:
    """Write a loadable random-weight SpeakerDiarization pipeline into ``directory``; return it.

    Load it with ``pyannote.audio.Pipeline.from_pretrained(directory)`` (or through
    ``pipelines.speech.diarization.PyannoteDiarizationActivity``).
    """
    import pyannote.audio

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _save_checkpoint(_segmentation_model(seed), directory / "segmentation" / "pytorch_model.bin")
    _save_checkpoint(_embedding_model(seed + 1), directory / "embedding" / "pytorch_model.bin")
    _write_plda(directory / "plda", seed + 2)
    (directory / "config.yaml").write_text(CONFIG_YAML.format(version=pyannote.audio.__version__))
    return directory


def pyannote_sample() -> tuple[Path, Path]:
    """pyannote.audio's bundled sample.wav and sample.rttm (skips the test when absent)."""
    import pytest

    spec = importlib.util.find_spec("pyannote.audio")
    if spec is None or spec.origin is None:
        pytest.skip("pyannote.audio is not installed")
    folder = Path(spec.origin).parent / "sample"
    wav, rttm = folder / "sample.wav", folder / "sample.rttm"
    if not (wav.is_file() and rttm.is_file()):
        pytest.skip(f"pyannote.audio's sample.wav / sample.rttm not found in {folder}")
    return wav, rttm


def read_rttm(path: Path):
    """SPEAKER lines of an RTTM file as pipelines.speech.base.Turn."""
    from pipelines.speech.base import Turn

    turns = []
    for line in Path(path).read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start, length = float(fields[3]), float(fields[4])
            turns.append(Turn(fields[7], start, start + length))
    return turns


# --- ASR test helpers: a tiny random Whisper (CTranslate2), a tiny wav2vec2 aligner, audio ---

TINY_WHISPER_VOCAB = 51865  # the multilingual Whisper layout (v1/v2: 99 language tokens)


def build_tiny_whisper(directory: Path, seed: int = 0) -> Path:
    """A random 1-layer Whisper (d_model 64) converted for faster-whisper; returns its folder.

    Real architecture and vocabulary layout, built offline: ids 0..255 are the byte-level
    alphabet, 256..50255 two-byte filler tokens, 50256 the empty token, then Whisper's
    special tokens at their real ids (<|endoftext|> 50257, <|startoftranscript|> 50258,
    99 language tokens, <|translate|>, <|transcribe|>, <|startoflm|>, <|startofprev|>,
    <|nospeech|>, <|notimestamps|> 50363, and the 1501 timestamps <|0.00|>..<|30.00|>).
    CTranslate2 4.8 treats a Whisper vocabulary as multilingual (language detection allowed)
    when it holds the empty token "", as the real multilingual vocabulary does at id 50256.
    Output text is noise; loading, detection, decoding and the result structure are real.
    """
    import itertools
    import shutil

    import ctranslate2
    import torch
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, WhisperConfig, WhisperForConditionalGeneration
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    directory = Path(directory)
    hf_dir, out = directory / "hf-tiny-whisper", directory / "tiny-whisper"
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    for a, b in itertools.product(alphabet, alphabet):
        if len(vocab) >= 50256:
            break
        vocab[a + b] = len(vocab)
    vocab[""] = 50256
    languages = list(LANGUAGES)[:99]
    specials = (["<|endoftext|>", "<|startoftranscript|>"] + [f"<|{code}|>" for code in languages]
                + ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>",
                   "<|notimestamps|>"] + [f"<|{i * 0.02:.2f}|>" for i in range(1501)])
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    ids = {s: tokenizer.token_to_id(s) for s in specials}
    assert tokenizer.get_vocab_size() == TINY_WHISPER_VOCAB and ids["<|0.00|>"] == 50364, "vocabulary layout"

    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    space = tokenizer.token_to_id("Ġ")  # byte-level " "
    config = WhisperConfig(
        vocab_size=TINY_WHISPER_VOCAB, num_mel_bins=80, d_model=64, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
        max_source_positions=1500, max_target_positions=448, pad_token_id=eot, bos_token_id=eot,
        eos_token_id=eot, decoder_start_token_id=sot, suppress_tokens=[], begin_suppress_tokens=[space, eot])
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot, suppress_tokens=[],
        begin_suppress_tokens=[space, eot], no_timestamps_token_id=ids["<|notimestamps|>"], is_multilingual=True,
        lang_to_id={f"<|{code}|>": ids[f"<|{code}|>"] for code in languages})
    model.save_pretrained(hf_dir)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                            unk_token="<|endoftext|>", pad_token="<|endoftext|>").save_pretrained(hf_dir)
    ctranslate2.converters.TransformersConverter(str(hf_dir)).convert(str(out), force=True)
    shutil.copy(hf_dir / "tokenizer.json", out / "tokenizer.json")
    return out


def build_tiny_alignment_model(directory: Path, seed: int = 0) -> Path:
    """A random 1-layer wav2vec2 CTC model over English letters, in Hugging Face layout, for
    ``whisperx.load_align_model(..., model_name=<folder>)``; returns the folder."""
    import json

    import torch
    from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                              Wav2Vec2Processor)

    directory = Path(directory) / "tiny-wav2vec2"
    directory.mkdir(parents=True, exist_ok=True)
    letters = ["<pad>", "<s>", "</s>", "<unk>", "|"] + list("ETAONIHSRDLUMWCFGYPBVKJXQZ'")
    (directory / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(letters)}))
    tokenizer = Wav2Vec2CTCTokenizer(str(directory / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                     word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                         do_normalize=True, return_attention_mask=False)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(directory)
    config = Wav2Vec2Config(vocab_size=len(letters), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=64, conv_dim=(32, 32, 32), conv_stride=(5, 4, 16),
                            conv_kernel=(10, 8, 16), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                            pad_token_id=0, ctc_loss_reduction="mean")  # 320-sample hop: 50 frames/s
    torch.manual_seed(seed)
    Wav2Vec2ForCTC(config).save_pretrained(directory)
    return directory


def media_audio_16k(path: Path) -> np.ndarray:
    """Any media file's audio as float32 mono 16 kHz, decoded with the ffmpeg CLI."""
    import subprocess

    raw = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-vn", "-ac", "1",
                          "-ar", "16000", "-f", "s16le", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


def espeak_audio_16k(text: str, voice: str, directory: Path) -> np.ndarray:
    """Synthetic speech from espeak-ng (``-v voice -w out.wav``) as float32 mono 16 kHz."""
    import subprocess

    wav = Path(directory) / f"espeak-{voice}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True, capture_output=True)
    return media_audio_16k(wav)


# --- Sentences the real Whisper base identifies from espeak-ng speech (espeak-ng -s 150) ---
# Measured with faster-whisper-base (int8): these gave the right language at 0.8-0.97 with
# 0-1 s of silence around them and dubbed onto GRID clips. Whisper base is fragile on this
# synthetic speech: other French sentences came out as Thai (0.7-0.9) or Polish, and a 5.7 s
# German sentence as English (0.41), so do not swap these for arbitrary text.
WHISPER_SENTENCES = {
    "en": "Good morning, we will meet tonight in the small garden behind the old house.",
    "de": "Ich heiße Anna und wohne seit zehn Jahren in Berlin. Ich mag diese Stadt sehr, ihre Museen, "
          "ihre Cafés und ihre Parks.",
    "fr": "Merci beaucoup, monsieur. Je voudrais un café au lait et un croissant, s'il vous plaît.",
    "es": "Buenos días, esta noche nos vemos en el pequeño jardín detrás de la casa vieja.",
}
