"""Label Studio labeling config for human ratings of talking-head videos.

One Label Studio task is one *version* of one *sample* (task data: ``video``, ``sample``,
``version``, ``n_versions``). The annotator watches the clip and gives:

* three 1..5 ratings (``Rating``, ``maxRating=5``): ``lip_sync``, ``expressiveness``,
  ``motion_quality``, each shown right after its rubric text;
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
annotator and one sample (see :func:`annotation.labelstudio.rows_from_annotation`).
"""

from __future__ import annotations

from xml.sax.saxutils import escape

ASPECTS = ("lip_sync", "expressiveness", "motion_quality")
MAX_RATING = 5
RANK_NAME = "rank"

ASPECT_TITLES = {
    "lip_sync": "Lip-sync",
    "expressiveness": "Facial expressiveness",
    "motion_quality": "Motion quality",
}

GENERAL_INSTRUCTIONS = (
    "Watch the whole clip with sound before rating; replay it as often as you need. "
    "Every score runs from 1 star (worst) to 5 stars (best). Rate each aspect on its own: "
    "a clip with perfect lip-sync may still have poor motion."
)

RUBRICS = {
    "lip_sync": (
        "How precisely the mouth matches the speech. Check the mouth shapes (lips close on "
        "m/b/p, round on o/u, the jaw opens on a), the timing (mouth motion starts and stops "
        "with the sounds, neither early nor late) and the naturalness of the mouth motion (no "
        "jitter, frozen or smeared lips, teeth that pop in and out). "
        "5 = shapes and timing right throughout and natural; 3 = broadly follows the speech with "
        "clear mismatches or stiff motion; 1 = mouth unrelated to the speech, static or distorted."
    ),
    "expressiveness": (
        "How well the face carries the emotion of the audio and how real it looks. Check that "
        "brows, eyes, cheeks and mouth match the feeling in the voice and words, with a fitting "
        "intensity, and that the expression changes as the speech changes. Penalise flat, "
        "mask-like, exaggerated or uncanny faces. "
        "5 = clearly fits the audio and looks fully human; 3 = partly fitting or somewhat flat or "
        "artificial; 1 = expression contradicts the audio, is frozen, or looks unreal."
    ),
    "motion_quality": (
        "How good the motion is apart from the mouth. Check head movement (natural, neither "
        "rigid nor wobbling), subtle motion such as blinks and small eye and brow movements, "
        "consistency over time (identity, face shape and texture stay the same, no flicker or "
        "jumps) and the stability of the background (no warping or swimming around the head). "
        "5 = natural and stable throughout; 3 = noticeable stiffness, flicker or background "
        "warping; 1 = severe jitter, distortion or a frozen head."
    ),
}

RANK_INSTRUCTIONS = (
    "Rank of this version among all {n} versions of the same sample (the sample id is shown "
    "above; compare the versions before answering): 1 = best, {n} = worst. Ties are allowed: "
    "give equally good versions the same rank."
)


def labeling_config(n_versions: int = 4) -> str:
    """The Label Studio XML for samples with up to ``n_versions`` versions each."""
    if n_versions < 1:
        raise ValueError("n_versions must be >= 1")
    parts = [
        "<View>",
        '  <Header value="Sample $sample, version $version"/>',
        f'  <Text name="instructions" value="{escape(GENERAL_INSTRUCTIONS, {chr(34): "&quot;"})}"/>',
        '  <Video name="video" value="$video" muted="false"/>',
    ]
    for aspect in ASPECTS:
        rubric = escape(RUBRICS[aspect], {'"': "&quot;"})
        parts += [
            f'  <Header value="{escape(ASPECT_TITLES[aspect])}" size="4"/>',
            f'  <Text name="{aspect}_rubric" value="{rubric}"/>',
            f'  <Rating name="{aspect}" toName="video" maxRating="{MAX_RATING}" '
            'icon="star" required="true"/>',
        ]
    rank_text = escape(RANK_INSTRUCTIONS.format(n=n_versions), {'"': "&quot;"})
    parts += [
        '  <Header value="Rank among versions" size="4"/>',
        f'  <Text name="{RANK_NAME}_rubric" value="{rank_text}"/>',
        f'  <Choices name="{RANK_NAME}" toName="video" choice="single-radio" '
        'showInline="true" required="true">',
    ]
    parts += [f'    <Choice value="{i}"/>' for i in range(1, n_versions + 1)]
    parts += ["  </Choices>", "</View>"]
    return "\n".join(parts)
