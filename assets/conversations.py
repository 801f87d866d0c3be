"""Conversation mode's session step: after every per-source stage, before the shards.

``conversations`` pairs each session (a two-shot video, or the per-participant videos a session
sidecar names) through pipelines/conversation/pairing.py: every accepted sample becomes an actor
with a role per frame and its partner's audio and motion. Its metadata shows, per session, each
actor's seconds speaking, listening, both and silent, and a plot of the role timelines. In
speaking-only mode (the default) it does nothing and says so.
"""

from collections import Counter

import dagster as dg

from assets.partitions import SOURCE_PARTITIONS_NAME
from assets.resources import PipelineSettings, StageModels
from assets.stage_metadata import png_markdown
from assets.stages import STAGE_ASSETS
from pipelines.config import PipelineConfig
from pipelines.conversation.pairing import PairingReport, pair_sessions
from pipelines.conversation.summary import SessionSummary, actor_roles
from pipelines.ingest import SourceRegistry
from pipelines.reports import role_timelines_png
from pipelines.schema.conversation import RoleSeconds

MAX_TABLE_ROWS = 200  # actor rows in the UI table; the summaries on disk hold them all
MAX_PLOTTED_SESSIONS = 8  # role timeline plots per materialisation, sessions paired this time first
ROLES = tuple(RoleSeconds.model_fields)  # speaking, listening, both, silent


def role_table(summaries: list[SessionSummary]) -> str:
    """Markdown: one row per actor sample with its seconds per role."""
    lines = ["| session | actor | partner | sample | " + " | ".join(f"{r} s" for r in ROLES) + " |",
             "|---|---|---|---|" + "---|" * len(ROLES)]
    rows = [(summary, actor) for summary in summaries for actor in summary.actors]
    for summary, actor in rows[:MAX_TABLE_ROWS]:
        seconds = actor.info.role_seconds.model_dump()
        lines.append(f"| {summary.session} | {actor.info.actor} | {actor.info.partner or '-'} | {actor.key} | "
                     + " | ".join(f"{seconds[r]:.2f}" for r in ROLES) + " |")
    if len(rows) > MAX_TABLE_ROWS:
        lines.append(f"| ... {len(rows) - MAX_TABLE_ROWS} more actor samples in the session summaries | |")
    return "\n".join(lines)


def timelines_markdown(config: PipelineConfig, report: PairingReport) -> str:
    """Role timeline plots of up to MAX_PLOTTED_SESSIONS sessions, those paired in this run first."""
    ordered = sorted((o for o in report.sessions if o.summary is not None and o.summary.actors),
                     key=lambda o: (o.status != "ran", o.plan.name))
    parts = []
    for outcome in ordered[:MAX_PLOTTED_SESSIONS]:
        summary = outcome.summary
        rows = [(f"{a.info.actor} ({a.key})", a.start_s, a.fps, actor_roles(config, a)) for a in summary.actors]
        png = role_timelines_png(rows, f"{summary.input} session {summary.session}")
        parts.append(f"**{summary.session}** ({outcome.status})\n\n{png_markdown(png, summary.session).value}")
    if len(ordered) > MAX_PLOTTED_SESSIONS:
        parts.append(f"... and {len(ordered) - MAX_PLOTTED_SESSIONS} more sessions")
    return "\n\n".join(parts) or "no paired session"


@dg.asset(
    group_name="dataset",
    deps=STAGE_ASSETS,
    kinds={"python"},
    automation_condition=dg.AutomationCondition.eager(),
)
def conversations(context: dg.AssetExecutionContext, settings: PipelineSettings, models: StageModels) -> dict:
    """Conversation mode: a role per frame and the partner's audio and FLAME arrays for every accepted
    sample of every session, with one summary per session; nothing in speaking-only mode."""
    config = settings.load()
    if config.conversation.mode != "conversation":
        context.add_output_metadata({"mode": config.conversation.mode,
                                     "note": "speaking-only mode: no session is paired (conversation.mode)"})
        return {"mode": config.conversation.mode, "sessions": {}}
    registry = SourceRegistry(config.paths.registry_path)
    sources = [registry.lookup(sid, config.paths.input_dir)
               for sid in sorted(context.instance.get_dynamic_partitions(SOURCE_PARTITIONS_NAME))]
    report = pair_sessions(config, sources, models.backends(config))
    for sidecar, why in report.refused.items():
        context.log.warning(f"session sidecar {sidecar} refused, its videos are shared-video sources: {why}")
    for name, why in report.failures.items():
        context.log.error(f"session {name} not paired: {why}")
    summaries = report.summaries
    totals = Counter()
    for summary in summaries:
        for actor in summary.actors:
            totals.update(actor.info.role_seconds.model_dump())
    context.add_output_metadata({
        "mode": config.conversation.mode,
        "sessions": len(summaries),
        "sessions_by_status": dg.MetadataValue.json(dict(Counter(o.status for o in report.sessions))),
        "actor_samples": sum(len(s.actors) for s in summaries),
        **{f"seconds_{role}": round(totals[role], 3) for role in ROLES},
        "refused_sidecars": dg.MetadataValue.json(report.refused),
        "failed_sessions": dg.MetadataValue.json(report.failures),
        "role_seconds": dg.MetadataValue.md(role_table(summaries) if summaries else "no paired session"),
        "role_timelines": dg.MetadataValue.md(timelines_markdown(config, report)),
    })
    return {"mode": config.conversation.mode, "sessions": {s.file_name: s.fingerprint for s in summaries}}
