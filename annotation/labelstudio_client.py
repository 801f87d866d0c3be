"""Talking to Label Studio: the study's two projects, their tasks, and the export.

A study is two projects on one server (forms: :mod:`annotation.rubric`):

* ``<project_title>``, the **rating** project: one task per clip, data ``{clip, video}``;
* ``<project_title>-ranking``, the **ranking** project: one task per sample with two or more
  versions, data ``{item, video_1 .. video_n}``, every version side by side.

Both are created with ``maximum_annotations = annotation.annotators_per_task`` and
``overlap_cohort_percentage = 100``, so Label Studio's queue (``GET /api/projects/<id>/next``,
what the "Label All Tasks" stream calls) offers every task to exactly that many distinct
annotators and then to nobody else (label_studio/projects/functions/next_task.py and
tasks/models.py ``Task.has_lock`` in label-studio 1.23.2: a task is locked once its annotations
plus other users' open locks reach its overlap). ``sampling`` is ``Uniform sampling`` by default
(each request draws a random unfinished task, so every annotator meets the tasks in their own
order); ``Sequential sampling`` follows the import order, which is itself shuffled with
``annotation.seed``. Label Studio's open-source edition has no per-annotator quota (annotation
limits are an Enterprise project setting), so every annotator may rate every task once.

Blinding (:mod:`annotation.blinding`): annotators see opaque ids only. Each clip is served as
``/data/local-files/?d=blind/<clip id><ext>``, a link in :func:`annotation.locations.blind_media_folder`
(the one folder under the document root, attached as a Local Files storage that is never
synced; Label Studio opens the link's path, so its target may lie anywhere,
io_storages/localfiles/views.py). Sample and version names never enter a task, a header, a
URL or a file name that Label Studio serves.

Export (:func:`pull_study`): Label Studio's own JSON export of each project is kept as is, and
turned into tidy rows (:data:`annotation.tables.HUMAN_COLUMNS`) with ids mapped back. Rules:
a cancelled (skipped) annotation is ignored; when one person annotated a task more than once,
their **latest** annotation (``updated_at``, then id) wins and the others are counted as
superseded; an annotation that fails its form's checks (:func:`annotation.rubric.rating_problem`,
:func:`annotation.rubric.ranking_problem`) becomes a rejection row with the reason, not a score.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from pipelines.atomic import atomic_write_text
from pipelines.config import PipelineConfig

from .aspects import ASPECT_TITLES, ASPECTS
from .blinding import Blinding, open_blinding
from .locations import blind_media_folder, blinding_file, media_root
from .rubric import (
    RANK_NAME,
    rating_config,
    rating_problem,
    ranking_config,
    ranking_problem,
    ranks_from_result,
    ratings_from_result,
    rubric_version,
)
from .versions import AnnotationInputError, VersionClip

RATING = "rating"
RANKING = "ranking"
SAMPLING = {"uniform": "Uniform sampling", "sequential": "Sequential sampling"}
KEY_FIELD = {RATING: "clip", RANKING: "item"}  # the task data field that identifies a task


def project_titles(config: PipelineConfig) -> dict[str, str]:
    """The title of each form's project."""
    title = config.annotation.project_title
    return {RATING: title, RANKING: f"{title}-ranking"}


def local_file_url(path: Path | str, media_root: Path | str) -> str:
    """The task URL under which local-file serving returns ``path`` (inside ``media_root``); a link
    keeps its own name (its target is not followed)."""
    path = Path(path)
    rel = (path.parent.resolve() / path.name).relative_to(Path(media_root).resolve())
    return "/data/local-files/?d=" + quote(rel.as_posix(), safe="/")


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


