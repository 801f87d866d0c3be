"""The local Label Studio server: its process, pid file, API token and annotator accounts.

:class:`LabelStudioServer` runs ``label-studio start`` (the ``annotation`` extra: label-studio
1.23.2, label-studio-sdk 2.1.2) as a subprocess bound to ``host`` (127.0.0.1 unless configured), with all of its state
(SQLite database, media uploads, logs) under ``data_dir`` through ``LABEL_STUDIO_BASE_DATA_DIR``;
nothing goes to ``~/.local/share/label-studio``. The admin's API token is passed with
``--user-token`` and needs ``--enable-legacy-api-token`` (without it a fresh 1.23 instance
answers 401 to ``Authorization: Token <t>``).

Remote annotators: with ``public_url`` (the address they open, e.g. behind a reverse proxy) the
server gets ``LABEL_STUDIO_HOST`` (the links it builds) and ``CSRF_TRUSTED_ORIGINS`` (Django
refuses a login form posted from an origin it does not trust, label_studio/core/settings/base.py
in 1.23.2); an https address also marks the session cookie secure (``SESSION_COOKIE_SECURE``).

Media are not uploaded: the server runs with ``LOCAL_FILES_SERVING_ENABLED=true`` and
``LOCAL_FILES_DOCUMENT_ROOT=<media_root>`` and serves the clips from disk (see
:mod:`annotation.labelstudio_client` for the task URLs and the storage that permits them).

A server started detached (``python -m annotation server start``) is recorded in
``<data_dir>/server.pid`` so that a later command can report on it or stop it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from pipelines.atomic import atomic_write_text

log = logging.getLogger(__name__)

TOKEN_FILE = "api_token"


def local_address(host: str) -> str:
    """The address a process on this machine reaches a server bound to ``host`` at."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "localhost", "") else host


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def private_secret(path: Path, make) -> str:
    """The secret stored in ``path`` (mode 0600); ``make()`` creates it when missing or empty."""
    path = Path(path)
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o600)
    return value


