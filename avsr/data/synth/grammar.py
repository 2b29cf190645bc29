"""The GRID sentence grammar: six slots, 51 words, 64,000 sentences.

``command color preposition letter digit adverb``, e.g. "place red at f two now".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SLOTS", "SLOT_NAMES", "VOCABULARY", "Sentence", "sample_sentence", "espeak_text"]

#: slot name -> the words that may fill it, in a fixed order.
SLOTS: dict[str, tuple[str, ...]] = {
    "command": ("bin", "lay", "place", "set"),
    "color": ("blue", "green", "red", "white"),
    "preposition": ("at", "by", "in", "with"),
    "letter": tuple(c for c in "abcdefghijklmnopqrstuvxyz"),  # GRID has no "w"
    "digit": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "adverb": ("again", "now", "please", "soon"),
}
SLOT_NAMES: tuple[str, ...] = tuple(SLOTS)
#: All words of the grammar, sorted.
VOCABULARY: tuple[str, ...] = tuple(sorted({w for words in SLOTS.values() for w in words}))

# Words eSpeak would misread when written plainly: the letter "a" is read as the
# article /@/; the phoneme string makes it the letter name /eI/.
_SPOKEN: dict[str, str] = {"a": "[[eI]]"}


@dataclass(frozen=True)
class Sentence:
    """One GRID sentence.

    Attributes:
        words: the six words, one per slot in :data:`SLOT_NAMES` order.
    """

    words: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.words) != len(SLOT_NAMES):
            raise ValueError(f"a GRID sentence has {len(SLOT_NAMES)} words, got {len(self.words)}")
        for slot, word in zip(SLOT_NAMES, self.words):
            if word not in SLOTS[slot]:
                raise ValueError(f"{word!r} is not a GRID {slot}")

    @property
    def text(self) -> str:
        """The sentence as lower-case text, words separated by single spaces."""
        return " ".join(self.words)

    def slot(self, name: str) -> str:
        """The word in slot ``name`` (e.g. ``"color"``)."""
        return self.words[SLOT_NAMES.index(name)]


def sample_sentence(rng: np.random.Generator) -> Sentence:
    """Draw one sentence, every slot uniformly and independently.

    Example:
        >>> s = sample_sentence(np.random.default_rng(0))
        >>> len(s.words), s.words[0] in SLOTS["command"]
        (6, True)
    """
    return Sentence(tuple(str(words[rng.integers(len(words))]) for words in SLOTS.values()))


def espeak_text(words: tuple[str, ...] | list[str]) -> tuple[str, list[tuple[int, int]]]:
    """The text to give eSpeak for ``words`` and where each word sits in it.

    Args:
        words: the words to speak.

    Returns:
        ``(text, spans)``: ``spans[i] = (first, last)`` 1-based character
        positions of word ``i`` in ``text`` (eSpeak's word events report
        1-based positions).

    Example:
        >>> espeak_text(["set", "a", "now"])
        ('set [[eI]] now', [(1, 3), (5, 10), (12, 14)])
    """
    parts, spans, pos = [], [], 1
    for word in words:
        spoken = _SPOKEN.get(word, word)
        spans.append((pos, pos + len(spoken) - 1))
        parts.append(spoken)
        pos += len(spoken) + 1
    return " ".join(parts), spans
