from pipelines.captions.instruction import (
    BANNED_PATTERN, EMOTION_WORDS, INSTRUCTION, INSTRUCTION_VERSION, MAX_WORDS, check_caption, clean_caption,
    corrective_instruction)

GOOD = ("A skeptical woman raises her left brow and narrows her eyes, mouth corners pulled down slightly, "
        "head tilted right, gaze fixed on the camera.")


def test_instruction_states_the_rules():
    assert INSTRUCTION_VERSION == "v1"
    text = INSTRUCTION.lower()
    for needle in ("one concise sentence", "emotion", "brows", "eyes", "corners of the mouth", "tilt", "gaze"):
        assert needle in text
    assert "speaking" in text and "talking" in text and "listening" in text  # named only to forbid them


def test_good_caption_passes():
    assert check_caption(GOOD) == []
    assert check_caption("Calm man with relaxed brows and steady eyes looking slightly downward.") == []


def test_think_block_and_quotes_are_stripped():
    raw = f"<think>The person seems to be talking, so...\nOk.</think>\n  \"{GOOD}\"  "
    assert clean_caption(raw) == GOOD
    assert check_caption(raw) == []
    assert clean_caption("<think>unfinished reasoning about speaking") == ""
    assert clean_caption("Caption: 'A worried look with knitted brows.'") == "A worried look with knitted brows."


def test_empty_answer():
    assert check_caption("") == ["empty answer"]
    assert check_caption("<think>hmm</think>  ") == ["empty answer"]


def test_banned_words_any_form_case_insensitive():
    for word in ("speaking", "Talking", "LISTENING", "spoke", "talks", "listens", "speaks", "talked"):
        problems = check_caption(f"A happy woman with raised brows {word} to the camera.")
        assert any(p.startswith("uses banned words") for p in problems), word
    # word boundaries: other words containing the letters are fine
    assert not BANNED_PATTERN.search("a stalk of wheat; the speakeasy sign")
    assert check_caption("A happy woman with raised brows and bright eyes.") == []


def test_two_sentences():
    problems = check_caption("She looks happy. Her brows are raised and her eyes look left.")
    assert "more than one sentence" in problems
    assert "more than one sentence" in check_caption("Is she happy? Her brows rise!")
    assert check_caption("She looks happy, with raised brows and eyes looking left.") == []


def test_no_emotion_and_too_long():
    assert check_caption("Her brows are raised and her eyes look to the left.") == ["names no specific emotion"]
    long = "A happy person " + " ".join(["with raised brows"] * 15) + "."
    problems = check_caption(long)
    assert any(p.startswith("too long") for p in problems)
    assert len(long.split()) > MAX_WORDS


def test_emotion_list_covers_the_basics():
    for word in ("happy", "sad", "angry", "surprised", "fearful", "disgusted", "neutral", "calm", "content",
                 "amused", "anxious", "frustrated", "curious", "pensive", "confident", "bored", "skeptical",
                 "contemptuous", "joyful", "worried"):
        assert word in EMOTION_WORDS


def test_corrective_instruction_lists_problems():
    text = corrective_instruction(INSTRUCTION, ["more than one sentence", "names no specific emotion"])
    assert text.startswith(INSTRUCTION)
    assert "more than one sentence; names no specific emotion" in text
