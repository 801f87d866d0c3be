"""Prompt text for the MLLM judges of talking-head videos (see annotation/judges.py).

Every prompt asks the model to reason first inside ``<think>...</think>`` and to end with one
JSON object; scores are integers from 1 (worst) to 5 (best). The aspects' rubrics come from
:mod:`annotation.aspects`, word for word what the annotators read. The video is shown as the
clip with its soundtrack, as the clip without sound, or as frames (``media`` below), and the
prompts say which. Bump ``PROMPT_VERSION`` whenever any text here or there changes: cached
judgements are keyed by it, and stored ones can be traced to the wording that produced them.
"""

from __future__ import annotations

from .aspects import SCORE_MAX, SCORE_MIN, overall_criteria

PROMPT_VERSION = "judge-prompts/3"

# The rubric of each aspect is annotation.aspects.rubric_text: the words annotators read too.
HOLISTIC_CRITERIA = overall_criteria()
SCALE_WORDS = f"from {SCORE_MIN} (worst) to {SCORE_MAX} (best)"

# One video shown alone, by media (annotation.judge_clients.MEDIA_MODES).
VIDEO_INTRO = {
    "video+audio": "The video above is a generated talking-head clip with its soundtrack: watch it and listen to it.",
    "video": "The video above is a generated talking-head clip, given without its sound.",
    "frames": "The frames above are sampled in time order from a generated talking-head video.",
}
# Two videos shown one after the other, by media.
PAIR_MEDIA = {
    "video+audio": "Each is given as the clip with its soundtrack: watch and listen to both.",
    "video": "Each is given as the clip without its sound.",
    "frames": "Each is given as frames sampled in time order.",
}

TRANSCRIPT_LINE = "Transcript of the speech: {transcript}"
# No transcript: what to judge the speech from, by media.
NO_TRANSCRIPT_LINE = {
    "video+audio": "Judge the speech from the soundtrack.",
    "video": "No transcript of the speech is available; judge from the picture alone.",
    "frames": "No transcript of the speech is available; judge from the frames alone.",
}

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
    "audio are shown: the FIRST video comes first, then the SECOND video, each introduced by its "
    "label. {pair_media}\n{audio_line}\n\n{focus}\n\n"
    "Decide which video is better. Do not prefer a video because of the order it was shown in. "
    "{tie_rule}\n\n"
    "{answer_rules}"
)

# Direct comparison is a forced choice (FlowPortrait's Direct-Comp); ties only where configured.
TIE_ALLOWED = "Answer \"tie\" only if you genuinely cannot tell them apart in quality."
TIE_FORBIDDEN = "You must pick one of the two videos, even when they are close; \"tie\" is not an answer."

PAIRWISE_HOLISTIC_FOCUS = "Compare the videos overall. " + HOLISTIC_CRITERIA

PAIRWISE_ASPECT_FOCUS = (
    "Compare the videos on one aspect only, {title}, and ignore everything else.\nRubric:\n{rubric}"
)

FIRST_VIDEO_LABEL = "FIRST video:"
SECOND_VIDEO_LABEL = "SECOND video:"

IN_CONTEXT_PREAMBLE = (
    "Before the real task, here are {n} solved comparisons from a human study: every annotator "
    "who ranked the two videos preferred the same one. Use them to calibrate what counts as "
    "better; they are not part of the task itself."
)

IN_CONTEXT_EXAMPLE_ANSWER = "<think>{explanation}</think>\n{answer}"

# Why the humans preferred an example's winner: the aspect it was picked for.
IN_CONTEXT_EXPLANATION = "Every annotator preferred the {winner} video."
IN_CONTEXT_ASPECT_EXPLANATION = (
    " The clearest difference is {title}: mean human score {first:.1f} for the FIRST video and "
    "{second:.1f} for the SECOND."
)

IN_CONTEXT_TASK_INTRO = "Now the real task. The videos below are new and unrelated to the examples."

AGGREGATOR_PROMPT = (
    "You lead a panel of reviewers comparing two synthetic talking-head videos (called FIRST "
    "and SECOND) driven by the same audio.\n{audio_line}\n\n"
    "Each panel member examined one aspect and reported a verdict with its reasoning:\n\n"
    "{reports}\n\n"
    "Combine the reports into one overall verdict. Mouth accuracy usually matters most to "
    "viewers, but a severe failure in any aspect (a collapsing face, a frozen expression) can "
    "outweigh small advantages elsewhere. Weigh how confident and specific each report is. "
    "{tie_rule}\n\n"
    "{answer_rules}"
)

AGGREGATOR_REPORT = "[{title}] verdict: {winner}\nreasoning: {reasoning}"

FORMAT_REMINDER = (
    "Your previous answer could not be used: {problem}. Answer again: reason inside "
    "<think>...</think>, then give exactly one JSON object of the form {example}."
)
