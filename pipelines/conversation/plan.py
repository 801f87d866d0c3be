"""Which registered sources form which conversation session (conversation mode).

Every session sidecar under the input folder (:func:`pipelines.conversation.session.find_sessions`)
whose videos are all registered sources makes a per-participant session of them; every other
source is a shared-video session by itself (its participants are its face tracks). A sidecar
that is refused, by the loader or here, is reported with why, and its videos stay ordinary
shared-video sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipelines.config import PipelineConfig
from pipelines.conversation.session import find_sessions
from pipelines.conversation.summary import InputKind
from pipelines.ingest import SourceRegistry
from pipelines.schema.records import SourceRef


@dataclass(frozen=True)
class PlannedParticipant:
    id: str
    source: SourceRef
    start_s: float  # where the source's time 0 lies on the session clock


@dataclass(frozen=True)
class SessionPlan:
    name: str
    input: InputKind
    participants: tuple[PlannedParticipant, ...]  # shared video: one entry, the source (its tracks come later)
    sidecar: str | None = None  # relative to the input folder

    @property
    def sources(self) -> list[SourceRef]:
        return [p.source for p in self.participants]


@dataclass(frozen=True)
class Sessions:
    plans: list[SessionPlan]
    refused: dict[str, str]  # sidecar relative to the input folder -> why


def _relative(path: Path, folder: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(folder).resolve()).as_posix()
    except ValueError:
        return str(path)


def plan_sessions(config: PipelineConfig, sources: list[SourceRef]) -> Sessions:
    """The sessions of ``sources`` (the registered sources of ``config.paths.input_dir``)."""
    input_dir = config.paths.input_dir
    by_path = {Path(ref.path).resolve(): ref for ref in sources}
    skipped = SourceRegistry(config.paths.registry_path).skipped()
    found, refused_found = find_sessions(input_dir) if Path(input_dir).is_dir() else ([], [])
    refused = {_relative(path, input_dir): why for path, why in refused_found}
    plans, claimed = [], set()
    for session in found:
        participants, problems = [], []
        for participant in session.sidecar.participants:
            video = session.video_path(participant).resolve()
            ref = by_path.get(video)
            if ref is None:
                why = skipped.get(_relative(video, input_dir), {}).get("reason", "not registered")
                problems.append(f"{participant.video} is not a registered source ({why})")
            else:
                participants.append(PlannedParticipant(participant.id, ref, participant.start_s))
        sidecar = _relative(session.path, input_dir)
        if problems:
            refused[sidecar] = f"{session.path.name}: {'; '.join(problems)}"
            continue
        plans.append(SessionPlan(session.name, "per_participant", tuple(participants), sidecar))
        claimed.update(p.source.source_id for p in participants)
    for ref in sorted(sources, key=lambda r: r.source_id):
        if ref.source_id not in claimed:
            plans.append(SessionPlan(ref.source_id, "shared_video", (PlannedParticipant(ref.source_id, ref, 0.0),)))
    return Sessions(plans, dict(sorted(refused.items())))
