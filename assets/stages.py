"""The per-source stage assets, generated from the stage registry (pipelines/registry.py).

Each asset runs its stage on one ``source_videos`` partition through the one runner. Its
``code_version`` is the stage's config fingerprint (stage version + the config sections it
reads) chained with the code versions of the stages it needs (Dagster does not pass a code
version change on to dependants by itself); each materialisation's data version is the
stage's fingerprint for that source. So after a config change the UI marks exactly that
stage and its dependants stale, and a re-run of an unchanged source is skipped by the
runner and reports ``unchanged``. The value passed between steps is a small summary;
stages read their inputs from the work folder through the runner.
"""


import dagster as dg

from assets.partitions import source_partitions
from assets.resources import PipelineSettings, StageModels, partition_source
from assets.sources import source_probe
from assets.stage_metadata import stage_metadata
from pipelines.config import PipelineConfig, load_config
from pipelines.registry import STAGES, stage
from pipelines.runner import run_stage
from pipelines.stage_spec import StageSpec, digest

# Asset key, Dagster group and kinds of each stage, in the UI's words.
ASSET_NAMES = {"faces": "face_clips", "quality": "face_quality", "asd": "active_speakers", "speech": "speech_analysis",
               "flame": "flame_parameters", "captions": "expression_captions"}
GROUPS = {"faces": "faces", "quality": "faces", "asd": "asd", "speech": "speech", "flame": "annotate", "captions": "annotate"}
KINDS = {"faces": {"onnx", "ffmpeg"}, "quality": {"ffmpeg"}, "asd": {"pytorch"}, "speech": {"pytorch"}, "flame": {"pytorch"},
         "captions": {"pytorch"}}


def code_version(spec: StageSpec, config: PipelineConfig) -> str:
    """The stage's config fingerprint and those of every stage it depends on: a config change
    gives the changed stage and each of its dependants a new code version."""
    if spec.is_root:
        return spec.config_fingerprint(config)
    return digest({"config": spec.config_fingerprint(config),
                   "needs": {need: code_version(stage(need), config) for need in spec.needs}})


def stage_asset(spec: StageSpec, config: PipelineConfig) -> dg.AssetsDefinition:
    """The partitioned asset that runs ``spec`` on one source."""
    deps = [source_probe] if spec.is_root else [ASSET_NAMES[need] for need in spec.needs]

    @dg.asset(name=ASSET_NAMES[spec.name], partitions_def=source_partitions, group_name=GROUPS[spec.name],
              kinds=KINDS[spec.name], deps=deps, code_version=code_version(spec, config),
              description=spec.description)
    def _stage(context: dg.AssetExecutionContext, settings: PipelineSettings, models: StageModels) -> dg.Output:
        run_config = settings.load()
        source = partition_source(run_config, context.partition_key)

        def progress(done_s: float, total_s: float) -> None:
            context.log.info(f"{source.relpath}: decoded {done_s:.1f} / {total_s:.1f} s")

        outcome = run_stage(spec.name, source, run_config, models.backends(run_config), progress=progress)
        context.log.info(f"{spec.name} {source.source_id}: {outcome.status} in {outcome.seconds:.2f} s")
        summary = {"stage": spec.name, "source_id": source.source_id, "status": outcome.status,
                   "fingerprint": outcome.fingerprint}
        return dg.Output(summary, data_version=dg.DataVersion(outcome.fingerprint or "disabled"),
                         metadata={"run": outcome.status, "seconds": round(outcome.seconds, 3),
                                   "fingerprint": outcome.fingerprint,
                                   **stage_metadata(outcome, run_config, context.log)})

    return _stage


def build_stage_assets(config: PipelineConfig | None = None) -> list[dg.AssetsDefinition]:
    """One asset per registered stage; code versions from ``config`` (default: the deployment's,
    $TALKINGHEAD_CONFIG), read when the code location loads."""
    config = config or load_config()
    return [stage_asset(spec, config) for spec in STAGES]


STAGE_ASSETS = build_stage_assets()
