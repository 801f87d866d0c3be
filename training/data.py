"""Shard reading: webdataset pipelines of fixed-length motion windows with aligned audio and caption.

Members used (as written by pipelines/shards.py): ``flame.npz`` (``smooth/<group>`` or
``raw/<group>``, float32 (frames, dims); of ``expression`` only the leading
``data.expression_coefficients`` columns when set), ``wav`` (16 kHz mono PCM), ``json`` (the
sample record; captions under ``captions.windows[*]``). Samples without ``flame.npz`` (FLAME model
not installed) or shorter than one window are skipped.

Conversation samples (pipelines/schema/conversation.py) add ``role.npy`` (a role code per
frame), ``partner.wav`` (the partner's audio over the same span) and ``partner.flame.npz`` (the
partner's FLAME arrays on the actor's frames, with the ``tracked`` mask). Every window carries
``role`` (frames,) int8, ``has_partner``, ``partner_audio`` (same span and length as
``audio``), ``partner_motion`` (the actor's groups and array prefix) and ``partner_tracked``
(frames,) bool. A speaking-only sample gives roles all ``SPEAKING`` and no partner:
``has_partner`` False, zeros and ``partner_tracked`` False in its batch rows; a partner heard
but never seen (no ``partner.flame.npz``) gives partner audio with zero, untracked motion. A
batch in which no window has a partner carries no partner arrays at all, only ``role`` and
``has_partner`` (zero partner audio would double the bytes a speaking-only batch is copied
with; bench/results/loader.md). Conversation members
that do not fit the sample (a role count that is not the frame count, codes outside the role
set, a partner WAV of another rate or length, partner arrays of another shape, members
without the record's ``conversation`` section or the reverse) make the sample skipped with
the reason logged.

Training streams resample shards with a seeded RNG (``ResampledShards``, deterministic; the
worker seed mixes in the node rank and worker id, so nodes and workers draw different
streams), shuffle with a seeded buffer and draw random windows with a seeded RNG (both
seeded per loader worker too, or workers reading the same shard would yield the same
windows): the stream is a pure function of (seed, rank, worker), so resuming = rebuilding it
and skipping the consumed batches. Evaluation splits shards by node and worker; statistics
read every shard on every node (each rank must normalise identically).

Frame rate and sample rate come from the data, not from constants: each sample's record states
them (``video.fps``, ``audio.sample_rate``). A run expects one pair (``data.fps`` /
``data.sample_rate`` when the config states them, else the first usable sample's, see
``resolve_rates``) and skips, with a logged reason, every sample at other rates: its windows
would cut audio of the wrong length or time span.

Reading cost (bench/bench_loader.py): local shards are read by seeking past the members the
trainer does not use (``mp4``, ``boxes.npy``, ...); only the configured ``.npy`` arrays of
``flame.npz`` are read, as views of its bytes, and the WAV is a view of its bytes (int16,
scaled per window). Each decoded clip gives ``windows_per_clip`` windows, mixed with other
clips' windows by a seeded window shuffle buffer (``window_shuffle_buffer``), so that one
decode serves several windows without a batch holding one clip's windows only. Loader
workers collate into shared-memory buffers they reuse (:class:`RingCollate`) and
:func:`batches` hands out private copies. A sample whose record, WAV or arrays cannot be read,
or a shard that is not a readable tar, is skipped with a logged reason (a run never dies of
one bad sample).

Retired samples: when the shards come from an index (a folder with ``index.json`` or a
published URL), a sample is yielded only when the index's ``samples`` maps its key to the
shard it was read from; an append-only index retires a sample by dropping or moving its key.
"""

from __future__ import annotations

import collections
import glob
import importlib
import io
import logging
import math
import os
import random
import re
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

from pipelines.schema.conversation import (
    CONVERSATION_MEMBERS,
    PARTNER_AUDIO_MEMBER,
    PARTNER_FLAME_MEMBER,
    PARTNER_TRACKED_ARRAY,
    ROLE_MEMBER,
    Role,
    check_roles,
)
from pipelines.schema.index import INDEX_FILE, ShardIndex, is_url
from pipelines.schema.sample import SampleRecord
from training.config import DataConfig

FLAME_MEMBER = "flame.npz"
EXPRESSION_GROUP = "expression"
# The members a training sample needs; the others (mp4, boxes.npy, ...) are never read.
USED_MEMBERS = frozenset({"json", "wav", FLAME_MEMBER, *CONVERSATION_MEMBERS})
# int16 full scale: stored PCM / 32768 lies in [-1, 1) (as pipelines/media/wav.read_wav_float).
PCM16_SCALE = 32768.0

log = logging.getLogger(__name__)


def _gopen_fsspec(url: str, mode: str = "rb", bufsize: int = 8192):
    import fsspec

    return fsspec.open(url, mode).open()


