"""Talking to Label Studio: projects, tasks, annotations and the export, through label-studio-sdk.

Media: every task's ``video`` is ``/data/local-files/?d=<path relative to media_root>`` (see
:func:`local_file_url`). Only logged-in users (session or token) can fetch those URLs, and only
for files whose folder lies under the path of a Local Files import storage attached to a project
the user can access: :meth:`AnnotationClient.ensure_local_storage` attaches one (never synced)
per project. The storage path must be a strict subfolder of the document root (e.g.
``<root>/clips``).

Tasks: one task per (sample, version); the key lives in the task data (``sample``,
``version``), so :meth:`AnnotationClient.import_tasks` skips keys already in the project and
re-importing is a no-op. :meth:`AnnotationClient.export_rows` flattens the annotations into
tidy rows ``{annotator, task_id, sample, version, aspect, score}``; the rank among versions
(see :mod:`annotation.rubric`) comes out as rows with ``aspect == "rank"``.

The loop's two Label Studio steps are :func:`push_tasks` and :func:`pull_human_rows`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipelines.config import PipelineConfig

from .aspects import ASPECT_TITLES, ASPECTS
from .locations import media_folder, media_root
from .rubric import RANK_NAME, labeling_config
from .versions import AnnotationInputError, VersionClip


def local_file_url(path: Path | str, media_root: Path | str) -> str:
    """The task URL under which local-file serving returns ``path`` (inside ``media_root``)."""
    rel = Path(path).resolve().relative_to(Path(media_root).resolve())
    return "/data/local-files/?d=" + quote(rel.as_posix(), safe="/")


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
            description="Talking-head ratings: " + ", ".join(ASPECT_TITLES[a] for a in ASPECTS) + ", rank.",
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


def task_data(clips: Sequence[VersionClip], root: Path) -> list[dict]:
    """One task's data per clip: its key, how many versions its sample has, and its media URL."""
    per_sample: dict[str, int] = defaultdict(int)
    for clip in clips:
        per_sample[clip.sample] += 1
    return [{"sample": c.sample, "version": c.version, "n_versions": per_sample[c.sample],
             "video": local_file_url(c.path, root)} for c in clips]


def push_tasks(client: AnnotationClient, config: PipelineConfig, clips: Sequence[VersionClip]) -> dict:
    """Create the project (and its media storage) when missing; import tasks not there yet."""
    most = max((sum(1 for c in clips if c.sample == s) for s in {c.sample for c in clips}), default=1)
    if most > config.annotation.max_versions:
        raise AnnotationInputError(
            f"a sample has {most} versions but annotation.max_versions is {config.annotation.max_versions}"
        )
    project = client.ensure_project(config.annotation.project_title, n_versions=config.annotation.max_versions)
    client.ensure_local_storage(project, media_folder(config))
    added = client.import_tasks(project, task_data(clips, media_root(config)))
    return {"project_id": project.id, "added": added, "tasks": len(client.task_keys(project)),
            "samples": len({c.sample for c in clips}), "versions": len(clips)}


def pull_human_rows(client: AnnotationClient, config: PipelineConfig) -> list[dict]:
    """Every submitted annotation of the project as tidy rows, sorted by clip, annotator, aspect."""
    project = client.ensure_project(config.annotation.project_title, n_versions=config.annotation.max_versions)
    rows = client.export_rows(project)
    return sorted(rows, key=lambda r: (r["sample"], r["version"], r["annotator"], r["aspect"]))
