"""Judges that watch and listen, against a local stdlib server that records every request.

The server plays vLLM (chat-completions) or Gemini (generateContent): it decodes every video it
is sent with PyAV, and it can be a model that takes video with audio, video only, or images only,
answering a refused input the way vLLM and Gemini word it. Clips are cut from a GRID recording
with ffmpeg (H.264 + AAC).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from judge_server import LoopbackJsonServer

from annotation.aspects import ASPECTS
from annotation.judge_cache import JudgeCache
from annotation.judge_clients import GeminiVideoChatClient, VideoChatClient, make_judge_client, refused_media
from annotation.judges import HolisticJudge, PairwiseJudge, SpecialistJudge, Video
from annotation.judging import in_context_examples, run_judges, solved_pairs
from annotation.versions import VersionClip
from pipelines.chat_http import BackendError
from pipelines.config import JudgeConfig

VLLM_VIDEO_REFUSAL = "At most 0 video(s) may be provided in one prompt."
VLLM_AUDIO_REFUSAL = "At most 0 audio(s) may be provided in one prompt."
GEMINI_VIDEO_REFUSAL = "Unsupported MIME type: video/mp4"


class MediaServer(LoopbackJsonServer):
    """A model server that takes the inputs in ``takes`` ("video", "audio", "image") and refuses
    any other with its real error; records every request with the media it decoded."""

    def __init__(self, kind: str, takes=("video", "audio", "image")):
        self.kind, self.takes = kind, set(takes)
        self.requests: list[dict] = []
        super().__init__()

    # ---- what a request carries
    def videos(self, body: dict) -> list[tuple[str, bytes]]:
        """(mime type, bytes) of every video part of every turn."""
        out = []
        if self.kind == "openai":
            for m in body["messages"]:
                for p in m["content"] if isinstance(m["content"], list) else []:
                    if p.get("type") == "video_url":
                        head, data = p["video_url"]["url"].split(",", 1)
                        out.append((head.removeprefix("data:").removesuffix(";base64"), base64.b64decode(data)))
        else:
            for c in body["contents"]:
                for p in c["parts"]:
                    if "inline_data" in p and p["inline_data"]["mime_type"].startswith("video/"):
                        out.append((p["inline_data"]["mime_type"], base64.b64decode(p["inline_data"]["data"])))
        return out

    def n_images(self, body: dict) -> int:
        if self.kind == "openai":
            return sum(1 for m in body["messages"] if isinstance(m["content"], list)
                       for p in m["content"] if p.get("type") == "image_url")
        return sum(1 for c in body["contents"] for p in c["parts"]
                   if "inline_data" in p and p["inline_data"]["mime_type"] == "image/jpeg")

    def text(self, body: dict) -> str:
        if self.kind == "openai":
            return "\n".join(m["content"] if isinstance(m["content"], str)
                             else " ".join(p.get("text", "") for p in m["content"]) for m in body["messages"])
        return "\n".join(p.get("text", "") for c in body["contents"] for p in c["parts"])

    def hears_audio(self, body: dict) -> bool:
        """Whether the request asks the model to hear the videos' sound."""
        if self.kind == "openai":
            return (body.get("mm_processor_kwargs") or {}).get("use_audio_in_video") is True
        return bool(self.videos(body))  # Gemini encodes a video's audio track with its frames

    # ---- answering
    def respond(self, path, body, headers):
        videos = self.videos(body)
        decoded = []
        for mime, data in videos:
            with av.open(io.BytesIO(data)) as container:
                decoded.append({"mime": mime, "sha256": hashlib.sha256(data).hexdigest(),
                                "video_streams": len(container.streams.video),
                                "audio_streams": len(container.streams.audio),
                                "audio_codec": container.streams.audio[0].codec_context.name
                                if container.streams.audio else None})
        with self.lock:
            self.requests.append({"path": path, "body": body, "videos": decoded, "images": self.n_images(body),
                                  "hears_audio": self.hears_audio(body) and bool(videos)})
        refusal = None
        if videos and "video" not in self.takes:
            refusal = GEMINI_VIDEO_REFUSAL if self.kind == "gemini" else VLLM_VIDEO_REFUSAL
        elif videos and self.hears_audio(body) and "audio" not in self.takes:
            refusal = VLLM_AUDIO_REFUSAL
        elif self.n_images(body) and "image" not in self.takes:
            refusal = "At most 0 image(s) may be provided in one prompt."
        if refusal:
            error = ({"error": {"code": 400, "message": refusal, "status": "INVALID_ARGUMENT"}} if self.kind == "gemini"
                     else {"error": {"message": refusal, "type": "BadRequestError", "param": None, "code": 400}})
            return 400, json.dumps(error).encode()
        text = self.text(body)
        answer = '{"winner": "first"}' if '"winner"' in text else json.dumps({"score": 4, **{a: 4 for a in ASPECTS}})
        answer = "<think>watched it</think>" + answer
        if self.kind == "openai":
            return 200, json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
        return 200, json.dumps({"candidates": [{"content": {"role": "model", "parts": [{"text": answer}]}}]}).encode()


