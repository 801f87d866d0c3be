"""Conversation samples in the loader: roles and partner streams per window, speaking-only samples
without partner, bad conversation members skipped with their reason; the fixture shards themselves."""

from __future__ import annotations

import io
import json
import logging
import tarfile

import numpy as np
import pytest
import torch
from training_fixtures import (  # noqa: F401
    WINDOW,
    conversation_shards_fixture,
    flame_shards_fixture,
    one_sample_per_shard,
    tiny_config,
)

from pipelines.fixtures.conversation_shards import scripted_speech
from pipelines.media.wav import read_wav
from pipelines.schema.conversation import (
    PARTNER_AUDIO_MEMBER,
    PARTNER_FLAME_MEMBER,
    ROLE_MEMBER,
    Role,
    role_codes,
)
from pipelines.schema.index import ShardIndex
from pipelines.schema.sample import SampleRecord
from training.config import load_run_config
from training.data import batches, collate, decode_clip, eval_pipeline, shard_urls, train_pipeline

GROUPS_WIDTH = 100 + 3 + 3 + 2 + 6 + 3


def _data(tmp_path, shards, **data):
    return load_run_config(None, **tiny_config("vae", tmp_path / "run", shards, data=data)).data


def _samples(shards) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for url in shard_urls(str(shards)):
        with tarfile.open(url) as tar:
            for member in tar.getmembers():
                key, suffix = member.name.split(".", 1)
                out.setdefault(key, {"__key__": key, "__url__": url})[suffix] = tar.extractfile(member).read()
    return out


def _npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data)) as arrays:
        return {name: arrays[name] for name in arrays.files}


def test_the_fixture_writes_the_contract_with_mirrored_roles_and_the_partners_own_audio(conversation_shards,
                                                                                      flame_shards):
    index = ShardIndex.load(conversation_shards)
    assert len(index.samples) == 3
    samples, originals = _samples(conversation_shards), _samples(flame_shards)
    first, second, alone = sorted(samples)
    records = {key: SampleRecord.load(samples[key]["json"]) for key in samples}
    assert records[first].conversation.session == records[second].conversation.session
    assert records[first].conversation.partner_key == second and records[second].conversation.partner_key == first
    roles = {key: np.load(io.BytesIO(samples[key][ROLE_MEMBER])) for key in samples}
    speaks_first, speaks_second = scripted_speech(72)
    np.testing.assert_array_equal(roles[first], role_codes(speaks_first, speaks_second))
    np.testing.assert_array_equal(roles[second], role_codes(speaks_second, speaks_first))  # mirrored
    # The partner's audio is the partner's own GRID track, muted where the partner does not speak.
    heard, rate = read_wav(samples[first][PARTNER_AUDIO_MEMBER])
    own, _ = read_wav(originals[second]["wav"])
    speaking_samples = speaks_second[(np.arange(len(own)) * 24 / rate).astype(int)]
    np.testing.assert_array_equal(heard[:len(own)][speaking_samples], own[speaking_samples])
    assert not heard[:len(own)][~speaking_samples].any()
    partner = _npz(samples[first][PARTNER_FLAME_MEMBER])
    np.testing.assert_array_equal(partner["smooth/jaw"][partner["tracked"]],
                                  _npz(originals[second]["flame.npz"])["smooth/jaw"][partner["tracked"]])
    assert records[first].conversation.partner_flame_frames == int(partner["tracked"].sum()) == 64
    assert PARTNER_FLAME_MEMBER not in samples[alone] and records[alone].conversation.partner_flame_frames == 0
    seconds = records[first].conversation.role_seconds
    assert (seconds.speaking, seconds.listening, seconds.both, seconds.silent) == pytest.approx((32 / 24, 1, 8 / 24,
                                                                                                8 / 24))


def test_windows_carry_roles_and_the_partner_streams_of_their_span(tmp_path, conversation_shards):
    config = _data(tmp_path, conversation_shards, batch_size=8)
    samples = _samples(conversation_shards)
    seen = set()
    for _, batch in zip(range(3), batches(train_pipeline(config, seed=0), config)):
        _check_windows(batch, samples, config, seen)
    assert seen == {"seen", "heard only"}


