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
from pipelines.records import ACCEPTED, SourceRecord, SourceRef
from pipelines.sources import source_dir, source_lock
from pipelines.stages import candidate_segments, write_stage_result

STAGE = "captions"


def build_captioner(config: PipelineConfig):
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

    return QwenVLCaptioner(status.path.parent, device=captions.device, max_new_tokens=captions.max_new_tokens)


def caption_cache(config: PipelineConfig):
    from pipelines.captions.cache import CaptionCache

    return CaptionCache(config.paths.data_dir / "cache" / "captions")


def run_caption_stage(source: SourceRef, record: SourceRecord, config: PipelineConfig, captioner) -> dict:
    """Caption every candidate clip and write ``captions.json``, holding the source's lock."""
    with source_lock(config, source.source_id):
        return _caption_clips(source, record, config, captioner)


def _caption_clips(source: SourceRef, record: SourceRecord, config: PipelineConfig, captioner) -> dict:
    from pipelines.captions.describe import describe_windows

    folder = source_dir(config, source.source_id)
    missing = None if captioner is not None else ModelStore(config.paths.model_dir).status(config.captions.model).detail
    cache = caption_cache(config)
    decisions = {}
    if record.status == ACCEPTED:
        for segment in candidate_segments(record, config, STAGE):
            key = segment["key"]
            if captioner is None:
                decisions[key] = {"decision": ACCEPTED, "reason": None, "numbers": {"status": "model_not_installed"},
                                  "flags": ["caption_model_not_installed"],
                                  "payload": {"status": "model not installed", "detail": missing}}
                continue
            mp4 = folder / segment["files"]["mp4"]
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
                                       window=config.captions.window_frames,
                                       samples=config.captions.frames_per_window)
            flagged = sum(bool(w["flagged"]) for w in windows)
            decisions[key] = {"decision": ACCEPTED, "reason": None,
                              "numbers": {"status": "ok", "windows": len(windows), "flagged": flagged},
                              "flags": ["caption_flagged"] if flagged else [],
                              "payload": {"status": "ok", "model": captioner.name, "windows": windows}}
    result = {"stage": STAGE, "backend": config.captions.backend, "installed": captioner is not None,
              "segments": decisions}
    write_stage_result(config, source.source_id, STAGE, result)
    return result
