"""Compare two shard folders member by member: payload bytes and sample-JSON keys.

    python bench/compare_shards.py OLD_SHARDS_DIR NEW_SHARDS_DIR

Prints, per member extension, how many members are byte-identical, and for the sample
JSON the top-level keys whose values differ. Used to show that a refactor changed no
media or arrays (issue 13: payload hashes per member equal, JSON differing only by
documented schema fields). Exit status 1 when a non-JSON member differs or is missing.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tarfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/compare_shards.py` puts bench/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from pipelines.schema.index import ShardIndex  # noqa: E402


def members(shards_dir: Path) -> dict[str, bytes]:
    """Every member of every live sample, by member name: a sample retired in the index (its
    source re-processed or removed) is skipped, as the trainer's loader skips it."""
    index = ShardIndex.load(shards_dir)
    out = {}
    for path in index.paths():
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if index.samples.get(member.name.split(".", 1)[0]) == Path(path).name:
                    out[member.name] = tar.extractfile(member).read()
    return out


def compare(old_dir: Path, new_dir: Path) -> int:
    old, new = members(old_dir), members(new_dir)
    same, differ, json_keys = Counter(), Counter(), Counter()
    for name in sorted(set(old) | set(new)):
        ext = name.split(".", 1)[1] if "." in name else ""
        if name not in old or name not in new:
            differ[f"{ext} (only in {'new' if name in new else 'old'})"] += 1
            continue
        if ext == "json":
            a, b = json.loads(old[name]), json.loads(new[name])
            json_keys.update(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            continue
        equal = hashlib.sha256(old[name]).digest() == hashlib.sha256(new[name]).digest()
        (same if equal else differ)[ext] += 1
    print(f"samples: old {sum(n.endswith('.json') for n in old)}, new {sum(n.endswith('.json') for n in new)}")
    for ext in sorted(set(same) | set(differ)):
        print(f"{ext}: {same[ext]} identical, {differ[ext]} different")
    print("sample JSON keys that differ (samples): "
          + (", ".join(f"{k} ({n})" for k, n in sorted(json_keys.items())) or "none"))
    return 1 if differ else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(compare(Path(sys.argv[1]), Path(sys.argv[2])))
