"""A local Label Studio server and an idempotent client for human ratings.

Server: :class:`LabelStudioServer` runs ``label-studio start`` (the ``annotation`` extra:
label-studio 1.23.2, label-studio-sdk 2.1.2) as a subprocess bound to 127.0.0.1, with all of
its state (SQLite database, media uploads, logs) under ``data_dir`` through
``LABEL_STUDIO_BASE_DATA_DIR``; nothing goes to ``~/.local/share/label-studio``. The admin's
API token is passed with ``--user-token`` and needs ``--enable-legacy-api-token`` (without
it a fresh 1.23 instance answers 401 to ``Authorization: Token <t>``).

Media: videos are not uploaded. Label Studio serves them from disk with its local-file
serving: the server runs with ``LOCAL_FILES_SERVING_ENABLED=true`` and
``LOCAL_FILES_DOCUMENT_ROOT=<media_root>``, and every task's ``video`` is
``/data/local-files/?d=<path relative to media_root>`` (see :func:`local_file_url`). Only
logged-in users (session or token) can fetch those URLs, and only for files whose folder lies
under the path of a Local Files import storage attached to a project the user can access:
:meth:`AnnotationClient.ensure_local_storage` attaches one (never synced) per project. The
storage path must be a strict subfolder of the document root (e.g. ``<root>/clips``).

Tasks: one task per (sample, version); the key lives in the task data (``sample``,
``version``), so :meth:`AnnotationClient.import_tasks` skips keys already in the project and
re-importing is a no-op. :meth:`AnnotationClient.export_rows` flattens the annotations into
tidy rows ``{annotator, task_id, sample, version, aspect, score}``; the rank among versions
(see :mod:`annotation.rubric`) comes out as rows with ``aspect == "rank"``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipelines.ingest import atomic_write_text

from .rubric import ASPECTS, RANK_NAME, labeling_config

log = logging.getLogger(__name__)

TOKEN_FILE = "api_token"


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


def local_file_url(path: Path | str, media_root: Path | str) -> str:
    """The task URL under which local-file serving returns ``path`` (inside ``media_root``)."""
    rel = Path(path).resolve().relative_to(Path(media_root).resolve())
    return "/data/local-files/?d=" + quote(rel.as_posix(), safe="/")


class LabelStudioServer:
    """``label-studio start`` on 127.0.0.1 with its state under ``data_dir``."""

    def __init__(
        self,
        data_dir: Path | str,
        port: int | None = None,
        username: str = "admin@example.com",
        password: str | None = None,
        token: str | None = None,
        media_root: Path | str | None = None,
        start_timeout: float = 180.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.username = username
        self.password = password or secrets.token_urlsafe(16)
        self.token = token or load_or_create_token(self.data_dir)
        self.media_root = Path(media_root).resolve() if media_root else None
        self.start_timeout = start_timeout
        self.log_path = self.data_dir / "server.log"
        self._proc: subprocess.Popen | None = None
        self._log_file = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        exe = Path(sys.executable).with_name("label-studio")
        return [
            str(exe) if exe.exists() else "label-studio",
            "start",
            "--no-browser",
            "--internal-host", "127.0.0.1",
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
    import http.cookiejar
    import re
    from urllib.parse import urlencode

    jar = http.cookiejar.CookieJar()
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


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def rows_from_annotation(annotator: str, task_id: int, data: dict, result: list) -> list[dict]:
    """Tidy rows for one annotation's ``result`` list (ratings and the rank)."""
    rows = []
    for item in result or []:
        name = _get(item, "from_name")
        value = _get(item, "value") or {}
        if name in ASPECTS and "rating" in value:
            score = int(value["rating"])
        elif name == RANK_NAME and value.get("choices"):
            score = int(value["choices"][0])
        else:
            continue
        rows.append({
            "annotator": annotator,
            "task_id": task_id,
            "sample": data.get("sample"),
            "version": data.get("version"),
            "aspect": name,
            "score": score,
        })
    return rows


def annotation_result(scores: dict[str, int], rank: int | None = None) -> list[dict]:
    """A Label Studio ``result`` list for the ratings in ``scores`` (and the rank)."""
    result = []
    for aspect, score in scores.items():
        if aspect not in ASPECTS:
            raise ValueError(f"unknown aspect {aspect!r}")
        result.append({"from_name": aspect, "to_name": "video", "type": "rating",
                       "value": {"rating": int(score)}})
    if rank is not None:
        result.append({"from_name": RANK_NAME, "to_name": "video", "type": "choices",
                       "value": {"choices": [str(int(rank))]}})
    return result


