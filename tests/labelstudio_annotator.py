"""An annotator on a real Label Studio, doing what the browser's labelling stream does.

The account is made through the server's sign-up form (``create_annotator_account``); every
call below carries that annotator's own token, never the admin's. The stream ("Label All
Tasks") asks ``GET /api/projects/<id>/next`` for a task, which locks it for this user, and
submits ``POST /api/tasks/<id>/annotations/?project=<id>`` with the result and the time spent
(``lead_time``), as the Label Studio frontend does (label-studio 1.23.2,
projects/api.py ``ProjectNextTaskAPI``).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable

from agreement_example import ANNOTATORS, CLIPS, RANKINGS, ratings

from annotation.labelstudio_server import create_annotator_account
from annotation.rubric import ranking_result, rating_result


class Annotator:
    def __init__(self, base_url: str, email: str, password: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.email = email
        self.password = password or f"pw-{email.split('@')[0]}-0123456789"
        self.token = create_annotator_account(self.base_url, email, self.password)
        self.received: list[str] = []  # the text of every API answer this annotator read

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"Authorization": f"Token {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read(), dict(error.headers)

    def read(self, path: str):
        """GET ``path`` as this annotator; the answer is remembered for the blinding checks."""
        status, body, _ = self.request("GET", path)
        assert status == 200, (path, status, body[:300])
        self.received.append(body.decode())
        return json.loads(body)

    def next_task(self, project_id: int) -> dict | None:
        """The queue's next task for this annotator, or None when it has none left (404)."""
        status, body, _ = self.request("GET", f"/api/projects/{project_id}/next")
        if status == 404:
            return None
        assert status == 200, (status, body[:300])
        self.received.append(body.decode())
        return json.loads(body)

    def submit(self, project_id: int, task_id: int, result: list, lead_time: float = 10.0) -> dict:
        status, body, _ = self.request("POST", f"/api/tasks/{task_id}/annotations/?project={project_id}",
                                       {"result": result, "lead_time": lead_time, "project": project_id})
        assert status == 201, (status, body[:300])
        return json.loads(body)

    def label_all(self, project_id: int, answer: Callable[[dict], list]) -> list[dict]:
        """Work through the queue until it is empty, answering each task with ``answer(task)``;
        returns the tasks in the order the queue gave them."""
        done: list[dict] = []
        while (task := self.next_task(project_id)) is not None:
            assert task["id"] not in {t["id"] for t in done}, f"the queue gave {self.email} task {task['id']} again"
            self.submit(project_id, task["id"], answer(task), lead_time=5.0 + len(done))
            done.append(task)
        return done


def names_pattern(names: Iterable[str]) -> re.Pattern:
    """Any of ``names`` as a whole word: how a leaked sample or version name would show."""
    return re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")\b")


def hand_example_answers(blinding, annotator_index: int) -> tuple[Callable, Callable]:
    """What annotator ``annotator_index`` of tests/agreement_example.py answers to a rating task
    and to a ranking task; the test looks the opaque ids up in the blinding file (a person would
    watch the videos instead)."""
    name = ANNOTATORS[annotator_index]

    def rate(task: dict) -> list:
        return rating_result(ratings(annotator_index, CLIPS.index(blinding.clips[task["data"]["clip"]])))

    def rank(task: dict) -> list:
        item = blinding.items[task["data"]["item"]]
        return ranking_result({slot: RANKINGS[name][item.sample][blinding.clips[cid][1]]
                               for slot, cid in enumerate(item.clips, start=1)})

    return rate, rank
