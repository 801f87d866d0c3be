"""The Dagster code location: ``dagster dev -w workspace.yaml`` loads ``defs`` from here."""

import dagster as dg

from assets.annotation import ANNOTATION_ASSETS, annotation_loop_job, new_annotations, refresh_annotations_job
from assets.conversations import conversations
from assets.executors import DATASET_JOB, PROCESS_JOB, build_executor
from assets.partitions import PER_SOURCE_GROUPS
from assets.resources import PipelineSettings, StageModels
from assets.shards import (
    compact_dataset_job,
    dataset_shards,
    every_source_accounted_for,
    shards_open,
    verify_dataset_job,
)
from assets.sources import source_probe, watch_input_folder
from assets.stages import STAGE_ASSETS
from assets.storage import AtomicFilesystemIOManager
from assets.training import train_job

process_sources_job = dg.define_asset_job(
    PROCESS_JOB, selection=dg.AssetSelection.groups(*PER_SOURCE_GROUPS),
    description="Every per-source stage (probe, faces, active speakers, speech, FLAME, captions) for selected partitions.",
)
build_dataset_job = dg.define_asset_job(
    DATASET_JOB, selection=dg.AssetSelection.assets(conversations, dataset_shards),
    description="Pair conversation sessions (conversation mode), append new and re-processed sources' clips as new "
                "shards, retire changed ones, run the dataset checks.",
)

ALL_ASSETS = [source_probe, *STAGE_ASSETS, conversations, dataset_shards]
ALL_CHECKS = [every_source_accounted_for, shards_open]



def build_resources(config_path: str | None = None) -> dict:
    """The resources of every run: the pipeline config, the stage models, atomic step storage."""
    return {"settings": PipelineSettings(config_path=config_path), "models": StageModels(),
            "io_manager": AtomicFilesystemIOManager()}


defs = dg.Definitions(
    assets=[*ALL_ASSETS, *ANNOTATION_ASSETS],  # annotation assets need a Label Studio server
    asset_checks=ALL_CHECKS,
    sensors=[watch_input_folder, new_annotations],
    jobs=[process_sources_job, build_dataset_job, annotation_loop_job, refresh_annotations_job,
          train_job, verify_dataset_job, compact_dataset_job],
    resources=build_resources(),
    executor=build_executor(),  # $TALKINGHEAD_EXECUTOR: multiprocess (default), in_process, celery, k8s
)
