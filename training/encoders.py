"""Frozen condition encoders loaded from local folders (never downloaded).

Audio: a wav2vec2-family model (``AutoModel.from_pretrained(audio_path)``); its last hidden
states (about 50 Hz) are linearly resampled to the motion frame rate and either averaged over
the ``rate`` frames of each latent (one feature vector per latent) or kept per frame, grouped
by latent (``flow.audio_tokens: frames``).
Text: a T5-family encoder (``T5EncoderModel`` + ``AutoTokenizer`` from ``text_path``); the
caption embedding is the mask-weighted mean of its last hidden states.
"""

from __future__ import annotations

import torch
from torch import nn

from training.config import EncoderConfig


class FrozenEncoders(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer, T5EncoderModel

        for name in ("audio_path", "text_path"):
            if not getattr(config, name):
                raise ValueError(f"encoders.{name} is not set: point it at a local model folder "
                                 "(e.g. a wav2vec2 / T5 checkpoint saved with save_pretrained)")
        self.audio = AutoModel.from_pretrained(config.audio_path).eval().requires_grad_(False)
        self.text = T5EncoderModel.from_pretrained(config.text_path).eval().requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(config.text_path)
        self.max_tokens = config.max_text_tokens

    @property
    def audio_dim(self) -> int:
        return int(self.audio.config.hidden_size)

    @property
    def text_dim(self) -> int:
        return int(self.text.config.d_model)

    def train(self, mode: bool = True) -> FrozenEncoders:
        return super().train(False)  # frozen: dropout stays off whatever the trainer asks

    @torch.no_grad()
    def audio_features(self, audio: torch.Tensor, frames: int, rate: int, per_frame: bool = False) -> torch.Tensor:
        """(B, samples) 16 kHz -> (B, frames // rate, audio_dim), or (B, frames // rate, rate, audio_dim)
        with ``per_frame``."""
        device = next(self.audio.parameters()).device
        hidden = self.audio(audio.to(device)).last_hidden_state  # (B, T_a, H)
        at_frames = nn.functional.interpolate(hidden.transpose(1, 2), size=frames, mode="linear",
                                              align_corners=False)
        latents = frames // rate
        grouped = at_frames[..., :latents * rate].reshape(hidden.shape[0], -1, latents, rate)  # (B, H, L, rate)
        return grouped.permute(0, 2, 3, 1) if per_frame else grouped.mean(-1).transpose(1, 2)

    @torch.no_grad()
    def text_features(self, captions: list[str]) -> torch.Tensor:
        device = next(self.text.parameters()).device
        tokens = self.tokenizer(list(captions), padding=True, truncation=True, max_length=self.max_tokens,
                                return_tensors="pt").to(device)
        hidden = self.text(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
        weights = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
