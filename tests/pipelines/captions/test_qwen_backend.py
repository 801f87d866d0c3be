"""QwenVLCaptioner on tiny random Qwen2-VL, Qwen2.5-VL and Qwen3-VL folders (the real loading,
prompt and generate code paths, fed 8 frames of a GRID clip), and on a real checkpoint when
the model directory holds one."""

import json
import shutil

import pytest
import torch

from pipelines.captions.backends import (IMAGE_PAD, CaptionBackendError, Captioner, QwenVLCaptioner,
                                         UnsupportedQwenVLModel, processor_path_available)
from pipelines.captions.describe import describe_windows
from pipelines.captions.instruction import INSTRUCTION
from pipelines.fixtures.qwen_vl import FAMILIES, build_tiny_qwen_vl

# A 360x288 GRID frame under the tiny folders' 128*128 pixel budget (transformers'
# smart_resize with factor patch * merge): patch 14 -> 112x140 px = 8x10 patches = 20 merged
# tokens; patch 16 (Qwen3-VL) -> 96x128 px = 6x8 patches = 12 merged tokens.
GRID_PER_FRAME = {"qwen2_vl": (1, 8, 10), "qwen2_5_vl": (1, 8, 10), "qwen3_vl": (1, 6, 8)}
PADS_PER_FRAME = {"qwen2_vl": 20, "qwen2_5_vl": 20, "qwen3_vl": 12}
PATCH = {"qwen2_vl": 14, "qwen2_5_vl": 14, "qwen3_vl": 16}
MAX_NEW = 8

family_param = pytest.mark.parametrize("family", FAMILIES)


@pytest.fixture(scope="module")
def captioners(tiny_qwen_vl):
    """One loaded captioner per family for this module (the manual path where torchvision is absent)."""
    made = {}

    def get(family):
        if family not in made:
            made[family] = QwenVLCaptioner(tiny_qwen_vl(family), max_new_tokens=MAX_NEW)
        return made[family]

    return get


def test_missing_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        QwenVLCaptioner(tmp_path / "nope")


@pytest.mark.parametrize("model_type", ["llava", None])
def test_unsupported_model_type_is_refused_by_name(tmp_path, model_type):
    config = {"architectures": ["LlavaForConditionalGeneration"]}
    if model_type:
        config["model_type"] = model_type
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedQwenVLModel) as error:
        QwenVLCaptioner(tmp_path)
    message = str(error.value)
    assert repr(model_type) in message
    assert all(t in message for t in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"))


@family_param
def test_family_and_name_come_from_config_json(tiny_qwen_vl, family):
    folder = tiny_qwen_vl(family)
    c = QwenVLCaptioner(folder)
    assert isinstance(c, Captioner)
    assert c.model_type == family and c._loaded is None  # read from config.json, nothing loaded yet
    assert c.name == f"qwen-vl:{family}:{folder.name}"


def test_qwen3_vl_moe_is_recognised(tmp_path):
    from transformers import Qwen3VLMoeConfig

    Qwen3VLMoeConfig().save_pretrained(tmp_path)
    c = QwenVLCaptioner(tmp_path)
    assert c.model_type == "qwen3_vl_moe" and c.family == "Qwen3-VL-MoE"


def test_processor_path_is_chosen_only_with_torchvision(tiny_qwen_vl, monkeypatch):
    import transformers.utils

    folder = tiny_qwen_vl("qwen2_5_vl")
    monkeypatch.setattr(transformers.utils, "is_torchvision_available", lambda: False)
    assert QwenVLCaptioner(folder).use_processor is False
    monkeypatch.setattr(transformers.utils, "is_torchvision_available", lambda: True)
    assert QwenVLCaptioner(folder).use_processor is True
    assert QwenVLCaptioner(folder, use_processor=False).use_processor is False


@family_param
def test_prompt_follows_the_family_template(captioners, family):
    prompt = captioners(family).prompt(8, INSTRUCTION)
    one_image = "<|vision_start|><|image_pad|><|vision_end|>"
    assert prompt.count(IMAGE_PAD) == 8 and prompt.count(one_image) == 8
    user_turn = "<|im_start|>user\n" + one_image * 8 + INSTRUCTION + "<|im_end|>\n"
    if family == "qwen3_vl":  # no default system turn
        assert prompt == user_turn + "<|im_start|>assistant\n"
    else:
        assert prompt == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" + user_turn
                          + "<|im_start|>assistant\n")


@family_param
def test_image_pads_expanded_for_8_grid_frames(captioners, grid_eight, family):
    c = captioners(family)
    inputs = c.build_inputs(grid_eight, INSTRUCTION)
    tokenizer = c._loaded[0]
    ids = inputs["input_ids"][0]
    grid = inputs["image_grid_thw"]
    assert grid.tolist() == [list(GRID_PER_FRAME[family])] * 8
    pad, start, end = (tokenizer.convert_tokens_to_ids(t) for t in (IMAGE_PAD, "<|vision_start|>", "<|vision_end|>"))
    assert int((ids == pad).sum()) == 8 * PADS_PER_FRAME[family]
    # Each image: <|vision_start|>, its pads and nothing else, <|vision_end|>.
    starts = (ids == start).nonzero().flatten().tolist()
    ends = (ids == end).nonzero().flatten().tolist()
    assert len(starts) == len(ends) == 8
    for s, e in zip(starts, ends):
        assert e - s - 1 == PADS_PER_FRAME[family] and bool((ids[s + 1:e] == pad).all())
    # The family's patch size: rows are patches, columns 3 channels x 2 frames x patch^2.
    assert tuple(inputs["pixel_values"].shape) == (8 * GRID_PER_FRAME[family][1] * GRID_PER_FRAME[family][2],
                                                   3 * 2 * PATCH[family] ** 2)
    assert torch.equal(inputs["mm_token_type_ids"][0], (ids == pad).long())


