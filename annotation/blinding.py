"""Blinding: what annotators see instead of sample and version names, and the private key back.

Every clip gets an opaque id, every sample's ranking task an opaque item id, every annotator an
opaque rater id. Ids are keyed hashes (HMAC-SHA256 with a random salt made once per study), so
nobody who knows the names can recompute them without the salt. Task data, the task header and
the media file name carry only these ids (:mod:`annotation.labelstudio_client`); the export maps
them back through this file.

The file (``<annotation_dir>/private/blinding.json``, folder mode 0700) holds the salt, the seed,
``clips`` (id -> sample, version), ``items`` (id -> sample and its clips in the order the ranking
view shows them) and ``annotators`` (rater id -> Label Studio email). It lives outside Label
Studio's document root, so no local-files URL can reach it. ``seed`` fixes the order in which
tasks are imported and the place of every version in its ranking view (a shuffle per sample, so
one version is not always video A); it is recorded here and in the ``annotation_tasks`` metadata.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipelines.atomic import atomic_write_text, file_lock

FORMAT = "talkinghead.blinding/1"
ID_HEX = 10


class BlindingError(ValueError):
    """The blinding file does not fit the study as configured (other seed, changed samples)."""


@dataclass(frozen=True)
class RankingItem:
    item: str
    sample: str
    clips: tuple[str, ...]  # clip ids, slot 1 first


class Blinding:
    """The study's mapping file, loaded; change it inside :func:`open_blinding` so it is saved."""

    def __init__(self, path: Path, seed: int, salt: str, clips: dict, items: dict, annotators: dict) -> None:
        self.path = path
        self.seed = seed
        self.salt = salt
        self.clips: dict[str, tuple[str, str]] = {k: (v["sample"], v["version"]) for k, v in clips.items()}
        self.items: dict[str, RankingItem] = {
            k: RankingItem(k, v["sample"], tuple(v["clips"])) for k, v in items.items()}
        self.annotators: dict[str, str] = dict(annotators)
        self._clip_of = {key: cid for cid, key in self.clips.items()}
        self._item_of = {it.sample: it for it in self.items.values()}

    def _hash(self, *parts: str) -> str:
        message = "\0".join(parts).encode("utf-8")
        return hmac.new(self.salt.encode(), message, hashlib.sha256).hexdigest()[:ID_HEX]

    def clip_id(self, sample: str, version: str) -> str:
        """The clip's opaque id; assigned (and kept from then on) on first use."""
        key = (sample, version)
        if key not in self._clip_of:
            cid = self._hash("clip", sample, version)
            if cid in self.clips:
                raise BlindingError(f"clip id {cid} drawn twice ({self.clips[cid]} and {key})")
            self.clips[cid] = key
            self._clip_of[key] = cid
        return self._clip_of[key]

    def ranking_item(self, sample: str, versions: Sequence[str]) -> RankingItem:
        """The sample's ranking task: an opaque id and its versions in a seeded shuffled order.
        A sample whose versions changed after its task was made is refused (the task is fixed)."""
        existing = self._item_of.get(sample)
        if existing is not None:
            had = sorted(self.clips[c][1] for c in existing.clips)
            if had != sorted(versions):
                raise BlindingError(
                    f"sample {sample!r} had versions {had} when its ranking task was made and now has "
                    f"{sorted(versions)}: rate the new set in a new project (annotation.project_title)")
            return existing
        order = sorted(versions)
        random.Random(f"{self.seed}\0slots\0{sample}").shuffle(order)
        item = RankingItem(self._hash("item", sample), sample, tuple(self.clip_id(sample, v) for v in order))
        if item.item in self.items:
            raise BlindingError(f"item id {item.item} drawn twice")
        self.items[item.item] = item
        self._item_of[sample] = item
        return item

    def annotator_id(self, email: str) -> str:
        """The rater id that stands for ``email`` in every table and report."""
        rid = "rater-" + self._hash("annotator", email.strip().lower())[:8]
        self.annotators[rid] = email
        return rid

    def shuffled(self, keys: Sequence, kind: str) -> list:
        """``keys`` sorted, then shuffled with the seed: the order tasks of ``kind`` are imported in."""
        order = sorted(keys)
        random.Random(f"{self.seed}\0import\0{kind}").shuffle(order)
        return order

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT, "seed": self.seed, "salt": self.salt,
            "clips": {k: {"sample": s, "version": v} for k, (s, v) in sorted(self.clips.items())},
            "items": {k: {"sample": it.sample, "clips": list(it.clips)} for k, it in sorted(self.items.items())},
            "annotators": dict(sorted(self.annotators.items())),
        }, indent=2)


def load_blinding(path: Path, seed: int) -> Blinding:
    """The mapping in ``path``; a new one (fresh salt) when the file does not exist yet."""
    path = Path(path)
    if not path.exists():
        return Blinding(path, seed, secrets.token_hex(16), {}, {}, {})
    try:
        raw = json.loads(path.read_text())
    except ValueError as error:
        raise BlindingError(f"{path} is not JSON: {error}") from None
    if raw.get("format") != FORMAT:
        raise BlindingError(f"{path}: format {raw.get('format')!r}, expected {FORMAT!r}")
    if raw["seed"] != seed:
        raise BlindingError(f"{path} was made with seed {raw['seed']} but annotation.seed is {seed}: "
                            "set it back, or start a new study (new project title and annotation folder)")
    return Blinding(path, raw["seed"], raw["salt"], raw["clips"], raw["items"], raw["annotators"])


@contextmanager
def open_blinding(path: Path, seed: int) -> Iterator[Blinding]:
    """Load the mapping under an exclusive lock and save it (atomically) when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)  # the key to the blinding: readable by its owner only
    with file_lock(path.parent / f".{path.name}.lock"):
        blinding = load_blinding(path, seed)
        before = blinding.to_json() if path.exists() else None
        yield blinding
        after = blinding.to_json()
        if after != before:
            atomic_write_text(path, after)
