"""The two Label Studio forms of a study, the answers they produce, and the checks on them.

**Rating form** (:func:`rating_config`, one task per clip). Task data: ``clip`` (an opaque id,
see :mod:`annotation.blinding`) and ``video``. The annotator watches the clip and gives three
1..5 ratings (``Rating``, ``maxRating=5``): ``lip_sync``, ``expressiveness``,
``motion_quality``, each right after its rubric text, which is
:func:`annotation.aspects.rubric_text` (a description and the meaning of every level 1-5),
the same words the judges read.

**Ranking form** (:func:`ranking_config`, one task per sample). Task data: ``item`` (opaque)
and ``video_1`` .. ``video_n``: every version of the sample, side by side as videos A, B, C, ...
in an order drawn per sample. Under each video a ``Choices`` field ``rank_<k>`` takes 1..n
(1 = best). Ties: equal ranks. Partial orders: a video the annotator cannot place is left
unranked and enters no comparison. Why not Label Studio's ``Ranker``: its items are
text/HTML cards in one list, not ``Video`` tags with their own player and sound.

What counts as a ranking (:func:`ranking_problem`): at least two videos ranked, and the ranks
written either densely (ties share a rank, the next rank follows: 1, 2, 2, 3) or in
competition style (a tie of k at rank r is followed by r + k: 1, 2, 2, 4). Anything else, e.g.
1, 3, 3, 4 (rank 2 skipped with no tie above to explain it), is a slip of the mouse rather than
an order, and the export rejects it with the reason.

Audio: each ``Video`` tag plays its mp4's own soundtrack (``muted="false"``); the clips are
muxed with their speech, so no ``Audio`` tag or second URL is needed.

The rubric version recorded in every exported row is :func:`rubric_version` of the labeling
config the project holds: the XML annotators actually saw.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from xml.sax.saxutils import escape

from .aspects import ASPECT_TITLES, ASPECTS, SCORE_MAX, SCORE_MIN, rubric_text

RANK_NAME = "rank"  # the aspect name rank rows carry in the tidy tables
SLOT_LETTERS = "ABCDEFGHIJKLMNOPQRST"  # one per video of the ranking view (max_versions <= 20)
RANKING_VIDEO_HEIGHT = 320  # px per player: two rows of four fit one screen (Label Studio's default is 600)

GENERAL_INSTRUCTIONS = (
    "Watch the whole clip with sound before rating; replay it as often as you need. "
    f"Every score runs from {SCORE_MIN} star (worst) to {SCORE_MAX} stars (best). Rate each aspect on its own: "
    "a clip with perfect lip-sync may still have poor motion."
)

RANKING_INSTRUCTIONS = (
    "These {n} videos are versions of the same speech. Watch each one with sound (one at a time), then give "
    "each a rank: 1 = best, {n} = worst, weighing lip-sync, facial expressiveness and motion quality together. "
    "Ties are allowed: give equally good videos the same rank (1, 2, 2, 3 or 1, 2, 2, 4). Leave a video "
    "unranked only if you cannot place it at all; rank at least two."
)


def _attribute(text: str) -> str:
    """``text`` as an XML attribute value; line breaks kept as character references."""
    return escape(text, {'"': "&quot;", "\n": "&#10;"})


def rating_config() -> str:
    """The Label Studio XML of the rating task: one clip, three rubrics with 1-5 stars."""
    parts = [
        "<View>",
        '  <Header value="Clip $clip"/>',
        f'  <Text name="instructions" value="{_attribute(GENERAL_INSTRUCTIONS)}"/>',
        '  <Video name="video" value="$video" muted="false"/>',
    ]
    for aspect in ASPECTS:
        parts += [
            f'  <Header value="{_attribute(ASPECT_TITLES[aspect])}" size="4"/>',
            f'  <Text name="{aspect}_rubric" value="{_attribute(rubric_text(aspect))}"/>',
            f'  <Rating name="{aspect}" toName="video" maxRating="{SCORE_MAX}" '
            'icon="star" required="true"/>',
        ]
    parts.append("</View>")
    return "\n".join(parts)


def slot_name(slot: int) -> str:
    """The ranking form's video ``slot`` (1-based) as the annotator sees it: A, B, C, ..."""
    return SLOT_LETTERS[slot - 1]