def load_or_create_token(data_dir: Path) -> str:
    """The admin API token stored in ``data_dir/api_token`` (mode 0600); made when missing."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    return private_secret(data_dir / TOKEN_FILE, lambda: secrets.token_hex(20))  # the legacy 40-hex format


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` (what a browser sends as Origin)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"public_url must be an http(s) address, got {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


class LabelStudioServer:
    """``label-studio start`` on ``host`` with its state under ``data_dir``."""

    def __init__(
        self,
        data_dir: Path | str,
        port: int | None = None,
        username: str = "admin@example.com",
        password: str | None = None,
        token: str | None = None,
        media_root: Path | str | None = None,
        start_timeout: float = 180.0,
        host: str = "127.0.0.1",
        public_url: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.username = username
        self.password = password or secrets.token_urlsafe(16)
        self.token = token or load_or_create_token(self.data_dir)
        self.media_root = Path(media_root).resolve() if media_root else None
        self.start_timeout = start_timeout
        self.host = host
        self.public_url = public_url.rstrip("/") if public_url else None
        self.log_path = self.data_dir / "server.log"
        self._proc: subprocess.Popen | None = None
        self._log_file = None

    @property
    def url(self) -> str:
        return f"http://{local_address(self.host)}:{self.port}"

    def _command(self) -> list[str]:
        exe = Path(sys.executable).with_name("label-studio")
        return [
            str(exe) if exe.exists() else "label-studio",
            "start",
            "--no-browser",
            "--internal-host", self.host,
            "--port", str(self.port),
            "--username", self.username,
            "--password", self.password,
            "--user-token", self.token,
            "--enable-legacy-api-token",
        ]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LABEL_STUDIO_BASE_DATA_DIR"] = str(self.data_dir)
        env["LATEST_VERSION_CHECK"] = "false"
        env["COLLECT_ANALYTICS"] = "false"
        if self.media_root is not None:
            env["LOCAL_FILES_SERVING_ENABLED"] = "true"
            env["LOCAL_FILES_DOCUMENT_ROOT"] = str(self.media_root)
        if self.public_url:
            env["LABEL_STUDIO_HOST"] = self.public_url
            env["CSRF_TRUSTED_ORIGINS"] = origin(self.public_url)
            if self.public_url.startswith("https://"):
                env["SESSION_COOKIE_SECURE"] = "1"
        return env

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _ready(self) -> bool:
        for path in ("/health", "/api/version"):
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                continue
        return False

    def start(self) -> LabelStudioServer:
        if self.is_running():
            return self
        self._log_file = open(self.log_path, "ab")
        t0 = time.monotonic()
        self._proc = subprocess.Popen(
            self._command(),
            env=self._env(),
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() ends the whole tree
        )
        while time.monotonic() - t0 < self.start_timeout:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"label-studio exited with {self._proc.returncode}; see {self.log_path}"
                )
            if self._ready():
                log.info("label-studio ready at %s after %.1f s", self.url, time.monotonic() - t0)
                return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"label-studio not ready after {self.start_timeout} s; see {self.log_path}")

    def stop(self, timeout: float = 20.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self) -> LabelStudioServer:
        self.stop()
        return self.start()

    def __enter__(self) -> LabelStudioServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


PID_FILE = "server.pid"


def read_pidfile(data_dir: Path | str) -> dict | None:
    """``{pid, port, url}`` of a server started by the CLI, or None when none is recorded."""
    path = Path(data_dir) / PID_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, IndexError):
        return True


def write_pidfile(server: LabelStudioServer) -> Path:
    path = server.data_dir / PID_FILE
    atomic_write_text(path, json.dumps({"pid": server.pid, "port": server.port, "url": server.url}))
    return path


def stop_recorded_server(data_dir: Path | str, timeout: float = 30.0) -> bool:
    """Stop the server recorded in ``data_dir/server.pid`` (its whole process group);
    True when one was running. The pid file is removed either way."""
    data_dir = Path(data_dir)
    info = read_pidfile(data_dir)
    (data_dir / PID_FILE).unlink(missing_ok=True)
    if not info or not pid_alive(int(info["pid"])):
        return False
    pid = int(info["pid"])
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return True
            time.sleep(0.2)
    return True


def create_annotator_account(base_url: str, email: str, password: str) -> str:
    """Sign up an annotator through the server's own sign-up form and return their API token.

    The open-source API has no call that sets another user's password or reads their token,
    so an account that can both log in to the UI and call the API is made the way a person
    would: sign-up form (with its CSRF token), then ``GET /api/current-user/token`` in that
    session. An existing account is logged in instead.
    """
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    base = base_url.rstrip("/")

    def form(path: str, fields: dict) -> None:
        with opener.open(base + path, timeout=30) as r:
            r.read()
        csrf = next((c.value for c in jar if c.name == "csrftoken"), "")
        body = urlencode({"csrfmiddlewaretoken": csrf, **fields}).encode()
        req = urllib.request.Request(base + path, data=body, headers={"Referer": base + path})
        with opener.open(req, timeout=30) as r:
            r.read()

    form("/user/signup/", {"email": email, "password": password, "allow_newsletters": "false"})
    if not any(c.name == "sessionid" for c in jar) or _whoami(opener, base) != email:
        form("/user/login/", {"email": email, "password": password})
    if _whoami(opener, base) != email:
        raise RuntimeError(f"could not sign up or log in {email} at {base}")
    with opener.open(base + "/api/current-user/token", timeout=30) as r:
        token = json.loads(r.read())["token"]
    if not re.fullmatch(r"[0-9a-f]{40}", token or ""):
        raise RuntimeError(f"unexpected token format for {email}")
    return token


def _whoami(opener, base: str) -> str | None:
    try:
        with opener.open(base + "/api/current-user/whoami", timeout=30) as r:
            return json.loads(r.read()).get("email")
    except (urllib.error.HTTPError, ValueError):
        return None
