"""Language of a transcript's text, with lingua (lingua-language-detector; models in the wheel).

Only meaningful for text from a language-capable source (a multilingual ASR or subtitles):
an English-only recogniser writes English words whatever was spoken.

The candidate set matters for speed and accuracy. Measured on the 2-core development machine
(lingua 2.1.1, separate processes, until the first answer): 10 languages about 1.1 s,
the 28 below 3-5 s, all 75 about 7 s lazily and 12 s preloaded; a query then takes about
1 ms. The default is the 28 languages most likely in talking-head video; pass
``languages="all"`` for every language lingua knows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

DEFAULT_LANGUAGES = (
    "en", "de", "fr", "es", "it", "pt", "nl", "ru", "zh", "ja", "ko", "ar", "hi", "tr",
    "pl", "uk", "sv", "da", "nb", "nn", "fi", "cs", "el", "he", "id", "vi", "ro", "hu",
)
DEFAULT_MIN_CHARS = 20


def _lingua_language(code: str):
    from lingua import IsoCode639_1, Language

    try:
        return Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper()))
    except AttributeError:
        known = sorted(lang.iso_code_639_1.name.lower() for lang in Language.all())
        raise ValueError(f"lingua does not know the language {code!r}; it knows {', '.join(known)}") from None


class LinguaIdentifier:
    """LanguageIdentifier on lingua: ``identify(text) -> (ISO 639-1 code, confidence)``.

    The confidence is lingua's relative confidence of the best language among the candidates
    (the values over all candidates sum to 1). Text shorter than ``min_chars`` characters
    (after stripping) gives ``(None, 0.0)``, as does text lingua cannot place.
    """

    name = "lingua"

    def __init__(self, languages: Iterable[str] | str = DEFAULT_LANGUAGES, *, min_chars: int = DEFAULT_MIN_CHARS,
                 preload: bool = False):
        """``languages``: ISO 639-1 codes, or "all". ``preload``: load every language model
        now instead of on the first query (slower to build, same answers)."""
        from lingua import Language, LanguageDetectorBuilder

        if isinstance(languages, str):
            if languages != "all":
                raise ValueError(f'languages must be ISO 639-1 codes or "all", got {languages!r}')
            builder = LanguageDetectorBuilder.from_all_languages()
            self.languages = tuple(sorted(lang.iso_code_639_1.name.lower() for lang in Language.all()))
        else:
            self.languages = tuple(dict.fromkeys(code.lower() for code in languages))
            if len(self.languages) < 2:
                raise ValueError("lingua needs at least two candidate languages")
            builder = LanguageDetectorBuilder.from_languages(*(_lingua_language(c) for c in self.languages))
        if preload:
            builder = builder.with_preloaded_language_models()
        self.min_chars = int(min_chars)
        self._detector = builder.build()
        self._lock = threading.Lock()

    def identify(self, text: str) -> tuple[str | None, float]:
        text = (text or "").strip()
        if len(text) < self.min_chars:
            return None, 0.0
        with self._lock:  # lingua loads its models lazily on the first queries
            values = self._detector.compute_language_confidence_values(text)
        if not values or values[0].value <= 0.0:
            return None, 0.0
        best = values[0]
        return best.language.iso_code_639_1.name.lower(), float(best.value)
