"""Label Studio pieces that need no server: the private token file and the labeling config.
The real-server round trip is tests/annotation/test_annotation_loop.py."""

from __future__ import annotations

import stat

from annotation.aspects import ASPECTS
from annotation.labelstudio_client import rows_from_annotation
from annotation.labelstudio_server import load_or_create_token
from annotation.rubric import labeling_config


def test_token_file_is_private(tmp_path):
    token = load_or_create_token(tmp_path)
    assert len(token) == 40 and int(token, 16) >= 0
    assert stat.S_IMODE((tmp_path / "api_token").stat().st_mode) == 0o600
    assert load_or_create_token(tmp_path) == token


def test_labeling_config_has_controls():
    xml = labeling_config(4)
    for aspect in ASPECTS:
        assert f'<Rating name="{aspect}" toName="video" maxRating="5"' in xml
    assert '<Choices name="rank"' in xml and '<Choice value="4"/>' in xml
    assert '<Video name="video" value="$video"' in xml


def test_rows_from_annotation_skips_unknown_controls():
    result = [{"from_name": "lip_sync", "value": {"rating": 4}},
              {"from_name": "rank", "value": {"choices": ["2"]}},
              {"from_name": "comment", "value": {"text": ["nice"]}}]
    rows = rows_from_annotation("a@x", 7, {"sample": "s", "version": "v"}, result)
    assert [(r["aspect"], r["score"]) for r in rows] == [("lip_sync", 4), ("rank", 2)]
