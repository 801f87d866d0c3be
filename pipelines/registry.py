"""The per-source stages, in the order they run.

    faces -> quality -> asd -> speech -> flame
                                    \\-> captions

Faces decode the source once and write the tracked crops with per-frame quality figures;
quality keeps the frames whose face is large, sharp and turned enough, from those figures
alone (it may split a clip); active speaker detection keeps the speaking frames (it may
split a clip); speech drops clips with overlapping or
non-English speech; FLAME and captions annotate what is left and do not depend on each
other, so they may run side by side. Each stage module defines its own ``SPEC``.
"""

from __future__ import annotations

from pipelines.asd.stage import SPEC as ASD
from pipelines.captions.stage import SPEC as CAPTIONS
from pipelines.config import PipelineConfig
from pipelines.faces.stage import SPEC as FACES
from pipelines.flame.stage import SPEC as FLAME
from pipelines.quality.stage import SPEC as QUALITY
from pipelines.speech.stage import SPEC as SPEECH
from pipelines.stage_spec import StageSpec

STAGES: tuple[StageSpec, ...] = (FACES, QUALITY, ASD, SPEECH, FLAME, CAPTIONS)
BY_NAME: dict[str, StageSpec] = {spec.name: spec for spec in STAGES}
ROOT = FACES.name


def _check_order() -> None:
    seen: set[str] = set()
    for spec in STAGES:
        unknown = set(spec.needs) - seen
        if unknown:
            raise RuntimeError(f"stage {spec.name} needs {sorted(unknown)}, which do not run before it")
        seen.add(spec.name)


_check_order()


def stage(name: str) -> StageSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}: expected one of {', '.join(BY_NAME)}") from None


def ancestors(name: str) -> list[str]:
    """Every stage ``name`` depends on, directly or not, in run order."""
    wanted: set[str] = set()
    todo = list(stage(name).needs)
    while todo:
        need = todo.pop()
        if need not in wanted:
            wanted.add(need)
            todo.extend(stage(need).needs)
    return [spec.name for spec in STAGES if spec.name in wanted]


def dependants(name: str) -> list[str]:
    """Every stage that depends on ``name``, directly or not, in run order."""
    return [spec.name for spec in STAGES if name in ancestors(spec.name)]


def deciding_stages(config: PipelineConfig, upto: str | None = None) -> list[str]:
    """The enabled later stages whose decisions apply to a segment, in run order: all of them,
    or (``upto``) those ``upto`` depends on, i.e. what decides its candidates."""
    names = ancestors(upto) if upto is not None else [spec.name for spec in STAGES]
    return [name for name in names if name != ROOT and stage(name).enabled(config)]
