"""The one chat client that captioners and MLLM judges use to talk to a model over HTTP.

Messages are backend-neutral: ``{"role": "user"|"assistant"|"system", "content": [part, ...]}``
where a part is :func:`text_part` or :func:`image_part` (an RGB uint8 frame). Two request
shapes share everything else:

- :class:`ChatClient`: any OpenAI-compatible ``POST {base_url}/chat/completions`` (vLLM,
  SGLang, hosted APIs), images as JPEG data URLs, ``Authorization: Bearer <key>``;
- :class:`GeminiChatClient`: Google's ``POST {base_url}/models/{model}:generateContent``,
  images as inline JPEG data, system turns as ``systemInstruction``, ``x-goog-api-key``.

Underneath is one retrying JSON poster (timeouts, connection errors, 429 and 5xx retried with
exponential backoff; other errors raised at once; a bound on requests in flight). The API key
comes from an environment variable and is never logged.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import threading
import time
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({429}) | frozenset(range(500, 600))


class BackendError(RuntimeError):
    """A model backend failed or answered something unusable."""


class RetriesExhausted(BackendError):
    """A transient failure (timeout, connection, 429, 5xx) persisted through every retry."""


def check_frames(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """RGB uint8 (H, W, 3) contiguous frames, or a ValueError saying what is wrong."""
    if len(frames) == 0:
        raise ValueError("no frames given")
    out = []
    for frame in frames:
        arr = np.asarray(frame)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"frames must be RGB (H, W, 3); got shape {arr.shape}")
        if arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        out.append(np.ascontiguousarray(arr))
    return out


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    (arr,) = check_frames([frame])
    buffer = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def jpeg_base64(frame: np.ndarray, quality: int = 90) -> str:
    return base64.b64encode(encode_jpeg(frame, quality)).decode("ascii")


def parse_chat_completion(payload) -> str:
    """The first choice's message text; ``BackendError`` for anything else."""
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise BackendError(f"chat completion without choices[0].message.content: {exc!r}") from None
    if isinstance(content, list):  # some servers answer with content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        raise BackendError(f"chat completion content is {type(content).__name__}, not text")
    return content


class RetryingJsonClient:
    """POST JSON with a timeout, retries with exponential backoff, and a concurrency bound."""

    def __init__(self, name: str, timeout_s: float, max_retries: int, backoff_s: float, max_concurrency: int):
        self.name = name
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self._slots = threading.BoundedSemaphore(max(1, int(max_concurrency)))
        self._local = threading.local()

    def _session(self):
        import requests

        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def post_json(self, url: str, body: dict, headers: dict[str, str]):
        import requests

        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = self.backoff_s * (2 ** (attempt - 1))
                log.info("%s: retry %d/%d in %.2f s after %s", self.name, attempt, self.max_retries, delay, last)
                time.sleep(delay)
            try:
                with self._slots:
                    response = self._session().post(url, json=body, headers=headers, timeout=self.timeout_s)
            except requests.Timeout:
                last = f"timeout after {self.timeout_s:g} s"
                continue
            except requests.ConnectionError as exc:
                last = f"connection error ({type(exc).__name__})"
                continue
            if response.status_code in RETRY_STATUS:
                last = f"HTTP {response.status_code}"
                continue
            if response.status_code != 200:
                raise BackendError(f"{self.name}: HTTP {response.status_code} from {url}: {response.text[:300]}")
            try:
                return response.json()
            except ValueError:
                raise BackendError(f"{self.name}: answer is not JSON: {response.text[:200]!r}") from None
        raise RetriesExhausted(f"{self.name}: {url} failed {self.max_retries + 1} times; last failure: {last}")


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def image_part(frame: np.ndarray) -> dict:
    return {"type": "image", "image": frame}


@runtime_checkable
class ChatModel(Protocol):
    name: str

    def complete(self, messages: Sequence[dict]) -> str:
        """The model's answer text to backend-neutral ``messages``."""


class ChatClient:
    """An OpenAI-compatible ``POST {base_url}/chat/completions`` server.

    ``api_key_env`` names the environment variable holding the key (None or unset: no key).
    """

    kind = "openai-chat"

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, timeout_s: float = 120,
                 max_retries: int = 3, backoff_s: float = 1.0, max_concurrency: int = 4,
                 max_tokens: int | None = 1024, temperature: float = 0.0, jpeg_quality: int = 90):
        self.model = model
        self.name = f"{self.kind}:{model}"
        self.url = self.endpoint(base_url.rstrip("/"), model)
        self.api_key_env = api_key_env
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.jpeg_quality = jpeg_quality
        self._http = RetryingJsonClient(self.name, timeout_s, max_retries, backoff_s, max_concurrency)

    def endpoint(self, base_url: str, model: str) -> str:
        return base_url + "/chat/completions"

    def api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        return os.environ.get(self.api_key_env) or None

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = self.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def request_body(self, messages: Sequence[dict]) -> dict:
        out = []
        for message in messages:
            content = [self._part(part) for part in message["content"]]
            if message["role"] != "user" and all(c["type"] == "text" for c in content):
                content = "".join(c["text"] for c in content)  # plain strings for system/assistant turns
            out.append({"role": message["role"], "content": content})
        body = {"model": self.model, "messages": out, "temperature": self.temperature}
        if self.max_tokens:
            body["max_tokens"] = self.max_tokens
        return body

    def _part(self, part: dict) -> dict:
        if part["type"] == "text":
            return {"type": "text", "text": part["text"]}
        url = "data:image/jpeg;base64," + jpeg_base64(part["image"], self.jpeg_quality)
        return {"type": "image_url", "image_url": {"url": url}}

    def parse_answer(self, payload) -> str:
        return parse_chat_completion(payload)

    def complete(self, messages: Sequence[dict]) -> str:
        return self.parse_answer(self._http.post_json(self.url, self.request_body(messages), self.headers()))


class GeminiChatClient(ChatClient):
    """Google's ``POST {base_url}/models/{model}:generateContent`` (base URL e.g.
    ``https://generativelanguage.googleapis.com/v1beta``)."""

    kind = "gemini"

    def endpoint(self, base_url: str, model: str) -> str:
        return f"{base_url}/models/{model}:generateContent"

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = self.api_key()
        if key:
            headers["x-goog-api-key"] = key
        return headers

    def request_body(self, messages: Sequence[dict]) -> dict:
        contents, system = [], []
        for message in messages:
            parts = [self._gemini_part(part) for part in message["content"]]
            if message["role"] == "system":
                system.extend(parts)
            else:
                contents.append({"role": "model" if message["role"] == "assistant" else "user", "parts": parts})
        config = {"temperature": self.temperature}
        if self.max_tokens:
            config["maxOutputTokens"] = self.max_tokens
        body = {"contents": contents, "generationConfig": config}
        if system:
            body["systemInstruction"] = {"parts": system}
        return body

    def _gemini_part(self, part: dict) -> dict:
        if part["type"] == "text":
            return {"text": part["text"]}
        return {"inline_data": {"mime_type": "image/jpeg", "data": jpeg_base64(part["image"], self.jpeg_quality)}}

    def parse_answer(self, payload) -> str:
        """The candidate's text parts, without thought summaries."""
        try:
            parts = payload["candidates"][0]["content"]["parts"]
            texts = [p["text"] for p in parts if isinstance(p, dict) and "text" in p and not p.get("thought")]
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendError(f"generateContent answer without candidates[0].content.parts: {exc!r}") from None
        if not texts:
            raise BackendError("generateContent answer has no text parts")
        return "".join(texts)