class AnnotationClient:
    """Projects, tasks and exports through label-studio-sdk 2.x with the admin token."""

    def __init__(self, base_url: str, token: str) -> None:
        from label_studio_sdk import LabelStudio

        self.base_url = base_url.rstrip("/")
        self.token = token
        self.ls = LabelStudio(base_url=self.base_url, api_key=token)

    # projects --------------------------------------------------------------------------
    def ensure_project(self, title: str, n_versions: int = 4, label_config: str | None = None):
        """The project called ``title``; created (with the rubric config) when missing."""
        for project in self.ls.projects.list(title=title):
            if project.title == title:
                return project
        for project in self.ls.projects.list():  # older servers ignore the title filter
            if project.title == title:
                return project
        return self.ls.projects.create(
            title=title,
            label_config=label_config or labeling_config(n_versions),
            description="Talking-head ratings: lip-sync, expressiveness, motion quality, rank.",
        )

    def ensure_local_storage(self, project, path: Path | str):
        """A Local Files import storage for ``path`` (a *subfolder* of LOCAL_FILES_DOCUMENT_ROOT:
        Label Studio refuses the root itself, 400 "cannot be the same as
        LOCAL_FILES_DOCUMENT_ROOT") on the
        project. Label Studio serves ``/data/local-files/?d=...`` only for files whose folder
        lies under the path of such a storage in a project the user can access (else 404).
        The storage is never synced: tasks are imported by :meth:`import_tasks`."""
        pid = _get(project, "id", project)
        path = str(Path(path).resolve())
        for storage in self.ls.import_storage.local.list(project=pid):
            if _get(storage, "path") == path:
                return storage
        return self.ls.import_storage.local.create(
            project=pid, path=path, title="media", use_blob_urls=True
        )

    # tasks -----------------------------------------------------------------------------
    def tasks(self, project) -> list:
        pid = _get(project, "id", project)
        return list(self.ls.tasks.list(project=pid, fields="all"))

    def task_keys(self, project) -> dict[tuple[str, str], int]:
        keys = {}
        for task in self.tasks(project):
            data = _get(task, "data") or {}
            keys[(str(data.get("sample")), str(data.get("version")))] = task.id
        return keys

    def import_tasks(self, project, tasks: Iterable[dict]) -> int:
        """Import task data dicts (``sample``, ``version``, ``video``, ...); keys already in
        the project (or repeated in ``tasks``) are skipped. Returns how many were added."""
        pid = _get(project, "id", project)
        seen = set(self.task_keys(pid))
        new = []
        for task in tasks:
            data = task.get("data", task)
            if "sample" not in data or "version" not in data:
                raise ValueError("every task needs 'sample' and 'version' in its data")
            key = (str(data["sample"]), str(data["version"]))
            if key in seen:
                continue
            seen.add(key)
            new.append({"data": dict(data)})
        if new:
            self.ls.projects.import_tasks(id=pid, request=new)
        return len(new)

    # users and annotations -------------------------------------------------------------
    def users_by_id(self) -> dict[int, str]:
        return {u.id: (u.email or u.username) for u in self.ls.users.list()}

    def ensure_user(self, email: str, first_name: str = "", last_name: str = ""):
        for user in self.ls.users.list():
            if user.email == email:
                return user
        return self.ls.users.create(email=email, username=email,
                                    first_name=first_name, last_name=last_name)

    def annotate(self, task_id: int, scores: dict[str, int], rank: int | None = None,
                 completed_by: int | None = None):
        """Create one annotation; with ``completed_by`` the admin files it for that user."""
        kwargs: dict[str, Any] = {"result": annotation_result(scores, rank)}
        if completed_by is not None:
            kwargs["completed_by"] = completed_by
        return self.ls.annotations.create(id=task_id, **kwargs)

    # export ----------------------------------------------------------------------------
    def export_rows(self, project) -> list[dict]:
        """Tidy rows over every non-cancelled annotation of the project."""
        pid = _get(project, "id", project)
        users = self.users_by_id()
        rows: list[dict] = []
        for task in self.tasks(pid):
            data = _get(task, "data") or {}
            for ann in self.ls.annotations.list(id=task.id):
                if _get(ann, "was_cancelled"):
                    continue
                who = _get(ann, "completed_by")
                who_id = _get(who, "id", who)
                annotator = users.get(who_id, str(who_id))
                rows.extend(rows_from_annotation(annotator, task.id, data, _get(ann, "result")))
        return rows
