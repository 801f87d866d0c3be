"""Text language identification with lingua (its models ship inside the wheel)."""

from __future__ import annotations

import pytest

pytest.importorskip("lingua", reason="lingua-language-detector is not installed")

from pipelines.speech.language import DEFAULT_LANGUAGES, LinguaIdentifier  # noqa: E402

SENTENCES = {
    "en": "The weather was lovely this morning, so we walked along the river until lunch.",
    "de": "Am Wochenende fahren wir mit dem Zug zu meinen Großeltern aufs Land.",
    "fr": "Nous avons visité un petit musée près de la gare avant de prendre le train.",
    "es": "Mi hermana trabaja en un hospital grande en el centro de la ciudad.",
    "it": "Ogni mattina prendo un caffè al bar vicino all'ufficio prima di lavorare.",
}


@pytest.fixture(scope="module")
def identifier() -> LinguaIdentifier:
    return LinguaIdentifier()


@pytest.mark.parametrize("code", sorted(SENTENCES))
def test_real_sentences(identifier, code):
    text = SENTENCES[code]
    assert len(text.split()) >= 8
    language, confidence = identifier.identify(text)
    assert language == code, (text, language, confidence)
    assert 0.5 < confidence <= 1.0


def test_empty_and_short_text_give_none(identifier):
    assert identifier.identify("") == (None, 0.0)
    assert identifier.identify("   ") == (None, 0.0)
    assert identifier.identify("hello there") == (None, 0.0)  # 11 chars < default 20
    assert identifier.identify("1234567890 1234567890 1234") == (None, 0.0)  # no letters


def test_min_chars_is_configurable():
    short = LinguaIdentifier(["en", "de", "fr"], min_chars=5)
    assert short.identify("Guten Morgen")[0] == "de"
    assert short.identify("Hi") == (None, 0.0)


def test_candidates_are_validated():
    assert "en" in DEFAULT_LANGUAGES and len(DEFAULT_LANGUAGES) == len(set(DEFAULT_LANGUAGES))
    with pytest.raises(ValueError, match="does not know the language 'xx'"):
        LinguaIdentifier(["en", "xx"])
    with pytest.raises(ValueError, match="at least two"):
        LinguaIdentifier(["en"])
