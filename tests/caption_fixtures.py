"""Test helper for the caption stage: tiny random Qwen-VL checkpoint folders built offline.

``build_tiny_qwen_vl(dir, family)`` writes a folder laid out like the published release of
that family, so that ``QwenVLCaptioner`` loads it through the same AutoModelForImageTextToText
/ AutoTokenizer / AutoImageProcessor (or AutoProcessor) calls it uses for a real checkpoint:

- ``config.json`` with the release's ``model_type`` and ``architectures`` (written by the
  family's own ``*ForConditionalGeneration.save_pretrained``), random seeded weights,
  ``generation_config.json`` with the release's stop ids (``<|im_end|>``, ``<|endoftext|>``);
- a byte-level ``Qwen2Tokenizer`` (the tokenizer class every family's tokenizer_config names)
  without merges (one token per byte) plus the family's added tokens in the release's order;
  eos ``<|im_end|>``, pad ``<|endoftext|>``, no bos/unk, as in the releases;
- ``chat_template.json`` with a template in the family's format (written here, not copied);
- ``preprocessor_config.json`` with the keys of the release: Qwen2-VL / Qwen2.5-VL name
  ``Qwen2VLImageProcessor`` with ``min_pixels``/``max_pixels``, patch 14 and CLIP mean/std;
  Qwen3-VL names ``Qwen2VLImageProcessorFast`` with a ``size`` dict, patch 16 and mean/std
  0.5; Qwen3-VL also ships ``video_preprocessor_config.json`` (``Qwen3VLVideoProcessor``).
  Only the pixel budget is made tiny so that tests run fast.

Sources for the layouts: transformers 5.23 (models/qwen2_vl, qwen2_5_vl, qwen3_vl:
configuration_*.py, processing_*.py; models/auto/image_processing_auto.py maps all three
model types to Qwen2VLImageProcessor / Qwen2VLImageProcessorPil) and the release folders
Qwen/Qwen2-VL-7B-Instruct, Qwen/Qwen2.5-VL-7B-Instruct, Qwen/Qwen3-VL-8B-Instruct
(tokenizer_config.json, chat_template.json, preprocessor_config.json). The weights are random:
the generated text is noise, the code path is real.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")

# Added tokens of the Qwen2-VL / Qwen2.5-VL tokenizers, in id order (151643...). The
# "<tool_call>" pair is a plain added token there, the rest are special.
QWEN2_ADDED = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True),
    ("<|quad_start|>", True), ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True),
    ("<|vision_pad|>", True), ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False),
    ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False), ("<|repo_name|>", False), ("<|file_sep|>", False),
]
# Qwen3-VL adds the tool-response and thinking tags after those.
QWEN3_ADDED = QWEN2_ADDED + [("<tool_response>", False), ("</tool_response>", False), ("<think>", False),
                             ("</think>", False)]

# Qwen2-VL / Qwen2.5-VL format: a default system turn when the conversation has none, one
# <|vision_start|><|image_pad|><|vision_end|> per image (optionally "Picture n: " before it).
QWEN2_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen3-VL (Instruct) format: no default system turn, the same vision placeholders, an
# assistant turn opened by the generation prompt (no thinking block in the Instruct release).
QWEN3_CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) -%}{%- set video_count = namespace(value=0) -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message.role + '\n' -}}"
    "{%- if message.content is string -%}{{- message.content -}}"
    "{%- else -%}{%- for part in message.content -%}"
    "{%- if part.type == 'image' or 'image' in part or 'image_url' in part -%}"
    "{%- set image_count.value = image_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{- 'Picture ' ~ image_count.value ~ ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part.type == 'video' or 'video' in part -%}"
    "{%- set video_count.value = video_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{- 'Video ' ~ video_count.value ~ ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in part -%}{{- part.text -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# Pixel budget of the tiny folders (the releases allow up to 12845056 / 16777216 pixels):
# a 360x288 GRID frame becomes 140x112 (patch 14: 10x8 patches, 20 merged tokens) or
# 128x96 (patch 16: 8x6 patches, 12 merged tokens).
TINY_MIN_PIXELS = 32 * 32
TINY_MAX_PIXELS = 128 * 128


@dataclass(frozen=True)
class Family:
    model_type: str
    architecture: str
    added_tokens: list
    chat_template: str
    patch_size: int
    processor_class: str


FAMILY_SPECS = {
    "qwen2_vl": Family("qwen2_vl", "Qwen2VLForConditionalGeneration", QWEN2_ADDED, QWEN2_CHAT_TEMPLATE, 14,
                       "Qwen2VLProcessor"),
    "qwen2_5_vl": Family("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration", QWEN2_ADDED, QWEN2_CHAT_TEMPLATE, 14,
                         "Qwen2_5_VLProcessor"),
    "qwen3_vl": Family("qwen3_vl", "Qwen3VLForConditionalGeneration", QWEN3_ADDED, QWEN3_CHAT_TEMPLATE, 16,
                       "Qwen3VLProcessor"),
}


def build_tokenizer(family: str):
    """A byte-level Qwen2Tokenizer with the family's added tokens and chat template."""
    from tokenizers import AddedToken, pre_tokenizers
    from transformers import Qwen2Tokenizer

    spec = FAMILY_SPECS[family]
    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, bos_token=None, eos_token=None,
                               pad_token=None)
    for text, special in spec.added_tokens:
        tokenizer.add_tokens([AddedToken(text, special=special, normalized=False)], special_tokens=special)
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.chat_template = spec.chat_template
    return tokenizer


