"""Head orientation from FLAME's global rotation (pipelines/flame/orientation.py)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.config import QualityConfig
from pipelines.flame.orientation import angles_from_axis_angle, flame_orientation


def _about(axis: str, degrees: float) -> np.ndarray:
    vector = np.zeros(3)
    vector["xyz".index(axis)] = np.radians(degrees)
    return vector


@pytest.mark.parametrize("axis, column", [("y", 0), ("x", 1), ("z", 2)])
@pytest.mark.parametrize("degrees", [-70.0, -20.0, 5.0, 45.0])
def test_a_rotation_about_one_axis_is_that_angle(axis, column, degrees):
    angles = angles_from_axis_angle(_about(axis, degrees)[None])[0]
    assert angles[column] == pytest.approx(degrees, abs=1e-6)
    assert np.delete(angles, column) == pytest.approx([0.0, 0.0], abs=1e-6)


def test_labels_follow_the_quality_thresholds_and_flag_a_disallowed_majority():
    config = QualityConfig()
    turned = np.stack([_about("y", 75.0)] * 6 + [_about("y", 10.0)] * 4)  # mostly profile
    numbers, payload, flags = flame_orientation(turned, config)
    assert numbers["orientation"] == "profile" and payload["labels"] == {"frontal": 4, "profile": 6}
    assert flags == ["head_orientation_outside_allowed"]
    assert payload["source"] == "flame_global_rotation" and len(payload["yaw_deg"]) == 10
    frontal = np.stack([_about("y", -12.0), _about("x", 8.0), _about("z", 30.0)])
    numbers, _, flags = flame_orientation(frontal, config)
    assert numbers["orientation"] == "frontal" and flags == []
    side = np.stack([_about("y", 45.0)] * 3)
    assert flame_orientation(side, config)[0]["orientation"] == "side"
    assert flame_orientation(side, config.model_copy(update={"allowed_orientations": ("frontal",)}))[2] == [
        "head_orientation_outside_allowed"]
