"""The Dagster code location: ``dagster dev -w workspace.yaml`` loads ``defs`` from here."""

import dagster as dg

from assets.annotate import expression_captions, flame_parameters
from assets.annotation import ANNOTATION_ASSETS, annotation_loop_job, new_annotations, refresh_annotations_job
from assets.asd import active_speakers
from assets.executors import build_executor
from assets.faces import face_clips
from assets.partitions import PER_SOURCE_GROUPS
from assets.resources import PipelineSettings
from assets.shards import dataset_shards, every_source_accounted_for, shards_open
from assets.sources import source_probe, watch_input_folder
from assets.speech import speech_analysis
from assets.storage import AtomicFilesystemIOManager
from assets.training import train_job

process_sources_job = dg.define_asset_job(
    "process_sources", selection=dg.AssetSelection.groups(*PER_SOURCE_GROUPS),
    description="Every per-source stage (probe, faces, active speakers, speech, FLAME, captions) for selected partitions.",
)
build_dataset_job = dg.define_asset_job(
    "build_dataset", selection=dg.AssetSelection.assets(dataset_shards),
    description="Pack all processed sources into shards and run the dataset checks.",
)

ALL_ASSETS = [source_probe, face_clips, active_speakers, speech_analysis, flame_parameters, expression_captions,
              dataset_shards]
ALL_CHECKS = [every_source_accounted_for, shards_open]

defs = dg.Definitions(
    assets=[*ALL_ASSETS, *ANNOTATION_ASSETS],  # annotation assets need a Label Studio server
    asset_checks=ALL_CHECKS,
    sensors=[watch_input_folder, new_annotations],
    jobs=[process_sources_job, build_dataset_job, annotation_loop_job, refresh_annotations_job,
          train_job],
    resources={"settings": PipelineSettings(), "io_manager": AtomicFilesystemIOManager()},
    executor=build_executor(),  # $TALKINGHEAD_EXECUTOR: multiprocess (default), in_process, celery, k8s
)