@dataclass(frozen=True)
class ShardSource:
    """Where a run's shards are: their paths or URLs and, when an index lists them, the live
    samples (sample key -> name of the shard holding it; None: every sample read is live)."""

    urls: list[str]
    live: dict[str, str] | None


def _remote_shard_source(spec: str) -> ShardSource:
    """Shard URLs from ``<url>/index.json`` on object storage (see pipelines/publish.py)."""
    scheme = spec.split("://", 1)[0]
    # webdataset opens file/pipe/http/gs itself; other schemes (s3, memory, ...) go through fsspec.
    importlib.import_module("webdataset.gopen").gopen_schemes.setdefault(scheme, _gopen_fsspec)
    base = spec.rstrip("/")
    if base.endswith(".tar"):
        return ShardSource([base], None)
    index = ShardIndex.load(base)
    return ShardSource(index.locations(), dict(index.samples))


def shard_source(spec: str) -> ShardSource:
    """The shards of a shard folder (its index.json), a glob, a single tar, or an object-store
    URL holding published shards (``s3://bucket/prefix``: its index.json)."""
    if is_url(spec):
        return _remote_shard_source(spec)
    spec = spec.removeprefix("file://")
    path = Path(spec)
    if path.is_dir():
        if (path / INDEX_FILE).exists():
            index = ShardIndex.load(path)
            return ShardSource(index.locations(), dict(index.samples))
        return ShardSource(sorted(str(p) for p in path.glob("*.tar")), None)
    urls = sorted(glob.glob(spec))
    if not urls:
        raise FileNotFoundError(f"no shards match {spec}")
    return ShardSource(urls, None)


def shard_urls(spec: str) -> list[str]:
    """Tar paths or URLs of ``spec`` (see :func:`shard_source`)."""
    return shard_source(spec).urls


def shard_name(url: str) -> str:
    """The file name of a shard path or URL (what an index's ``samples`` maps keys to)."""
    return url.rstrip("/").rsplit("/", 1)[-1]


def live_only(live: dict[str, str]) -> Callable[[Iterator[dict]], Iterator[dict]]:
    """Pipeline stage: drop samples the index does not list in the shard they were read from."""
    def stage(samples: Iterator[dict]) -> Iterator[dict]:
        for sample in samples:
            if live.get(sample["__key__"]) == shard_name(sample["__url__"]):
                yield sample
            else:
                log.debug("%s in %s: retired (the index lists it in %s)", sample["__key__"],
                          shard_name(sample["__url__"]), live.get(sample["__key__"]))
    return stage


# ----------------------------------------------------------------------------- reading tars

# webdataset's split of a member name into sample key and member suffix (tariterators.base_plus_ext).
_MEMBER_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


def _local_path(url: str) -> Path | None:
    return None if is_url(url) else Path(url.removeprefix("file://"))


class TarFormatError(ValueError):
    """A tar header the local reader cannot read (bad checksum, size field or truncation)."""


_BLOCK = 512


def _octal(field: bytes, what: str) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 (sizes of 8 GiB and more)
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise TarFormatError(f"{what} field {field!r} is not octal") from None


def _pax_records(data: bytes) -> dict[str, str]:
    """``"<length> <key>=<value>\n"`` records of a pax extended header."""
    records, position = {}, 0
    while position < len(data) and data[position:position + 1] not in (b"\0", b""):
        space = data.index(b" ", position)
        length = int(data[position:space])
        key, _, value = data[space + 1:position + length - 1].partition(b"=")
        records[key.decode("utf-8")] = value.decode("utf-8", "surrogateescape")
        position += length
    return records


