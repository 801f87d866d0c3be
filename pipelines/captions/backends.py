"""Captioners: turn 8 RGB frames plus an instruction into one answer string.

``Captioner`` is a small protocol (``name`` and ``caption(frames, instruction)``). Two backends:

- ``QwenVLCaptioner``: a local Qwen2-VL, Qwen2.5-VL or Qwen3-VL checkpoint folder (the
  family is read from config.json ``model_type``; any other type is refused by name) loaded
  with transformers (AutoModelForImageTextToText, AutoTokenizer, AutoImageProcessor;
  ``local_files_only``, nothing is downloaded). The prompt is the checkpoint's chat template
  over one user turn (8 images, then the instruction). Where torchvision is importable the
  family's combined processor (AutoProcessor) expands each image's ``<|image_pad|>`` and
  types the tokens; without torchvision (the combined processor's video part needs it) the
  same is done here: ``prod(image_grid_thw) / merge_size**2`` pads per image and
  ``mm_token_type_ids`` 1 on them, which M-RoPE needs. Greedy decoding; only the new tokens
  are decoded, without special tokens.
- ``OpenAIChatCaptioner``: any OpenAI-compatible ``/chat/completions`` server (vLLM, SGLang,
  a hosted API) through the chat client the judges use too (``pipelines/chat_http.py``:
  JPEG data URLs, retries with backoff, bounded requests in flight), at temperature 0.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from pipelines.chat_http import BackendError, ChatClient, RetriesExhausted, check_frames, image_part, text_part

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

# config.json ``model_type`` -> the release family it names. Every one of them takes an image
# as ``<|vision_start|><|image_pad|><|vision_end|>`` in its chat template, with the pad repeated
# ``prod(image_grid_thw) / merge_size**2`` times (transformers models/qwen2_vl,
# qwen2_5_vl and qwen3_vl processing_*.py ``replace_image_token``), and needs
# ``mm_token_type_ids`` (1 on image pads) to place the image tokens in 3-D M-RoPE
# (modeling_*.py ``get_rope_index``). The families differ in the vision tower (patch 14 for
# Qwen2/2.5-VL, 16 for Qwen3-VL; window attention in 2.5; deepstack in 3) and the image
# normalisation, which the checkpoint's own preprocessor_config.json and config.json carry.
# Qwen3-VL's "<t seconds>" timestamps apply to video inputs only; frames go in as images.
QWEN_VL_FAMILIES = {
    "qwen2_vl": "Qwen2-VL",
    "qwen2_5_vl": "Qwen2.5-VL",
    "qwen3_vl": "Qwen3-VL",
    "qwen3_vl_moe": "Qwen3-VL-MoE",
}

IMAGE_PAD = "<|image_pad|>"
# Token type of an image pad in ``mm_token_type_ids`` (0 text, 1 image, 2 video).
IMAGE_TOKEN_TYPE = 1


class UnsupportedQwenVLModel(ValueError):
    """The checkpoint's config.json names a model type this backend does not run."""


def qwen_vl_family(model_dir: str | Path) -> str:
    """The ``model_type`` of a checkpoint folder, checked against ``QWEN_VL_FAMILIES``."""
    path = Path(model_dir) / "config.json"
    model_type = json.loads(path.read_text(encoding="utf-8")).get("model_type")
    if model_type not in QWEN_VL_FAMILIES:
        supported = ", ".join(f"{k} ({v})" for k, v in QWEN_VL_FAMILIES.items())
        raise UnsupportedQwenVLModel(
            f"{path}: model_type {model_type!r} is not a supported Qwen-VL family; supported: {supported}")
    return model_type


def processor_path_available() -> bool:
    """True where the combined Qwen-VL processor can load (its video processor needs torchvision)."""
    from transformers.utils import is_torchvision_available

    return bool(is_torchvision_available())