@pytest.fixture(scope="module")
def clips(tmp_path_factory, grid_dir) -> dict[str, Path]:
    """Six 1 s clips (H.264 + AAC) from two GRID recordings at different offsets: all different."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg")
    out_dir = tmp_path_factory.mktemp("media_clips")
    out = {}
    for n, (source, offset) in enumerate([("bbaf2n", 0.0), ("bbaf2n", 0.5), ("bbaf2n", 1.0),
                                          ("brbk7n", 0.0), ("brbk7n", 0.5), ("brbk7n", 1.0)]):
        path = out_dir / f"clip{n}.mp4"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-ss", str(offset), "-i", str(grid_dir / f"{source}.mpg"),
                        "-t", "1", "-vf", "scale=96:-2", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
                        "-b:a", "32k", str(path)], check=True)
        out[f"clip{n}"] = path
    return out


def cfg_for(srv: MediaServer, **overrides) -> JudgeConfig:
    base = dict(backend="openai_chat" if srv.kind == "openai" else "gemini", base_url=srv.base_url, model="omni",
                api_key_env="", timeout_s=20, max_retries=0, backoff_s=0.01, frames_per_video=3)
    return JudgeConfig(**{**base, **overrides})


@pytest.fixture
def servers():
    made = []

    def make(kind, takes=("video", "audio", "image")):
        made.append(MediaServer(kind, takes))
        return made[-1]

    yield make
    for srv in made:
        srv.close()


# ---------------------------------------------------------------- the clip with its sound

@pytest.mark.parametrize("kind", ["openai", "gemini"])
def test_the_judge_gets_the_clip_with_its_audio_track(servers, clips, kind):
    srv = servers(kind)
    backend = make_judge_client(cfg_for(srv, max_output_tokens=3000, thinking_budget=512))
    result = HolisticJudge(backend).judge(Video(clips["clip0"], transcript="bin blue at f two now"))
    assert result.overall == 4.0 and result.input == "video+audio+transcript"
    (request,) = srv.requests
    (sent,) = request["videos"]
    assert sent["sha256"] == hashlib.sha256(clips["clip0"].read_bytes()).hexdigest()
    assert sent["mime"] == "video/mp4" and sent["video_streams"] == 1
    assert sent["audio_streams"] == 1 and sent["audio_codec"] == "aac"  # the sound travels with the picture
    assert request["hears_audio"] and request["images"] == 0
    body = request["body"]
    if kind == "openai":
        assert body["mm_processor_kwargs"] == {"use_audio_in_video": True}
        assert body["max_tokens"] == 3000
        assert "thinkingConfig" not in json.dumps(body)
    else:
        assert body["generationConfig"]["maxOutputTokens"] == 3000
        assert body["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 512}
    assert "watch it and listen" in srv.text(body) and "bin blue at f two now" in srv.text(body)


def test_a_pair_is_two_clips_each_with_audio(servers, clips):
    srv = servers("openai")
    judge = PairwiseJudge(make_judge_client(cfg_for(srv)), mode="direct")
    result = judge.compare(Video(clips["clip0"]), Video(clips["clip1"]), a_first=False)
    assert result.winner == "b" and result.input == "video+audio"  # "first" shown was b
    (request,) = srv.requests
    shas = [v["sha256"] for v in request["videos"]]
    assert shas == [hashlib.sha256(clips[c].read_bytes()).hexdigest() for c in ("clip1", "clip0")]
    assert all(v["audio_streams"] == 1 for v in request["videos"])
    text = srv.text(request["body"])
    assert text.index("FIRST video:") < text.index("SECOND video:")


# ---------------------------------------------------------------- falling back

def test_video_only_model_gets_the_clip_without_sound(servers, clips):
    """vLLM serving a video model without audio refuses the audio item use_audio_in_video adds."""
    srv = servers("openai", takes=("video", "image"))
    backend = make_judge_client(cfg_for(srv))
    judge = HolisticJudge(backend)
    first = judge.judge(Video(clips["clip0"]))
    assert first.input == "video"
    assert [r["hears_audio"] for r in srv.requests] == [True, False]
    assert "mm_processor_kwargs" not in srv.requests[1]["body"] and len(srv.requests[1]["videos"]) == 1
    assert "given without its sound" in srv.text(srv.requests[1]["body"])
    assert judge.judge(Video(clips["clip1"])).input == "video"  # remembered: no second refusal
    assert len(srv.requests) == 3 and backend.media_modes == ("video", "frames")


@pytest.mark.parametrize("kind", ["openai", "gemini"])
def test_image_only_model_gets_frames_and_the_transcript(servers, clips, kind):
    srv = servers(kind, takes=("image",))
    backend = make_judge_client(cfg_for(srv, frames_per_video=3))
    judge = HolisticJudge(backend)
    result = judge.judge(Video(clips["clip0"], transcript="bin blue", n_frames=3))
    assert result.input == "frames+transcript"
    # the video refused: plain video is skipped too, straight to frames
    assert [(len(r["videos"]), r["images"]) for r in srv.requests] == [(1, 0), (0, 3)]
    assert "bin blue" in srv.text(srv.requests[-1]["body"])
    assert judge.judge(Video(clips["clip1"], n_frames=3)).input == "frames"
    assert len(srv.requests) == 3 and backend.media_modes == ("frames",)


def test_other_client_errors_are_not_taken_for_a_refusal(servers, clips):
    srv = servers("openai", takes=("video", "audio"))  # refuses images: nothing to fall back to
    backend = make_judge_client(cfg_for(srv, media="frames"))
    with pytest.raises(BackendError, match="At most 0 image"):
        HolisticJudge(backend).judge(Video(clips["clip0"]))
    assert refused_media(BackendError("x: HTTP 400 from u: max_tokens is too large")) is None
    assert refused_media(BackendError(f"x: HTTP 500 from u: {VLLM_VIDEO_REFUSAL}")) is None
    assert refused_media(BackendError(f"x: HTTP 400 from u: {VLLM_VIDEO_REFUSAL}")) == "video"
    assert refused_media(RuntimeError(VLLM_AUDIO_REFUSAL)) is None


def test_media_frames_never_sends_video(servers, clips):
    srv = servers("openai")
    result = HolisticJudge(make_judge_client(cfg_for(srv, media="frames"))).judge(Video(clips["clip0"], n_frames=3))
    assert result.input == "frames" and srv.requests[0]["videos"] == [] and srv.requests[0]["images"] == 3
    assert isinstance(make_judge_client(cfg_for(srv)), VideoChatClient)
    assert isinstance(make_judge_client(cfg_for(servers("gemini"))), GeminiVideoChatClient)


def test_specialists_say_which_input_they_got(servers, clips):
    srv = servers("openai", takes=("video", "image"))
    result = SpecialistJudge(make_judge_client(cfg_for(srv))).judge(Video(clips["clip0"]))
    # the first specialist met the refusal; all three were answered from the clip without sound
    assert result.input == "video" and len(srv.requests) == 4


# ---------------------------------------------------------------- in-context examples

def _pair(sample, winner, **gaps):
    """A solved pair a/b; ``gaps`` per aspect: how much higher the humans rated the winner."""
    means = {aspect: ([3 + gap, 3] if winner == "A" else [3, 3 + gap]) for aspect, gap in gaps.items()}
    return {"sample": sample, "a": "a", "b": "b", "winner": winner, "n_annotators": 3, "aspect_means": means}


def test_in_context_examples_one_per_aspect_from_other_samples_in_both_orders():
    # the clearest pair per aspect: lip_sync s1 (gap 2), expressiveness s2 (1.5), motion_quality s3 (1)
    solved = [_pair("s1", "A", lip_sync=2.0, expressiveness=0.5, motion_quality=0.0),
              _pair("s2", "B", lip_sync=1.0, expressiveness=1.5, motion_quality=0.5),
              _pair("s3", "A", lip_sync=0.5, expressiveness=0.5, motion_quality=1.0),
              _pair("s4", "B", lip_sync=0.2, expressiveness=0.2, motion_quality=0.2)]
    samples = [f"s{k}" for k in range(1, 5)] + [f"t{k}" for k in range(12)]
    videos = {(s, v): Video(frames=[np.zeros((4, 4, 3), np.uint8)], name=f"{s}/{v}")
              for s in samples for v in ("a", "b")}
    digests = {key: "/".join(key) for key in videos}
    picked = {}
    for sample in samples:
        examples, signature = in_context_examples(videos, digests, solved, sample, seed=3)
        assert len(examples) == 3
        sources = [sig[0].split("/")[0] for sig in signature]
        assert sample not in sources and len(set(sources)) == 3
        for example, sig in zip(examples, signature):
            source = sig[0].split("/")[0]
            winner_letter = next(p["winner"] for p in solved if p["sample"] == source)
            a_first = sig[0].endswith("/a")
            assert example.winner == ("first" if (winner_letter == "A") == a_first else "second")
            picked.setdefault(source, set()).add(a_first)
        assert in_context_examples(videos, digests, solved, sample, seed=3)[1] == signature  # seeded
    # t-samples (not solved themselves) get the clearest pair of each aspect
    examples, signature = in_context_examples(videos, digests, solved, "t0", seed=3)
    assert [sig[0].split("/")[0] for sig in signature] == ["s1", "s2", "s3"]
    assert "Lip-sync" in examples[0].explanation and "Facial expressiveness" in examples[1].explanation
    # s1's winner a was rated 3 + 2, b 3, in the order they are shown
    shown = (5.0, 3.0) if signature[0][0].endswith("/a") else (3.0, 5.0)
    assert f"mean human score {shown[0]:.1f} for the FIRST video and {shown[1]:.1f} for the SECOND" \
        in examples[0].explanation
    # across samples every example pair is shown in both orders
    assert all(orders == {True, False} for orders in picked.values()), picked
    # s1 itself borrows from the others: lip_sync's next clearest is s2
    _, own = in_context_examples(videos, digests, solved, "s1", seed=3)
    assert [sig[0].split("/")[0] for sig in own] == ["s2", "s3", "s4"]


def test_solved_pairs_carry_human_means():
    rows = []
    for annotator in ("x", "y", "z"):
        for version, rank, lip in (("a", 1, 5), ("b", 2, 2)):
            rows.append({"annotator": annotator, "sample": "s", "version": version, "aspect": "rank", "score": rank})
            rows.append({"annotator": annotator, "sample": "s", "version": version, "aspect": "lip_sync",
                         "score": lip if annotator != "z" else lip - 1})
    (pair,) = solved_pairs(rows, min_annotators=3)
    assert pair["winner"] == "A" and pair["aspect_means"] == {"lip_sync": [pytest.approx(14 / 3), pytest.approx(5 / 3)]}
    assert solved_pairs(rows, min_annotators=4) == []


# ---------------------------------------------------------------- the cache

def _human_rows(order: dict[str, tuple[str, str]], worse_lip_sync: int = 2) -> list[dict]:
    """Three annotators agreeing: per sample (better, worse) version, lip_sync 5 vs ``worse_lip_sync``."""
    rows = []
    for annotator in ("x", "y", "z"):
        for sample, (better, worse) in order.items():
            for version, rank, score in ((better, 1, 5), (worse, 2, worse_lip_sync)):
                rows.append({"annotator": annotator, "sample": sample, "version": version, "aspect": "rank",
                             "score": rank})
                rows.append({"annotator": annotator, "sample": sample, "version": version, "aspect": "lip_sync",
                             "score": score})
    return rows


def test_second_run_makes_no_calls_and_new_annotations_only_the_changed_ones(servers, clips, tmp_path):
    srv = servers("openai")
    version_clips = [VersionClip(f"s{k}", v, clips[f"clip{2 * k + j}"], None)
                     for k in range(3) for j, v in enumerate(("g1", "g2"))]
    cfg = cfg_for(srv)
    cache_path = tmp_path / "judge_cache.jsonl"
    humans = _human_rows({"s0": ("g1", "g2"), "s1": ("g1", "g2")})  # s2 not annotated yet
    first_scores, first_pairs = run_judges(version_clips, cfg, solved_pairs(humans, 3), cache=JudgeCache(cache_path))
    # 6 clips: holistic 6 + aspects 6 + specialist 18; 3 pairs: direct 3 + in-context 3 + multi-agent 12
    assert len(srv.requests) == 48
    assert not any(r["error"] for r in first_scores + first_pairs)
    assert {r["input"] for r in first_scores + first_pairs} == {"video+audio"}

    cache = JudgeCache(cache_path)
    again_scores, again_pairs = run_judges(version_clips, cfg, solved_pairs(humans, 3), cache=cache)
    assert len(srv.requests) == 48  # not one call
    assert (again_scores, again_pairs) == (first_scores, first_pairs)
    assert cache.hits == 6 * 3 + 3 * 3 and cache.misses == 0

    # s2 gets annotated with the clearest lip-sync difference (5 vs 1): the in-context judges of s0
    # and s1 now learn from s2 instead, s2's own examples are unchanged; only those 2 are asked
    humans += _human_rows({"s2": ("g2", "g1")}, worse_lip_sync=1)
    run_judges(version_clips, cfg, solved_pairs(humans, 3), cache=JudgeCache(cache_path))
    new = srv.requests[48:]
    assert len(new) == 2 and all("solved comparisons" in srv.text(r["body"]) for r in new)
    s2_clips = {hashlib.sha256(clips[c].read_bytes()).hexdigest() for c in ("clip4", "clip5")}
    for request in new:  # the example shown is s2's pair, the judged pair is not
        assert {v["sha256"] for v in request["videos"][:2]} == s2_clips
        assert not {v["sha256"] for v in request["videos"][2:]} & s2_clips

    # a failed call is not kept: asked again next time (another model: not cached yet)
    srv.takes = set()  # every request refused, frames too: nothing to fall back to
    other = cfg_for(srv, kinds=("holistic",), model="other-model")
    scores, _ = run_judges([VersionClip("s9", "g1", clips["clip5"], None)], other, cache=JudgeCache(cache_path))
    assert scores[0]["error"] and scores[0]["score"] is None
    before = len(srv.requests)
    run_judges([VersionClip("s9", "g1", clips["clip5"], None)], other, cache=JudgeCache(cache_path))
    assert len(srv.requests) == before + 2  # the clip, refused; then its frames, refused


# ---------------------------------------------------------------- the Dagster assets

def test_judge_assets_ask_once_and_report_per_annotator(servers, clips, tmp_path):
    """judge_scores twice (the second run is served from the cache) and agreement_report, on a
    versions folder and a human table as human_scores writes it, without a Label Studio."""
    dg = pytest.importorskip("dagster")
    import yaml

    from annotation.tables import HUMAN_SCORES_FILE, write_table
    from assets.annotation import agreement_report, judge_scores
    from assets.resources import PipelineSettings

    srv = servers("openai")
    versions = tmp_path / "versions"
    for sample, version, name in (("s0", "g1", "clip0"), ("s0", "g2", "clip1"), ("s1", "g1", "clip2"),
                                  ("s1", "g2", "clip3")):
        (versions / sample).mkdir(parents=True, exist_ok=True)
        shutil.copy(clips[name], versions / sample / f"{version}.mp4")
    task_ids = {("s0", "g1"): 1, ("s0", "g2"): 2, ("s1", "g1"): 3, ("s1", "g2"): 4}
    seconds = {"x": 12.0, "y": 30.0, "z": 30.0}
    humans = [dict(r, task_id=task_ids[(r["sample"], r["version"])], lead_time_s=seconds[r["annotator"]])
              for r in _human_rows({"s0": ("g1", "g2"), "s1": ("g2", "g1")})]
    write_table(tmp_path / "data" / "annotation" / HUMAN_SCORES_FILE, humans,
                ("annotator", "task_id", "sample", "version", "aspect", "score", "lead_time_s"))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"paths": {"data_dir": str(tmp_path / "data")}, "annotation": {
        "versions_dir": str(versions),
        "gold": [{"sample": "s0", "version": "g2", "aspect": "lip_sync", "score": 1, "tolerance": 1}],
        "judges": {"backend": "openai_chat", "base_url": srv.base_url, "model": "omni", "api_key_env": "",
                   "kinds": ["holistic", "pairwise_direct", "pairwise_in_context"], "timeout_s": 20,
                   "max_retries": 0}}}))
    settings = PipelineSettings(config_path=str(config))

    def meta(result, key):
        value = result.metadata[key]
        return getattr(value, "value", value)

    first = judge_scores(dg.build_asset_context(), settings)
    # 4 clips scored, 2 pairs compared directly and 2 in context (each sample learns from the other)
    assert (meta(first, "new_results"), meta(first, "cached_results"), meta(first, "failed_calls")) == (8, 0, 0)
    assert meta(first, "inputs") == "video+audio: 8" and len(srv.requests) == 8
    again = judge_scores(dg.build_asset_context(), settings)
    assert (meta(again, "new_results"), meta(again, "cached_results")) == (0, 8) and len(srv.requests) == 8

    report = agreement_report(dg.build_asset_context(), settings)
    assert meta(report, "pairs_unanimous") == 2 and meta(report, "pairs_all_tie") == 0
    # the server prefers the first video shown and scores every clip 4: ties for holistic (0.5 each)
    assert meta(report, "holistic_accuracy") == pytest.approx(0.5) and meta(report, "holistic_coverage") == 1.0
    annotators = meta(report, "annotators")
    # x spends 12 s per task, y and z 30 s; everyone gave s0/g2 lip_sync 2, within 1 of the gold 1
    assert "| x | 4 |" in annotators and "| 12.0 | 4 | 1.000 | 1 |" in annotators
    assert "| z | 4 |" in annotators and "| 30.0 | 4 | 1.000 | 1 |" in annotators