def _local_tar_members(path: Path, url: str) -> Iterator[tuple[str, str, bytes]]:
    """(key, suffix, bytes) of the used members of a local tar, in tar order; the data of the
    other members is seeked past, never read. Reads ustar/pax/GNU long-name headers (what
    Python's tarfile writes for pipelines/shards.py) with checksums checked; TarFormatError
    on anything else."""
    with open(path, "rb") as handle:
        length = os.fstat(handle.fileno()).st_size
        long_name: str | None = None
        pax: dict[str, str] = {}
        while True:
            header = handle.read(_BLOCK)
            if len(header) < _BLOCK:
                if header.strip(b"\0"):
                    raise TarFormatError(f"{url}: truncated header")
                return  # a tar cut at a block boundary ends like one without end blocks
            if not header.strip(b"\0"):
                return  # end-of-archive block
            checksum = _octal(header[148:156], "checksum")
            if checksum != sum(header[:148]) + 8 * 32 + sum(header[156:]):
                raise TarFormatError(f"{url}: header checksum mismatch at byte {handle.tell() - _BLOCK}")
            size = _octal(header[124:136], "size")
            kind = header[156:157]
            if kind in (b"x", b"L"):
                data = handle.read(size)
                handle.seek(-size % _BLOCK, 1)
                if kind == b"x":
                    pax = _pax_records(data)
                else:
                    long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                continue
            size = int(pax.get("size", size))
            name = pax.get("path") or long_name
            if name is None:
                name = header[0:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                prefix = header[345:500].split(b"\0", 1)[0] if header[257:263] == b"ustar\0" else b""
                if prefix:
                    name = prefix.decode("utf-8", "surrogateescape") + "/" + name
            long_name, pax = None, {}
            match = _MEMBER_NAME.match(name) if kind in (b"0", b"\0", b"7") else None
            if handle.tell() + size > length:
                raise TarFormatError(f"{url}: {name} is truncated (the file ends inside it)")
            if match is None or match.group(2).lower() not in USED_MEMBERS:
                handle.seek(size + (-size % _BLOCK), 1)
                continue
            data = handle.read(size)
            handle.seek(-size % _BLOCK, 1)
            yield match.group(1), match.group(2).lower(), data


def _grouped(members: Iterator[tuple[str, str, bytes]], url: str) -> Iterator[dict]:
    sample: dict | None = None
    for key, suffix, data in members:
        if sample is None or key != sample["__key__"]:
            if sample is not None:
                yield sample
            sample = {"__key__": key, "__url__": url}
        sample[suffix] = data
    if sample is not None:
        yield sample


def _log_and_continue(error: Exception) -> bool:
    log.warning("shard skipped: %s", error)
    return True


def read_samples(shards: Iterator[dict]) -> Iterator[dict]:
    """Pipeline stage: ``{"url": ...}`` shard items -> samples holding the used members
    (``__key__``, ``__url__``, ``json``, ``wav``, ``flame.npz`` and the conversation members when
    present). An unreadable shard is
    logged and skipped."""
    for shard in shards:
        url = shard["url"]
        path = _local_path(url)
        if path is None:
            yield from wds.tarfile_samples(iter([shard]), handler=_log_and_continue,
                                           select_files=lambda name: _member_suffix(name) in USED_MEMBERS)
            continue
        try:
            yield from _grouped(_local_tar_members(path, url), url)
        except (OSError, TarFormatError) as error:
            log.warning("%s: shard skipped: %s", url, error)


def _member_suffix(name: str) -> str | None:
    match = _MEMBER_NAME.match(name)
    return match.group(2).lower() if match else None


def _samples(source: ShardSource, *stages) -> wds.DataPipeline:
    """Shard items -> (``stages``: splits, resampling) -> live samples."""
    live = [live_only(source.live)] if source.live is not None else []
    return wds.DataPipeline(*stages, read_samples, *live)


# ----------------------------------------------------------------------------- decoding

class SampleDecodeError(ValueError):
    """A sample member the loader cannot use (the message says which and why)."""


def pcm16_samples(data: bytes, expected_rate: int, *, name: str) -> np.ndarray:
    """The int16 samples of a PCM16 mono WAV, as a view of ``data`` (no copy, no decoder).

    SampleDecodeError unless it is RIFF/WAVE, PCM (plain or extensible) 16-bit mono at ``expected_rate``."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise SampleDecodeError(f"{name}: not a RIFF/WAVE file")
    position, fmt = 12, None
    while position + 8 <= len(data):
        chunk, size = data[position:position + 4], struct.unpack_from("<I", data, position + 4)[0]
        body = position + 8
        if chunk == b"fmt ":
            if size < 16:
                raise SampleDecodeError(f"{name}: fmt chunk of {size} bytes")
            fmt = struct.unpack_from("<HHIIHH", data, body)
            if fmt[0] == 0xFFFE and size >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format names the coding
                fmt = (struct.unpack_from("<H", data, body + 24)[0], *fmt[1:])
        elif chunk == b"data":
            if fmt is None:
                raise SampleDecodeError(f"{name}: data chunk before the fmt chunk")
            coding, channels, rate, _, _, bits = fmt
            if coding != 1 or channels != 1 or bits != 16:
                raise SampleDecodeError(f"{name}: expected 16-bit PCM mono WAV, got {channels} channel(s) "
                                        f"of {bits}-bit samples (format tag {coding})")
            if rate != expected_rate:
                raise SampleDecodeError(f"{name}: expected {expected_rate} Hz audio, got {rate} Hz")
            end = min(body + size, len(data))
            return np.frombuffer(data, dtype="<i2", count=(end - body) // 2, offset=body)
        position = body + size + (size & 1)
    raise SampleDecodeError(f"{name}: no data chunk")


_NPY_HEADER = re.compile(r"^\{'descr': '([<>|=][a-z]\d+)', 'fortran_order': (True|False), "
                         r"'shape': \(((?:\d+, ?)*\d*)\), \}\s*$")


def _npy_array(raw: bytes | memoryview, name: str) -> np.ndarray:
    """An ``.npy`` file's array as a view of its bytes; the header as numpy writes it is parsed
    with a pattern, anything else goes through numpy's reader."""
    if bytes(raw[:6]) != b"\x93NUMPY":
        raise SampleDecodeError(f"{name}: not an .npy array")
    major = raw[6]
    size_bytes = 2 if major == 1 else 4
    header_end = 8 + size_bytes + int.from_bytes(raw[8:8 + size_bytes], "little")
    match = _NPY_HEADER.match(bytes(raw[8 + size_bytes:header_end]).decode("latin1"))
    if match is None:
        return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    shape = tuple(int(n) for n in match.group(3).replace(" ", "").split(",") if n)
    count = math.prod(shape)
    array = np.frombuffer(raw, dtype=np.dtype(match.group(1)), count=count, offset=header_end)
    return array.reshape(shape, order="F" if match.group(2) == "True" else "C")


def _stored_member(zip_bytes: bytes, archive: zipfile.ZipFile, name: str) -> bytes | memoryview:
    """A member's bytes: a view into ``zip_bytes`` when it is stored uncompressed (np.savez), so
    neither a copy nor zipfile's CRC pass is made (the shard's sha256 in the index covers the
    bytes); zipfile reads any other member."""
    info = archive.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return archive.read(name)
    local = info.header_offset
    if zip_bytes[local:local + 4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"{name}: no local header at byte {local}")
    name_length, extra_length = struct.unpack_from("<HH", zip_bytes, local + 26)
    start = local + 30 + name_length + extra_length
    if start + info.file_size > len(zip_bytes):
        raise zipfile.BadZipFile(f"{name}: {info.file_size} bytes from byte {start} pass the archive's end")
    return memoryview(zip_bytes)[start:start + info.file_size]


def _npz_arrays(npz_bytes: bytes, names: list[str], label: str) -> list[np.ndarray]:
    """Only the named arrays of an npz (each member read once, others left alone)."""
    try:
        with zipfile.ZipFile(io.BytesIO(npz_bytes)) as archive:
            present = set(archive.namelist())
            missing = [n for n in names if f"{n}.npy" not in present]
            if missing:
                raise SampleDecodeError(f"{label}: no arrays {missing}")
            return [_npy_array(_stored_member(npz_bytes, archive, f"{n}.npy"), f"{label}/{n}") for n in names]
    except zipfile.BadZipFile as error:
        raise SampleDecodeError(f"{label}: not an npz archive ({error})") from None


def _concatenated(parts: list[np.ndarray], label: str) -> np.ndarray:
    if any(part.ndim != 2 for part in parts):
        raise SampleDecodeError(f"{label}: arrays of shapes {[p.shape for p in parts]}, expected (frames, dims)")
    frames = min(len(p) for p in parts)
    return np.concatenate([p[:frames] for p in parts], axis=1).astype(np.float32, copy=False)


def _kept_columns(parts: list[np.ndarray], config: DataConfig, label: str) -> list[np.ndarray]:
    """The groups' arrays (config order) with only the leading ``data.expression_coefficients``
    columns of the expression group (FLAME's expression basis is ordered by variance)."""
    keep = config.expression_coefficients
    if keep is None or EXPRESSION_GROUP not in config.groups:
        return parts
    index = config.groups.index(EXPRESSION_GROUP)
    stored = parts[index].shape[-1] if parts[index].ndim == 2 else 0
    if stored < keep:
        raise SampleDecodeError(f"{label}: {stored} expression coefficients stored, "
                                f"data.expression_coefficients asks for {keep}")
    return [part[:, :keep] if i == index else part for i, part in enumerate(parts)]


def motion_array(npz_bytes: bytes, config: DataConfig, label: str = FLAME_MEMBER) -> np.ndarray:
    """(frames, dims) float32: the configured groups concatenated in config order."""
    parts = _npz_arrays(npz_bytes, [f"{config.array_prefix}/{g}" for g in config.groups], label)
    return _concatenated(_kept_columns(parts, config, label), label)


def partner_motion_array(npz_bytes: bytes, config: DataConfig,
                         label: str = PARTNER_FLAME_MEMBER) -> tuple[np.ndarray, np.ndarray]:
    """``partner.flame.npz`` read in one pass: (frames, dims) float32 as :func:`motion_array`, and
    the (frames,) bool ``tracked`` mask."""
    *parts, tracked = _npz_arrays(npz_bytes, [f"{config.array_prefix}/{g}" for g in config.groups]
                                  + [PARTNER_TRACKED_ARRAY], label)
    if tracked.dtype != np.bool_:
        raise SampleDecodeError(f"{label}/{PARTNER_TRACKED_ARRAY}: dtype {tracked.dtype}, expected bool")
    return _concatenated(_kept_columns(parts, config, label), label), tracked


def group_slices(groups: tuple[str, ...], dims: dict[str, int]) -> dict[str, slice]:
    """Column range of each group in the concatenated motion array."""
    out, start = {}, 0
    for group in groups:
        out[group] = slice(start, start + dims[group])
        start += dims[group]
    return out


def group_dims(npz_bytes: bytes, config: DataConfig) -> dict[str, int]:
    parts = _npz_arrays(npz_bytes, [f"{config.array_prefix}/{group}" for group in config.groups], FLAME_MEMBER)
    return {group: int(part.shape[1]) for group, part in zip(config.groups, _kept_columns(parts, config,
                                                                                          FLAME_MEMBER))}


def caption_for(captions: dict | None, start: int, end: int) -> str:
    """The caption (of a record's ``captions`` payload) whose window overlaps frames [start, end)
    most; "" when there is none."""
    windows = (captions or {}).get("windows") or []
    best, overlap = "", 0
    for window in windows:
        shared = min(end, window["end"]) - max(start, window["start"])
        if shared > overlap and window.get("caption"):
            best, overlap = window["caption"], shared
    return best


@dataclass
class Clip:
    key: str
    motion: np.ndarray  # (frames, dims)
    audio: np.ndarray  # (samples,): float32 in [-1, 1), or int16 PCM that cut_window scales
    record: SampleRecord
    role: np.ndarray | None = None  # (frames,) int8 role codes; None: a speaking-only sample
    partner_audio: np.ndarray | None = None  # as audio; None: no partner
    partner_motion: np.ndarray | None = None  # as motion; None: the partner's face was never tracked
    partner_tracked: np.ndarray | None = None  # (frames,) bool, with partner_motion


def _rates_differ(record: SampleRecord, config: DataConfig) -> str | None:
    """Why the sample's rates are not the run's, or None when they are."""
    if not math.isclose(record.video.fps, config.fps, rel_tol=1e-9):
        return f"video at {record.video.fps:g} fps, the run expects {config.fps:g} (data.fps)"
    if record.audio.sample_rate != config.sample_rate:
        return f"audio at {record.audio.sample_rate} Hz, the run expects {config.sample_rate} (data.sample_rate)"
    return None


def decode_clip(sample: dict, config: DataConfig) -> Clip | None:
    """The sample as a clip, or None (with a logged reason unless it has no FLAME arrays) when
    the run cannot use it: rates not the run's, a record that is not a valid SampleRecord, a
    WAV that is not PCM16 mono at the record's rate, arrays missing from ``flame.npz``,
    conversation members that do not fit (:func:`conversation_arrays`)."""
    if FLAME_MEMBER not in sample:
        return None
    key = sample["__key__"]
    try:
        if "json" not in sample or "wav" not in sample:
            raise SampleDecodeError(f"no {'json' if 'json' not in sample else 'wav'} member")
        # The whole record is validated (about 0.5 ms for 23 kB, mostly JSON parsing itself; see
        # bench/results/loader.md): a record the schema refuses is not trained on.
        record = SampleRecord.load(sample["json"])
        mismatch = _rates_differ(record, config)
        if mismatch is not None:
            raise SampleDecodeError(mismatch)
        # The WAV header must agree with the record's (and the run's) rate.
        audio = pcm16_samples(sample["wav"], config.sample_rate, name=f"{key}.wav")
        motion = motion_array(sample[FLAME_MEMBER], config, label=f"{key}.{FLAME_MEMBER}")
        conversation = conversation_arrays(sample, record, motion, audio, config)
    except ValueError as error:  # SampleDecodeError, check_roles' and pydantic's ValidationError
        log.warning("%s: skipped: %s", key, str(error).replace("\n", " "))
        return None
    return Clip(key, motion, audio, record, **conversation)


def conversation_arrays(sample: dict, record: SampleRecord, motion: np.ndarray, audio: np.ndarray,
                        config: DataConfig) -> dict[str, np.ndarray]:
    """The :class:`Clip` fields of a sample's conversation members, checked against its record,
    motion and audio (none for a speaking-only sample); SampleDecodeError or ValueError saying
    what does not fit."""
    key, info = sample["__key__"], record.conversation
    present = [name for name in CONVERSATION_MEMBERS if name in sample]
    if info is None:
        if present:
            raise SampleDecodeError(f"members {present} but the record has no 'conversation' section")
        return {}
    if ROLE_MEMBER not in sample:
        raise SampleDecodeError(f"the record has a 'conversation' section but there is no {ROLE_MEMBER}")
    label = f"{key}.{ROLE_MEMBER}"
    out = {"role": check_roles(_npy_array(sample[ROLE_MEMBER], label), len(motion), label)}
    if (PARTNER_AUDIO_MEMBER in sample) != (info.partner_audio is not None):
        raise SampleDecodeError(f"{PARTNER_AUDIO_MEMBER} {'present' if PARTNER_AUDIO_MEMBER in sample else 'absent'}"
                                f" but the record's conversation.partner_audio is {info.partner_audio!r}")
    if PARTNER_AUDIO_MEMBER in sample:
        label = f"{key}.{PARTNER_AUDIO_MEMBER}"
        out["partner_audio"] = pcm16_samples(sample[PARTNER_AUDIO_MEMBER], config.sample_rate, name=label)
        if len(out["partner_audio"]) != len(audio):
            raise SampleDecodeError(f"{label}: {len(out['partner_audio'])} samples, the actor's wav has {len(audio)}")
    if PARTNER_FLAME_MEMBER in sample:
        label = f"{key}.{PARTNER_FLAME_MEMBER}"
        if "partner_audio" not in out:
            raise SampleDecodeError(f"{label} without {PARTNER_AUDIO_MEMBER}")
        partner, tracked_mask = partner_motion_array(sample[PARTNER_FLAME_MEMBER], config, label)
        if partner.shape != motion.shape or tracked_mask.shape != (len(motion),):
            raise SampleDecodeError(f"{label}: arrays of {partner.shape} with {PARTNER_TRACKED_ARRAY} "
                                    f"{tracked_mask.shape}, the actor's motion is {motion.shape}")
        out["partner_motion"], out["partner_tracked"] = partner, tracked_mask
        tracked = int(tracked_mask.sum())
        if tracked != info.partner_flame_frames:
            raise SampleDecodeError(f"{label}: {tracked} tracked frames, the record's "
                                    f"conversation.partner_flame_frames says {info.partner_flame_frames}")
    return out


def _audio_span(samples: np.ndarray, a0: int, a1: int) -> np.ndarray:
    """float32 samples [a0, a1) of int16 PCM or float audio, zero-padded past the end."""
    audio = np.empty(a1 - a0, dtype=np.float32)
    piece = samples[a0:a1]
    if samples.dtype == np.int16:
        # One pass; a power of two: the same float32 values as scaling the whole clip first.
        np.multiply(piece, np.float32(1 / PCM16_SCALE), out=audio[: len(piece)])
    else:
        audio[: len(piece)] = piece
    audio[len(piece):] = 0
    return audio


def cut_window(clip: Clip, start: int, config: DataConfig) -> dict:
    """Frames [start, start + window) with the audio of the same time span (zero-padded), the
    roles and the partner's streams. Absent partner streams stay None (the collate writes
    zeros): a speaking-only window costs no partner arrays of its own."""
    frames = config.window_frames
    per_frame = config.sample_rate / config.fps
    a0 = round(start * per_frame)
    a1 = a0 + round(frames * per_frame)  # same length for every start (rounding must not vary it)
    end = start + frames
    return {"key": clip.key, "start": start, "motion": clip.motion[start:end], "audio": _audio_span(clip.audio, a0, a1),
            "caption": caption_for(clip.record.captions, start, end),
            "role": clip.role[start:end] if clip.role is not None else np.full(frames, Role.SPEAKING, np.int8),
            "has_partner": clip.partner_audio is not None,
            "partner_audio": _audio_span(clip.partner_audio, a0, a1) if clip.partner_audio is not None else None,
            "partner_motion": clip.partner_motion[start:end] if clip.partner_motion is not None else None,
            "partner_tracked": clip.partner_tracked[start:end] if clip.partner_tracked is not None else None}


def _clips(samples: Iterator[dict], config: DataConfig) -> Iterator[Clip]:
    for sample in samples:
        clip = decode_clip(sample, config)
        if clip is not None and len(clip.motion) >= config.window_frames:
            yield clip


def resolve_rates(config: DataConfig, spec: str | None = None) -> DataConfig:
    """``config`` with ``fps`` and ``sample_rate`` set: as stated, else those of the first live
    sample with FLAME arrays and a valid record in ``spec`` (default ``config.shards``), in shard
    order, so every rank and worker resolves the same pair."""
    if config.fps is not None and config.sample_rate is not None:
        return config
    source = shard_source(spec or config.shards)
    for sample in _samples(source, wds.SimpleShardList(source.urls)):
        if FLAME_MEMBER not in sample or "json" not in sample:
            continue
        try:
            record = SampleRecord.load(sample["json"])
        except ValueError as error:
            log.warning("%s: skipped: %s", sample["__key__"], str(error).replace("\n", " "))
            continue
        return config.model_copy(update={"fps": config.fps if config.fps is not None else record.video.fps,
                                         "sample_rate": config.sample_rate or record.audio.sample_rate})
    raise ValueError(f"no sample with FLAME arrays in {spec or config.shards}: cannot tell the frame rate")


def inherit_rates(config: DataConfig, source: DataConfig, source_name: str) -> DataConfig:
    """``config`` expecting the rates and the expression width ``source`` was trained on (a flow
    run its VAE's, RL its SFT run's); ValueError when ``config`` states other ones."""
    update = {}
    for field in ("fps", "sample_rate"):
        mine, theirs = getattr(config, field), getattr(source, field)
        if mine is not None and theirs is not None and mine != theirs:
            raise ValueError(f"data.{field} is {mine} but {source_name} was trained at {theirs}")
        update[field] = mine if mine is not None else theirs
    # None is a width too (every stored coefficient): unset here means "the source's".
    mine, theirs = config.expression_coefficients, source.expression_coefficients
    if mine is not None and mine != theirs:
        raise ValueError(f"data.expression_coefficients is {mine} but {source_name} was trained with {theirs}")
    update["expression_coefficients"] = theirs
    return config.model_copy(update=update)


def _worker_id() -> int:
    info = torch.utils.data.get_worker_info()
    return info.id if info is not None else 0


def _shuffled(size: int, seed: int):
    # The RNG is made when iteration starts, i.e. inside the loader worker, so each worker gets its own.
    def stage(samples: Iterator[dict]) -> Iterator[dict]:
        yield from wds.shuffle(size, initial=size, rng=random.Random(f"shuffle-{seed}-{_worker_id()}"))(samples)
    return stage


@dataclass(frozen=True)
class WindowDraw:
    """A drawn window before it is cut: the clip it comes from, its first frame and its seed."""

    clip: Clip
    start: int
    seed: int


def _random_windows(config: DataConfig, seed: int):
    def stage(samples: Iterator[dict]) -> Iterator[dict]:
        worker = _worker_id()
        rng = random.Random(f"windows-{seed}-{worker}")

        def draws() -> Iterator[WindowDraw]:
            for number, clip in enumerate(_clips(samples, config)):
                for repeat in range(config.windows_per_clip):
                    start = rng.randint(0, len(clip.motion) - config.window_frames)
                    # Per-window seed for noise, timesteps and condition dropout: the same window gets
                    # the same draws whatever the batch size or accumulation (see training/flow.py).
                    yield WindowDraw(clip, start, hash((seed, worker, number, repeat)) & 0x7FFFFFFF)

        drawn: Iterator[WindowDraw] = draws()
        if config.window_shuffle_buffer > 1:
            # Draws (a clip reference and a start) are shuffled, not cut windows: the buffer holds
            # the decoded clips once, whatever the number of windows drawn from each.
            size = config.window_shuffle_buffer
            drawn = wds.shuffle(size, initial=size, rng=random.Random(f"window-shuffle-{seed}-{worker}"))(drawn)
        for draw in drawn:
            window = cut_window(draw.clip, draw.start, config)
            window["seed"] = draw.seed
            yield window
    return stage


def _tiled_windows(config: DataConfig):
    def stage(samples: Iterator[dict]) -> Iterator[dict]:
        for number, clip in enumerate(_clips(samples, config)):
            for start in range(0, len(clip.motion) - config.window_frames + 1, config.window_frames):
                window = cut_window(clip, start, config)
                window["seed"] = hash((number, start)) & 0x7FFFFFFF
                yield window
    return stage


def train_pipeline(config: DataConfig, seed: int) -> wds.DataPipeline:
    """Endless, seeded stream of random windows (resampled shards, shuffled samples, live ones only)."""
    config = resolve_rates(config)
    source = shard_source(config.shards)
    return wds.DataPipeline(
        _samples(source, wds.ResampledShards(source.urls, seed=seed, deterministic=True)),
        _shuffled(config.shuffle_buffer, seed),
        _random_windows(config, seed),
    )


def finite_clips(spec: str, config: DataConfig, per_node: bool = True) -> Iterator[Clip]:
    """Every usable live clip once: this node's and worker's share of the shards, or with
    ``per_node=False`` every node's (the worker split still applies)."""
    config = resolve_rates(config, spec)
    source = shard_source(spec)
    splits = [wds.split_by_node] if per_node else []
    return _clips(iter(_samples(source, wds.SimpleShardList(source.urls), *splits, wds.split_by_worker)), config)


def eval_pipeline(spec: str, config: DataConfig) -> wds.DataPipeline:
    """Non-overlapping windows from the start of every live clip, in shard order."""
    config = resolve_rates(config, spec)
    source = shard_source(spec)
    return wds.DataPipeline(
        _samples(source, wds.SimpleShardList(source.urls), wds.split_by_node, wds.split_by_worker),
        _tiled_windows(config))


# Partner arrays that a window may lack (None), and the window array whose shape they have.
_PARTNER_ARRAYS = (("partner_motion", "motion", np.float32), ("partner_audio", "audio", np.float32),
                   ("partner_tracked", "role", np.bool_))


def _fill_batch(windows: list[dict], make: Callable[[str, tuple[int, ...], type], np.ndarray]) -> None:
    """Write the windows' arrays into the batch arrays ``make(name, shape, dtype)`` returns; the
    partner arrays only when a window has a partner, with zeros (False) in the rows of the others."""
    count, first = len(windows), windows[0]
    for name, dtype in (("motion", np.float32), ("audio", np.float32), ("role", np.int8)):
        np.stack([w[name] for w in windows], out=make(name, (count, *first[name].shape), dtype))
    for name, like, dtype in _PARTNER_ARRAYS if any(w["has_partner"] for w in windows) else ():
        out = make(name, (count, *first[like].shape), dtype)
        for row, window in enumerate(windows):
            out[row] = 0 if window[name] is None else window[name]
    for name, dtype in (("start", np.int64), ("seed", np.int64), ("has_partner", np.bool_)):
        make(name, (count,), dtype)[:] = [w[name] for w in windows]


def collate(windows: list[dict]) -> dict:
    arrays: dict[str, np.ndarray] = {}

    def make(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        arrays[name] = np.empty(shape, dtype)
        return arrays[name]

    _fill_batch(windows, make)
    return {"key": [w["key"] for w in windows], "caption": [w["caption"] for w in windows],
            **{name: torch.from_numpy(array) for name, array in arrays.items()}}


# Batches each loader worker has in flight at most (DataLoader's prefetch_factor).
PREFETCH_BATCHES = 2


class RingCollate:
    """``collate`` into shared-memory tensors that a loader worker reuses, ``slots`` batches apart.

    A DataLoader worker otherwise sends every batch in new shared memory, and faulting in
    fresh pages is what limits a worker (about 2 ms per 200-frame window on this VM, see
    bench/results/loader.md). Reuse is safe only for a consumer that copies each batch out
    before asking for the next one, as :func:`batches` does, with ``slots`` above the batches a
    worker can be ahead (``PREFETCH_BATCHES``)."""

    def __init__(self, slots: int):
        self.slots = slots
        self._made = 0
        self._buffers: dict[tuple, torch.Tensor] = {}  # (name, shape, dtype, slot) -> shared tensor

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
        key = (name, shape, np.dtype(dtype).str, self._made % self.slots)
        if key not in self._buffers:
            self._buffers[key] = torch.from_numpy(np.empty(shape, dtype)).share_memory_()
        return self._buffers[key]

    def __call__(self, windows: list[dict]) -> dict:
        batch = {"key": [w["key"] for w in windows], "caption": [w["caption"] for w in windows]}

        def make(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
            batch[name] = self._buffer(name, shape, dtype)
            return batch[name].numpy()  # windows are written straight into shared memory

        _fill_batch(windows, make)
        self._made += 1
        return batch


def _copied_out(stream: Iterator[dict], keep: int) -> Iterator[dict]:
    """Private copies of ``RingCollate`` batches. The received batches are kept alive ``keep``
    batches long: torch then maps a reused shared buffer once instead of once per batch."""
    received: collections.deque = collections.deque(maxlen=keep)
    for batch in stream:
        received.append(batch)
        # numpy copies on one thread (torch's threaded copy stalls on a busy CPU)
        copies = {name: torch.from_numpy(value.numpy().copy()) for name, value in batch.items()
                  if isinstance(value, torch.Tensor)}
        yield {**batch, **copies}


def batches(pipeline, config: DataConfig, skip: int = 0, keep_last: bool = False) -> Iterator[dict]:
    """Batches of ``config.batch_size`` windows, after skipping ``skip`` batches (resume).

    ``keep_last``: also yield a final short batch (finite passes)."""
    if config.num_workers:
        slots = PREFETCH_BATCHES * config.num_workers + 2
        loader = torch.utils.data.DataLoader(pipeline, batch_size=config.batch_size, collate_fn=RingCollate(slots),
                                             num_workers=config.num_workers, drop_last=not keep_last,
                                             prefetch_factor=PREFETCH_BATCHES)
        stream = _copied_out(iter(loader), keep=slots * config.num_workers)
    else:
        stream = (collate(chunk) for chunk in _chunks(iter(pipeline), config.batch_size, keep_last))
    for number, batch in enumerate(stream):
        if number >= skip:
            yield batch


def _chunks(items: Iterator[dict], size: int, keep_last: bool) -> Iterator[list[dict]]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk and keep_last:
        yield chunk
