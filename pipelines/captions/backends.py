"""Captioners: turn 8 RGB frames plus an instruction into one answer string.

``Captioner`` is a small protocol (``name`` and ``caption(frames, instruction)``). Two backends:

- ``QwenVLCaptioner``: a local Qwen-VL checkpoint folder loaded with transformers
  (AutoModelForImageTextToText, AutoTokenizer, AutoImageProcessor; ``local_files_only``,
  nothing is downloaded). The prompt is the tokenizer's chat template over one user turn
  (8 images, then the instruction). Each image's single ``<|image_pad|>`` is expanded here to
  ``prod(image_grid_thw) / spatial_merge_size**2`` pads, which is what the combined
  ``Qwen2VLProcessor`` does; the combined processor needs torchvision (absent on CPU
  machines), so this path works with or without it. Greedy decoding; only the new tokens are
  decoded.
- ``OpenAIChatCaptioner``: any OpenAI-compatible ``/chat/completions`` server (vLLM, SGLang,
  a hosted API), frames sent as JPEG data URLs, temperature 0, retries with exponential
  backoff on timeouts, connection errors, 429 and 5xx, and a bounded number of requests in
  flight per captioner. The API key comes from an environment variable and is never logged.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from pipelines.chat_http import (BackendError, RetriesExhausted, RetryingJsonClient, check_frames, jpeg_data_url,
                                 parse_chat_completion)

log = logging.getLogger(__name__)


# The shared HTTP errors under the names callers of this module know.
CaptionBackendError = BackendError
CaptionRetriesExhausted = RetriesExhausted


@runtime_checkable
class Captioner(Protocol):
    name: str

    def caption(self, frames: Sequence[np.ndarray], instruction: str) -> str:
        """One answer for RGB uint8 frames (H, W, 3) and an instruction."""


# --------------------------------------------------------------------------------------
# Local Qwen-VL
# --------------------------------------------------------------------------------------

IMAGE_PAD = "<|image_pad|>"


class QwenVLCaptioner:
    """Caption with a local Qwen-VL (Qwen2-VL / Qwen2.5-VL style) checkpoint folder."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", max_new_tokens: int = 60,
                 dtype: str | None = None, max_pixels: int | None = None):
        self.model_dir = Path(model_dir).expanduser()
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"Qwen-VL model folder {self.model_dir} not found or has no config.json: point it at a "
                "local checkpoint folder (weights are never downloaded)")
        self.device = device
        self.max_new_tokens = int(max_new_tokens)
        self.dtype = dtype
        self.max_pixels = max_pixels
        self.name = f"qwen-vl:{self.model_dir.resolve().name}"
        self._lock = threading.Lock()
        self._loaded: tuple | None = None

    def _load(self):
        with self._lock:
            if self._loaded is None:
                import torch
                from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

                kwargs = {"local_files_only": True}
                tokenizer = AutoTokenizer.from_pretrained(self.model_dir, **kwargs)
                if not getattr(tokenizer, "chat_template", None):
                    template = self._find_chat_template()
                    if template is None:
                        raise CaptionBackendError(f"{self.model_dir}: the tokenizer has no chat template")
                    tokenizer.chat_template = template
                image_kwargs = {"max_pixels": self.max_pixels} if self.max_pixels else {}
                image_processor = AutoImageProcessor.from_pretrained(self.model_dir, **kwargs, **image_kwargs)
                if self.dtype:
                    dtype = getattr(torch, self.dtype)
                else:
                    dtype = torch.bfloat16 if str(self.device).startswith("cuda") else torch.float32
                model = AutoModelForImageTextToText.from_pretrained(self.model_dir, dtype=dtype, **kwargs)
                model.to(self.device).eval()
                self._loaded = (tokenizer, image_processor, model)
        return self._loaded

    def _find_chat_template(self) -> str | None:
        jinja = self.model_dir / "chat_template.jinja"
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8")
        for name in ("chat_template.json", "processor_config.json"):
            path = self.model_dir / name
            if path.is_file():
                template = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
                if template:
                    return template
        return None

    def _merge_size(self, image_processor, model) -> int:
        merge = getattr(image_processor, "merge_size", None)
        if merge is None:
            merge = getattr(model.config.vision_config, "spatial_merge_size", 2)
        return int(merge)

    def build_inputs(self, frames: Sequence[np.ndarray], instruction: str) -> dict:
        """Token ids, attention mask, pixel values and grid for one prompt (on the model's device)."""
        tokenizer, image_processor, model = self._load()
        frames = check_frames(frames)
        messages = [{"role": "user", "content": [{"type": "image"} for _ in frames]
                     + [{"type": "text", "text": instruction}]}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        vision = image_processor(images=list(frames), return_tensors="pt")
        grid = vision["image_grid_thw"]
        merge = self._merge_size(image_processor, model)
        counts = [int(g.prod().item()) // (merge * merge) for g in grid]
        if prompt.count(IMAGE_PAD) != len(counts):
            raise CaptionBackendError(
                f"chat template produced {prompt.count(IMAGE_PAD)} {IMAGE_PAD} tokens for {len(counts)} images")
        pieces = prompt.split(IMAGE_PAD)
        expanded = pieces[0] + "".join(IMAGE_PAD * n + rest for n, rest in zip(counts, pieces[1:]))
        text = tokenizer(expanded, return_tensors="pt", add_special_tokens=False)
        inputs = {"input_ids": text["input_ids"], "attention_mask": text["attention_mask"],
                  "pixel_values": vision["pixel_values"].to(model.dtype), "image_grid_thw": grid}
        return {k: v.to(model.device) for k, v in inputs.items()}

    def caption(self, frames: Sequence[np.ndarray], instruction: str) -> str:
        import torch

        tokenizer, _, model = self._load()
        inputs = self.build_inputs(frames, instruction)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                    pad_token_id=pad_id)
        new_tokens = output[0, inputs["input_ids"].shape[1]:]
        return tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


# --------------------------------------------------------------------------------------
# OpenAI-compatible chat completions
# --------------------------------------------------------------------------------------

class OpenAIChatCaptioner:
    """Caption through an OpenAI-compatible ``POST {base_url}/chat/completions``."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60,
                 max_retries: int = 3, backoff_s: float = 1.0, max_concurrency: int = 4,
                 max_tokens: int | None = 120, jpeg_quality: int = 90):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_tokens = max_tokens
        self.jpeg_quality = jpeg_quality
        self.name = f"openai-chat:{model}"
        self._client = RetryingJsonClient(self.name, timeout_s, max_retries, backoff_s, max_concurrency)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def request_body(self, frames: Sequence[np.ndarray], instruction: str) -> dict:
        frames = check_frames(frames)
        content = [{"type": "image_url", "image_url": {"url": jpeg_data_url(f, self.jpeg_quality)}}
                   for f in frames]
        content.append({"type": "text", "text": instruction})
        body = {"model": self.model, "messages": [{"role": "user", "content": content}], "temperature": 0}
        if self.max_tokens:
            body["max_tokens"] = self.max_tokens
        return body

    def caption(self, frames: Sequence[np.ndarray], instruction: str) -> str:
        payload = self._client.post_json(self.url, self.request_body(frames, instruction), self._headers())
        return parse_chat_completion(payload)
