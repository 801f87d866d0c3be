"""SyncNet (pipelines/asd/syncnet.py) to the published interface of github.com/joonson/syncnet_python
@6efbb1c: the network's state dict layout, the crops and windows, the offset/confidence formulas,
and (only where <model_dir>/syncnet/syncnet_v2.model exists) the real model through the ASD stage."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import pipelines.fixtures.media as mf
from pipelines.asd import syncnet as sn
from pipelines.asd.stage import ScoredSegment, decide, syncnet_measure, syncnet_weights
from pipelines.config import SyncConfig, load_config
from pipelines.models import REGISTRY, ModelStore
from pipelines.schema.records import ACCEPTED, REJECTED, Segment

THRESHOLD = SyncConfig().syncnet_min_confidence  # LatentSync's 3 (pipelines/config.py)


# ---- (a) the network, its weights layout, its inputs ------------------------------------------


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    """Random ``S`` weights saved as a plain state dict, the layout syncnet_v2.model has
    (loadParameters, SyncNetInstance.py:201-208, copies keys into S().state_dict() by name)."""
    torch.manual_seed(0)
    net = sn.build_network()
    for module in net.modules():  # non-trivial BatchNorm statistics, so eval mode is exercised
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"
    torch.save(net.state_dict(), path)
    return path


def test_the_network_has_the_published_keys_and_shapes():
    state = sn.build_network().state_dict()
    # SyncNetModel.py:24-101: the convolutions sit at Sequential indices 0, 4, 8, 11, 14, 18.
    assert state["netcnnaud.0.weight"].shape == (64, 1, 3, 3)
    assert state["netcnnaud.4.weight"].shape == (192, 64, 3, 3)
    assert state["netcnnaud.18.weight"].shape == (512, 256, 5, 4)
    assert state["netcnnlip.0.weight"].shape == (96, 3, 5, 7, 7)
    assert state["netcnnlip.4.weight"].shape == (256, 96, 1, 5, 5)
    assert state["netcnnlip.18.weight"].shape == (512, 256, 1, 6, 6)
    assert state["netfcaud.0.weight"].shape == (512, 512) and state["netfcaud.3.weight"].shape == (1024, 512)
    assert state["netfclip.1.running_var"].shape == (512,) and state["netfclip.3.bias"].shape == (1024,)
    assert {k.split(".")[0] for k in state} == {"netcnnaud", "netfcaud", "netcnnlip", "netfclip"}
    params = sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k)
    convs = [k for k in state if k.endswith(".weight") and state[k].ndim >= 4]
    assert len(convs) == 12 and params > 10_000_000


def test_stand_in_weights_load_strictly_and_a_renamed_key_is_refused(stand_in, tmp_path):
    net = sn.load_syncnet(stand_in)
    assert not net.training
    saved = torch.load(stand_in, weights_only=True)
    for key, value in net.state_dict().items():
        assert torch.equal(value, saved[key]), key
    # A 2016-era file has no num_batches_tracked buffers: accepted (never read at inference).
    old = {k: v for k, v in saved.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.model")
    sn.load_syncnet(tmp_path / "old.model")
    renamed = dict(saved)
    renamed["netcnnlip.0.kernel"] = renamed.pop("netcnnlip.0.weight")
    torch.save(renamed, tmp_path / "renamed.model")
    with pytest.raises(sn.SyncNetWeightsError, match=r"missing \['netcnnlip.0.weight'\].*unexpected \['netcnnlip.0.kernel'\]"):
        sn.load_syncnet(tmp_path / "renamed.model")
    prefixed = {f"__S__.{k}": v for k, v in saved.items()}
    torch.save(prefixed, tmp_path / "prefixed.model")
    with pytest.raises(sn.SyncNetWeightsError, match="not the syncnet_v2.model layout"):
        sn.load_syncnet(tmp_path / "prefixed.model")
    reshaped = dict(saved)
    reshaped["netfcaud.3.weight"] = torch.zeros(512, 512)
    torch.save(reshaped, tmp_path / "reshaped.model")
    with pytest.raises(sn.SyncNetWeightsError, match="netfcaud.3.weight"):
        sn.load_syncnet(tmp_path / "reshaped.model")


def test_the_crop_follows_the_authors_rule():
    """run_pipeline.py:134-147: rows [y - s, y + 1.8s), columns [x - 1.4s, x + 1.4s) of the frame padded
    by int(1.8s) with 110, resized to 224; the frame here encodes each pixel's row and column."""
    rows, cols = np.meshgrid(np.arange(300), np.arange(400), indexing="ij")
    frame = np.stack([rows % 256, cols % 256, np.full_like(rows, 7)], axis=-1).astype(np.uint8)
    s, x, y = 50.0, 120.0, 150.0  # every source pixel read has row, column < 256
    crop = sn.face_crop_224(frame, s, x, y)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    # The crop spans 2.8s = 140 px both ways: pixel (i, j) comes from row y - s + i * 140 / 224.
    assert abs(int(crop[0, 0, 0]) - (150 - 50)) <= 1 and abs(int(crop[0, 0, 1]) - (120 - 70)) <= 1
    assert abs(int(crop[223, 223, 0]) - (150 + 90 - 1)) <= 1 and abs(int(crop[223, 223, 1]) - (120 + 70 - 1)) <= 1
    corner = sn.face_crop_224(frame, s, 20.0, 20.0)  # the box at the corner: grey padding above and left
    assert (corner[0, 0] == 110).all() and (corner[-1, -1] != 110).any()