def _model_config(family: str, ids: dict, vocab_size: int):
    special = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                   vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    text = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig

        # head_dim 16: the M-RoPE sections (temporal, height, width) cover its 8 frequency pairs.
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
        vision = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
        return Qwen2VLConfig(text_config=text, vision_config=vision, **special)
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
        # Window attention in block 0, full attention in block 1 (the release alternates the same way).
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1],
                      in_channels=3)
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **special)
    from transformers import Qwen3VLConfig

    text.update(head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                              "mrope_section": [4, 2, 2], "mrope_interleaved": True})
    # Deepstack: features of vision block 0 are added to the first text layer, as blocks
    # 8/16/24 are to the first three layers in the release.
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                  deepstack_visual_indexes=[0], in_channels=3)
    return Qwen3VLConfig(text_config=text, vision_config=vision, **special)


def _preprocessor_config(family: str) -> dict:
    spec = FAMILY_SPECS[family]
    if family == "qwen3_vl":
        return {"size": {"longest_edge": TINY_MAX_PIXELS, "shortest_edge": TINY_MIN_PIXELS},
                "patch_size": spec.patch_size, "temporal_patch_size": 2, "merge_size": 2,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                "processor_class": spec.processor_class, "image_processor_type": "Qwen2VLImageProcessorFast"}
    return {"min_pixels": TINY_MIN_PIXELS, "max_pixels": TINY_MAX_PIXELS, "patch_size": spec.patch_size,
            "temporal_patch_size": 2, "merge_size": 2, "image_mean": OPENAI_CLIP_MEAN, "image_std": OPENAI_CLIP_STD,
            "processor_class": spec.processor_class, "image_processor_type": "Qwen2VLImageProcessor"}


def build_tiny_qwen_vl(path: str | Path, family: str = "qwen2_5_vl", seed: int = 0) -> Path:
    """Write a tiny random checkpoint folder of ``family`` (qwen2_vl, qwen2_5_vl, qwen3_vl) to ``path``."""
    import torch
    from transformers import AutoModelForImageTextToText

    if family not in FAMILY_SPECS:
        raise ValueError(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")
    spec = FAMILY_SPECS[family]
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(family)
    ids = {text: tokenizer.convert_tokens_to_ids(text) for text, _ in spec.added_tokens}
    config = _model_config(family, ids, len(tokenizer))
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config).eval()
    generation = model.generation_config
    generation.bos_token_id = ids["<|endoftext|>"]
    generation.pad_token_id = ids["<|endoftext|>"]
    generation.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "chat_template.json").write_text(json.dumps({"chat_template": spec.chat_template}, indent=2) + "\n")
    (path / "preprocessor_config.json").write_text(json.dumps(_preprocessor_config(family), indent=2) + "\n")
    if family == "qwen3_vl":
        video = {"size": {"longest_edge": TINY_MAX_PIXELS * 4, "shortest_edge": TINY_MIN_PIXELS},
                 "patch_size": spec.patch_size, "temporal_patch_size": 2, "merge_size": 2,
                 "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                 "processor_class": spec.processor_class, "video_processor_type": "Qwen3VLVideoProcessor"}
        (path / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2) + "\n")
    return path


def build_tiny_qwen2vl(path: str | Path, seed: int = 0) -> Path:
    """The tiny Qwen2-VL folder (bench/bench_scale.py's stand-in when no checkpoint is installed)."""
    return build_tiny_qwen_vl(path, "qwen2_vl", seed)
