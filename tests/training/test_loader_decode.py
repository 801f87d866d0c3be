"""The loader's own readers (tar headers, WAV bytes, npz arrays) agree with the reference
libraries on pipeline-written shards, and a bad sample or shard is skipped with a logged reason."""

from __future__ import annotations

import io
import json
import logging
import shutil
import tarfile

import numpy as np
import pytest
import soundfile
from training_fixtures import flame_shards_fixture, tiny_config  # noqa: F401

from pipelines.media.wav import read_wav, read_wav_float
from pipelines.schema.sample import SampleRecord
from training.config import load_run_config
from training.data import (
    Clip,
    SampleDecodeError,
    _local_tar_members,
    _npy_array,
    batches,
    cut_window,
    decode_clip,
    finite_clips,
    motion_array,
    pcm16_samples,
    shard_urls,
    train_pipeline,
)


def _data_config(tmp_path, shards, **data):
    return load_run_config(None, **tiny_config("vae", tmp_path / "run", shards, data=data)).data


def _tar_members(path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.isreg()]


def _samples(shards) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for url in shard_urls(str(shards)):
        for name, data in _tar_members(url):
            key, suffix = name.split(".", 1)
            out.setdefault(key, {"__key__": key, "__url__": url})[suffix] = data
    return out


def _write_tar(path, members: list[tuple[str, bytes]], fmt=tarfile.PAX_FORMAT):
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_the_tar_reader_returns_the_used_members_byte_for_byte(tmp_path, flame_shards, fmt):
    url = shard_urls(str(flame_shards))[0]
    members = _tar_members(url)
    used = [(n, d) for n, d in members if n.split(".", 1)[1] in ("json", "wav", "flame.npz")]
    assert len(used) == 9 and len(members) > len(used)  # mp4 and boxes.npy are left out
    assert [(f"{k}.{s}", d) for k, s, d in _local_tar_members(url, url)] == used
    # Long names (pax path records, GNU long-name blocks, the ustar prefix field) read the same way.
    folder = "d" * 120 if fmt == tarfile.USTAR_FORMAT else "d" * 40
    long = [(f"{folder}/{'k' * (150 if fmt != tarfile.USTAR_FORMAT else 20)}{n}", d) for n, d in members]
    path = _write_tar(tmp_path / "long.tar", long, fmt)
    read = [(f"{k}.{s}", d) for k, s, d in _local_tar_members(path, str(path))]
    assert read == [(n, d) for n, d in long if n.split("/")[-1].split(".", 1)[1] in ("json", "wav", "flame.npz")]