class QwenVLCaptioner:
    """Caption with a local Qwen2-VL, Qwen2.5-VL or Qwen3-VL checkpoint folder.

    ``use_processor``: None picks the family's combined processor (AutoProcessor) where
    torchvision is importable and the tokenizer + image processor path otherwise; True or
    False forces one of them.
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", max_new_tokens: int = 60,
                 dtype: str | None = None, max_pixels: int | None = None, use_processor: bool | None = None):
        self.model_dir = Path(model_dir).expanduser()
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"Qwen-VL model folder {self.model_dir} not found or has no config.json: point it at a "
                "local checkpoint folder (weights are never downloaded)")
        self.model_type = qwen_vl_family(self.model_dir)
        self.family = QWEN_VL_FAMILIES[self.model_type]
        self.device = device
        self.max_new_tokens = int(max_new_tokens)
        self.dtype = dtype
        self.max_pixels = max_pixels
        self.use_processor = processor_path_available() if use_processor is None else bool(use_processor)
        self.name = f"qwen-vl:{self.model_type}:{self.model_dir.resolve().name}"
        self._lock = threading.Lock()
        self._loaded: tuple | None = None

    def _load(self):
        """(tokenizer, image_processor, processor or None, model), loaded once."""
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
                processor = None
                if self.use_processor:
                    from transformers import AutoProcessor

                    processor = AutoProcessor.from_pretrained(self.model_dir, **kwargs)
                    # One image processor for both paths (it carries the max_pixels override).
                    processor.image_processor = image_processor
                if self.dtype:
                    dtype = getattr(torch, self.dtype)
                else:
                    dtype = torch.bfloat16 if str(self.device).startswith("cuda") else torch.float32
                model = AutoModelForImageTextToText.from_pretrained(self.model_dir, dtype=dtype, **kwargs)
                self._check_consistent(tokenizer, image_processor, model)
                model.to(self.device).eval()
                self._loaded = (tokenizer, image_processor, processor, model)
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

    def _check_consistent(self, tokenizer, image_processor, model) -> None:
        """The image processor's patch/merge sizes and the tokenizer's image pad must match the model."""
        vision = model.config.vision_config
        problems = []
        for name, ours, theirs in (("patch_size", image_processor.patch_size, vision.patch_size),
                                   ("merge_size", image_processor.merge_size, vision.spatial_merge_size)):
            if int(ours) != int(theirs):
                problems.append(f"preprocessor_config {name} {ours} != model {theirs}")
        if tokenizer.convert_tokens_to_ids(IMAGE_PAD) != model.config.image_token_id:
            problems.append(f"tokenizer {IMAGE_PAD} id {tokenizer.convert_tokens_to_ids(IMAGE_PAD)} != "
                            f"config image_token_id {model.config.image_token_id}")
        if problems:
            raise CaptionBackendError(f"{self.model_dir} ({self.family}): " + "; ".join(problems))

    def prompt(self, n_images: int, instruction: str) -> str:
        """The chat-template prompt for one user turn: ``n_images`` images, then the instruction."""
        tokenizer = self._load()[0]
        messages = [{"role": "user", "content": [{"type": "image"} for _ in range(n_images)]
                     + [{"type": "text", "text": instruction}]}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def build_inputs(self, frames: Sequence[np.ndarray], instruction: str) -> dict:
        """input_ids, attention_mask, mm_token_type_ids, pixel_values and image_grid_thw for one
        prompt, on the model's device."""
        tokenizer, image_processor, processor, model = self._load()
        frames = check_frames(frames)
        prompt = self.prompt(len(frames), instruction)
        if prompt.count(IMAGE_PAD) != len(frames):
            raise CaptionBackendError(
                f"chat template produced {prompt.count(IMAGE_PAD)} {IMAGE_PAD} tokens for {len(frames)} images")
        if processor is not None:
            inputs = dict(processor(text=[prompt], images=list(frames), return_tensors="pt"))
        else:
            inputs = self._expand_without_processor(tokenizer, image_processor, prompt, frames)
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        return {k: inputs[k].to(model.device) for k in
                ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw")}

    def _expand_without_processor(self, tokenizer, image_processor, prompt: str, frames) -> dict:
        """What the family's processor does for images, without its torchvision-only video part:
        each image's pad repeated prod(grid_thw) / merge_size**2 times, image pads typed 1."""
        import torch

        vision = image_processor(images=list(frames), return_tensors="pt")
        grid = vision["image_grid_thw"]
        merge = int(image_processor.merge_size)
        counts = [int(g.prod().item()) // (merge * merge) for g in grid]
        pieces = prompt.split(IMAGE_PAD)
        expanded = pieces[0] + "".join(IMAGE_PAD * n + rest for n, rest in zip(counts, pieces[1:]))
        text = tokenizer(expanded, return_tensors="pt", add_special_tokens=False)
        pad_id = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        types = torch.where(text["input_ids"] == pad_id, IMAGE_TOKEN_TYPE, 0)
        return {"input_ids": text["input_ids"], "attention_mask": text["attention_mask"], "mm_token_type_ids": types,
                "pixel_values": vision["pixel_values"], "image_grid_thw": grid}

    def generate_new_tokens(self, inputs: dict):
        """Greedy generation; the token ids after the prompt (1-D)."""
        import torch

        tokenizer, _, _, model = self._load()
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                    pad_token_id=pad_id)
        return output[0, inputs["input_ids"].shape[1]:]

    def caption(self, frames: Sequence[np.ndarray], instruction: str) -> str:
        tokenizer = self._load()[0]
        new_tokens = self.generate_new_tokens(self.build_inputs(frames, instruction))
        return tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


# --------------------------------------------------------------------------------------
# OpenAI-compatible chat completions
# --------------------------------------------------------------------------------------

class OpenAIChatCaptioner:
    """Caption through an OpenAI-compatible ``POST {base_url}/chat/completions`` (the shared
    :class:`pipelines.chat_http.ChatClient`): one user turn, the frames then the instruction."""

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60,
                 max_retries: int = 3, backoff_s: float = 1.0, max_concurrency: int = 4,
                 max_tokens: int | None = 120, jpeg_quality: int = 90):
        self.client = ChatClient(base_url, model, api_key_env=api_key_env, timeout_s=timeout_s,
                                 max_retries=max_retries, backoff_s=backoff_s, max_concurrency=max_concurrency,
                                 max_tokens=max_tokens, temperature=0.0, jpeg_quality=jpeg_quality)
        self.name = self.client.name

    def caption(self, frames: Sequence[np.ndarray], instruction: str) -> str:
        parts = [image_part(frame) for frame in check_frames(frames)] + [text_part(instruction)]
        return self.client.complete([{"role": "user", "content": parts}])
