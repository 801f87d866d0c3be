"""Prompt text for the MLLM judges of talking-head videos (see annotation/judges.py).

Every prompt asks the model to reason first inside ``<think>...</think>`` and to end with one
JSON object; scores are integers from 1 (worst) to 5 (best). The aspects' rubrics come from
:mod:`annotation.aspects`, word for word what the annotators read. Bump ``PROMPT_VERSION``
whenever any text here or there changes, so stored judgements can be traced to the wording
that produced them.
"""

from __future__ import annotations

from .aspects import SCORE_MAX, SCORE_MIN, overall_criteria

PROMPT_VERSION = "judge-prompts/2"

# The rubric of each aspect is annotation.aspects.rubric_text: the words annotators read too.
HOLISTIC_CRITERIA = overall_criteria()
SCALE_WORDS = f"from {SCORE_MIN} (worst) to {SCORE_MAX} (best)"

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
    "Give one overall quality score " + SCALE_WORDS + ". {criteria}\n\n"
    "{answer_rules}"
)

ASPECT_PROMPT = (
    "You are an expert reviewer of synthetic talking-head videos, specialised in one aspect: "
    "{title}.\n{video_intro}\n{audio_line}\n\n"
    "Rubric for {title}:\n{rubric}\n\n"
    "Score only this aspect, " + SCALE_WORDS + "; ignore other qualities of the video.\n\n"
    "{answer_rules}"
)

ALL_ASPECTS_PROMPT = (
    "You are an expert reviewer of synthetic talking-head videos.\n{video_intro}\n{audio_line}\n\n"
    "Score the video on {n} separate aspects, each " + SCALE_WORDS + ", judging each "
    "one on its own rubric.\n\n{rubrics}\n\n"
    "{answer_rules}"
)

ALL_ASPECTS_RUBRIC = "{name} ({title}):\n{rubric}"

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
    f"scores from {SCORE_MIN} to {SCORE_MAX} and, for comparisons, a winner of \"first\", \"second\" or \"tie\"."
)
