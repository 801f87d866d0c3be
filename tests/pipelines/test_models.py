"""Model registry: files resolved in the model folder, verified by sha256, never downloaded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines.models import PACKAGE_PREFIX, REGISTRY, ModelError, ModelStore, format_report, sha256_file

SCRFD_REL = "scrfd/scrfd_500m_kps.onnx"
BUFFALO_REL = "buffalo_sc/det_500m.onnx"


def test_real_scrfd_weights_are_ok(model_dir: Path, scrfd_model: Path):
    store = ModelStore(model_dir)
    status = store.status("scrfd_500m")
    assert status.state == "ok", status.detail
    assert status.path == model_dir / SCRFD_REL
    assert status.sha256 == sha256_file(scrfd_model)
    assert store.path("scrfd_500m") == model_dir / SCRFD_REL


def test_real_mediapipe_weights_are_ok(model_dir: Path):
    if not (model_dir / "mediapipe" / "face_detection_short_range.tflite").is_file():
        pytest.skip("MediaPipe short-range weights not in the model folder")
    assert ModelStore(model_dir).status("mediapipe_short_range").state == "ok"


def test_missing_model_names_the_file_and_how_to_obtain_it(tmp_path: Path):
    store = ModelStore(tmp_path)
    status = store.status("scrfd_500m")
    assert status.state == "missing"
    assert status.path is None and status.sha256 is None
    assert str(tmp_path / SCRFD_REL) in status.detail
    assert str(tmp_path / BUFFALO_REL) in status.detail
    with pytest.raises(ModelError) as raised:
        store.path("scrfd_500m")
    message = str(raised.value)
    assert "scrfd_500m_kps.onnx" in message
    assert "scrfd_500m" in message
    assert REGISTRY["scrfd_500m"].how_to_obtain in message


def test_wrong_bytes_are_a_hash_mismatch(tmp_path: Path):
    target = tmp_path / SCRFD_REL
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not really an onnx model")
    store = ModelStore(tmp_path)
    status = store.status("scrfd_500m")
    assert status.state == "hash_mismatch"
    assert status.path == target
    assert status.sha256 == sha256_file(target)
    assert REGISTRY["scrfd_500m"].candidates[1].sha256 in status.detail
    with pytest.raises(ModelError, match="hash_mismatch|expected sha256"):
        store.path("scrfd_500m")


def test_unpinned_buffalo_file_is_used_and_preferred(tmp_path: Path, scrfd_model: Path):
    for rel in (BUFFALO_REL, SCRFD_REL):
        (tmp_path / rel).parent.mkdir(parents=True)
    shutil.copyfile(scrfd_model, tmp_path / BUFFALO_REL)
    (tmp_path / SCRFD_REL).symlink_to(scrfd_model)
    store = ModelStore(tmp_path)
    status = store.status("scrfd_500m")
    assert status.state == "unpinned"
    assert status.path == tmp_path / BUFFALO_REL  # first candidate wins over the pinned scrfd file
    assert status.sha256 == sha256_file(scrfd_model)
    assert store.path("scrfd_500m") == tmp_path / BUFFALO_REL


def test_unknown_model_lists_the_registered_ones(tmp_path: Path):
    with pytest.raises(ModelError, match="scrfd_500m"):
        ModelStore(tmp_path).status("no_such_model")


def test_report_covers_every_registered_model(tmp_path: Path):
    statuses = ModelStore(tmp_path).report()
    assert [s.name for s in statuses] == sorted(REGISTRY)
    # Weights that ship inside an installed wheel are found whatever the model dir is.
    bundled = {name for name, spec in REGISTRY.items()
               if all(c.relpath.startswith(PACKAGE_PREFIX) for c in spec.candidates)}
    assert bundled == {"pyannote_segmentation_whisperx", "resemblyzer_voice_encoder"}
    assert {s.state for s in statuses if s.name not in bundled} == {"missing"}
    assert {s.state for s in statuses if s.name in bundled} == {"ok"}
    text = format_report(statuses, tmp_path)
    assert str(tmp_path) in text
    for name in REGISTRY:
        assert name in text


WHISPER_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")


def test_real_faster_whisper_base_is_ok_with_every_file_verified(model_dir: Path):
    if not (model_dir / "faster-whisper-base" / "model.bin").is_file():
        pytest.skip("faster-whisper-base is not in the model folder")
    spec = REGISTRY["faster_whisper_base"]
    assert spec.revision == "Systran/faster-whisper-base@ebe41f70d5b6dfa9166e2c581c45c9c0cfc57b66"
    assert sorted(Path(f.relpath).name for f in spec.candidates + spec.extra_files) == sorted(WHISPER_FILES)
    status = ModelStore(model_dir).status("faster_whisper_base")
    assert status.state == "ok", status.detail
    assert "all 4 files" in status.detail and spec.revision in status.detail
    assert "faster_whisper_base" in format_report([status], model_dir)


def _whisper_copy(model_dir: Path, target: Path) -> Path:
    """Links to the real files in ``target/faster-whisper-base`` (no 145 MB copy)."""
    real = model_dir / "faster-whisper-base"
    if not (real / "model.bin").is_file():
        pytest.skip("faster-whisper-base is not in the model folder")
    folder = target / "faster-whisper-base"
    folder.mkdir(parents=True)
    for name in WHISPER_FILES:
        (folder / name).symlink_to(real / name)
    return folder


def test_each_file_of_a_model_folder_is_checked(model_dir: Path, tmp_path: Path):
    folder = _whisper_copy(model_dir, tmp_path)
    (folder / "tokenizer.json").unlink()
    status = ModelStore(tmp_path).status("faster_whisper_base")
    assert status.state == "missing" and "tokenizer.json" in status.detail
    (folder / "tokenizer.json").write_text("{}")
    status = ModelStore(tmp_path).status("faster_whisper_base")
    assert status.state == "hash_mismatch" and "tokenizer.json" in status.detail
    with pytest.raises(ModelError, match="tokenizer.json"):
        ModelStore(tmp_path).path("faster_whisper_base")


def test_a_file_is_hashed_once_per_process(model_dir: Path, tmp_path: Path, monkeypatch):
    import pipelines.models as models

    folder = _whisper_copy(model_dir, tmp_path)
    (folder / "vocabulary.txt").unlink()
    (folder / "vocabulary.txt").write_bytes((model_dir / "faster-whisper-base" / "vocabulary.txt").read_bytes())
    hashed = []
    real_sha = models.sha256_file
    monkeypatch.setattr(models, "sha256_file", lambda path: hashed.append(Path(path).name) or real_sha(path))
    for _ in range(3):  # a fresh store each time, as each stage or clip would make
        assert ModelStore(tmp_path).status("faster_whisper_base").state == "ok"
    assert hashed.count("vocabulary.txt") == 1, hashed  # a new file: read once for three stores
    # A replaced file is hashed again (its size and mtime changed).
    (folder / "vocabulary.txt").write_bytes(b"changed")
    assert ModelStore(tmp_path).status("faster_whisper_base").state == "hash_mismatch"
    assert hashed.count("vocabulary.txt") == 2, hashed
