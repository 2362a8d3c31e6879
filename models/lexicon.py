"""Cross-lingual query expansion with a bilingual lexicon (dictionary-based CLIR).

The text tower (multilingual-e5-small, 4-bit) places "kimchi stew" nearer 백김치 (a
kimchi) than 김치찌개 (the stew): its English and Korean food words are only loosely
aligned, and no parallel data exists to teach the heads better. A query in English is
therefore also read through a lexicon of cooking words: "spicy pork stew" glosses to
"매운 돼지고기 찌개", and the query vector is the normalised sum of the two texts'
vectors. Longer phrases win over their words ("kimchi stew" -> 김치찌개, not 김치 찌개).
A text with no lexicon word is embedded as it is. Catalog items are never expanded:
the index is the model's, the expansion is a property of how queries are read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources

LEXICONS = ("en-ko-food",)
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


@dataclass(frozen=True)
class Lexicon:
    name: str
    entries: dict[tuple[str, ...], str]  # lower-case word sequence -> its translation
    longest: int

    def gloss(self, text: str) -> str | None:
        """The translations of the lexicon phrases in ``text``, longest match first;
        None when it has none."""
        words = _WORD.findall(text.lower())
        found: list[str] = []
        at = 0
        while at < len(words):
            for size in range(min(self.longest, len(words) - at), 0, -1):
                translation = self.entries.get(tuple(words[at : at + size]))
                if translation is not None:
                    found.append(translation)
                    at += size
                    break
            else:
                at += 1
        return " ".join(dict.fromkeys(found)) or None


def load_lexicon(name: str) -> Lexicon:
    """A packaged lexicon by name (:data:`LEXICONS`); ValueError for an unknown one."""
    if name not in LEXICONS:
        raise ValueError(f"unknown query lexicon {name!r}; expected one of {LEXICONS} or 'none'")
    text = resources.files("models").joinpath(f"lexicons/{name}.json").read_text("utf-8")
    entries = {
        tuple(_WORD.findall(phrase.lower())): str(translation)
        for phrase, translation in json.loads(text).items()
        if not phrase.startswith("_")
    }
    return Lexicon(name, entries, max(len(key) for key in entries))
