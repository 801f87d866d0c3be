"""The captioning instruction (versioned) and the rule checker for a model's answer.

Rules (see DESIGN.md, Captions): one concise sentence about the person's facial expression
across the given frames, naming a specific emotion and describing facial geometry (brows,
eyes, mouth corners, head tilt) and gaze; mouth movements caused by speech are ignored; the
words speaking / talking / listening (and their forms) are never used.

Change ``INSTRUCTION_VERSION`` whenever ``INSTRUCTION`` changes: the version is part of the
caption cache key.
"""

from __future__ import annotations

import re

INSTRUCTION_VERSION = "v1"

INSTRUCTION = (
    "These frames are taken in order from one short video of a single person's face. "
    "Write ONE concise sentence that describes the person's facial expression over these frames. "
    "Name one specific emotion (for example amused, worried, skeptical or calm) and describe the "
    "facial geometry that shows it: the brows, the eyes, the corners of the mouth and any tilt of "
    "the head, as well as where the gaze is directed. "
    "Mouth movements that only come from producing words carry no meaning here: leave them out. "
    "Do not use the words speaking, talking or listening, or any other form of them. "
    "Answer with the sentence only."
)

MAX_WORDS = 40

EMOTION_WORDS = frozenset(
    """
    happy happiness joyful joy cheerful delighted pleased glad content contented satisfied
    amused amusement playful excited elated enthusiastic proud confident determined hopeful
    relieved grateful affectionate tender warm friendly
    sad sadness sorrowful unhappy melancholic melancholy gloomy downcast dejected disappointed
    hurt lonely grief grieving tearful somber sombre wistful nostalgic
    angry anger annoyed irritated irritation frustrated frustration furious irate indignant
    resentful hostile stern defiant
    surprised surprise astonished amazed shocked startled
    fearful fear afraid scared frightened anxious anxiety nervous worried worry tense uneasy
    apprehensive alarmed panicked concerned
    disgusted disgust repulsed contemptuous contempt disdainful scornful
    neutral calm relaxed serene composed peaceful impassive indifferent
    curious interested attentive intrigued focused thoughtful pensive contemplative reflective
    puzzled confused perplexed doubtful skeptical sceptical suspicious uncertain hesitant
    bored weary tired sleepy fatigued apathetic
    embarrassed shy ashamed guilty sheepish awkward
    sympathetic empathetic compassionate earnest sincere serious solemn smug sarcastic
    """.split()
)

# Forms of speak / talk / listen, matched on word boundaries, case-insensitively.
BANNED_PATTERN = re.compile(
    r"\b(speak(?:s|ing|er|ers)?|spoke|spoken|talk(?:s|ed|ing|er|ers|ative)?|listen(?:s|ed|ing|er|ers)?)\b",
    re.IGNORECASE,
)

_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.IGNORECASE | re.DOTALL)
_QUOTES = "\"'`“”‘’«»"
_WORD = re.compile(r"[A-Za-z]+(?:['’-][A-Za-z]+)*")
# A sentence end: . ! or ? followed by whitespace and more text (abbreviations such as
# "e.g." are rare in captions and are accepted as a false positive risk).
_SENTENCE_BREAK = re.compile(r"[.!?]+[\"')\]]*\s+(?=\S)")


def clean_caption(text: str) -> str:
    """Strip <think>...</think> blocks (an unclosed one to the end), whitespace and surrounding quotes."""
    text = _THINK.sub("", text or "")
    text = text.strip()
    prefix = re.match(r"^(caption|answer)\s*:\s*", text, re.IGNORECASE)
    if prefix:
        text = text[prefix.end():]
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return " ".join(text.split())


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def check_caption(text: str) -> list[str]:
    """Problems with a (cleaned) caption; an empty list means it follows the rules."""
    text = clean_caption(text)
    if not text:
        return ["empty answer"]
    problems: list[str] = []
    if _SENTENCE_BREAK.search(text):
        problems.append("more than one sentence")
    banned = sorted({m.group(0).lower() for m in BANNED_PATTERN.finditer(text)})
    if banned:
        problems.append("uses banned words: " + ", ".join(banned))
    tokens = words(text)
    if not any(w in EMOTION_WORDS for w in tokens):
        problems.append("names no specific emotion")
    if len(tokens) > MAX_WORDS:
        problems.append(f"too long ({len(tokens)} words, at most {MAX_WORDS})")
    return problems


def corrective_instruction(instruction: str, problems: list[str]) -> str:
    """The instruction with the previous answer's problems appended (for one retry)."""
    listed = "; ".join(problems)
    return f"{instruction}\nYour previous answer broke these rules: {listed}. Answer again following every rule."
