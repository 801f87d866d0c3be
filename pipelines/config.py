"""One validated configuration object holding every threshold and path.

Load it with :func:`load_config` (YAML file and/or environment variables); every stage
takes the sub-config it needs. ``config/example.yaml`` documents each field.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, field_validator, model_validator

from pipelines.schema.base import StrictModel

CONFIG_ENV = "TALKINGHEAD_CONFIG"
MODEL_DIR_ENV = "TALKINGHEAD_MODEL_DIR"
DATA_DIR_ENV = "TALKINGHEAD_DATA_DIR"
INPUT_DIR_ENV = "TALKINGHEAD_INPUT_DIR"

# Light-ASD's MFCC features and Whisper (with the VAD and diarization models) all take 16 kHz audio.
AUDIO_SAMPLE_RATE_HZ = 16000
# Frame rate of every output clip; the ASD stage resamples to its own 25 fps by time.
OUTPUT_FPS = 24.0


class PathsConfig(StrictModel):
    input_dir: Path = Field(Path("data/input"), description="Folder watched for source videos.")
    data_dir: Path = Field(Path("data"), description="Root for work files, shards and reports.")
    model_dir: Path = Field(Path("models"), description="Folder holding model weights (see `talkinghead models status`).")

    @field_validator("input_dir", "data_dir", "model_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Resolve once at load time so a later chdir cannot move outputs.
        return Path(value).expanduser().resolve()

    @property
    def work_dir(self) -> Path:
        return self.data_dir / "work"

    @property
    def shards_dir(self) -> Path:
        return self.data_dir / "shards"

    @property
    def registry_path(self) -> Path:
        return self.data_dir / "sources.json"


class IngestConfig(StrictModel):
    extensions: tuple[str, ...] = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".m4v")
    min_duration_s: float = Field(0.5, gt=0, description="Sources shorter than this are rejected.")
    min_decoded_fraction: float = Field(
        0.9, gt=0, le=1, description="Reject as truncated when less than this share of the declared duration decodes."
    )
    # The face stage streams, but the speech stage holds a source's 16 kHz audio in memory
    # (about 0.35 GB per hour as float32, more inside the models) and its CPU time grows with
    # length: longer recordings are rejected from the header, before any decode. Split them
    # upstream, or raise the limit on a machine sized for it.
    max_duration_s: float = Field(3600.0, gt=0, description="Sources longer than this are rejected (source_too_long).")
    # Frames are buffered for the gap bridging and the crop smoothing (about 1.2 s of frames):
    # at 8K that is ~100 MB a frame, several GB per track. 4K UHD is the largest accepted.
    max_frame_pixels: int = Field(
        3840 * 2160, ge=1, description="Sources with more pixels per frame are rejected (resolution_too_large)."
    )


class FaceDetectionConfig(StrictModel):
    backend: Literal["scrfd", "mediapipe"] = "scrfd"
    score_threshold: float = Field(0.5, ge=0, le=1)
    scrfd_input_size: int = Field(640, description="SCRFD letterbox size; the mirrored ONNX files are fixed at 640.")
    scrfd_fit_input: bool = Field(
        True, description="Run SCRFD at the detection frame's own size (sides rounded up to 32, never above "
        "scrfd_input_size) instead of letterboxing every frame into the scrfd_input_size square: no padding "
        "computed, no small source enlarged (bench/results/detector_input.md).")
    mediapipe_model: Literal["short_range", "full_range"] = "short_range"
    min_face_size_px: int = Field(24, ge=1, description="Detections whose longer side is smaller are ignored.")
    detection_frame_px: int = Field(
        640, ge=32, description="The detector and the shot detector see each frame shrunk (by libswscale, while "
                                "decoding) to at most this on its longer side, never enlarged; crops, sharpness "
                                "and boxes stay in source pixels.")
    device: Literal["cpu", "cuda"] = Field(
        "cpu", description="SCRFD runs on onnxruntime's CUDA provider when cuda (needs onnxruntime-gpu); "
                           "MediaPipe's Python detector runs on the CPU only and refuses cuda.")


class TrackingConfig(StrictModel):
    iou_threshold: float = Field(0.3, gt=0, le=1, description="Minimum IoU to continue a track.")
    max_gap_s: float = Field(
        1.0, ge=0, description="A face missing for longer than this ends its track (24 frames at 24 fps)."
    )
    min_segment_s: float = Field(1.0, gt=0, description="Face segments shorter than this are rejected.")


class ShotConfig(StrictModel):
    """Shot cuts, found in the face stage's one decode: a face track never crosses one."""

    detector: Literal["content", "adaptive", "hash", "histogram", "none"] = Field(
        "content", description="PySceneDetect whole-frame detector fed the decoded frames; none: only the face check.")
    threshold: float | None = Field(
        None, gt=0, description="The detector's own threshold; null: PySceneDetect's default for that detector.")
    min_shot_s: float = Field(0.5, ge=0, description="Cuts closer than this to the previous one are ignored.")
    analysis_width_px: int = Field(
        320, ge=32, description="Frames are shrunk to this width before the whole-frame detector sees them.")
    face_check: bool = Field(
        True, description="End a track where its face changes abruptly (another person framed alike after a cut).")
    max_face_distance: float = Field(
        0.13, gt=0, description="Appearance distance between a track's face and the new detection above which the "
        "detection starts a new track (see pipelines/faces/shots.py for the measure and its calibration).")


