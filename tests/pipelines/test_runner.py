"""The one stage runner on two real GRID clips: real SCRFD and Light-ASD, the real pyannote
segmentation for speech (no transcriber, to stay fast), FLAME and captions with their models
absent (kept and flagged "not installed").

One full run (module-scoped) is the starting point; each test that changes something works
on its own copy of the data folder.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.config import PipelineConfig
from pipelines.registry import STAGES, dependants
from pipelines.runner import (ModelBackends, RunReport, StageInputMissing, decided_record, load_result, result_path,
                              run_source, run_sources, run_stage, stage_fingerprints)
from pipelines.schema.records import ACCEPTED, SourceRef
from pipelines.workdir import RECORD_FILE, load_record, source_dir
from stage_fixtures import SharedDetectorBackends, scan, stage_config

ALL = [spec.name for spec in STAGES]


def _models(root: Path, model_dir: Path) -> Path:
    """A model folder with only SCRFD and Light-ASD: no SHeaP, no Qwen-VL, whatever ../shared holds."""
    models = root / "models"
    models.mkdir()
    for name in ("scrfd", "light-asd"):
        (models / name).symlink_to(model_dir / name, target_is_directory=True)
    return models


@dataclass
class Base:
    root: Path
    models: Path
    config: PipelineConfig
    refs: list[SourceRef]
    report: RunReport

    def config_for(self, root: Path, **overrides) -> PipelineConfig:
        overrides.setdefault("speech", {"transcription_backend": "none"})
        return stage_config(root, self.models, inputs=self.root / "input", **overrides)

    def copy(self, root: Path, **overrides) -> PipelineConfig:
        """A config over a copy of the base run's data folder (same inputs)."""
        shutil.copytree(self.root / "data", root / "data", symlinks=True)
        return self.config_for(root, **overrides)


@pytest.fixture(scope="module")
def base(tmp_path_factory, grid_clips, model_dir, scrfd_detector) -> Base:
    if not (model_dir / "light-asd" / "pretrain_AVA_CVPR.model").is_file():
        pytest.skip("Light-ASD weights not in the model dir")
    pytest.importorskip("pyannote.audio")
    root = tmp_path_factory.mktemp("runner")
    (root / "input").mkdir()
    for clip in grid_clips[:2]:
        shutil.copyfile(clip, root / "input" / clip.name)
    base = Base(root, _models(root, model_dir), None, [], RunReport())  # type: ignore[arg-type]
    base.config = base.config_for(root)
    base.refs = list(scan(base.config).values())
    assert len(base.refs) == 2
    base.report = run_sources(base.refs, base.config, backends=SharedDetectorBackends(base.config, scrfd_detector),
                              progress=False)
    return base


def _statuses(outcomes) -> dict[str, str]:
    return {o.stage: o.status for o in outcomes}


def _run_all(base: Base, config: PipelineConfig, detector, **kwargs) -> list[dict[str, str]]:
    backends = SharedDetectorBackends(config, detector)
    return [_statuses(run_source(ref, config, backends, **kwargs)) for ref in base.refs]


def test_a_first_run_runs_every_stage_and_stores_each_fingerprint(base):
    assert [(o.source_id, o.stage, o.status) for o in base.report.outcomes] == [
        (ref.source_id, name, "ran") for ref in base.refs for name in ALL]
    assert [r.source_id for r in base.report.records] == [ref.source_id for ref in base.refs]
    for ref in base.refs:
        outcomes = {o.stage: o for o in base.report.outcomes if o.source_id == ref.source_id}
        folder = source_dir(base.config, ref.source_id)
        assert json.loads((folder / RECORD_FILE).read_text())["fingerprint"] == outcomes["faces"].fingerprint
        for name in ALL[1:]:
            stored = json.loads(result_path(base.config, ref.source_id, name).read_text())
            assert stored["fingerprint"] == outcomes[name].fingerprint
            assert load_result(base.config, ref.source_id, name) == outcomes[name].result
        fingerprints = stage_fingerprints(base.config, ref.source_id)
        assert fingerprints == {name: o.fingerprint for name, o in outcomes.items()}
        assert len(set(fingerprints.values())) == len(ALL)
        # Each stage decided on what the stages before it kept: Light-ASD cut the GRID clip to its
        # speaking run, speech kept it (flagged: no transcriber, language unknown), FLAME and
        # captions kept it flagged "not installed".
        record = load_record(base.config, ref.source_id)
        (face,) = record.segments
        (child,) = outcomes["asd"].result.segments[face.key].children
        for name in ("speech", "flame", "captions"):
            assert list(outcomes[name].result.segments) == [child.key], name
        assert outcomes["speech"].result.segments[child.key].flags == ["language_unknown"]
        assert outcomes["flame"].result.segments[child.key].flags == ["flame_model_not_installed"]
        assert outcomes["captions"].result.segments[child.key].flags == ["caption_model_not_installed"]
        final = decided_record(base.config, record)
        assert [(s.key, s.status) for s in final.segments] == [(face.key, "split"), (child.key, ACCEPTED)]


