"""The caption stage for one source: one expression caption per 200-frame window of each clip.

Frames come from the clip's 384 px crop (never the source). Captions are cached by (clip
content hash, window, model, instruction version), so re-runs do not pay for them again.
Without a configured model every clip is kept and flagged "model not installed".
"""

from __future__ import annotations

from pipelines.config import PipelineConfig
from pipelines.captions.windows import caption_windows
from pipelines.media.decode import count_video_frames, iter_video_frames
from pipelines.models import ModelStore, sha256_file
from pipelines.schema.records import ACCEPTED, StageDecision, StageResult
from pipelines.stage_spec import StageContext, StageSpec

STAGE = "captions"


def build_backend(config: PipelineConfig):
    """The configured captioner, or None when its local model is not installed."""
    captions = config.captions
    if captions.backend == "openai_chat":
        from pipelines.captions.backends import OpenAIChatCaptioner

        return OpenAIChatCaptioner(captions.base_url, captions.served_model, api_key_env=captions.api_key_env,
                                   timeout_s=captions.timeout_s, max_retries=captions.max_retries,
                                   max_concurrency=captions.max_concurrency)
    store = ModelStore(config.paths.model_dir)
    status = store.status(captions.model)
    if status.state not in ("ok", "unpinned"):
        return None
    from pipelines.captions.backends import QwenVLCaptioner

    from pipelines.devices import torch_device

    return QwenVLCaptioner(status.path.parent, device=torch_device(captions.device),
                           max_new_tokens=captions.max_new_tokens)


def caption_cache(config: PipelineConfig):
    from pipelines.captions.cache import CaptionCache

    return CaptionCache(config.paths.data_dir / "cache" / "captions")


def run(ctx: StageContext) -> StageResult:
    """Caption every candidate clip, one caption per window; clips are kept and flagged when the
    captioning model is not installed."""
    from pipelines.captions.describe import describe_windows

    config, captioner = ctx.config, ctx.backend
    missing = None if captioner is not None else ModelStore(config.paths.model_dir).status(config.captions.model).detail
    cache = caption_cache(config)
    decisions = {}
    for segment in ctx.candidates:
        if captioner is None:
            decisions[segment.key] = StageDecision(
                decision=ACCEPTED, numbers={"status": "model_not_installed"}, flags=["caption_model_not_installed"],
                payload={"status": "model not installed", "detail": missing})
            continue
        mp4 = ctx.folder / segment.files["mp4"]
        # Only the frames the windows sample are kept (8 per 200), streamed from the clip.
        n_frames = count_video_frames(mp4)
        wanted = {i for _, _, indices in caption_windows(n_frames, config.captions.window_frames,
                                                         config.captions.frames_per_window) for i in indices}
        frames, decoded = {}, 0
        for decoded, frame in enumerate(iter_video_frames(mp4), start=1):
            if decoded - 1 in wanted:
                frames[decoded - 1] = frame
        if decoded != n_frames:
            raise ValueError(f"{mp4.name}: the container declares {n_frames} frames, {decoded} decoded")
        windows = describe_windows(frames.__getitem__, n_frames, captioner, cache, sha256_file(mp4),
                                   window=config.captions.window_frames, samples=config.captions.frames_per_window)
        flagged = sum(bool(w["flagged"]) for w in windows)
        decisions[segment.key] = StageDecision(
            decision=ACCEPTED, numbers={"status": "ok", "windows": len(windows), "flagged": flagged},
            flags=["caption_flagged"] if flagged else [],
            payload={"status": "ok", "model": captioner.name, "windows": windows})
    return StageResult(stage=STAGE, segments=decisions,
                       details={"backend": config.captions.backend, "installed": captioner is not None})


# Captions need the final clips (after the speaking-frame split and the speech rules), not FLAME:
# the two annotate side by side.
SPEC = StageSpec(
    name=STAGE, needs=("speech",), config_sections=("captions",), version="1", build_backend=build_backend, run=run,
    description="One expression caption per 200-frame window of each clip, cached across runs.",
)
