"""A local HTTP server that speaks chat-completions (OpenAI) or generateContent (Gemini) with
scripted answers, for testing the judges and the annotation loop without network."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackJsonServer:
    """A threaded HTTP server on 127.0.0.1 that answers every JSON POST through :meth:`respond`
    and counts the requests in flight (for concurrency limits)."""

    def __init__(self, path_prefix: str = ""):
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    status, data = outer.respond(self.path, body, self.headers)
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}{path_prefix}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def respond(self, path: str, body: dict, headers) -> tuple[int, bytes]:
        raise NotImplementedError

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class ScriptedServer(LoopbackJsonServer):
    """Replies in order from ``script``; then ``default``. A behaviour is answer text, an HTTP
    status (int), ("sleep", seconds, text) or a callable(request body) -> behaviour."""

    def __init__(self, kind: str, default="<think>fine</think>{\"score\": 3}"):
        self.kind, self.script, self.default = kind, deque(), default
        self.requests: list[tuple[str, dict]] = []
        super().__init__()

    def respond(self, path: str, body: dict, headers) -> tuple[int, bytes]:
        with self.lock:
            self.requests.append((path, body))
            behaviour = self.script.popleft() if self.script else self.default
        if callable(behaviour):
            behaviour = behaviour(body)
        if isinstance(behaviour, tuple):
            time.sleep(behaviour[1])
            behaviour = behaviour[2]
        if isinstance(behaviour, int):
            return behaviour, json.dumps({"error": "scripted"}).encode()
        return 200, json.dumps(self.wrap(behaviour)).encode()

    def wrap(self, text: str) -> dict:
        if self.kind == "openai":
            return {"choices": [{"message": {"role": "assistant", "content": text}}]}
        return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}}]}

    def images(self, body: dict) -> list[bytes]:
        """JPEG bytes of every image in the last user turn."""
        if self.kind == "openai":
            parts = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
            urls = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
            return [base64.b64decode(u.split(",", 1)[1]) for u in urls]
        parts = [c for c in body["contents"] if c["role"] == "user"][-1]["parts"]
        return [base64.b64decode(p["inline_data"]["data"]) for p in parts if "inline_data" in p]

    def texts(self, body: dict) -> str:
        if self.kind == "openai":
            out = []
            for m in body["messages"]:
                c = m["content"]
                out.append(c if isinstance(c, str) else " ".join(p.get("text", "") for p in c))
            return "\n".join(out)
        return "\n".join(p.get("text", "") for c in body["contents"] for p in c["parts"])
