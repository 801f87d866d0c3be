"""Session sidecars: which per-participant recordings form one conversation, and how they line up.

Conversation mode takes two kinds of input. One video where the participants are visible
together (side by side, two-shots) with one mixed audio track is a session by itself: nothing
to declare. One video per participant, each with its own microphone (Seamless Interaction's
layout), needs a sidecar that names the files of one session and puts them on one clock:
a JSON file ending in ``.session.json`` in the input folder, beside the videos::

    {
      "schema": "talkinghead.session/1",
      "session": "interview_042",
      "participants": [
        {"id": "host",  "video": "interview_042_host.mp4",  "start_s": 0.0},
        {"id": "guest", "video": "interview_042_guest.mp4", "start_s": 0.4}
      ]
    }

- ``video``: a path relative to the sidecar's folder (no absolute paths, no ``..``); the file's
  own audio track is that participant's microphone;
- ``start_s``: where the file's time 0 lies on the session clock (seconds, may be negative):
  a file whose recording began 0.4 s after the first one has ``start_s: 0.4``;
- ``id``: the participant's name inside the session (letters, digits, ``_`` and ``-``).

Every file may belong to one session only. In speaking-only mode sidecars are ignored and every
file is an ordinary source.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from pydantic import Field, ValidationError, field_validator, model_validator

from pipelines.schema.base import StrictModel

SIDECAR_SUFFIX = ".session.json"
SESSION_SCHEMA = "talkinghead.session/1"


class SessionError(ValueError):
    """A sidecar that cannot be used; the message says which file and what is wrong."""


class Participant(StrictModel):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    video: str
    start_s: float = Field(0.0, allow_inf_nan=False)

    @field_validator("video")
    @classmethod
    def _relative(cls, value: str) -> str:
        path = PurePosixPath(value)
        if not value or path.is_absolute() or ".." in path.parts or "\\" in value:
            raise ValueError(f"video {value!r} must be a path relative to the sidecar's folder, without '..'")
        return value


class SessionSidecar(StrictModel):
    schema_: str = Field(SESSION_SCHEMA, alias="schema", pattern=r"^talkinghead\.session/1$")
    session: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    participants: tuple[Participant, ...] = Field(min_length=2)

    model_config = StrictModel.model_config | {"populate_by_name": True}

    @model_validator(mode="after")
    def _distinct(self) -> SessionSidecar:
        for field in ("id", "video"):
            values = [getattr(p, field) for p in self.participants]
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"participant {field}s must differ; repeated: {', '.join(repeated)}")
        return self


class Session:
    """A loaded sidecar with its files resolved next to it."""

    def __init__(self, sidecar: SessionSidecar, path: Path):
        self.sidecar = sidecar
        self.path = path

    @property
    def name(self) -> str:
        return self.sidecar.session

    def video_path(self, participant: Participant) -> Path:
        return self.path.parent / participant.video

    def participant_of(self, video: Path) -> Participant | None:
        for participant in self.sidecar.participants:
            if self.video_path(participant).resolve() == Path(video).resolve():
                return participant
        return None


def load_session(path: Path) -> Session:
    """The sidecar at ``path``, validated, with every named video present; else :class:`SessionError`."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SessionError(f"{path.name}: not a readable JSON file ({error})") from None
    try:
        sidecar = SessionSidecar.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'sidecar'}: {e['msg']}" for e in error.errors())
        raise SessionError(f"{path.name}: {problems}") from None
    session = Session(sidecar, path)
    missing = [p.video for p in sidecar.participants if not session.video_path(p).is_file()]
    if missing:
        raise SessionError(f"{path.name}: named video(s) not found beside it: {', '.join(missing)}")
    return session


def find_sessions(folder: Path) -> tuple[list[Session], list[tuple[Path, str]]]:
    """Every sidecar under ``folder``: (sessions, [(sidecar, why it was refused)]).

    A sidecar that is invalid, or that names a file another sidecar already claimed, is refused
    with its reason; its files stay ordinary sources. Sidecars are read in path order.
    """
    sessions, refused, claimed = [], [], {}
    for path in sorted(Path(folder).rglob(f"*{SIDECAR_SUFFIX}")):
        try:
            session = load_session(path)
        except SessionError as error:
            refused.append((path, str(error)))
            continue
        videos = [session.video_path(p).resolve() for p in session.sidecar.participants]
        taken = [str(v.name) for v in videos if v in claimed]
        if taken:
            refused.append((path, f"{path.name}: {', '.join(taken)} already belong to session "
                                  f"{claimed[next(v for v in videos if v in claimed)]}"))
            continue
        if session.name in claimed.values():
            refused.append((path, f"{path.name}: session name {session.name} is used by another sidecar"))
            continue
        claimed.update({v: session.name for v in videos})
        sessions.append(session)
    return sessions, refused