def test_sampling_24_fps_at_25_by_time():
    at = sn.frames_at_25(72, 24.0)  # 3 s
    assert len(at) == 75 and at[0] == 0 and at[-1] == 71
    assert np.all(np.diff(at) >= 0) and np.sum(np.diff(at) == 0) == 3  # 3 of 72 frames shown twice


@pytest.fixture(scope="module")
def grid_track(grid_asd_run):
    """A real GRID clip after our face stage: its folder and first segment (384 px, 24 fps, boxes)."""
    run = grid_asd_run
    folder = run.config.paths.work_dir / "sources" / run.ref.source_id
    segment = run.record.accepted_segments()[0]
    return run.config, folder, segment


def test_stand_in_reads_a_real_grid_clip_in_the_published_shapes(stand_in, grid_track):
    cfg, folder, segment = grid_track
    from pipelines.asd.stage import face_track_25, shifted_audio
    from pipelines.faces.crop import boxes_in_crop
    from pipelines.media.decode import iter_video_frames

    boxes = boxes_in_crop(np.load(folder / segment.files["boxes.npy"]), cfg.crops.size_px)
    video = sn.face_video_25(iter_video_frames(folder / segment.files["mp4"]), boxes, cfg.crops.fps)
    faces25, n = face_track_25(folder, segment, cfg)
    # SyncNetInstance.py:73-77: frames (T, H, W, 3) as cv2 reads them (BGR uint8) -> (1, 3, T, 224, 224).
    assert video.shape == (len(faces25), 224, 224, 3) and video.dtype == np.uint8
    assert len(video) == int(np.floor(n / cfg.crops.fps * 25 + 1e-6))
    audio = shifted_audio(folder, segment, len(video), 0.0, cfg)
    lead = cfg.sync.max_shift_frames * 640
    own = audio[lead:lead + len(video) * 640]
    mfcc = sn.audio_mfcc(own)
    assert mfcc.shape[0] == 13 and abs(mfcc.shape[1] - len(own) / 160) <= 2  # 100 Hz (SyncNetInstance.py:84-88)
    net = sn.load_syncnet(stand_in)
    video_feat, audio_feat = sn.embeddings(net, video, own)
    count = min(len(video), len(own) // 640) - 5  # SyncNetInstance.py:97, 103
    assert video_feat.shape == audio_feat.shape == (count, 1024)
    assert video_feat.dtype == audio_feat.dtype == torch.float32
    assert torch.isfinite(video_feat).all() and video_feat.std() > 0 and audio_feat.std() > 0
    dists = sn.calc_pdist(video_feat, audio_feat)
    assert dists.shape == (2 * sn.VSHIFT + 1, count)  # torch.stack(dists, 1), SyncNetInstance.py:129-130
    reading = syncnet_measure(folder, segment, audio, len(video), cfg, stand_in)
    assert reading.curve.shape == (31,) and -15 <= reading.offset_frames <= 15
    assert reading.min_distance == pytest.approx(dists.mean(dim=1).min().item(), rel=1e-5)
    assert reading.summary()["shifts"] == list(range(-15, 16))


# ---- (b) calc_pdist and the offset/confidence formulas -------------------------------------------


def _authors_loop(feat1: torch.Tensor, feat2: torch.Tensor, vshift: int) -> torch.Tensor:
    """SyncNetInstance.py:19-31 restated as a loop (one distance vector per video window), stacked
    along dim 1 as line 130 does."""
    win = 2 * vshift + 1
    padded = torch.cat([torch.zeros(vshift, feat2.shape[1]), feat2, torch.zeros(vshift, feat2.shape[1])])
    return torch.stack([torch.nn.functional.pairwise_distance(feat1[i].expand(win, -1), padded[i:i + win])
                        for i in range(len(feat1))], 1)


def test_calc_pdist_batched_equals_the_per_window_loop():
    torch.manual_seed(1)
    video, audio = torch.randn(40, 16), torch.randn(40, 16)
    np.testing.assert_allclose(sn.calc_pdist(video, audio, 6).numpy(), _authors_loop(video, audio, 6).numpy(), rtol=1e-6)


def test_offset_and_confidence_follow_the_authors_formulas_on_constructed_curves():
    rng = np.random.default_rng(2)
    table = rng.uniform(8, 12, size=(31, 50))
    table[20] -= 3.0  # row vshift + 5 is the best
    reading = sn.offset_and_confidence(table)
    mdist = torch.from_numpy(table).mean(1)
    minval, minidx = torch.min(mdist, 0)  # SyncNetInstance.py:130-135
    theirs = 15 - int(minidx)
    assert theirs == -5 and reading.offset_frames == -theirs == 5
    assert reading.min_distance == pytest.approx(float(minval))
    assert reading.confidence == pytest.approx(float(torch.median(mdist) - minval))
    np.testing.assert_allclose(reading.curve, mdist.numpy())
    flat = sn.offset_and_confidence(np.full((7, 10), 3.0))
    assert flat.confidence == 0.0 and flat.offset_frames == -3  # ties: the first minimum, like torch.min
    with pytest.raises(ValueError):
        sn.offset_and_confidence(np.ones((30, 5)))


@pytest.mark.parametrize("delay", [5, -3, 0])
def test_audio_heard_late_reads_a_positive_offset(delay):
    """Audio embeddings that are the video's, ``delay`` windows later: the reading is +delay."""
    torch.manual_seed(3)
    video = torch.randn(60, 32)
    audio = torch.randn(60, 32)
    for i in range(60):
        if 0 <= i - delay < 60:
            audio[i] = video[i - delay]
    reading = sn.offset_and_confidence(sn.calc_pdist(video, audio).numpy())
    assert reading.offset_frames == delay and reading.confidence > 1.0


# ---- registry and the stage's rule ---------------------------------------------------------


def test_the_registry_lists_syncnet_as_optional_and_unpinned(tmp_path):
    spec = REGISTRY["syncnet"]
    assert [c.relpath for c in spec.candidates] == ["syncnet/syncnet_v2.model"] and spec.candidates[0].sha256 is None
    status = ModelStore(tmp_path).status("syncnet")
    assert status.state == "missing" and "syncnet_v2.model" in status.detail
    cfg = load_config(paths={"model_dir": tmp_path})
    assert syncnet_weights(cfg) is None
    (tmp_path / "syncnet").mkdir()
    (tmp_path / "syncnet" / "syncnet_v2.model").write_bytes(b"x")
    assert ModelStore(tmp_path).status("syncnet").state == "unpinned"
    assert syncnet_weights(cfg) == tmp_path / "syncnet" / "syncnet_v2.model"


def _scored(reading, frames: int = 48) -> ScoredSegment:
    segment = Segment(key="s0", track_id=0, start_s=0.0, end_s=frames / 24, status=ACCEPTED, numbers={})
    times = (np.arange(frames) + 0.5) / 24
    return ScoredSegment(segment, times, np.full(frames, 0.9), np.full(frames, 0.9), None, reading)



def test_syncnet_confidence_decides_the_mismatch_and_is_recorded(tmp_path):
    cfg = load_config(paths={"model_dir": tmp_path})
    curve = np.linspace(10, 12, 31)
    low = sn.SyncNetReading(offset_frames=1, min_distance=9.0, confidence=THRESHOLD - 0.5, curve=curve)
    high = sn.SyncNetReading(offset_frames=1, min_distance=7.0, confidence=THRESHOLD + 0.5, curve=curve)
    far = sn.SyncNetReading(offset_frames=9, min_distance=7.0, confidence=8.0, curve=curve)
    (rejected,) = decide([_scored(low)], cfg, tmp_path)[0].values()
    assert rejected.decision == REJECTED and rejected.reason == "av_sync_mismatch"
    assert rejected.numbers["av_syncnet_confidence"] == pytest.approx(2.5)
    assert rejected.payload["av_sync_decided_by"]["mismatch"] == "syncnet"
    (kept,) = decide([_scored(high)], cfg, tmp_path)[0].values()
    assert kept.decision == ACCEPTED and kept.numbers["av_syncnet_offset_frames"] == 1
    assert kept.payload["av_syncnet_curve"]["mean_distance"][0] == 10.0
    (too_far,) = decide([_scored(far)], cfg, tmp_path)[0].values()
    assert too_far.reason == "av_offset_too_large"
    (plain,) = decide([_scored(None)], cfg, tmp_path)[0].values()  # no SyncNet: nothing of it recorded
    assert plain.decision == ACCEPTED and not any(k.startswith("av_") for k in plain.numbers)
    assert "av_sync_decided_by" not in plain.payload


# ---- (c) the real syncnet_v2.model --------------------------------------------------------------


@pytest.fixture(scope="module")
def real_weights(model_dir) -> Path:
    path = model_dir / "syncnet" / "syncnet_v2.model"
    if not path.is_file():
        pytest.skip(f"SyncNet weights not in the model dir ({path} missing; download_model.sh of "
                    "joonson/syncnet_python fetches them)")
    if not (model_dir / "light-asd" / "pretrain_AVA_CVPR.model").is_file():
        pytest.skip("Light-ASD weights not in the model dir")
    return path


def _delayed(clip: Path, out: Path, offset_ms: int) -> Path:
    mf.run_ffmpeg(["-i", str(clip), "-map", "0:v", "-map", "0:a", "-af", f"adelay={offset_ms}:all=1", "-t", "3.0",
                   *mf.H264_AAC, str(out)])
    return out


@pytest.fixture(scope="module")
def real_run(real_weights, tmp_path_factory, composed, grid_clips, model_dir, scrfd_detector):
    from pipelines.runner import run_source
    from stage_fixtures import SharedDetectorBackends, scan

    root = tmp_path_factory.mktemp("syncnet-real")
    (root / "input").mkdir()
    clip, other = grid_clips[1], grid_clips[0]
    stranger_wav = composed.get("stranger_voice.wav", lambda out: (mf.run_ffmpeg(
        ["-i", str(other), "-vn", "-ac", "1", "-ar", "16000", str(out)]) or out))
    sources = {"own.mp4": clip,
               "late.mp4": composed.get("syncnet_late200.mp4", _delayed, clip, offset_ms=200),
               "stranger.mp4": composed.get("stranger.mp4", mf.dubbed, clip, stranger_wav, lead_in_s=0.0, loops=0)}
    for name, path in sources.items():
        shutil.copyfile(path, root / "input" / name)
    cfg = load_config(paths={"input_dir": root / "input", "data_dir": root / "data", "model_dir": model_dir},
                      speech={"enabled": False}, flame={"enabled": False}, captions={"enabled": False},
                      sync={"enabled": True})
    backends = SharedDetectorBackends(cfg, scrfd_detector)
    out = {}
    for name, ref in scan(cfg).items():
        outcomes = run_source(ref, cfg, backends, stages=["asd"])
        (decision,) = outcomes[-1].result.segments.values()
        out[name] = decision
    return out


def test_real_syncnet_reads_a_grid_clip_in_sync_and_200_ms_late(real_run):
    own, late = real_run["own.mp4"], real_run["late.mp4"]
    print(f"\nown: {own.numbers.get('av_syncnet_offset_frames')} conf {own.numbers.get('av_syncnet_confidence')}; "
          f"late: {late.numbers.get('av_syncnet_offset_frames')} conf {late.numbers.get('av_syncnet_confidence')}")
    assert abs(own.numbers["av_syncnet_offset_frames"]) <= 1
    assert own.numbers["av_syncnet_confidence"] >= THRESHOLD and own.decision == ACCEPTED
    assert abs(late.numbers["av_syncnet_offset_frames"] - 5) <= 1
    assert own.payload["av_sync_decided_by"]["mismatch"] == "syncnet"


def test_real_syncnet_rejects_a_strangers_voice(real_run):
    stranger = real_run["stranger.mp4"]
    print(f"\nstranger: {stranger.reason} conf {stranger.numbers.get('av_syncnet_confidence')}")
    assert stranger.decision == REJECTED and stranger.reason == "av_sync_mismatch"
    assert stranger.numbers["av_syncnet_confidence"] < THRESHOLD