class DetectionScheduleConfig(StrictModel):
    """Face detection on a schedule in the face stage (pipelines/faces/schedule.py): the detector runs on
    every ``every_k``-th frame and at shot cuts, boxes in between are interpolated; an interval whose two
    ends disagree (a face appears or goes, moves fast, scores low, changes) is detected frame by frame."""

    enabled: bool = Field(True, description="false: the detector runs on every decoded frame.")
    every_k: int = Field(
        5, ge=1, description="Detect every k-th frame; 1 is every frame. 5: the fastest that changed nothing measured "
        "on the GRID clips and the composed cases (bench/results/detect_schedule.md).")
    min_interval_iou: float = Field(
        0.6, gt=0, le=1, description="A face's boxes at the two ends of an interval must overlap at least this for "
        "the frames between to be interpolated; less is fast motion: those frames are detected.")
    min_score: float = Field(
        0.6, ge=0, le=1, description="Both ends' detector scores at least this, else the interval is detected "
        "frame by frame (a face near faces.score_threshold may drop out in between).")


class QualityConfig(StrictModel):
    """Per-frame face quality gates applied to the face segments (pipelines/quality)."""

    enabled: bool = True
    max_upscale: float = Field(
        4.0, gt=0, description="Frames whose crop is enlarged more than this to reach crops.size_px fail "
        "(upscale = size_px / crop side in source pixels; 4 keeps faces of 64 px and more in the source).")
    size_policy: Literal["reject", "flag"] = Field(
        "reject", description="reject: frames over max_upscale are cut out; flag: kept and flagged.")
    min_sharpness: float = Field(
        40.0, ge=0, description="Frames whose face sharpness (pipelines/faces/quality.py) is below this fail. GRID as "
        "recorded: 82-183; after a Gaussian blur of sigma 2: 14-31 (bench/measure_face_quality.py).")
    allowed_orientations: tuple[Literal["frontal", "side", "profile"], ...] = Field(
        ("frontal", "side"), description="Head orientation labels that pass (FlowPortrait keeps frontal and side).")
    frontal_max_yaw_deg: float = Field(30.0, gt=0, description="|yaw| up to this is frontal (Hallo keeps under 30).")
    side_max_yaw_deg: float = Field(60.0, gt=0, description="|yaw| up to this is side; beyond, profile.")
    max_pitch_deg: float = Field(
        40.0, gt=0, description="|pitch| beyond this labels the frame side at best (a head tipped far up or down).")
    direction_sidecar: bool = Field(
        True, description="<video>.directions.json beside a source overrides the estimated orientation labels.")
    smoothing_window_s: float = Field(
        0.5, ge=0, description="Per-frame pass/fail is a majority over this centred window, so one bad frame "
        "does not cut a clip.")
    min_segment_s: float = Field(1.0, gt=0, description="Passing runs shorter than this are dropped.")


