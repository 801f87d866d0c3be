"""Session sidecars: valid ones load with their files on one clock; bad ones are refused with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.conversation.session import SessionError, find_sessions, load_session


def _sidecar(folder: Path, name: str, body: dict | str) -> Path:
    path = folder / f"{name}.session.json"
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    return path


def _videos(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_bytes(b"x")  # the loader checks presence only; decoding is the pipeline's


def _body(**changes) -> dict:
    body = {"schema": "talkinghead.session/1", "session": "duo",
            "participants": [{"id": "host", "video": "host.mp4", "start_s": 0.0},
                             {"id": "guest", "video": "guest.mp4", "start_s": 0.4}]}
    body.update(changes)
    return body


def test_valid_sidecar_loads_with_resolved_files_and_offsets(tmp_path):
    _videos(tmp_path, "host.mp4", "guest.mp4")
    session = load_session(_sidecar(tmp_path, "duo", _body()))
    assert session.name == "duo"
    guest = session.participant_of(tmp_path / "guest.mp4")
    assert guest is not None and guest.id == "guest" and guest.start_s == 0.4
    assert session.participant_of(tmp_path / "other.mp4") is None


@pytest.mark.parametrize("change, message", [
    ({"participants": [{"id": "host", "video": "host.mp4"}]}, "at least 2"),
    ({"participants": [{"id": "a", "video": "host.mp4"}, {"id": "a", "video": "guest.mp4"}]}, "repeated: a"),
    ({"participants": [{"id": "a", "video": "host.mp4"}, {"id": "b", "video": "host.mp4"}]}, "repeated: host.mp4"),
    ({"participants": [{"id": "a", "video": "../host.mp4"}, {"id": "b", "video": "guest.mp4"}]}, "without '..'"),
    ({"participants": [{"id": "a", "video": "/abs/host.mp4"}, {"id": "b", "video": "guest.mp4"}]}, "relative"),
    ({"participants": [{"id": "a b", "video": "host.mp4"}, {"id": "b", "video": "guest.mp4"}]}, "participants.0.id"),
    ({"schema": "talkinghead.session/9"}, "schema"),
    ({"speakers": []}, "speakers"),
])
def test_invalid_sidecars_say_what_is_wrong(tmp_path, change, message):
    _videos(tmp_path, "host.mp4", "guest.mp4")
    with pytest.raises(SessionError, match=message):
        load_session(_sidecar(tmp_path, "duo", _body(**change)))


def test_missing_video_and_broken_json_are_refused(tmp_path):
    _videos(tmp_path, "host.mp4")
    with pytest.raises(SessionError, match="not found beside it: guest.mp4"):
        load_session(_sidecar(tmp_path, "duo", _body()))
    with pytest.raises(SessionError, match="not a readable JSON"):
        load_session(_sidecar(tmp_path, "broken", "{not json"))


def test_find_sessions_refuses_a_file_claimed_twice_and_keeps_the_first(tmp_path):
    _videos(tmp_path, "host.mp4", "guest.mp4", "third.mp4")
    _sidecar(tmp_path, "a_first", _body(session="first"))
    _sidecar(tmp_path, "b_second", _body(session="second", participants=[
        {"id": "x", "video": "guest.mp4"}, {"id": "y", "video": "third.mp4"}]))
    _sidecar(tmp_path, "c_broken", "[]")
    sessions, refused = find_sessions(tmp_path)
    assert [s.name for s in sessions] == ["first"]
    reasons = {path.name: why for path, why in refused}
    assert "guest.mp4 already belong to session first" in reasons["b_second.session.json"]
    assert "c_broken.session.json" in reasons
