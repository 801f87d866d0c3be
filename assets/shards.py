"""Dataset: WebDataset shards, index, statistics, manifest and QC report, plus their checks.

The shard folder is append-only (pipelines/shards.py): each materialisation packs only new or
re-processed sources into new shards and retires what changed; ``shards_open`` streams only the
shards that materialisation added. Everything else is explicit: the ``verify_dataset`` job
streams every shard, the ``compact_dataset`` job re-packs small or largely retired shards.
"""

import json

import dagster as dg

from assets.conversations import conversations
from assets.partitions import SOURCE_PARTITIONS_NAME
from assets.resources import PipelineSettings
from assets.stage_metadata import png_markdown
from assets.stages import STAGE_ASSETS
from pipelines.atomic import atomic_write_bytes, atomic_write_text
from pipelines.config import PipelineConfig
from pipelines.ingest import SourceRegistry
from pipelines.conversation.summary import load_summaries
from pipelines.reports import gates_report_png, qc_plot_png, role_seconds_png
from pipelines.schema.index import MissingShardIndexError, ShardIndex, ShardIndexError
from pipelines.schema.manifest import DatasetStats, FunnelStats, SourceRow, load_manifest
from pipelines.shards import compact_shards, verify_shards, write_shards
from pipelines.schema.records import SourceRecord
from pipelines.workdir import load_record


def funnel_metadata(funnel: FunnelStats) -> dict:
    """Seconds in, kept, pending and lost per gate, as numbers the UI can plot over runs, plus a table."""
    rows = [("kept", funnel.seconds_kept), ("pending", funnel.seconds_pending), *funnel.lost_s.items()]

    def share(seconds: float) -> str:
        return f"{100 * seconds / funnel.seconds_in:.1f}%" if funnel.seconds_in else "-"

    table = "\n".join(["| where | seconds | share |", "|---|---|---|"] + [f"| {k} | {v:.2f} | {share(v)} |"
                                                                      for k, v in rows])
    return {"funnel_seconds_in": funnel.seconds_in, "funnel_seconds_kept": funnel.seconds_kept,
            "funnel_seconds_pending": funnel.seconds_pending,
            **{f"funnel_lost_s.{gate}": seconds for gate, seconds in funnel.lost_s.items()},
            "funnel": dg.MetadataValue.md(table)}


def _records(config: PipelineConfig, source_ids: list[str]) -> tuple[list[SourceRecord], list[str]]:
    """Records of processed sources, and the ids still waiting for processing."""
    records, pending = [], []
    for sid in source_ids:
        record = load_record(config, sid)
        (records.append(record) if record is not None else pending.append(sid))
    return records, pending


def _previous_stats(config: PipelineConfig) -> DatasetStats | None:
    """The statistics the last write left (None: none, or unreadable: the QC plots are then redrawn)."""
    try:
        return DatasetStats.load(config.paths.shards_dir)
    except (OSError, ValueError):
        return None


@dg.asset(
    group_name="dataset",
    deps=[*STAGE_ASSETS, conversations],  # conversation mode's pairing writes members the shards carry
    kinds={"webdataset"},
    automation_condition=dg.AutomationCondition.eager(),
)
def dataset_shards(context: dg.AssetExecutionContext, settings: PipelineSettings) -> dict:
    """Every accepted clip of every registered source in tar shards, with index and stats: new and
    re-processed sources are appended as new shards, changed or removed ones retired in the index."""
    config = settings.load()
    source_ids = sorted(context.instance.get_dynamic_partitions(SOURCE_PARTITIONS_NAME))
    records, pending = _records(config, source_ids)
    if pending:
        context.log.warning(f"{len(pending)} registered source(s) not processed yet: {', '.join(pending[:10])}")
    qc_dir = config.paths.shards_dir / "qc"
    overview_path, gates_path = qc_dir / "overview.png", qc_dir / "gates.png"
    previous = _previous_stats(config)
    summary = write_shards(records, config)
    for source_id, why in summary.unpackable.items():
        context.log.error(f"{source_id}: not packed, retried on the next materialisation ({why})")
    changed = summary.added or summary.retired or summary.stats != previous
    if changed or not (overview_path.is_file() and gates_path.is_file()):
        # The plots need every source's decided segments (O(sources)): drawn only when the dataset changed.
        segments = [s for r in summary.records for s in r.segments]
        png = qc_plot_png(summary.stats, segments)
        gates_png = gates_report_png(summary.stats, segments)
        atomic_write_bytes(overview_path, png)
        atomic_write_bytes(gates_path, gates_png)
    else:
        png, gates_png = overview_path.read_bytes(), gates_path.read_bytes()
    roles_meta = {}
    if config.conversation.mode == "conversation":
        roles_path = qc_dir / "roles.png"
        if changed or not roles_path.is_file():
            seconds = [a.info.role_seconds.model_dump() for s in load_summaries(config) for a in s.actors]
            atomic_write_bytes(roles_path, role_seconds_png(seconds))
        roles_meta = {"qc_roles": png_markdown(roles_path.read_bytes(), "seconds per role")}
    atomic_write_text(config.paths.shards_dir / "qc" / "pending.json", json.dumps(pending))
    published = None
    if config.shards.publish_url:
        from pipelines.publish import publish_shards

        published = publish_shards(summary.shards_dir, config.shards.publish_url)
        context.log.info(f"published to {published.url}: {len(published.uploaded)} uploaded, "
                         f"{len(published.unchanged)} unchanged, {len(published.deleted)} deleted")
    stats = summary.stats
    reasons = {**{f"source: {k}": v for k, v in stats.sources.rejected_by_reason.items()},
               **{f"segment: {k}": v for k, v in stats.segments.rejected_by_reason.items()}}
    table = "\n".join(["| reason | count |", "|---|---|"] + [f"| {k} | {v} |" for k, v in reasons.items()])
    context.add_output_metadata({
        "sources": stats.sources.total,
        "sources_accepted": stats.sources.accepted,
        "sources_pending": len(pending),
        "samples": len(summary.index),
        "accepted_minutes": round(stats.accepted_duration_s.total / 60, 3),
        "shards": len(summary.shard_index.shards),
        "shards_added": dg.MetadataValue.json(summary.added),
        "sources_retired": dg.MetadataValue.json(summary.retired),
        "sources_unpackable": dg.MetadataValue.json(summary.unpackable),
        "rejections": dg.MetadataValue.md(table if reasons else "no rejections"),
        "shards_dir": dg.MetadataValue.path(str(summary.shards_dir)),
        "qc_overview": png_markdown(png, "QC overview"),
        "qc_gates": png_markdown(gates_png, "funnel and gates"),
        **roles_meta,
        **funnel_metadata(stats.funnel),
        "published_to": published.url if published else "not published (shards.publish_url unset)",
    })
    return {"shards_dir": str(summary.shards_dir), "samples": len(summary.index), "stats": stats.model_dump(mode="json")}