class SyncConfig(StrictModel):
    """Audio-video offset per speaking segment (run inside the ASD stage, pipelines/asd/sync.py):
    the lip-energy correlation peak within reach of Light-ASD's shifted-audio curve."""

    enabled: bool = True
    max_shift_frames: int = Field(8, ge=1, description="Audio shifts tried: -N..+N frames at 25 fps.")
    max_offset_frames: int = Field(
        6, ge=0, description="Clips whose best offset is further than this are rejected (LatentSync: 6 frames).")
    min_confidence: float = Field(
        0.0, ge=0, description="Offset-curve peak over the rest of it below this: rejected av_sync_mismatch (a voice "
        "that is not this face's). 0 = off: on GRID a stranger's voice scores within the matched range.")
    correction: Literal["shift", "flag"] = Field(
        "shift", description="shift: write the clip's audio moved to zero offset; flag: keep it as is, flagged.")
    syncnet_min_confidence: float = Field(
        3.0, ge=0, description="With SyncNet weights in <model_dir>/syncnet, clips whose SyncNet confidence (median "
        "minus minimum distance over +-15 shifts) is below this are rejected av_sync_mismatch; LatentSync keeps "
        "conf >= 3 (preprocess/sync_av.py).")
    min_correction_s: float = Field(
        0.042, ge=0, description="Offsets smaller than this are left alone: about one 24 fps frame, the measure's "
        "accuracy on GRID (worst error 26 ms over 18 readings, bench/bench_sync.py).")


class CropConfig(StrictModel):
    scale: float = Field(1.5, ge=1.0, description="The square's side is the box's longer side times this.")
    size_px: int = Field(384, ge=16)
    fps: float = Field(OUTPUT_FPS, gt=0)
    smoothing_window_s: float = Field(
        0.4, ge=0, description="Centred moving-average window over crop centre and side, so crops do not jitter."
    )


class AudioConfig(StrictModel):
    sample_rate: int = AUDIO_SAMPLE_RATE_HZ
    channels: Literal[1] = 1

    @field_validator("sample_rate")
    @classmethod
    def _models_need_16k(cls, value: int) -> int:
        if value != AUDIO_SAMPLE_RATE_HZ:
            raise ValueError(f"audio.sample_rate must be {AUDIO_SAMPLE_RATE_HZ} Hz, the rate Light-ASD's MFCC "
                             f"features and Whisper take; got {value} Hz")
        return value


class EncodeConfig(StrictModel):
    video_codec: Literal["libx264"] = "libx264"
    crf: int = Field(18, ge=0, le=51)
    preset: str = "veryfast"
    # x264's output depends on its thread count: pin it so shards are byte-identical
    # across machines with different core counts.
    threads: int = Field(2, ge=1)
    audio_codec: Literal["aac"] = "aac"
    audio_bitrate: str = "64k"


class AsdConfig(StrictModel):
    """Active speaker detection with Light-ASD: keep only frames where the visible face speaks."""

    enabled: bool = True
    model: Literal["light_asd_ava", "light_asd_talkset"] = Field(
        "light_asd_ava", description="Registry name of the checkpoint (the TalkSet one is less discriminative)."
    )
    threshold: float = Field(0.5, gt=0, lt=1, description="Frames whose speaking probability is below this are dropped.")
    smoothing_window_s: float = Field(0.2, ge=0, description="Centred moving average of the probability before the threshold.")
    min_segment_s: float = Field(1.0, gt=0, description="Kept runs shorter than this are dropped.")
    turn_window_s: float = Field(
        2.5, gt=0, description="Where faces share time, each frame goes to the face with the higher mean probability "
        "over this centred window (a turn changes hands where the other face has spoken more around it).")
    min_turn_s: float = Field(
        1.0, ge=0, description="A change of speaker shorter than this is noise: it stays with the face before it.")
    window_frames: int = Field(100, ge=8, description="Inference window at 25 fps (4 s).")
    overlap_frames: int = Field(25, ge=0, description="Overlap between windows; overlapping scores are averaged.")
    device: Literal["cpu", "cuda"] = "cpu"
    batch_windows_cpu: int = Field(
        4, ge=1, description="Light-ASD windows per forward pass on CPU, gathered across a source's face tracks; "
                             "equal-length windows only (bench/results/batching.md: 1.65x on long windows).")
    batch_windows_cuda: int = Field(32, ge=1, description="Light-ASD windows per forward pass on a GPU.")


