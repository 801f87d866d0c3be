"""Keep the stage tests independent of a developer's TALKINGHEAD_* environment."""

from __future__ import annotations

import pytest

from pipelines.config import CONFIG_ENV, DATA_DIR_ENV, INPUT_DIR_ENV, MODEL_DIR_ENV


@pytest.fixture(scope="session", autouse=True)
def _no_talkinghead_env():
    # Session-scoped so that module- and session-scoped fixtures calling load_config see it too.
    with pytest.MonkeyPatch.context() as patch:
        for name in (CONFIG_ENV, MODEL_DIR_ENV, DATA_DIR_ENV, INPUT_DIR_ENV):
            patch.delenv(name, raising=False)
        yield