def test_a_corrupt_or_truncated_shard_is_skipped_with_a_logged_reason(tmp_path, flame_shards, caplog):
    good = shard_urls(str(flame_shards))[0]
    folder = tmp_path / "shards"
    folder.mkdir()
    shutil.copy(good, folder / "a-good.tar")
    data = bytearray((folder / "a-good.tar").read_bytes())
    (folder / "b-truncated.tar").write_bytes(bytes(data[: len(data) // 2 + 100]))
    data[148:150] = b"77"  # first header's checksum
    (folder / "c-bad-checksum.tar").write_bytes(bytes(data))
    config = _data_config(tmp_path, str(folder / "*.tar"))
    with caplog.at_level(logging.WARNING, logger="training.data"):
        keys = [c.key for c in finite_clips(str(folder / "*.tar"), config, per_node=False)]
    # The truncated shard yields the samples that are whole before the cut, the other one nothing.
    assert keys[:3] == sorted(_samples(flame_shards)) and len(keys) < 6
    assert "b-truncated.tar" in caplog.text and "truncated" in caplog.text
    assert "c-bad-checksum.tar" in caplog.text and "checksum" in caplog.text


def test_wav_bytes_are_read_as_libsndfile_reads_them_and_others_refused(tmp_path, flame_shards):
    sample = next(iter(_samples(flame_shards).values()))
    stored, rate = read_wav(sample["wav"])
    view = pcm16_samples(sample["wav"], rate, name="k.wav")
    np.testing.assert_array_equal(view, stored)
    assert view.dtype == np.int16 and rate == 16000
    with pytest.raises(SampleDecodeError, match="expected 44100 Hz audio, got 16000 Hz"):
        pcm16_samples(sample["wav"], 44100, name="k.wav")

    def encoded(samples, sample_rate, subtype):
        buffer = io.BytesIO()
        soundfile.write(buffer, samples, sample_rate, subtype=subtype, format="WAV")
        return buffer.getvalue()

    stereo = encoded(np.stack([stored, stored], axis=1), rate, "PCM_16")
    with pytest.raises(SampleDecodeError, match="2 channel"):
        pcm16_samples(stereo, rate, name="k.wav")
    with pytest.raises(SampleDecodeError, match="24-bit"):
        pcm16_samples(encoded(stored, rate, "PCM_24"), rate, name="k.wav")
    with pytest.raises(SampleDecodeError, match="not a RIFF"):
        pcm16_samples(sample["flame.npz"], rate, name="k.wav")
    # Scaled per window: the same float32 samples as scaling the whole clip first.
    config = load_run_config(None, data={"window_frames": 48, "fps": 24, "sample_rate": rate}).data
    record = SampleRecord.load(sample["json"])
    as_int = Clip("k", np.zeros((72, 3), np.float32), view, record)
    as_float = Clip("k", np.zeros((72, 3), np.float32), read_wav_float(sample["wav"], rate), record)
    for start in (0, 7, 24):
        np.testing.assert_array_equal(cut_window(as_int, start, config)["audio"],
                                      cut_window(as_float, start, config)["audio"])


def test_npz_arrays_are_read_as_numpy_reads_them(tmp_path, flame_shards):
    sample = next(iter(_samples(flame_shards).values()))
    config = _data_config(tmp_path, flame_shards)
    with np.load(io.BytesIO(sample["flame.npz"])) as arrays:
        expected = np.concatenate([arrays[f"smooth/{g}"] for g in config.groups], axis=1)
        fortran = np.asfortranarray(arrays["smooth/expression"])
    np.testing.assert_array_equal(motion_array(sample["flame.npz"], config), expected)
    with np.load(io.BytesIO(sample["flame.npz"])) as arrays:  # deflated members go through zipfile
        compressed = io.BytesIO()
        np.savez_compressed(compressed, **{name: arrays[name] for name in arrays.files})
    np.testing.assert_array_equal(motion_array(compressed.getvalue(), config), expected)
    with pytest.raises(SampleDecodeError, match="no arrays"):
        motion_array(sample["flame.npz"], config.model_copy(update={"groups": ("expression", "teeth")}))
    for array in (fortran, fortran[:, 0].astype(">f8"), np.float32(2.5)):
        buffer = io.BytesIO()
        np.save(buffer, array)
        read = _npy_array(buffer.getvalue(), "x")
        assert read.dtype == array.dtype and read.shape == array.shape
        np.testing.assert_array_equal(read, array)


def test_a_malformed_sample_is_skipped_with_its_reason_and_the_stream_goes_on(tmp_path, flame_shards, caplog):
    samples = _samples(flame_shards)
    keys = sorted(samples)
    record = json.loads(samples[keys[0]]["json"])
    del record["video"]
    samples[keys[0]]["json"] = json.dumps(record).encode()
    samples[keys[1]]["flame.npz"] = samples[keys[1]]["flame.npz"][:1000]
    config = _data_config(tmp_path, flame_shards, fps=24, sample_rate=16000)
    with caplog.at_level(logging.WARNING, logger="training.data"):
        assert decode_clip(samples[keys[0]], config) is None
        assert decode_clip(samples[keys[1]], config) is None
        assert decode_clip(samples[keys[2]], config) is not None
    assert f"{keys[0]}: skipped:" in caplog.text and "video" in caplog.text
    assert f"{keys[1]}: skipped:" in caplog.text and "npz" in caplog.text

    # Repacked into a shard, the two bad samples never stop training: every window is the good one's.
    members = [(f"{key}.{suffix}", data) for key in keys for suffix, data in samples[key].items()
               if not suffix.startswith("__")]
    folder = tmp_path / "bad"
    folder.mkdir()
    _write_tar(folder / "shard-000000.tar", members)
    config = _data_config(tmp_path, str(folder / "*.tar"), fps=24, sample_rate=16000)
    windows = {k for _, b in zip(range(4), batches(train_pipeline(config, seed=0), config)) for k in b["key"]}
    assert windows == {keys[2]}


def test_several_windows_per_decoded_clip_are_mixed_by_the_window_buffer(tmp_path, flame_shards):
    """With a window buffer, consecutive windows come from different clips; without it a clip's
    windows_per_clip windows come in a row. Both streams are a function of the seed."""
    plain = _data_config(tmp_path, flame_shards, windows_per_clip=8, window_shuffle_buffer=1, batch_size=8)
    mixed = plain.model_copy(update={"window_shuffle_buffer": 64})
    row = next(batches(train_pipeline(plain, seed=0), plain))["key"]
    assert len(set(row)) == 1
    first = [b["key"] for _, b in zip(range(3), batches(train_pipeline(mixed, seed=0), mixed))]
    again = [b["key"] for _, b in zip(range(3), batches(train_pipeline(mixed, seed=0), mixed))]
    assert first == again and all(len(set(keys)) > 1 for keys in first)