class SpeechConfig(StrictModel):
    """Speech filtering (FlowPortrait appendix B): drop overlapping or non-English speech."""

    enabled: bool = Field(True, description="Run the speech stage; its decisions gate every sample.")
    activity_backend: Literal["pyannote_segmentation", "pyannote_diarization"] = "pyannote_segmentation"
    transcription_backend: Literal["auto", "whisperx", "pocketsphinx", "none"] = Field(
        "auto", description="auto: whisperx when the Whisper folder (whisper_model) is present and verified "
        "(registered: every file's sha256; any other folder: its files exist), else pocketsphinx.")
    language_identifier: Literal["lingua", "none"] = "lingua"
    sidecar_transcripts: bool = Field(
        True, description="Use <video>.srt/.vtt/.txt beside a source as a transcript in its spoken language."
    )
    max_overlap_ratio: float = Field(0.10, ge=0, le=1, description="Overlapped / total speech above this: rejected.")
    required_language: str = Field("en", description="ISO 639-1 code a segment's speech must be in.")
    unknown_language_policy: Literal["keep", "reject"] = Field(
        "keep", description="When no backend can tell the language: keep (flagged) or reject."
    )
    min_language_confidence: float = Field(0.5, ge=0, le=1)
    min_language_chars: int = Field(20, ge=1, description="Shorter text is too little to identify a language.")
    device: Literal["cpu", "cuda"] = "cpu"
    segmentation_onset: float = Field(0.5, gt=0, lt=1, description="Speaker activation threshold.")
    segmentation_step_s: float = Field(0.5, gt=0, description="Sliding-window step of the segmentation model.")
    whisper_model: str = Field(
        "faster-whisper-base", description="Whisper (CTranslate2) folder inside the model dir; the default is the "
        "registered faster_whisper_base, sha256-pinned.")
    whisper_compute_type: str = "int8"
    whisper_batch_size: int = Field(8, ge=1)
    whisper_short_window_s: float = Field(
        10.0, ge=0, le=30, description="A clip whose speech fits in this many seconds is first encoded in a window "
        "this long instead of Whisper's 30 s (7x less encoder work at 10 s); 0: always 30 s.")
    whisper_short_window_min_probability: float = Field(
        0.8, ge=0, le=1, description="The short window is kept only when the language it gives is at least this "
        "likely; otherwise the clip is encoded again in the 30 s window.")
    alignment_model: str | None = Field(
        None, description="wav2vec2 alignment folder inside the model dir; unset: Whisper's own word timestamps.")
    diarization_pipeline: str = Field("pyannote-diarization", description="pyannote pipeline folder (config.yaml).")
    hf_token_env: str = Field("HF_TOKEN", description="Environment variable holding a Hugging Face token, if any.")


class FlameConfig(StrictModel):
    """Per-frame FLAME parameters from SHeaP, smoothed with a Savitzky-Golay filter."""

    enabled: bool = True
    model: str = Field("sheap", description="Registry name of the SHeaP TorchScript checkpoint.")
    device: Literal["cpu", "cuda"] = "cpu"
    batch_size: int = Field(32, ge=1)
    # 24 fps: a 9-frame (0.375 s) cubic window removes frame-to-frame jitter of the
    # per-frame regressor but keeps blinks (~0.1-0.4 s) and syllable-rate jaw motion (4-6 Hz).
    savgol_window_s: float = Field(0.375, gt=0, description="Savitzky-Golay window; rounded to an odd frame count.")
    savgol_polyorder: int = Field(3, ge=1, le=5)

    # Head crop from the SCRFD face box: SHeaP's video-demo crop (margin 0.9, shift 0.5 around
    # the 68 landmarks) rewritten in box units from measured box/landmark ratios; the
    # derivation and numbers are in pipelines/flame/headcrop.py (bench/measure_head_crop.py).
    head_scale: float = Field(1.43, gt=1, description="Head square side / face box longer side.")
    head_shift_up: float = Field(0.06, description="Head square centre above the box centre, in box longer sides.")
    head_smoothing_window_s: float = Field(
        0.2, ge=0, description="Centred moving average of the head square over time; 0 turns it off.")

