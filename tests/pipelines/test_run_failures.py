"""A stage that fails on one source stops that source only (pipelines.runner.run_sources)."""

import json
import shutil

from pipelines.cli import main as talkinghead
from pipelines.runner import run_sources
from pipelines.schema.index import ShardIndex
from pipelines.schema.records import PENDING
from pipelines.workdir import SOURCE_AUDIO_FILE, source_dir
from stage_fixtures import SharedDetectorBackends, scan, stage_config


def test_a_failing_stage_stops_its_source_only_and_nothing_of_it_is_packed(tmp_path, grid_clips, model_dir,
                                                                           scrfd_detector, monkeypatch, capsys):
    inputs = tmp_path / "input"
    inputs.mkdir()
    for clip in grid_clips[:2]:
        shutil.copyfile(clip, inputs / clip.name)
    config = stage_config(tmp_path, model_dir, speech={"transcription_backend": "pocketsphinx"},
                          flame={"enabled": False}, captions={"enabled": False})
    refs = sorted(scan(config).values(), key=lambda r: r.source_id)
    backends = SharedDetectorBackends(config, scrfd_detector)
    run_sources(refs, config, backends=backends, stages=["asd"], progress=False)
    broken, healthy = refs
    (source_dir(config, broken.source_id) / SOURCE_AUDIO_FILE).unlink()  # the speech stage reads it

    report = run_sources(refs, config, backends=backends, progress=False)

    assert set(report.failures) == {broken.source_id}
    assert "FileNotFoundError" in report.failures[broken.source_id]
    assert SOURCE_AUDIO_FILE in report.failures[broken.source_id]
    ran = {(o.source_id, o.stage): o.status for o in report.outcomes}
    assert ran[(healthy.source_id, "speech")] == "ran"
    assert (broken.source_id, "speech") not in ran
    assert {r.source_id for r in report.records} == {broken.source_id, healthy.source_id}

    # The CLI goes on to pack the healthy source, says which one failed and exits 1.
    monkeypatch.setenv("TALKINGHEAD_INPUT_DIR", str(inputs))
    monkeypatch.setenv("TALKINGHEAD_DATA_DIR", str(config.paths.data_dir))
    monkeypatch.setenv("TALKINGHEAD_MODEL_DIR", str(model_dir))
    config_file = tmp_path / "config.yaml"
    config_file.write_text("speech: {transcription_backend: pocketsphinx}\nflame: {enabled: false}\n"
                           "captions: {enabled: false}\n")
    assert talkinghead(["--config", str(config_file), "run", "--quiet"]) == 1
    assert f"FAILED {broken.source_id}: FileNotFoundError" in capsys.readouterr().err
    index = ShardIndex.load(config.paths.shards_dir)
    owners = {key.rsplit("_s", 1)[0] for key in index.samples}
    assert owners == {healthy.source_id}
    rows = [json.loads(line) for line in (config.paths.shards_dir / "manifest.jsonl").read_text().splitlines()]
    broken_rows = [r for r in rows if r["kind"] == "segment" and r["source_id"] == broken.source_id
                   and r["status"] != "split"]
    assert broken_rows and {(r["status"], r["reason"]) for r in broken_rows} == {(PENDING, "speech_not_run")}
