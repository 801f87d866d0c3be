"""HTTP plumbing shared by every model-over-HTTP client (caption servers, MLLM judges).

One retrying JSON poster (timeouts, connection errors, 429 and 5xx retried with
exponential backoff; other errors raised at once; a bound on requests in flight), frame
checks and JPEG encoding, and the OpenAI chat-completions answer parser.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
import time
from typing import Sequence

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


def jpeg_data_url(frame: np.ndarray, quality: int = 90) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(encode_jpeg(frame, quality)).decode("ascii")


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
