"""OpenAIChatCaptioner against a local threaded chat-completions server on 127.0.0.1."""

import base64
import io
import json
import logging
import threading
import time

import numpy as np
import pytest
from judge_server import LoopbackJsonServer
from PIL import Image

from pipelines.captions.backends import (
    CaptionBackendError, CaptionRetriesExhausted, Captioner, OpenAIChatCaptioner)

ANSWER = "A curious woman with lifted brows and wide eyes, head tilted left, gazing past the camera."
SECRET = "sk-test-not-a-real-key-123"


class FakeServer(LoopbackJsonServer):
    """Answers by a script of behaviours (the last one repeats): ok, malformed, nochoices, 500, 429, 400, slow."""

    def __init__(self):
        self.script = ["ok"]
        self.requests = []
        self.delay_s = 0.0
        self.slow_s = 1.0
        super().__init__("/v1")

    def respond(self, path: str, body: dict, headers) -> tuple[int, bytes]:
        with self.lock:
            self.requests.append({"path": path, "body": body, "auth": headers.get("Authorization")})
            action = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        time.sleep(self.delay_s)
        if action == "slow":
            time.sleep(self.slow_s)
        if action in ("500", "429", "400"):
            return int(action), b'{"error": "nope"}'
        if action == "malformed":
            return 200, b"{this is not json"
        if action == "nochoices":
            return 200, b'{"id": "x", "choices": []}'
        payload = {"id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": ANSWER}}]}
        return 200, json.dumps(payload).encode()


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.close()


def frames(n=8):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(n)]


def captioner(server, **kw):
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout_s", 5)
    return OpenAIChatCaptioner(server.base_url, "qwen2.5-vl-7b", **kw)


def test_normal_answer_and_request_shape(server, monkeypatch, caplog):
    monkeypatch.setenv("TEST_CAPTION_KEY", SECRET)
    c = captioner(server, api_key_env="TEST_CAPTION_KEY")
    assert isinstance(c, Captioner) and c.name == "openai-chat:qwen2.5-vl-7b"
    with caplog.at_level(logging.DEBUG):
        assert c.caption(frames(), "Describe the face.") == ANSWER
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["auth"] == f"Bearer {SECRET}"
    body = req["body"]
    assert body["model"] == "qwen2.5-vl-7b" and body["temperature"] == 0
    (message,) = body["messages"]
    assert message["role"] == "user"
    parts = message["content"]
    assert [p["type"] for p in parts] == ["image_url"] * 8 + ["text"]
    assert parts[-1]["text"] == "Describe the face."
    url = parts[0]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert image.format == "JPEG" and image.size == (32, 32)
    assert SECRET not in caplog.text


def test_no_key_no_auth_header(server, monkeypatch):
    monkeypatch.delenv("TEST_CAPTION_KEY", raising=False)
    captioner(server, api_key_env="TEST_CAPTION_KEY").caption(frames(), "x")
    assert server.requests[0]["auth"] is None


@pytest.mark.parametrize("action", ["malformed", "nochoices"])
def test_malformed_answer_raises(server, action):
    server.script = [action]
    with pytest.raises(CaptionBackendError) as info:
        captioner(server).caption(frames(), "x")
    assert not isinstance(info.value, CaptionRetriesExhausted)
    assert len(server.requests) == 1  # not retried


def test_client_error_is_not_retried(server):
    server.script = ["400"]
    with pytest.raises(CaptionBackendError, match="HTTP 400"):
        captioner(server).caption(frames(), "x")
    assert len(server.requests) == 1


def test_500_and_429_then_200_is_retried(server):
    server.script = ["500", "429", "ok"]
    assert captioner(server).caption(frames(), "x") == ANSWER
    assert len(server.requests) == 3


def test_slow_reply_is_retried(server):
    server.script = ["slow", "ok"]
    server.slow_s = 1.0
    assert captioner(server, timeout_s=0.3).caption(frames(), "x") == ANSWER
    assert len(server.requests) == 2


def test_failure_after_max_retries(server):
    server.script = ["slow"]
    server.slow_s = 0.6
    c = captioner(server, timeout_s=0.2, max_retries=2)
    with pytest.raises(CaptionRetriesExhausted, match="failed 3 times; last failure: timeout"):
        c.caption(frames(), "x")
    assert len(server.requests) == 3

    server.script = ["500"]
    with pytest.raises(CaptionRetriesExhausted, match="HTTP 500"):
        captioner(server, max_retries=1).caption(frames(), "x")


def test_connection_error_is_retried_then_fails():
    c = OpenAIChatCaptioner("http://127.0.0.1:9/v1", "m", max_retries=1, backoff_s=0.01, timeout_s=1)
    with pytest.raises(CaptionRetriesExhausted, match="connection error"):
        c.caption(frames(), "x")


def test_concurrency_limit(server):
    server.delay_s = 0.15
    c = captioner(server, max_concurrency=2)
    results, errors = [], []

    def work():
        try:
            results.append(c.caption(frames(2), "x"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [ANSWER] * 6
    assert server.max_in_flight == 2