def _check_windows(batch: dict, samples: dict, config, seen: set) -> None:
    assert batch["partner_motion"].shape == (8, WINDOW, GROUPS_WIDTH)
    assert batch["partner_audio"].shape == batch["audio"].shape and batch["role"].dtype == torch.int8
    for row, (key, start) in enumerate(zip(batch["key"], batch["start"].tolist())):
        members, end = samples[key], start + WINDOW
        np.testing.assert_array_equal(batch["role"][row].numpy(), np.load(io.BytesIO(members[ROLE_MEMBER]))[start:end])
        heard, rate = read_wav(members[PARTNER_AUDIO_MEMBER])
        a0 = round(start * rate / 24)
        np.testing.assert_array_equal(batch["partner_audio"][row].numpy(), heard[a0:a0 + WINDOW * rate // 24] / 32768.0)
        assert batch["has_partner"][row]
        if PARTNER_FLAME_MEMBER in members:
            arrays = _npz(members[PARTNER_FLAME_MEMBER])
            expected = np.concatenate([arrays[f"smooth/{g}"] for g in config.groups], axis=1)[start:end]
            np.testing.assert_array_equal(batch["partner_motion"][row].numpy(), expected)
            np.testing.assert_array_equal(batch["partner_tracked"][row].numpy(), arrays["tracked"][start:end])
            seen.add("seen")
        else:  # heard, never seen: zero motion, nothing tracked
            assert not batch["partner_motion"][row].any() and not batch["partner_tracked"][row].any()
            seen.add("heard only")


def test_a_speaking_only_sample_is_all_speaking_without_partner(tmp_path, flame_shards, conversation_shards):
    config = _data(tmp_path, flame_shards)
    batch = next(batches(train_pipeline(config, seed=0), config))
    assert (batch["role"] == int(Role.SPEAKING)).all() and not batch["has_partner"].any()
    assert not {"partner_audio", "partner_motion", "partner_tracked"} & batch.keys()  # no zeros shipped
    # Beside a conversation window, a speaking-only window's partner rows are zeros, untracked.
    speaking = next(iter(train_pipeline(config, seed=0)))
    conversation = next(iter(train_pipeline(_data(tmp_path, conversation_shards), seed=0)))
    mixed = collate([speaking, conversation])
    assert mixed["has_partner"].tolist() == [False, True] and mixed["role"][0].eq(int(Role.SPEAKING)).all()
    assert not mixed["partner_audio"][0].any() and not mixed["partner_motion"][0].any()
    assert not mixed["partner_tracked"][0].any() and mixed["partner_audio"][1].any()
    assert mixed["partner_motion"].shape == mixed["motion"].shape


def test_loader_workers_hand_over_the_conversation_fields_unchanged(tmp_path, conversation_shards):
    """Shared-memory ring buffers (RingCollate) and the main process's copies carry every new field."""
    folder = one_sample_per_shard(conversation_shards, tmp_path / "split")
    out = {}
    for workers in (0, 2):
        config = _data(tmp_path, folder, window_frames=24, batch_size=2, num_workers=workers)
        out[workers] = {(k, s): {name: b[name][row].clone() for name in
                                 ("role", "partner_audio", "partner_motion", "partner_tracked", "has_partner")}
                        for b in batches(eval_pipeline(str(folder), config), config, keep_last=True)
                        for row, (k, s) in enumerate(zip(b["key"], b["start"].tolist()))}
    assert out[0].keys() == out[2].keys() and len(out[0]) == 9
    for window, fields in out[0].items():
        assert all(torch.equal(fields[name], out[2][window][name]) for name in fields), window


def _bad(samples: dict, key: str, **members) -> dict:
    sample = dict(samples[key])
    for name, data in members.items():
        name = name.replace("__", ".")
        if data is None:
            sample.pop(name, None)
        else:
            sample[name] = data
    return sample


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _wav(samples: np.ndarray, rate: int) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def _record_without_conversation(data: bytes) -> bytes:
    record = json.loads(data)
    del record["conversation"]
    return json.dumps(record).encode()


def test_bad_conversation_members_skip_the_sample_with_a_specific_reason(tmp_path, conversation_shards, caplog):
    samples = _samples(conversation_shards)
    first, _, alone = sorted(samples)
    config = _data(tmp_path, conversation_shards, fps=24, sample_rate=16000)
    roles = np.load(io.BytesIO(samples[first][ROLE_MEMBER]))
    heard, rate = read_wav(samples[first][PARTNER_AUDIO_MEMBER])
    partner = _npz(samples[first][PARTNER_FLAME_MEMBER])
    lying = dict(partner, tracked=partner["tracked"].copy())
    lying["tracked"][0] = False  # one frame fewer than the record says
    short = {name: array[:60] for name, array in partner.items()}
    cases = {
        "shape (71,), expected (72,)": _bad(samples, first, role__npy=_npy(roles[:71])),
        "role codes must be integers in 0..3": _bad(samples, first, role__npy=_npy(np.where(roles == 0, 7, roles))),
        "expected 16000 Hz audio, got 8000 Hz": _bad(samples, first, partner__wav=_wav(heard[::2], 8000)),
        f"{len(heard) - 10} samples, the actor's wav has {len(heard)}": _bad(samples, first,
                                                                             partner__wav=_wav(heard[:-10], rate)),
        "arrays of (60, 117)": _bad(samples, first, partner__flame__npz=_npz_bytes(short)),
        "63 tracked frames, the record's conversation.partner_flame_frames says 64": _bad(
            samples, first, partner__flame__npz=_npz_bytes(lying)),
        "dtype float64, expected bool": _bad(samples, first, partner__flame__npz=_npz_bytes(
            dict(partner, tracked=partner["tracked"].astype(float)))),
        "but the record has no 'conversation' section": _bad(
            samples, first, json=_record_without_conversation(samples[first]["json"])),
        "there is no role.npy": _bad(samples, first, role__npy=None),
        "partner.wav absent but the record's conversation.partner_audio is 'own_microphone'": _bad(
            samples, alone, partner__wav=None),
    }
    for reason, sample in cases.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="training.data"):
            assert decode_clip(sample, config) is None, reason
        assert f"{sample['__key__']}: skipped:" in caplog.text and reason in caplog.text, (reason, caplog.text)
    assert decode_clip(samples[first], config) is not None and decode_clip(samples[alone], config) is not None


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_a_bad_conversation_sample_never_stops_the_stream(tmp_path, conversation_shards):
    samples = _samples(conversation_shards)
    keys = sorted(samples)
    samples[keys[0]][ROLE_MEMBER] = _npy(np.full(72, 9, np.int8))
    folder = tmp_path / "bad"
    folder.mkdir()
    with tarfile.open(folder / "shard-000000.tar", "w") as tar:
        for key in keys:
            for suffix, data in samples[key].items():
                if not suffix.startswith("__"):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    config = _data(tmp_path, str(folder / "*.tar"), fps=24, sample_rate=16000)
    windows = {k for _, b in zip(range(4), batches(train_pipeline(config, seed=0), config)) for k in b["key"]}
    assert windows == set(keys[1:])
