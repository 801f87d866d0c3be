"""Prompt text for the MLLM judges of talking-head videos (see annotation/judges.py).

Every prompt asks the model to reason first inside ``<think>...</think>`` and to end with one
JSON object; scores are integers from 1 (worst) to 5 (best). Bump ``PROMPT_VERSION`` whenever
any text here changes, so stored judgements can be traced to the wording that produced them.
"""

from __future__ import annotations

PROMPT_VERSION = "judge-prompts/1"

ASPECTS = ("lip_sync", "expressiveness", "motion_quality")

ASPECT_TITLES = {
    "lip_sync": "Lip synchronisation",
    "expressiveness": "Expressiveness",
    "motion_quality": "Motion quality",
}

RUBRICS = {
    "lip_sync": (
        "Judge how well the mouth follows the speech. Look at whether the mouth shapes fit the "
        "sounds being spoken (closed lips for m/b/p, rounded lips for o/u, open jaw for a), whether "
        "mouth movements start and stop at the right moments rather than early or late, and whether "
        "the mouth moves like a real speaker's: no jitter, no frozen or smeared lips, no teeth or "
        "tongue that appear and vanish between frames.\n"
        "5 = mouth shapes and timing match the speech throughout and look entirely natural.\n"
        "4 = good match with a few small slips in shape or timing.\n"
        "3 = broadly follows the speech but with noticeable mismatches or stiff mouth motion.\n"
        "2 = frequent mismatches; the mouth often moves when it should not, or not when it should.\n"
        "1 = the mouth is unrelated to the speech, static, or badly distorted."
    ),
    "expressiveness": (
        "Judge whether the face conveys the feeling carried by the audio and whether it does so "
        "believably. Consider the emotion in the voice or words (calm, excited, sad, amused, "
        "angry), whether brows, eyes, cheeks and mouth express it with a fitting intensity, and "
        "whether the expression changes as the speech does instead of staying fixed. Penalise "
        "exaggerated, mask-like or uncanny expressions.\n"
        "5 = the expression clearly fits the audio, changes with it and looks fully human.\n"
        "4 = fitting and realistic, slightly flat or slightly overdone in places.\n"
        "3 = neutral most of the time, or only partly matching the emotion.\n"
        "2 = mostly wrong emotion or clearly artificial expressions.\n"
        "1 = expressionless throughout or grotesquely unnatural."
    ),
    "motion_quality": (
        "Judge the movement of the head and face apart from the mouth, and the stability of the "
        "picture. Consider natural head turns, nods and tilts that accompany speech, small "
        "motions such as blinks and eye movements, whether identity, face shape, hair and "
        "clothing stay consistent from frame to frame, and whether the background stays still "
        "without warping, flicker or melting around the head.\n"
        "5 = lively, natural head motion with blinks, fully consistent identity, steady background.\n"
        "4 = natural overall with minor stiffness or a small artefact.\n"
        "3 = rigid or repetitive motion, missing blinks, or visible but limited artefacts.\n"
        "2 = jerky or drifting motion, identity changes, or clear background distortion.\n"
        "1 = severe jitter, collapse of the face, or a heavily warped background."
    ),
}

HOLISTIC_CRITERIA = (
    "Weigh three things together: how precisely the mouth follows the speech, how well the "
    "facial expression fits the feeling of the audio, and how natural and stable the head "
    "motion, blinks and background are."
)

VIDEO_INTRO = (
    "The frames above are sampled in time order from a generated talking-head video."
)

AUDIO_LINE = "What the audio contains: {audio}"
NO_AUDIO_LINE = "No description of the audio is available; judge from the frames alone."

ANSWER_RULES = (
    "First reason step by step inside <think>...</think>. After the closing tag, write exactly "
    "one JSON object and nothing else, in the form {example}."
)

HOLISTIC_PROMPT = (
    "You are an expert reviewer of synthetic talking-head videos.\n"
    "{video_intro}\n{audio_line}\n\n"
    "Give one overall quality score from 1 (very poor) to 5 (excellent). {criteria}\n\n"
    "{answer_rules}"
)

ASPECT_PROMPT = (
    "You are an expert reviewer of synthetic talking-head videos, specialised in one aspect: "
    "{title}.\n{video_intro}\n{audio_line}\n\n"
    "Rubric for {title}:\n{rubric}\n\n"
    "Score only this aspect, from 1 (worst) to 5 (best); ignore other qualities of the video.\n\n"
    "{answer_rules}"
)

THREE_ASPECTS_PROMPT = (
    "You are an expert reviewer of synthetic talking-head videos.\n{video_intro}\n{audio_line}\n\n"
    "Score the video on three separate aspects, each from 1 (worst) to 5 (best), judging each "
    "one on its own rubric.\n\n"
    "lip_sync:\n{lip_sync}\n\nexpressiveness:\n{expressiveness}\n\nmotion_quality:\n{motion_quality}\n\n"
    "{answer_rules}"
)

PAIRWISE_PROMPT = (
    "You are an expert reviewer of synthetic talking-head videos. Two videos driven by the same "
    "audio are shown: the FIRST video's frames come first, then the SECOND video's frames, each "
    "group introduced by its label.\n{audio_line}\n\n{focus}\n\n"
    "Decide which video is better. Do not prefer a video because of the order it was shown in. "
    "Answer \"tie\" only if you genuinely cannot tell them apart in quality.\n\n"
    "{answer_rules}"
)

PAIRWISE_HOLISTIC_FOCUS = "Compare the videos overall. " + HOLISTIC_CRITERIA

PAIRWISE_ASPECT_FOCUS = (
    "Compare the videos on one aspect only, {title}, and ignore everything else.\nRubric:\n{rubric}"
)

FIRST_VIDEO_LABEL = "FIRST video:"
SECOND_VIDEO_LABEL = "SECOND video:"

IN_CONTEXT_PREAMBLE = (
    "Before the real task, here are {n} solved comparisons made by a careful human reviewer. "
    "Use them to calibrate what counts as better; they are not part of the task itself."
)

IN_CONTEXT_EXAMPLE_ANSWER = "<think>{explanation}</think>\n{answer}"

IN_CONTEXT_TASK_INTRO = "Now the real task. The videos below are new and unrelated to the examples."

AGGREGATOR_PROMPT = (
    "You lead a panel of reviewers comparing two synthetic talking-head videos (called FIRST "
    "and SECOND) driven by the same audio.\n{audio_line}\n\n"
    "Each panel member examined one aspect and reported a verdict with its reasoning:\n\n"
    "{reports}\n\n"
    "Combine the reports into one overall verdict. Mouth accuracy usually matters most to "
    "viewers, but a severe failure in any aspect (a collapsing face, a frozen expression) can "
    "outweigh small advantages elsewhere. Weigh how confident and specific each report is.\n\n"
    "{answer_rules}"
)

AGGREGATOR_REPORT = "[{title}] verdict: {winner}\nreasoning: {reasoning}"

FORMAT_REMINDER = (
    "Your previous answer could not be used: {problem}. Answer again: reason inside "
    "<think>...</think>, then give exactly one JSON object of the form {example}, using integer "
    "scores from 1 to 5 and, for comparisons, a winner of \"first\", \"second\" or \"tie\"."
)