class CaptionConfig(StrictModel):
    """One expression caption per 200-frame window from 8 frames, by a Qwen-VL model."""

    enabled: bool = True
    backend: Literal["qwen_vl", "openai_chat"] = "qwen_vl"
    model: str = Field("qwen_vl", description="Registry name of the local Qwen-VL folder (backend qwen_vl).")
    device: Literal["cpu", "cuda"] = "cpu"
    max_new_tokens: int = Field(60, ge=8)
    base_url: str = Field("http://127.0.0.1:8000/v1", description="OpenAI-compatible server (e.g. vLLM) for openai_chat.")
    served_model: str = Field("Qwen/Qwen2.5-VL-7B-Instruct", description="Model name the server knows.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the key, if any.")
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(3, ge=0)
    max_concurrency: int = Field(4, ge=1)
    window_frames: int = Field(200, ge=8)
    frames_per_window: int = Field(8, ge=1)


class ShardConfig(StrictModel):
    max_samples_per_shard: int = Field(500, ge=1)
    max_bytes_per_shard: int = Field(1_000_000_000, ge=1_000_000)
    name_pattern: str = "shard-{index:06d}.tar"
    compact_below_bytes: int = Field(
        250_000_000, ge=0, description="Compaction re-packs shards smaller than this (appends leave small shards).")
    compact_retired_share: float = Field(
        0.25, ge=0.0, le=1.0, description="Compaction re-packs shards with more than this share of samples retired.")
    publish_url: str | None = Field(
        None, description="Also copy finished shards here (s3://bucket/prefix or any fsspec URL), index.json last.")


class JudgeConfig(StrictModel):
    """Automatic (MLLM) judges scored against the human ratings."""

    backend: Literal["none", "openai_chat", "gemini"] = Field(
        "none", description="none: judge_scores records that no judge ran; openai_chat: vLLM/Qwen-VL; gemini."
    )
    base_url: str = Field("http://127.0.0.1:8000/v1", description="openai_chat server, or the Gemini API root.")
    model: str = Field("Qwen/Qwen2.5-VL-7B-Instruct", description="Model name the server knows.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the key, if any.")
    kinds: tuple[Literal["holistic", "aspects", "specialist", "pairwise_direct", "pairwise_in_context",
                         "pairwise_multi_agent"], ...] = (
        "holistic", "aspects", "specialist", "pairwise_direct", "pairwise_in_context", "pairwise_multi_agent")
    media: Literal["video", "frames"] = Field(
        "video", description="video: the clip itself, with its soundtrack where the backend hears it (Gemini, "
        "vLLM Qwen2.5-Omni/Qwen3-Omni), falling back to the clip without sound and then to frames where the "
        "server answers that it cannot take that input; frames: always frames_per_video JPEG frames.")
    frames_per_video: int = Field(8, ge=1, description="Frames sampled uniformly from each clip when the judge "
                                  "is shown frames.")
    max_output_tokens: int = Field(
        8192, ge=16, description="The model's answer budget (max_tokens / maxOutputTokens); Gemini 2.5 spends its "
        "thinking from it too, so a small budget can leave no room for the answer.")
    thinking_budget: int | None = Field(
        None, ge=0, description="gemini: generationConfig.thinkingConfig.thinkingBudget (0 turns thinking off where "
        "the model allows it); unset: the model's default.")
    pairwise_ties: bool = Field(
        False, description="Pairwise judges may answer tie; off: a forced choice, as FlowPortrait's Direct-Comp.")
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(3, ge=0)
    backoff_s: float = Field(1.0, ge=0)
    max_concurrency: int = Field(4, ge=1)
    seed: int = Field(0, description="Seeds the presentation order of compared videos.")


class GoldClip(StrictModel):
    """A clip whose rating on one aspect is known (e.g. a version with its audio shifted by a second
    has lip_sync 1): an annotator's rating within ``tolerance`` of ``score`` counts as correct."""

    sample: str
    version: str
    aspect: str = Field(description="One of annotation.aspects.ASPECTS (checked when the report is made).")
    score: int = Field(ge=1, le=5)
    tolerance: int = Field(1, ge=0, le=4, description="Largest distance from score still counted correct.")


