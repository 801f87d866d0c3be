"""What the pairing leaves per session, and the index the shard writer reads it from.

    <data>/conversations/index.json                 source id -> its session's summary file; refused sidecars
    <data>/conversations/<input>.<session>.json     one SessionSummary per session
    <work>/sources/<id>/<key>.role.npy              the members of each actor sample, beside its clip
    <work>/sources/<id>/<key>.partner.wav
    <work>/sources/<id>/<key>.partner.flame.npz     (absent when the partner's face was never tracked)

A summary names, per actor sample, the record section (:class:`ConversationInfo`), its member
files with their sha256, and the digest of every session source's stage fingerprints it was
computed from: the pairing recomputes a session only when that fingerprint changes, and the shard
writer packs an actor's members only while every one of those digests is still current.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, ValidationError

from pipelines.atomic import atomic_write_bytes
from pipelines.config import PipelineConfig
from pipelines.schema.base import StrictModel
from pipelines.schema.conversation import ROLE_MEMBER, ConversationInfo, RoleSeconds
from pipelines.workdir import source_dir

SUMMARY_SCHEMA = "talkinghead.conversation_session/1"
INDEX_SCHEMA = "talkinghead.conversation_index/1"
INDEX_FILE = "index.json"
InputKind = Literal["shared_video", "per_participant"]


def conversations_dir(config: PipelineConfig) -> Path:
    return config.paths.data_dir / "conversations"


def summary_file_name(input_kind: InputKind, session: str) -> str:
    return f"{input_kind}.{session}.json"


def _dump(model: StrictModel) -> bytes:
    return json.dumps(model.model_dump(mode="json", by_alias=True), indent=1, sort_keys=True).encode()


class ActorSummary(StrictModel):
    """One actor sample of the session and what the pairing wrote for it."""

    key: str = Field(description="The actor's sample key.")
    source_id: str
    start_s: float = Field(description="Where the sample's first frame begins on the session clock.")
    fps: float
    info: ConversationInfo = Field(description="The sample record's conversation section.")
    files: dict[str, str] = Field(description="Member (role.npy, partner.wav, partner.flame.npz) -> file in the "
                                              "actor's source folder.")
    sha256: dict[str, str] = Field(description="Member -> sha256 of its file as written.")

    @property
    def role_seconds(self) -> RoleSeconds:
        return self.info.role_seconds


class SessionSummary(StrictModel):
    schema_: str = Field(SUMMARY_SCHEMA, alias="schema", pattern=r"^talkinghead\.conversation_session/1$")
    session: str
    input: InputKind
    sidecar: str | None = Field(None, description="The session sidecar, relative to the input folder.")
    participants: dict[str, str] = Field(description="Participant id -> source id.")
    fingerprint: str = Field(description="Of the pairing's version, the config it reads, the sidecar and `inputs`.")
    inputs: dict[str, str] = Field(description="Source id -> digest of its stage fingerprints the pairing read.")
    stamp: str = Field(description="Identity (size, mtime, inode) of every stage output the pairing read, with the "
                                   "config and the sidecar: equal on the next run, the session is not read again.")
    actors: tuple[ActorSummary, ...] = ()

    model_config = StrictModel.model_config | {"populate_by_name": True}

    @property
    def file_name(self) -> str:
        return summary_file_name(self.input, self.session)

    @classmethod
    def load(cls, path: Path) -> SessionSummary:
        return cls.model_validate_json(Path(path).read_bytes())

    def save(self, folder: Path) -> Path:
        path = Path(folder) / self.file_name
        atomic_write_bytes(path, _dump(self))
        return path

    def actor(self, key: str) -> ActorSummary | None:
        return next((actor for actor in self.actors if actor.key == key), None)

    def actors_of(self, source_id: str) -> list[ActorSummary]:
        return [actor for actor in self.actors if actor.source_id == source_id]

    def digest_of(self, source_id: str) -> str:
        """What the samples of ``source_id`` gain from this session, as one short hash: each actor's key,
        record section and member hashes (so a rewrite with the same content changes nothing)."""
        content = [[a.key, a.info.model_dump(mode="json"), a.sha256] for a in self.actors_of(source_id)]
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


class ConversationIndex(StrictModel):
    schema_: str = Field(INDEX_SCHEMA, alias="schema", pattern=r"^talkinghead\.conversation_index/1$")
    sources: dict[str, str] = Field({}, description="Source id -> summary file of its session.")
    refused: dict[str, str] = Field({}, description="Sidecar (relative to the input folder) -> why it was refused.")

    model_config = StrictModel.model_config | {"populate_by_name": True}

    @classmethod
    def load(cls, folder: Path) -> ConversationIndex:
        """The folder's index; an empty one when there is none yet or it cannot be read."""
        try:
            return cls.model_validate_json((Path(folder) / INDEX_FILE).read_bytes())
        except (OSError, ValidationError):
            return cls()

    def save(self, folder: Path) -> None:
        atomic_write_bytes(Path(folder) / INDEX_FILE, _dump(self))


def load_summaries(config: PipelineConfig) -> list[SessionSummary]:
    """Every session summary the index names, in file name order (unreadable ones left out)."""
    folder = conversations_dir(config)
    out = []
    for name in sorted(set(ConversationIndex.load(folder).sources.values())):
        try:
            out.append(SessionSummary.load(folder / name))
        except (OSError, ValidationError):
            continue
    return out


def actor_roles(config: PipelineConfig, actor: ActorSummary) -> np.ndarray:
    """The role codes the pairing wrote for ``actor`` (int8 per frame)."""
    return np.load(source_dir(config, actor.source_id) / actor.files[ROLE_MEMBER])