@family_param
def test_generates_new_tokens_only_decoded_without_special_tokens(captioners, grid_eight, family):
    c = captioners(family)
    tokenizer, _, _, model = c._load()
    inputs = c.build_inputs(grid_eight, INSTRUCTION)
    new = c.generate_new_tokens(inputs)
    assert 1 <= len(new) <= MAX_NEW
    prompt_len = inputs["input_ids"].shape[1]
    with torch.inference_mode():
        full = model.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False,
                              pad_token_id=tokenizer.pad_token_id)[0]
    assert torch.equal(full[:prompt_len], inputs["input_ids"][0]) and torch.equal(full[prompt_len:], new)
    # M-RoPE placed the image tokens on a grid: each image takes max(h, w) / merge positions
    # for its h * w / merge^2 tokens, so the sequence is that much shorter in positions.
    t, h, w = GRID_PER_FRAME[family]
    assert int(model.model.rope_deltas.flatten()[0]) == -8 * (h * w // 4 - max(h, w) // 2)
    caption = c.caption(grid_eight, INSTRUCTION)
    assert caption == tokenizer.decode(new, skip_special_tokens=True).strip()
    assert not any(token in caption for token in tokenizer.all_special_tokens)
    assert c.caption(grid_eight, INSTRUCTION) == caption  # greedy: the same answer again


@family_param
def test_same_seed_same_caption(captioners, grid_eight, tmp_path, family):
    again = QwenVLCaptioner(build_tiny_qwen_vl(tmp_path / family, family, seed=0), max_new_tokens=MAX_NEW)
    assert again.caption(grid_eight, INSTRUCTION) == captioners(family).caption(grid_eight, INSTRUCTION)


def test_preprocessor_of_another_family_is_refused(tiny_qwen_vl, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(tiny_qwen_vl("qwen3_vl"), folder)
    shutil.copyfile(tiny_qwen_vl("qwen2_5_vl") / "preprocessor_config.json", folder / "preprocessor_config.json")
    with pytest.raises(CaptionBackendError, match="patch_size 14 != model 16"):
        QwenVLCaptioner(folder, use_processor=False).prompt(8, INSTRUCTION)


@pytest.mark.skipif(not processor_path_available(), reason="the combined Qwen-VL processors need torchvision")
@family_param
def test_processor_path_matches_the_manual_path(tiny_qwen_vl, grid_eight, family):
    with_processor = QwenVLCaptioner(tiny_qwen_vl(family), max_new_tokens=MAX_NEW, use_processor=True)
    manual = QwenVLCaptioner(tiny_qwen_vl(family), max_new_tokens=MAX_NEW, use_processor=False)
    a = with_processor.build_inputs(grid_eight, INSTRUCTION)
    b = manual.build_inputs(grid_eight, INSTRUCTION)
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "image_grid_thw"):
        assert torch.equal(a[key], b[key]), key
    assert torch.allclose(a["pixel_values"], b["pixel_values"], atol=1e-5)
    assert with_processor.caption(grid_eight, INSTRUCTION) == manual.caption(grid_eight, INSTRUCTION)


@family_param
def test_describe_windows_with_tiny_model(captioners, grid_clip_frames, tmp_path, family):
    from pipelines.captions.cache import CaptionCache

    c = captioners(family)
    cache = CaptionCache(tmp_path)
    (w,) = describe_windows(grid_clip_frames, len(grid_clip_frames), c, cache, "sha")
    assert w["model"] == c.name and family in w["model"]
    assert isinstance(w["caption"], str) and not w["cached"]
    (again,) = describe_windows(grid_clip_frames, len(grid_clip_frames), c, cache, "sha")
    assert again["cached"] and again["caption"] == w["caption"]


@pytest.mark.real_weights
def test_real_checkpoint_captions(model_dir, grid_eight):
    from pipelines.models import ModelStore

    status = ModelStore(model_dir).status("qwen_vl")
    if status.state not in ("ok", "unpinned"):
        pytest.skip(f"no real Qwen-VL checkpoint: {status.detail}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    c = QwenVLCaptioner(status.path.parent, device=device, max_new_tokens=60, max_pixels=320 * 320)
    assert c.prompt(8, INSTRUCTION).count(IMAGE_PAD) == 8
    inputs = c.build_inputs(grid_eight, INSTRUCTION)
    merge = c._loaded[1].merge_size
    assert int(inputs["mm_token_type_ids"].sum()) == int(inputs["image_grid_thw"].prod(dim=1).sum()) // merge ** 2
    out = c.caption(grid_eight, INSTRUCTION)
    assert isinstance(out, str) and out.strip()