class AnnotationConfig(StrictModel):
    """Human ratings in a local Label Studio, and the judges compared with them."""

    server_dir: Path | None = Field(None, description="Label Studio state (SQLite, logs, token); default <data_dir>/labelstudio.")
    port: int = Field(8080, ge=1, le=65535, description="Port of the local server.")
    host: str = Field("127.0.0.1", description="Address the local server binds; keep loopback behind a reverse "
                      "proxy (README), 0.0.0.0 exposes it to the network as is.")
    public_url: str | None = Field(
        None, description="The address annotators open (e.g. https://ratings.example.org behind a proxy): Label "
        "Studio's host and trusted CSRF origin; unset: reached on the bind address only.")
    url: str | None = Field(None, description="An already running server; default http://127.0.0.1:<port>.")
    token_env: str = Field("LABEL_STUDIO_API_KEY", description="Variable with the API token; else <server_dir>/api_token.")
    project_title: str = "talkinghead-ratings"
    versions_dir: Path | None = Field(
        None, description="Folder of versions to rate, <sample>/<version>.mp4; unset: the accepted clips in the shards.")
    max_versions: int = Field(4, ge=1, le=20, description="Most versions one sample may have (videos side by side).")
    annotators_per_task: int = Field(
        3, ge=1, description="Distinct annotators the queue offers each task to (the projects' maximum_annotations).")
    task_sampling: Literal["uniform", "sequential"] = Field(
        "uniform", description="Label Studio's queue order: uniform: a random task for each request (each annotator "
        "sees their own order); sequential: the import order (itself shuffled with the seed).")
    seed: int = Field(0, description="Task import order and where each version sits in the ranking view; "
                      "recorded in the blinding file.")
    min_annotators: int = Field(
        3, ge=1, description="A pair counts as unanimous (every annotator prefers the same video) only when at least "
        "this many annotators ranked it; FlowPortrait's unit is 3.")
    gold: tuple[GoldClip, ...] = Field(
        (), description="Clips with a known answer; each annotator's accuracy on them is in the agreement report.")
    judges: JudgeConfig = JudgeConfig()

    @field_validator("server_dir", "versions_dir")
    @classmethod
    def _absolute_or_none(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(value).expanduser().resolve()


class ConversationConfig(StrictModel):
    """Conversation mode (pipelines/conversation): every tracked participant is an actor with a role per frame.

    Per participant, who speaks when comes from each microphone's level (voice_margin_db and the
    noise floor below); in a shared video from the speech stage's speaker count on the mixed track
    and the voice turns (the voice_* settings from shared_video_voices on) or Light-ASD's
    probability per face (asd.threshold). Why: pipelines/conversation/roles.py and voices.py.
    """

    mode: Literal["speaking_only", "conversation"] = Field(
        "speaking_only", description="speaking_only: clips of visible speakers only (FlowPortrait's rule); "
        "conversation: each participant's continuous track with a role per frame and the partner's streams.")
    voice_margin_db: float = Field(
        15.0, gt=0, description="A microphone is voiced where its 10 ms level is this far above its noise floor.")
    noise_floor_percentile: float = Field(
        10.0, gt=0, lt=50, description="A microphone's noise floor: this percentile of its 10 ms levels (in a "
        "conversation each participant is silent far more than this share of the time).")
    min_noise_floor_dbfs: float = Field(
        -70.0, le=0, description="The noise floor is taken as no lower than this (digitally silent stretches "
        "would put it at minus infinity; any real room is louder).")
    max_pause_s: float = Field(
        0.3, ge=0, description="Unvoiced gaps shorter than this between voiced stretches are bridged (pauses "
        "between words and stop consonants).")
    min_voice_s: float = Field(0.1, ge=0, description="Voiced stretches shorter than this are dropped (clicks).")
    shared_video_voices: bool = Field(
        True, description="Shared video: who speaks when comes from voice turns (GE2E voice vectors enrolled "
        "where Light-ASD is sure, pipelines/conversation/voices.py); off: Light-ASD's probability per frame.")
    voice_window_s: float = Field(
        0.8, gt=0, description="Each time's voice vector is taken over this window centred on it.")
    voice_step_s: float = Field(0.02, gt=0, description="Voice labels are this fine around a change of voice.")
    voice_coarse_step_s: float = Field(
        0.1, gt=0, description="Voice labels are first taken this far apart; cells between two that differ "
        "are then labelled every voice_step_s.")
    voice_enroll_margin: float = Field(
        0.25, gt=0, lt=1, description="A face enrolls its voice where its Light-ASD probability exceeds every "
        "other face's by this much.")
    voice_enroll_erosion_s: float = Field(
        0.125, ge=0, description="Enrollment leaves out this much at each edge of a stretch (Light-ASD's edges "
        "are off by about 3 frames).")
    voice_enroll_share: float = Field(
        0.5, gt=0, le=1, description="... and where it reaches this share of the face's own speaking level (the "
        "95th percentile of its probability over voiced time).")
    voice_offscreen_share: float = Field(
        0.25, gt=0, lt=1, description="Voiced time where every face stays under this share of its own speaking "
        "level enrolls an off-screen voice (only beside a single face that speaks).")
    voice_min_enroll_s: float = Field(
        0.5, gt=0, description="A voice needs this much enrollment for a voiceprint; with fewer than two "
        "voiceprints the per-frame Light-ASD rule decides.")


class RuntimeConfig(StrictModel):
    """How `talkinghead run` spreads sources over processes on one machine (never changes outputs)."""

    workers: int = Field(1, ge=1, description="Worker processes, each with its own loaded models; `--workers` overrides.")
    threads_per_worker: int | None = Field(
        None, ge=1, description="CPU threads per worker for torch, onnxruntime and CTranslate2; unset: cores // workers.")


class PipelineConfig(StrictModel):
    paths: PathsConfig = PathsConfig()
    ingest: IngestConfig = IngestConfig()
    faces: FaceDetectionConfig = FaceDetectionConfig()
    tracking: TrackingConfig = TrackingConfig()
    shots: ShotConfig = ShotConfig()
    detection_schedule: DetectionScheduleConfig = DetectionScheduleConfig()
    quality: QualityConfig = QualityConfig()
    crops: CropConfig = CropConfig()
    audio: AudioConfig = AudioConfig()
    encode: EncodeConfig = EncodeConfig()
    asd: AsdConfig = AsdConfig()
    sync: SyncConfig = SyncConfig()
    speech: SpeechConfig = SpeechConfig()
    flame: FlameConfig = FlameConfig()
    captions: CaptionConfig = CaptionConfig()
    shards: ShardConfig = ShardConfig()
    annotation: AnnotationConfig = AnnotationConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    conversation: ConversationConfig = ConversationConfig()

    @model_validator(mode="after")
    def _check_crop_fps(self) -> "PipelineConfig":
        if self.tracking.min_segment_s * self.crops.fps < 1:
            raise ValueError("tracking.min_segment_s must cover at least one output frame")
        return self

    def content_hash(self) -> str:
        """Hash of every setting that changes outputs (paths and annotation excluded), recorded in each sample."""
        # Annotation settings and where shards are copied never change a sample.
        # Speaking-only mode reads none of the conversation settings: left out, so that its hash (recorded
        # in every sample) is the one it had before conversation mode existed.
        speaking_only = {"conversation": True} if self.conversation.mode == "speaking_only" else {}
        payload = self.model_dump(mode="json", exclude={"paths": True, "annotation": True, "runtime": True,
                                                     "shards": {"publish_url"}, **speaking_only})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def load_config(path: str | os.PathLike | None = None, **overrides) -> PipelineConfig:
    """Read a YAML config (argument, else $TALKINGHEAD_CONFIG, else defaults).

    Environment variables TALKINGHEAD_MODEL_DIR / _DATA_DIR / _INPUT_DIR override the
    paths section, so a deployment can move folders without editing the file.
    Relative paths are resolved against the current directory.
    """
    path = path or os.environ.get(CONFIG_ENV)
    raw: dict = {}
    if path:
        text = Path(path).read_text()
        raw = yaml.safe_load(text) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"config {path}: expected a mapping at the top level, got {type(raw).__name__}")
    paths = dict(raw.get("paths") or {})
    for env, key in ((MODEL_DIR_ENV, "model_dir"), (DATA_DIR_ENV, "data_dir"), (INPUT_DIR_ENV, "input_dir")):
        if os.environ.get(env):
            paths[key] = os.environ[env]
    paths.update(overrides.pop("paths", {}))
    raw["paths"] = paths
    for section, values in overrides.items():
        raw[section] = {**(raw.get(section) or {}), **values}
    return PipelineConfig.model_validate(raw)
