"""The rating aspects, defined once: what annotators read in Label Studio and what judges read.

Each aspect has a name (the key in every table), a title, one description of what to look at
and an anchor for every point of the 1..5 scale. :func:`rubric_text` joins them; the labeling
config (:mod:`annotation.rubric`) and the judge prompts (:mod:`annotation.judge_prompts`) both
show exactly that text, so a human score and a judge score answer the same question.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Aspect:
    name: str
    title: str
    description: str
    anchors: dict[int, str]  # score -> what that score means, for every score from 1 to 5


SCORE_MIN = 1
SCORE_MAX = 5
SCALE = tuple(range(SCORE_MIN, SCORE_MAX + 1))

_ASPECTS = (
    Aspect(
        name="lip_sync",
        title="Lip-sync",
        description=(
            "How precisely the mouth follows the speech. Check the mouth shapes (lips close on "
            "m/b/p, round on o/u, the jaw opens on a), the timing (mouth motion starts and stops "
            "with the sounds, neither early nor late) and how natural the mouth motion is (no "
            "jitter, no frozen or smeared lips, no teeth or tongue popping in and out)."
        ),
        anchors={
            5: "shapes and timing match the speech throughout and look entirely natural",
            4: "a good match with a few small slips in shape or timing",
            3: "broadly follows the speech, with clear mismatches or stiff mouth motion",
            2: "frequent mismatches: the mouth often moves when it should not, or not when it should",
            1: "the mouth is unrelated to the speech, static, or badly distorted",
        },
    ),
    Aspect(
        name="expressiveness",
        title="Facial expressiveness",
        description=(
            "How well the face carries the feeling of the audio and how real it looks. Check that "
            "brows, eyes, cheeks and mouth match the emotion in the voice and words (calm, excited, "
            "sad, amused, angry) with a fitting intensity, and that the expression changes as the "
            "speech changes. Penalise flat, mask-like, exaggerated or uncanny faces."
        ),
        anchors={
            5: "clearly fits the audio, changes with it and looks fully human",
            4: "fitting and realistic, slightly flat or slightly overdone in places",
            3: "neutral most of the time, or only partly fitting, or somewhat artificial",
            2: "mostly the wrong emotion, or clearly artificial expressions",
            1: "contradicts the audio, frozen throughout, or grotesquely unnatural",
        },
    ),
    Aspect(
        name="motion_quality",
        title="Motion quality",
        description=(
            "How good the motion is apart from the mouth, and how stable the picture is. Check head "
            "movement (natural turns, nods and tilts, neither rigid nor wobbling), subtle motion such "
            "as blinks and small eye and brow movements, consistency over time (identity, face shape, "
            "hair and texture stay the same, no flicker or jumps) and the background (no warping or "
            "swimming around the head)."
        ),
        anchors={
            5: "natural, lively motion with blinks, consistent identity and a steady background",
            4: "natural overall, with minor stiffness or a small artefact",
            3: "noticeable stiffness, missing blinks, flicker or limited background warping",
            2: "jerky or drifting motion, identity changes, or clear background distortion",
            1: "severe jitter, a collapsing face, a frozen head or a heavily warped background",
        },
    ),
)

ASPECTS: tuple[str, ...] = tuple(a.name for a in _ASPECTS)
BY_NAME: dict[str, Aspect] = {a.name: a for a in _ASPECTS}
ASPECT_TITLES: dict[str, str] = {a.name: a.title for a in _ASPECTS}


def scale_text(aspect: str) -> str:
    """One line per score, best first: ``5 = ...``."""
    anchors = BY_NAME[aspect].anchors
    return "\n".join(f"{score} = {anchors[score]}." for score in reversed(SCALE))


def rubric_text(aspect: str) -> str:
    """The description, then the meaning of every score: the text humans and judges both read."""
    return f"{BY_NAME[aspect].description}\n{scale_text(aspect)}"


def overall_criteria() -> str:
    """The aspects side by side, for a score or comparison that weighs them together."""
    lines = [f"- {a.title}: {a.description}" for a in _ASPECTS]
    return "Weigh these aspects together:\n" + "\n".join(lines)

