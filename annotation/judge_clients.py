"""Chat clients that let a judge watch and listen: the clip itself goes to the model.

The shared clients (:mod:`pipelines.chat_http`) send text and JPEG frames. The judges add a
``video`` part (:func:`video_part`: the clip's bytes and MIME type, and whether the model should
hear its soundtrack) and the two subclasses here put it on the wire:

- :class:`VideoChatClient`, OpenAI-compatible servers. vLLM takes a ``video_url`` content part
  with a base64 data URL (``ChatCompletionContentPartVideoParam`` in
  vllm/entrypoints/chat_utils.py) and, for Qwen2.5-Omni / Qwen3-Omni, hears the clip's own
  soundtrack when the request carries ``mm_processor_kwargs: {"use_audio_in_video": true}``:
  ``MultiModalContentParser.parse_video`` then fetches the audio of the same URL as an extra
  audio item (vllm/entrypoints/chat_utils.py; ``mm_processor_kwargs`` is a field of
  ``ChatCompletionRequest`` in vllm/entrypoints/openai/chat_completion/protocol.py; vLLM main,
  2025-2026).
- :class:`GeminiVideoChatClient`, Gemini ``generateContent``: the clip as an ``inline_data``
  part with its MIME type (``video/mp4``); Gemini encodes the audio track together with the
  frames, so the soundtrack always comes with the video. Gemini 2.5 counts its thinking
  tokens against ``maxOutputTokens``; ``thinking_budget`` sets
  ``generationConfig.thinkingConfig.thinkingBudget``.

Media a client offers, best first, are its ``media_modes`` (:data:`MEDIA_MODES`). A server that
cannot take an input says so in a 4xx answer (:func:`refused_media` knows the wording);
:meth:`refuse` then drops the modes that need it, for the rest of the run, and the judge asks
again with the next one, down to frames.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path

from pipelines.chat_http import BackendError, ChatClient, GeminiChatClient
from pipelines.config import JudgeConfig

log = logging.getLogger(__name__)

MEDIA_VIDEO_AUDIO = "video+audio"  # the clip, with its soundtrack heard by the model
MEDIA_VIDEO = "video"  # the clip's pictures as a video, its sound not taken
MEDIA_FRAMES = "frames"  # JPEG frames sampled from the clip
MEDIA_MODES = (MEDIA_VIDEO_AUDIO, MEDIA_VIDEO, MEDIA_FRAMES)

# Container suffix -> MIME type of the video part (Gemini's list of video types names
# video/mp4, video/webm and video/mov; vLLM decodes the bytes whatever the subtype).
VIDEO_MIME_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm", ".mov": "video/mov"}

# What a server answers when a model cannot take an input at all, by the input refused:
# vLLM's BaseProcessingInfo.validate_num_items raises "At most 0 video(s) may be provided in one
# prompt." for a model without that modality (vllm/multimodal/processing/context.py), and asking
# a video-only model to hear the video adds an audio item, refused as "At most 0 audio(s)";
# Gemini refuses an inline type a model does not take with "Unsupported MIME type: video/mp4"
# (400 INVALID_ARGUMENT, e.g. googleapis/python-genai issue 744).
_REFUSALS = (
    ("video", re.compile(r"At most 0 video\(s\) may be provided", re.IGNORECASE)),
    ("video", re.compile(r"Unsupported MIME type: video/", re.IGNORECASE)),
    ("audio", re.compile(r"At most 0 audio\(s\) may be provided", re.IGNORECASE)),
)
_CLIENT_ERROR = re.compile(r"HTTP 4\d\d\b")


def video_part(path: Path, with_audio: bool) -> dict:
    """A backend-neutral content part carrying the clip at ``path`` (its bytes, read now)."""
    path = Path(path)
    mime = VIDEO_MIME_TYPES.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"{path}: no video MIME type for {path.suffix!r} (known: {sorted(VIDEO_MIME_TYPES)})")
    return {"type": "video", "data": path.read_bytes(), "mime_type": mime, "audio": bool(with_audio)}


def refused_media(error: BaseException) -> str | None:
    """``"video"`` or ``"audio"`` when ``error`` is a server saying the model cannot take that
    input (see :data:`_REFUSALS`); None for any other failure."""
    if not isinstance(error, BackendError):
        return None
    text = str(error)
    if not _CLIENT_ERROR.search(text):
        return None
    for refused, pattern in _REFUSALS:
        if pattern.search(text):
            return refused
    return None


class _MediaModes:
    """The media a client may still be asked for, best first; shrinks when a server refuses."""

    offered: Sequence[str] = (MEDIA_FRAMES,)

    def _init_media(self, media: str) -> None:
        if media not in ("video", "frames"):
            raise ValueError(f"media must be 'video' or 'frames', not {media!r}")
        self._media_lock = threading.Lock()
        self._modes = list(self.offered) if media == "video" else [MEDIA_FRAMES]

    @property
    def media_modes(self) -> tuple[str, ...]:
        with self._media_lock:
            return tuple(self._modes)

    def refuse(self, refused: str, reason: str) -> None:
        """Stop asking for modes that need ``refused`` (``"video"`` or ``"audio"``)."""
        gone = {"video": (MEDIA_VIDEO_AUDIO, MEDIA_VIDEO), "audio": (MEDIA_VIDEO_AUDIO,)}[refused]
        with self._media_lock:
            before = list(self._modes)
            self._modes = [m for m in self._modes if m not in gone] or [MEDIA_FRAMES]
        if self._modes != before:
            log.warning("%s cannot take %s (%s); judging from %s from now on", self.name, refused, reason[:200],
                        self._modes[0])


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class VideoChatClient(_MediaModes, ChatClient):
    """An OpenAI-compatible server that may take the clip as a ``video_url`` part."""

    offered = MEDIA_MODES

    def __init__(self, *args, media: str = "video", **kwargs):
        super().__init__(*args, **kwargs)
        self._init_media(media)

    def _part(self, part: dict) -> dict:
        if part["type"] == "video":
            url = f"data:{part['mime_type']};base64,{_base64(part['data'])}"
            return {"type": "video_url", "video_url": {"url": url}}
        return super()._part(part)

    def request_body(self, messages: Sequence[dict]) -> dict:
        body = super().request_body(messages)
        if any(p["type"] == "video" and p["audio"] for m in messages for p in m["content"]):
            body["mm_processor_kwargs"] = {"use_audio_in_video": True}
        return body


class GeminiVideoChatClient(_MediaModes, GeminiChatClient):
    """Gemini ``generateContent`` with the clip inline; it always hears the soundtrack."""

    offered = (MEDIA_VIDEO_AUDIO, MEDIA_FRAMES)

    def __init__(self, *args, media: str = "video", thinking_budget: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.thinking_budget = thinking_budget
        self._init_media(media)

    def _gemini_part(self, part: dict) -> dict:
        if part["type"] == "video":
            return {"inline_data": {"mime_type": part["mime_type"], "data": _base64(part["data"])}}
        return super()._gemini_part(part)

    def request_body(self, messages: Sequence[dict]) -> dict:
        body = super().request_body(messages)
        if self.thinking_budget is not None:
            body["generationConfig"]["thinkingConfig"] = {"thinkingBudget": self.thinking_budget}
        return body


def make_judge_client(cfg: JudgeConfig) -> VideoChatClient | GeminiVideoChatClient:
    """The configured judge model's client: OpenAI-compatible or Gemini, with the output budget."""
    common = dict(api_key_env=cfg.api_key_env or None, timeout_s=cfg.timeout_s, max_retries=cfg.max_retries,
                  backoff_s=cfg.backoff_s, max_concurrency=cfg.max_concurrency, max_tokens=cfg.max_output_tokens,
                  media=cfg.media)
    if cfg.backend == "openai_chat":
        return VideoChatClient(cfg.base_url, cfg.model, **common)
    if cfg.backend == "gemini":
        return GeminiVideoChatClient(cfg.base_url, cfg.model, thinking_budget=cfg.thinking_budget, **common)
    raise ValueError(f"judge backend {cfg.backend!r} makes no calls")