@dg.asset_check(asset=dataset_shards, description="Every registered source appears in the manifest with a status.")
def every_source_accounted_for(context: dg.AssetCheckExecutionContext, settings: PipelineSettings) -> dg.AssetCheckResult:
    config = settings.load()
    registered = set(context.instance.get_dynamic_partitions(SOURCE_PARTITIONS_NAME))
    on_disk = {ref.source_id for ref in SourceRegistry(config.paths.registry_path).scan(
        config.paths.input_dir, config.ingest.extensions)} if config.paths.input_dir.is_dir() else set()
    listed = {row.source_id for row in load_manifest(config.paths.shards_dir) if isinstance(row, SourceRow)}
    missing = sorted((registered | on_disk) - listed)
    unregistered = sorted(on_disk - registered)
    return dg.AssetCheckResult(
        passed=not missing,
        metadata={"registered": len(registered), "in_input_folder": len(on_disk), "in_manifest": len(listed),
                  "missing": dg.MetadataValue.json(missing[:50]), "not_registered": dg.MetadataValue.json(unregistered[:50])},
    )


def _added_by_last_materialisation(context: dg.AssetCheckExecutionContext) -> list[str]:
    """The shards the latest dataset_shards materialisation added (its ``shards_added`` metadata)."""
    event = context.instance.get_latest_materialization_event(dataset_shards.key)
    if event is None or event.asset_materialization is None:
        return []
    added = event.asset_materialization.metadata.get("shards_added")
    return list(added.value) if added is not None else []


@dg.asset_check(asset=dataset_shards, description="The shards this materialisation added open, match their "
                "sha256 and hold their indexed samples (streamed); every listed shard is present.")
def shards_open(context: dg.AssetCheckExecutionContext, settings: PipelineSettings) -> dg.AssetCheckResult:
    config = settings.load()
    added = _added_by_last_materialisation(context)
    problems = verify_shards(config.paths.shards_dir, added)
    try:
        samples = len(ShardIndex.load(config.paths.shards_dir).samples)  # also: every listed shard is there
    except (MissingShardIndexError, ShardIndexError) as error:
        samples = 0
        problems = problems if problems else [str(error)]
    return dg.AssetCheckResult(passed=not problems,
                               metadata={"samples": samples, "shards_verified": dg.MetadataValue.json(added),
                                         "problems": dg.MetadataValue.json(problems[:50])})


@dg.op(description="Stream every shard the index lists: sha256, size, sample count, every live sample's members.")
def verify_all_shards(context: dg.OpExecutionContext, settings: PipelineSettings) -> list[str]:
    config = settings.load()
    problems = verify_shards(config.paths.shards_dir)
    index = ShardIndex.load(config.paths.shards_dir, check_shards=False) if not problems else None
    context.log_event(dg.AssetObservation(asset_key=dataset_shards.key, metadata={
        "full_verification": "passed" if not problems else "failed",
        "shards_verified": len(index.shards) if index else 0,
        "problems": dg.MetadataValue.json(problems[:50])}))
    if problems:
        raise dg.Failure(description=f"{len(problems)} problem(s) in {config.paths.shards_dir}: {problems[:5]}",
                         metadata={"problems": dg.MetadataValue.json(problems[:50])})
    return problems


@dg.op(description="Re-pack shards below shards.compact_below_bytes or with more than shards.compact_retired_share "
                   "retired into new shards; index next, then the replaced shards are deleted.")
def compact_dataset_shards(context: dg.OpExecutionContext, settings: PipelineSettings) -> dict:
    config = settings.load()
    summary = compact_shards(config)
    context.log.info(f"compaction: {len(summary.replaced)} shard(s) replaced by {len(summary.added)}; "
                     f"{summary.samples_kept} live sample(s) moved, {summary.samples_dropped} retired dropped")
    context.log_event(dg.AssetObservation(asset_key=dataset_shards.key, metadata={
        "compaction_replaced": dg.MetadataValue.json(summary.replaced),
        "compaction_added": dg.MetadataValue.json(summary.added),
        "compaction_samples_kept": summary.samples_kept,
        "compaction_samples_dropped": summary.samples_dropped}))
    return {"replaced": summary.replaced, "added": summary.added, "samples_kept": summary.samples_kept,
            "samples_dropped": summary.samples_dropped}


@dg.job(name="verify_dataset", description="Full verification of the shard folder (every shard, streamed).")
def verify_dataset_job() -> None:
    verify_all_shards()


@dg.job(name="compact_dataset", description="Explicit compaction of small or largely retired shards.")
def compact_dataset_job() -> None:
    compact_dataset_shards()