def test_an_identical_rerun_changes_nothing(base, tmp_path, scrfd_detector):
    config = base.copy(tmp_path)
    folders = [source_dir(config, ref.source_id) for ref in base.refs]
    before = {p: p.stat().st_mtime_ns for folder in folders for p in folder.iterdir()}
    assert _run_all(base, config, scrfd_detector) == [dict.fromkeys(ALL, "unchanged")] * 2
    assert {p: p.stat().st_mtime_ns for folder in folders for p in folder.iterdir()} == before


def test_a_changed_asd_threshold_reruns_asd_and_its_dependants_only(base, tmp_path, scrfd_detector):
    assert dependants("asd") == ["speech", "flame", "captions"]
    config = base.copy(tmp_path, asd={"threshold": 0.6})
    expected = {"faces": "unchanged", "quality": "unchanged", **dict.fromkeys(["asd", *dependants("asd")], "ran")}
    assert _run_all(base, config, scrfd_detector) == [expected] * 2
    for ref in base.refs:
        (decision,) = load_result(config, ref.source_id, "asd").segments.values()
        assert decision.numbers["threshold"] == 0.6
        changed, before = stage_fingerprints(config, ref.source_id), stage_fingerprints(base.config, ref.source_id)
        assert changed["faces"] == before["faces"]
        assert all(changed[name] != before[name] for name in ["asd", *dependants("asd")])
    # The same config again: everything is current.
    assert _run_all(base, config, scrfd_detector) == [dict.fromkeys(ALL, "unchanged")] * 2


def test_a_changed_caption_setting_reruns_captions_only(base, tmp_path, scrfd_detector):
    assert dependants("captions") == [] and "flame" not in dependants("captions")
    config = base.copy(tmp_path, captions={"max_new_tokens": 32})
    assert _run_all(base, config, scrfd_detector) == [{**dict.fromkeys(ALL, "unchanged"), "captions": "ran"}] * 2
    for ref in base.refs:
        flame = json.loads(result_path(config, ref.source_id, "flame").read_text())
        assert flame["fingerprint"] == stage_fingerprints(base.config, ref.source_id)["flame"]


def test_force_reruns_everything_to_the_same_fingerprints(base, tmp_path, scrfd_detector):
    config = base.copy(tmp_path)
    ref = base.refs[0]  # one source is enough here (the others run both)
    outcomes = run_source(ref, config, SharedDetectorBackends(config, scrfd_detector), force=True)
    assert _statuses(outcomes) == dict.fromkeys(ALL, "ran")
    assert stage_fingerprints(config, ref.source_id) == stage_fingerprints(base.config, ref.source_id)


def test_fingerprints_match_across_data_folders_and_follow_the_source_bytes(base, tmp_path, grid_clips,
                                                                            scrfd_detector):
    inputs = tmp_path / "input"
    inputs.mkdir()
    same = grid_clips[0]
    shutil.copyfile(same, inputs / same.name)
    # The same clip with one more byte at the end: it decodes to the same frames, but it is other bytes.
    (inputs / "edited.mpg").write_bytes(same.read_bytes() + b"\0")
    config = stage_config(tmp_path, base.models, inputs=inputs, speech={"transcription_backend": "none"})
    refs = scan(config)
    report = run_sources(refs.values(), config, backends=SharedDetectorBackends(config, scrfd_detector),
                         progress=False)
    assert {o.status for o in report.outcomes} == {"ran"}
    original = next(ref for ref in base.refs if ref.relpath == same.name)
    assert refs[same.name].source_id == original.source_id
    assert stage_fingerprints(config, original.source_id) == stage_fingerprints(base.config, original.source_id)
    edited = load_record(config, refs["edited.mpg"].source_id)
    assert edited.status == ACCEPTED
    assert [(s.start_s, s.end_s) for s in edited.segments] == [
        (s.start_s, s.end_s) for s in load_record(base.config, original.source_id).segments]
    others = stage_fingerprints(config, refs["edited.mpg"].source_id)
    assert set(others) == set(ALL)
    assert all(others[name] != stage_fingerprints(base.config, original.source_id)[name] for name in ALL)