def ranking_config(n_versions: int) -> str:
    """The Label Studio XML of the ranking task: ``n_versions`` videos side by side, a rank under each."""
    if not 2 <= n_versions <= len(SLOT_LETTERS):
        raise ValueError(f"a ranking shows 2..{len(SLOT_LETTERS)} versions, not {n_versions}")
    columns = n_versions if n_versions <= 3 else math.ceil(n_versions / 2)
    parts = [
        "<View>",
        f'  <Header value="Item $item: rank the {n_versions} versions"/>',
        f'  <Text name="ranking_instructions" value="{_attribute(RANKING_INSTRUCTIONS.format(n=n_versions))}"/>',
        f'  <View style="display: grid; grid-template-columns: repeat({columns}, 1fr); column-gap: 16px">',
    ]
    for slot in range(1, n_versions + 1):
        parts += [
            "    <View>",
            f'      <Header value="Video {slot_name(slot)}" size="4"/>',
            f'      <Video name="video_{slot}" value="$video_{slot}" muted="false" height="{RANKING_VIDEO_HEIGHT}"/>',
            f'      <Choices name="{RANK_NAME}_{slot}" toName="video_{slot}" choice="single-radio" showInline="true">',
        ]
        parts += [f'        <Choice value="{r}"/>' for r in range(1, n_versions + 1)]
        parts += ["      </Choices>", "    </View>"]
    parts += ["  </View>", "</View>"]
    return "\n".join(parts)


def rubric_version(label_config: str) -> str:
    """A short content hash of a labeling config: changes whenever any word or control changes."""
    return hashlib.sha256(label_config.encode("utf-8")).hexdigest()[:12]


# answers ------------------------------------------------------------------------------------


def _get(obj, key: str, default=None):
    return obj.get(key, default) if isinstance(obj, Mapping) else getattr(obj, key, default)


def ratings_from_result(result: list) -> dict[str, int]:
    """``{aspect: score}`` from a rating annotation's ``result`` list (other controls ignored)."""
    scores = {}
    for item in result or []:
        name, value = _get(item, "from_name"), _get(item, "value") or {}
        if name in ASPECTS and "rating" in value:
            scores[name] = int(value["rating"])
    return scores


def ranks_from_result(result: list) -> dict[int, int]:
    """``{slot: rank}`` from a ranking annotation's ``result`` list; unranked slots are absent."""
    ranks = {}
    prefix = RANK_NAME + "_"
    for item in result or []:
        name, value = str(_get(item, "from_name") or ""), _get(item, "value") or {}
        if name.startswith(prefix) and name[len(prefix):].isdigit() and value.get("choices"):
            ranks[int(name[len(prefix):])] = int(value["choices"][0])
    return ranks


def rating_problem(scores: Mapping[str, int]) -> str | None:
    """Why a rating annotation cannot be used, or None: every aspect once, each within 1..5."""
    missing = [a for a in ASPECTS if a not in scores]
    if missing:
        return f"aspects not rated: {', '.join(missing)}"
    outside = {a: s for a, s in scores.items() if not SCORE_MIN <= s <= SCORE_MAX}
    if outside:
        return f"scores outside {SCORE_MIN}..{SCORE_MAX}: {outside}"
    return None


def ranking_problem(ranks: Mapping[int, int], n_versions: int) -> str | None:
    """Why ``{slot: rank}`` is not a ranking of ``n_versions`` videos (see the module docstring), or None."""
    unknown = sorted(s for s in ranks if not 1 <= s <= n_versions)
    if unknown:
        return f"ranks for videos that the task does not show: slots {unknown}"
    outside = sorted(r for r in ranks.values() if not 1 <= r <= n_versions)
    if outside:
        return f"ranks {outside} outside 1..{n_versions}"
    if len(ranks) < 2:
        return f"{len(ranks)} video(s) ranked: at least two are needed for any comparison"
    values = sorted(ranks.values())
    dense = sorted(set(values)) == list(range(1, len(set(values)) + 1))
    competition = all(r == 1 + sum(v < r for v in values) for r in values)
    if dense or competition:
        return None
    for r in sorted(set(values)):
        if r != 1 + sum(v < r for v in values) and (r - 1) not in values:
            better = sum(v < r for v in values)
            shown = ", ".join(f"{slot_name(s)}={ranks[s]}" for s in sorted(ranks))
            return (f"ranks {shown} are not a consistent order: rank {r} follows {better} better video(s), so it "
                    f"should be {better + 1} (competition style) or the ranks below it should leave no gap (dense)")
    return f"ranks {values} mix dense and competition style"


def rating_result(scores: Mapping[str, int]) -> list[dict]:
    """The ``result`` list the rating form submits for ``scores``."""
    result = []
    for aspect, score in scores.items():
        if aspect not in ASPECTS:
            raise ValueError(f"unknown aspect {aspect!r}")
        result.append({"from_name": aspect, "to_name": "video", "type": "rating", "value": {"rating": int(score)}})
    return result


def ranking_result(ranks: Mapping[int, int]) -> list[dict]:
    """The ``result`` list the ranking form submits for ``{slot: rank}``."""
    return [{"from_name": f"{RANK_NAME}_{slot}", "to_name": f"video_{slot}", "type": "choices",
             "value": {"choices": [str(int(rank))]}} for slot, rank in sorted(ranks.items())]
