import json

from pipelines.captions.cache import CaptionCache, cache_key


def test_key_is_deterministic_and_field_sensitive():
    base = ("ab" * 32, 0, 200, "qwen-vl:x", "v1")
    assert cache_key(*base) == cache_key(*base)
    others = [("cd" * 32, 0, 200, "qwen-vl:x", "v1"), ("ab" * 32, 200, 400, "qwen-vl:x", "v1"),
              ("ab" * 32, 0, 199, "qwen-vl:x", "v1"), ("ab" * 32, 0, 200, "openai-chat:y", "v1"),
              ("ab" * 32, 0, 200, "qwen-vl:x", "v2")]
    assert len({cache_key(*k) for k in others} | {cache_key(*base)}) == 6


def test_put_get_roundtrip(tmp_path):
    cache = CaptionCache(tmp_path / "cache")
    key = ("ab" * 32, 0, 200, "m", "v1")
    assert cache.get(*key) is None
    value = {"caption": "A calm face.", "flagged": False, "problems": []}
    path = cache.put(*key, value)
    assert path.is_file() and path.parent.parent == tmp_path / "cache"
    assert cache.get(*key) == value
    assert cache.get("ab" * 32, 0, 200, "m", "v2") is None
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left beside the entry
    # overwrite
    cache.put(*key, {"caption": "x"})
    assert cache.get(*key) == {"caption": "x"}
    # a corrupt or mismatching file is a miss
    path.write_text("{not json")
    assert cache.get(*key) is None
    path.write_text(json.dumps({"key": {"clip_sha": "other"}, "value": value}))
    assert cache.get(*key) is None
