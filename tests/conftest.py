"""Shared fixtures: the ../shared folder (real media, real weights), composed media, one detector.

Media and weights are never copied into the repository; composed media is made once per
session under pytest's tmp folder (see pipelines/fixtures/media.py).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# tests/pipelines mirrors the package and has no __init__.py: with only tests/ on sys.path
# (pytest's rootdir-based import mode) `pipelines` would resolve to that folder as a
# namespace package. The repository root on sys.path makes the real package win.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import pytest  # noqa: E402

from pipelines.config import CONFIG_ENV, DATA_DIR_ENV, INPUT_DIR_ENV, MODEL_DIR_ENV  # noqa: E402
from pipelines.fixtures.media import MediaCache  # noqa: E402
SHARED_ENV = "TALKINGHEAD_SHARED_DIR"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = Path(os.environ.get(SHARED_ENV) or REPO.parent / "shared").expanduser().resolve()
    if not path.is_dir():
        pytest.skip(f"shared folder {path} not found: set ${SHARED_ENV} to the folder holding media/ and models/")
    return path


@pytest.fixture(scope="session")
def grid_dir(shared_dir: Path) -> Path:
    path = shared_dir / "media" / "grid"
    if not sorted(path.glob("*.mpg")):
        pytest.skip(f"no GRID clips (*.mpg) in {path}")
    return path


@pytest.fixture(scope="session")
def grid_clips(grid_dir: Path) -> list[Path]:
    return sorted(grid_dir.glob("*.mpg"))


@pytest.fixture(scope="session")
def grid_clip(grid_clips: list[Path]) -> Path:
    """One GRID clip: 360x288, 25 fps, 3.00 s, one frontal face, MP2 audio."""
    return grid_clips[0]


@pytest.fixture(scope="session")
def model_dir(shared_dir: Path) -> Path:
    path = shared_dir / "models"
    if not path.is_dir():
        pytest.skip(f"model folder {path} not found (real weights are needed for this test)")
    return path


def _weights_file(model_dir: Path, relpath: str, model: str) -> Path:
    """A weights file of the model folder; the test is skipped when it is absent."""
    path = model_dir / relpath
    if not path.is_file():
        pytest.skip(f"{model} weights {path} not found")
    return path


@pytest.fixture(scope="session")
def scrfd_model(model_dir: Path) -> Path:
    return _weights_file(model_dir, "scrfd/scrfd_500m_kps.onnx", "SCRFD")


@pytest.fixture(scope="session")
def light_asd_weights(model_dir: Path) -> Path:
    return _weights_file(model_dir, "light-asd/pretrain_AVA_CVPR.model", "Light-ASD")


@pytest.fixture(scope="session")
def scrfd_detector(model_dir: Path, scrfd_model: Path):
    """The SCRFD-500M detector, built once through build_detector and shared by all tests."""
    from pipelines.config import FaceDetectionConfig
    from pipelines.faces.detectors import build_detector
    from pipelines.models import ModelStore

    detector = build_detector(FaceDetectionConfig(backend="scrfd"), ModelStore(model_dir))
    yield detector
    detector.close()


@pytest.fixture(scope="session")
def composed(tmp_path_factory) -> MediaCache:
    """Session cache of composed media: ``composed.get(name, make, *args)`` builds each file once."""
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    return MediaCache(tmp_path_factory.mktemp("composed-media"))


@pytest.fixture(scope="session", autouse=True)
def _no_talkinghead_env():
    """Tests build their own configs: a developer's (or the Makefile's) TALKINGHEAD_* paths,
    which override config files by design, must not leak into them. Session-scoped so that
    module- and session-scoped fixtures calling load_config see it too."""
    with pytest.MonkeyPatch.context() as patch:
        for name in (CONFIG_ENV, MODEL_DIR_ENV, DATA_DIR_ENV, INPUT_DIR_ENV):
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="session")
def grid_asd_run(tmp_path_factory, grid_clip: Path, model_dir: Path, scrfd_detector):
    """One GRID clip through the real face stage (SCRFD) and Light-ASD, packed into shards
    (tests/stage_fixtures.py: GridRun); shared by the schema and decision tests, read-only."""
    from stage_fixtures import GridRun

    if not (model_dir / "light-asd" / "pretrain_AVA_CVPR.model").is_file():
        pytest.skip("Light-ASD weights not in the model dir")
    return GridRun(tmp_path_factory.mktemp("grid-run"), grid_clip, model_dir, scrfd_detector)
