"""Label Studio labeling config for human ratings of talking-head videos.

One Label Studio task is one *version* of one *sample* (task data: ``video``, ``sample``,
``version``, ``n_versions``). The annotator watches the clip and gives:

* three 1..5 ratings (``Rating``, ``maxRating=5``): ``lip_sync``, ``expressiveness``,
  ``motion_quality``, each shown right after its rubric text, which is
  :func:`annotation.aspects.rubric_text`, the same words the judges read;
* ``rank``: where this version stands among all versions of the same sample, 1 = best.

Audio: the ``Video`` tag plays the mp4's own soundtrack in the browser (a plain HTML5 video
element), so the clips are muxed with their speech and no separate ``Audio`` tag or second
media URL is needed; this works offline through Label Studio's local-file serving.

Ranking control, and why not ``Ranker``: Label Studio's ``List``/``Ranker`` pair ranks the
items of a single task by drag and drop; the items render as text/HTML cards (no synced
video playback per item), all versions of a sample would have to be merged into one task
(breaking one task per (sample, version) and the per-version ratings), and a tie is only
expressible through ``Bucket`` groups whose result format differs from a plain rank. A
``Choices`` field ``rank`` with values ``1..N`` on every version's task allows ties by
construction (two versions may both get rank 2), stays one number per (annotator, sample,
version), and exports as a tidy row like the ratings. Ranks are compared within one
annotator and one sample (see :func:`annotation.labelstudio_client.rows_from_annotation`).
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from .aspects import ASPECT_TITLES, ASPECTS, SCORE_MAX, SCORE_MIN, rubric_text

RANK_NAME = "rank"

GENERAL_INSTRUCTIONS = (
    "Watch the whole clip with sound before rating; replay it as often as you need. "
    f"Every score runs from {SCORE_MIN} star (worst) to {SCORE_MAX} stars (best). Rate each aspect on its own: "
    "a clip with perfect lip-sync may still have poor motion."
)

RANK_INSTRUCTIONS = (
    "Rank of this version among all {n} versions of the same sample (the sample id is shown "
    "above; compare the versions before answering): 1 = best, {n} = worst. Ties are allowed: "
    "give equally good versions the same rank."
)


def _attribute(text: str) -> str:
    """``text`` as an XML attribute value; line breaks kept as character references."""
    return escape(text, {'"': "&quot;", "\n": "&#10;"})


def labeling_config(n_versions: int = 4) -> str:
    """The Label Studio XML for samples with up to ``n_versions`` versions each."""
    if n_versions < 1:
        raise ValueError("n_versions must be >= 1")
    parts = [
        "<View>",
        '  <Header value="Sample $sample, version $version"/>',
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
    parts += [
        '  <Header value="Rank among versions" size="4"/>',
        f'  <Text name="{RANK_NAME}_rubric" value="{_attribute(RANK_INSTRUCTIONS.format(n=n_versions))}"/>',
        f'  <Choices name="{RANK_NAME}" toName="video" choice="single-radio" '
        'showInline="true" required="true">',
    ]
    parts += [f'    <Choice value="{i}"/>' for i in range(1, n_versions + 1)]
    parts += ["  </Choices>", "</View>"]
    return "\n".join(parts)