class AnnotationClient:
    """Projects, tasks and exports through label-studio-sdk 2.x with the admin token."""

    def __init__(self, base_url: str, token: str) -> None:
        from label_studio_sdk import LabelStudio

        self.base_url = base_url.rstrip("/")
        self.token = token
        self.ls = LabelStudio(base_url=self.base_url, api_key=token)

    def _get_json(self, path: str, **params) -> Any:
        url = self.base_url + path + ("?" + urlencode(params) if params else "")
        request = urllib.request.Request(url, headers={"Authorization": f"Token {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"Label Studio answered {error.code} to GET {path}: {error.read()[:300]!r}") from None

    # projects --------------------------------------------------------------------------
    def find_project(self, title: str):
        """The project called ``title``, or None."""
        for project in self.ls.projects.list(title=title):
            if project.title == title:
                return project
        for project in self.ls.projects.list():  # older servers ignore the title filter
            if project.title == title:
                return project
        return None

    def ensure_project(self, title: str, label_config: str, annotators_per_task: int, sampling: str):
        """The project called ``title`` with this form and queue settings; created when missing.

        A project that already holds annotations keeps its form: a different one is refused (the
        scores would mix two rubrics). Queue settings are brought in line either way."""
        settings = {"maximum_annotations": annotators_per_task, "overlap_cohort_percentage": 100,
                    "sampling": SAMPLING[sampling], "show_overlap_first": False,
                    "enable_empty_annotation": False}
        project = self.find_project(title)
        if project is None:
            return self.ls.projects.create(
                title=title, label_config=label_config,
                description="Talking-head ratings: " + ", ".join(ASPECT_TITLES[a] for a in ASPECTS) + ", rank.",
                **settings)
        changes = {k: v for k, v in settings.items() if _get(project, k) != v}
        if project.label_config != label_config:
            if (_get(project, "total_annotations_number") or 0) > 0:
                raise AnnotationInputError(
                    f"project {title!r} holds annotations made with rubric version "
                    f"{rubric_version(project.label_config)}, and this code's form is rubric version "
                    f"{rubric_version(label_config)}: finish the study with the code that made it, or rate "
                    "with the new form in a new project (annotation.project_title)")
            changes["label_config"] = label_config
        if changes:
            project = self.ls.projects.update(id=project.id, **changes)
        return project

    def ensure_local_storage(self, project, path: Path | str):
        """A Local Files import storage for ``path`` (a *subfolder* of LOCAL_FILES_DOCUMENT_ROOT:
        Label Studio refuses the root itself, 400 "cannot be the same as
        LOCAL_FILES_DOCUMENT_ROOT") on the project. Label Studio serves
        ``/data/local-files/?d=...`` only for files whose folder lies under the path of such a
        storage in a project the user can access (else 404). The storage is never synced:
        tasks are imported by :meth:`import_tasks`."""
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

    def task_keys(self, project, key_field: str) -> dict[str, int]:
        """``{task_data[key_field]: task id}`` over the project's tasks."""
        return {str((_get(t, "data") or {}).get(key_field)): t.id for t in self.tasks(project)}

    def import_tasks(self, project, datas: Iterable[dict], key_field: str) -> int:
        """Import task data dicts in the given order; keys (``data[key_field]``) already in the
        project, or repeated, are skipped. Returns how many were added."""
        pid = _get(project, "id", project)
        seen = set(self.task_keys(pid, key_field))
        if "None" in seen:
            raise AnnotationInputError(
                f"project {pid} holds tasks without {key_field!r} in their data (made before blinding, or by "
                "hand): rate in a new project (annotation.project_title)")
        new = []
        for data in datas:
            if key_field not in data:
                raise ValueError(f"every task needs {key_field!r} in its data")
            if str(data[key_field]) in seen:
                continue
            seen.add(str(data[key_field]))
            new.append({"data": dict(data)})
        if new:
            self.ls.projects.import_tasks(id=pid, request=new)
        return len(new)

    # users and export ------------------------------------------------------------------
    def users_by_id(self) -> dict[int, str]:
        return {u.id: (u.email or u.username) for u in self.ls.users.list()}

    def export(self, project) -> list[dict]:
        """Label Studio's JSON export of every task with its annotations (one request)."""
        pid = _get(project, "id", project)
        return self._get_json(f"/api/projects/{pid}/export", exportType="JSON", download_all_tasks="true")


# pushing --------------------------------------------------------------------------------


def link_blind_media(blinding: Blinding, clips: Sequence[VersionClip], folder: Path) -> dict[str, Path]:
    """One link per clip, ``<folder>/<clip id><ext>`` -> the clip; returns ``{clip id: link}``."""
    folder.mkdir(parents=True, exist_ok=True)
    links = {}
    for clip in clips:
        cid = blinding.clip_id(clip.sample, clip.version)
        link = folder / f"{cid}{clip.path.suffix.lower()}"
        target = Path(clip.path).resolve()
        if not (link.is_symlink() and Path(os.readlink(link)) == target):
            tmp = folder / f".{link.name}.tmp"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target)
            os.replace(tmp, link)
        links[cid] = link
    return links


def _versions_per_sample(clips: Sequence[VersionClip]) -> dict[str, list[str]]:
    per_sample: dict[str, list[str]] = defaultdict(list)
    for clip in clips:
        per_sample[clip.sample].append(clip.version)
    return per_sample


def ranking_size(clips: Sequence[VersionClip], max_versions: int) -> int | None:
    """How many videos the ranking view shows (every sample with two or more versions has that
    many); None when no sample has two versions."""
    per_sample = _versions_per_sample(clips)
    most = max((len(v) for v in per_sample.values()), default=0)
    if most > max_versions:
        raise AnnotationInputError(f"a sample has {most} versions but annotation.max_versions is {max_versions}")
    counts = Counter(len(v) for v in per_sample.values() if len(v) >= 2)
    if len(counts) > 1:
        examples = {n: next(s for s, v in sorted(per_sample.items()) if len(v) == n) for n in counts}
        raise AnnotationInputError(
            "the ranking view shows the same number of versions for every sample, but samples have "
            + ", ".join(f"{n} (e.g. {examples[n]!r}: {counts[n]} samples)" for n in sorted(counts))
            + " versions: rate the complete ones, or each size in its own project")
    return next(iter(counts), None)


def push_tasks(client: AnnotationClient, config: PipelineConfig, clips: Sequence[VersionClip]) -> dict:
    """Create the study's projects (and their media storage) when missing; import tasks not there
    yet, in the seeded shuffled order. Returns what the ``annotation_tasks`` asset reports."""
    cfg = config.annotation
    n_ranked = ranking_size(clips, cfg.max_versions)
    per_sample = _versions_per_sample(clips)
    folder, root = blind_media_folder(config), media_root(config)
    with open_blinding(blinding_file(config), cfg.seed) as blinding:
        urls = {cid: local_file_url(link, root) for cid, link in link_blind_media(blinding, clips, folder).items()}
        rating_datas = []
        for sample, version in blinding.shuffled([(c.sample, c.version) for c in clips], RATING):
            cid = blinding.clip_id(sample, version)
            rating_datas.append({"clip": cid, "video": urls[cid]})
        ranking_datas = []
        for sample in blinding.shuffled([s for s, v in per_sample.items() if len(v) >= 2], RANKING):
            item = blinding.ranking_item(sample, per_sample[sample])
            ranking_datas.append({"item": item.item, **{f"video_{slot}": urls[cid]
                                                        for slot, cid in enumerate(item.clips, start=1)}})
    titles = project_titles(config)
    out: dict[str, Any] = {"seed": cfg.seed, "annotators_per_task": cfg.annotators_per_task,
                           "sampling": SAMPLING[cfg.task_sampling], "samples": len(per_sample),
                           "versions": len(clips), "blinding_file": str(blinding_file(config))}
    forms = [(RATING, rating_config(), rating_datas)]
    if n_ranked is not None:
        forms.append((RANKING, ranking_config(n_ranked), ranking_datas))
    for kind, label_config, datas in forms:
        project = client.ensure_project(titles[kind], label_config, cfg.annotators_per_task, cfg.task_sampling)
        client.ensure_local_storage(project, folder)
        added = client.import_tasks(project, datas, KEY_FIELD[kind])
        out.update({f"{kind}_project_id": project.id, f"{kind}_added": added,
                    f"{kind}_tasks": len(client.task_keys(project, KEY_FIELD[kind])),
                    f"{kind}_rubric_version": rubric_version(project.label_config)})
    return out


# pulling --------------------------------------------------------------------------------


def latest_annotations(task: Mapping) -> tuple[list[dict], int]:
    """The task's submitted annotations, one per person (their latest: ``updated_at``, then id),
    and how many earlier ones that rule dropped. Cancelled (skipped) annotations are ignored."""
    per_person: dict[Any, list[dict]] = defaultdict(list)
    for ann in task.get("annotations") or []:
        if not ann.get("was_cancelled"):
            per_person[ann.get("completed_by")].append(ann)
    kept = [max(anns, key=lambda a: (a.get("updated_at") or "", a.get("id") or 0)) for anns in per_person.values()]
    dropped = sum(len(anns) - 1 for anns in per_person.values())
    return sorted(kept, key=lambda a: a.get("id") or 0), dropped


@dataclass
class StudyExport:
    """Everything :func:`pull_study` read: tidy rows, rejections, and each project's raw export."""

    rows: list[dict] = field(default_factory=list)
    rejections: list[dict] = field(default_factory=list)
    raw: dict[str, list] = field(default_factory=dict)
    projects: dict[str, dict] = field(default_factory=dict)
    superseded: int = 0


def _rating_rows(blinding: Blinding, data: dict, result: list) -> tuple[str | None, list[dict], str | None]:
    """(sample, rows, why they are rejected) of one rating annotation."""
    key = blinding.clips.get(str(data.get("clip")))
    if key is None:
        return None, [], f"clip id {data.get('clip')!r} is not in the blinding file"
    scores = ratings_from_result(result)
    problem = rating_problem(scores)
    if problem:
        return key[0], [], problem
    return key[0], [{"sample": key[0], "version": key[1], "aspect": a, "score": scores[a]} for a in ASPECTS], None


def _ranking_rows(blinding: Blinding, data: dict, result: list) -> tuple[str | None, list[dict], str | None]:
    """(sample, rows, why they are rejected) of one ranking annotation."""
    item = blinding.items.get(str(data.get("item")))
    if item is None:
        return None, [], f"item id {data.get('item')!r} is not in the blinding file"
    ranks = ranks_from_result(result)
    problem = ranking_problem(ranks, len(item.clips))
    if problem:
        return item.sample, [], problem
    return item.sample, [{"sample": item.sample, "version": blinding.clips[item.clips[slot - 1]][1],
                          "aspect": RANK_NAME, "score": rank} for slot, rank in sorted(ranks.items())], None


def export_rows(raw: list[dict], kind: str, blinding: Blinding, users: Mapping[int, str],
                version: str, out: StudyExport) -> None:
    """Add the rows and rejections of one project's raw export to ``out`` (ids mapped back)."""
    parse = _rating_rows if kind == RATING else _ranking_rows
    for task in raw:
        data = task.get("data") or {}
        kept, dropped = latest_annotations(task)
        out.superseded += dropped
        for ann in kept:
            who = ann.get("completed_by")
            annotator = blinding.annotator_id(users.get(who) or f"labelstudio-user-{who}")
            sample, rows, problem = parse(blinding, data, ann.get("result"))
            if problem:
                out.rejections.append({"annotator": annotator, "task_id": task["id"], "annotation_id": ann.get("id"),
                                       "form": kind, "sample": sample, "reason": problem})
                continue
            for row in rows:
                out.rows.append({"annotator": annotator, "task_id": task["id"], **row,
                                 "lead_time_s": ann.get("lead_time"), "annotated_at": ann.get("updated_at"),
                                 "annotation_id": ann.get("id"), "rubric_version": version})


def pull_study(client: AnnotationClient, config: PipelineConfig) -> StudyExport:
    """Export both projects (those that exist) and map them back to samples, versions and rater ids."""
    out = StudyExport()
    users = client.users_by_id()
    with open_blinding(blinding_file(config), config.annotation.seed) as blinding:
        for kind, title in project_titles(config).items():
            project = client.find_project(title)
            if project is None:
                continue
            raw = client.export(project)
            version = rubric_version(project.label_config)
            out.raw[kind] = raw
            out.projects[kind] = {"id": project.id, "title": title, "rubric_version": version,
                                  "maximum_annotations": _get(project, "maximum_annotations"),
                                  "sampling": _get(project, "sampling"), "tasks": len(raw)}
            export_rows(raw, kind, blinding, users, version, out)
    out.rows.sort(key=lambda r: (r["sample"], r["version"], r["annotator"], r["aspect"]))
    return out


SNAPSHOT_MANIFEST = "snapshot.json"


def write_snapshot(folder: Path, export: StudyExport, seed: int) -> Path:
    """Each project's raw export as ``<folder>/<form>.json`` and a manifest (``snapshot.json``:
    when, which projects, their rubric versions and queue settings, the seed). Raw means raw:
    opaque clip/item ids and Label Studio user ids, which :mod:`annotation.blinding` maps back."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind, raw in export.raw.items():
        atomic_write_text(folder / f"{kind}.json", json.dumps(raw, indent=1, sort_keys=True))
    manifest = {"exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seed": seed,
                "projects": export.projects, "superseded_annotations": export.superseded,
                "rejected_annotations": len(export.rejections)}
    atomic_write_text(folder / SNAPSHOT_MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
    return folder / SNAPSHOT_MANIFEST
