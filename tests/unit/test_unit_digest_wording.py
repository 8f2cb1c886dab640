"""The digest's count phrase follows each language's plural rules (CLDR)."""

from __future__ import annotations

import pytest

from circulars.digests.wording import count_phrase, words


@pytest.mark.parametrize(
    ("language", "counts"),
    [
        ("en", {1: "1 circular", 2: "2 circulars", 21: "21 circulars"}),
        ("fr", {1: "1 circulaire", 3: "3 circulaires"}),
        ("ru", {1: "1 циркуляр", 3: "3 циркуляра", 5: "5 циркуляров", 21: "21 циркуляр"}),
        ("ar", {1: "تعميم واحد", 2: "تعميمان", 3: "3 تعاميم", 11: "11 تعميمًا"}),
        ("zh", {1: "1 份通函", 4: "4 份通函"}),
        # A language with no phrases of its own reads English, with English plurals.
        ("de", {1: "1 circular", 2: "2 circulars"}),
        ("pt-BR", {1: "1 circular", 7: "7 circulars"}),
    ],
)
def test_count_phrase(language, counts):
    assert {count: count_phrase(language, count) for count in counts} == counts


def test_every_language_has_the_english_phrases_and_placeholders():
    english = words("en")
    for language in ("fr", "es", "ar", "zh", "ru"):
        own = words(language)
        assert set(own) >= set(english)
        for key, phrase in english.items():
            for name in ("{list}", "{date}", "{count}", "{number}"):
                if name in phrase and not key.startswith("count."):
                    assert name in own[key], (language, key)