def test_a_stage_before_its_inputs_names_the_source(base, tmp_path):
    ref = base.refs[0]
    empty = base.config_for(tmp_path / "empty")
    with pytest.raises(StageInputMissing, match=ref.source_id) as caught:
        run_stage("quality", ref, empty, ModelBackends(empty))
    assert "faces" in str(caught.value)
    with pytest.raises(StageInputMissing, match=ref.source_id) as caught:
        run_stage("asd", ref, empty, ModelBackends(empty))
    assert "'quality'" in str(caught.value)
    config = base.copy(tmp_path / "copy")
    result_path(config, ref.source_id, "asd").unlink()
    with pytest.raises(StageInputMissing, match=ref.source_id) as caught:
        run_stage("speech", ref, config, ModelBackends(config))
    assert "'asd'" in str(caught.value)
    assert load_result(config, ref.source_id, "speech") is not None, "the stored output is left as it was"


def test_a_disabled_stage_is_passed_through_and_its_dependants_take_the_face_segments(base, tmp_path,
                                                                                     scrfd_detector):
    config = base.copy(tmp_path, asd={"enabled": False})
    expected = {"faces": "unchanged", "quality": "unchanged", "asd": "disabled", "speech": "ran", "flame": "ran",
                "captions": "ran"}
    assert _run_all(base, config, scrfd_detector) == [expected] * 2
    for ref in base.refs:
        record = load_record(config, ref.source_id)
        faces = [s.key for s in record.accepted_segments()]
        for name in ("speech", "flame", "captions"):
            assert list(load_result(config, ref.source_id, name).segments) == faces, name
        assert "asd" not in stage_fingerprints(config, ref.source_id)
        final = decided_record(config, record)
        assert [(s.key, s.status, list(s.stages)) for s in final.segments] == [
            (key, ACCEPTED, ["quality", "speech", "flame", "captions"]) for key in faces]


def test_a_record_under_an_older_schema_is_stale_and_rerun(base, tmp_path, scrfd_detector):
    config = base.copy(tmp_path)
    ref = base.refs[0]
    path = source_dir(config, ref.source_id) / RECORD_FILE
    old = json.loads(path.read_text())
    del old["fingerprint"]
    old["records_version"] = 1  # a key this schema does not know
    path.write_text(json.dumps(old))
    assert load_record(config, ref.source_id) is None
    statuses = _statuses(run_source(ref, config, SharedDetectorBackends(config, scrfd_detector)))
    # The face stage rewrote the whole work folder, so the later stages ran again on it.
    assert statuses == dict.fromkeys(ALL, "ran")
    assert load_record(config, ref.source_id) == load_record(base.config, ref.source_id)
    assert stage_fingerprints(config, ref.source_id) == stage_fingerprints(base.config, ref.source_id)
    # A stage result under an older schema is stale too: only that stage and its dependants rerun.
    asd = json.loads(result_path(config, ref.source_id, "asd").read_text())
    asd["scores"] = []
    result_path(config, ref.source_id, "asd").write_text(json.dumps(asd))
    assert load_result(config, ref.source_id, "asd") is None
    statuses = _statuses(run_source(ref, config, SharedDetectorBackends(config, scrfd_detector)))
    assert statuses == {"faces": "unchanged", "quality": "unchanged", "asd": "ran", "speech": "unchanged",
                        "flame": "unchanged", "captions": "unchanged"}


def test_backends_are_built_once_per_setting(base):
    backends = ModelBackends(base.config)
    assert backends.get("asd") is ModelBackends(base.config).get("asd")
    other = base.config_for(base.root, asd={"device": "cpu", "window_frames": base.config.asd.window_frames + 1})
    assert ModelBackends(other).get("asd") is not backends.get("asd")
