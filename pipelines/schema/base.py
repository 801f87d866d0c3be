"""The one strict pydantic base: unknown fields are errors, values are immutable."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys raise instead of being dropped, so a renamed field never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StrictMutableModel(BaseModel):
    """Strict like :class:`StrictModel`, for records that a stage fills in step by step."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
