"""Word and character error rates (computed with jiwer).

Rates are corpus-level: total edits over total reference units, not a mean of
per-sentence rates. By default text is normalised first (lower case,
punctuation other than apostrophes removed, whitespace collapsed), so
``"Bin blue, at F2!"`` and ``"bin blue at f2"`` match.

Example:
    >>> wer(["bin blue at f two now"], ["bin blue at f to now"])
    0.16666666666666666
    >>> cer(["abc"], ["abd"])
    0.3333333333333333
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Sequence

from avsr.errors import InputError

_PUNCT = re.compile(r"[^\w\s']", flags=re.UNICODE)


def normalize_text(text: str) -> str:
    """Lower case, drop punctuation (apostrophes kept), collapse whitespace.

    Example:
        >>> normalize_text("  Don't  STOP, now! ")
        "don't stop now"
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = _PUNCT.sub(" ", text)
    return " ".join(text.split())


@dataclass
class ErrorCounts:
    """Edit counts of a corpus.

    Attributes:
        substitutions, deletions, insertions, hits: alignment counts.
        reference_length: number of reference units (words or characters).
    """

    substitutions: int
    deletions: int
    insertions: int
    hits: int
    reference_length: int

    @property
    def errors(self) -> int:
        """Total edits."""
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """Edits per reference unit (``inf`` for insertions against an empty reference)."""
        if self.reference_length == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.reference_length


def error_counts(
    references: Sequence[str], hypotheses: Sequence[str], unit: str = "word", normalize: bool = True
) -> ErrorCounts:
    """Align hypotheses to references and count edits.

    Args:
        references: reference transcripts.
        hypotheses: system outputs, one per reference.
        unit: ``"word"`` or ``"char"`` (characters of the space-joined words).
        normalize: apply :func:`normalize_text` to both sides first.

    Returns:
        The corpus :class:`ErrorCounts`.

    Raises:
        InputError: different numbers of references and hypotheses, or bad unit.
    """
    import jiwer

    if isinstance(references, str) or isinstance(hypotheses, str):
        raise InputError(None, "pass lists of sentences, not single strings")
    if len(references) != len(hypotheses):
        raise InputError(None, f"{len(references)} references but {len(hypotheses)} hypotheses")
    if unit not in ("word", "char"):
        raise InputError(None, f"unit must be 'word' or 'char', not {unit!r}")
    prep = normalize_text if normalize else (lambda s: " ".join(s.split()))
    refs = [prep(r) for r in references]
    hyps = [prep(h) for h in hypotheses]
    if not refs:
        return ErrorCounts(0, 0, 0, 0, 0)
    if unit == "word":
        out = jiwer.process_words(refs, hyps)
        n_ref = sum(len(r.split()) for r in refs)
    else:
        out = jiwer.process_characters(refs, hyps)
        n_ref = sum(len(r) for r in refs)
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, out.hits, n_ref)


def wer(references: Sequence[str], hypotheses: Sequence[str], normalize: bool = True) -> float:
    """Corpus word error rate (see :func:`error_counts`)."""
    return error_counts(references, hypotheses, "word", normalize).rate


def cer(references: Sequence[str], hypotheses: Sequence[str], normalize: bool = True) -> float:
    """Corpus character error rate, spaces counted (see :func:`error_counts`)."""
    return error_counts(references, hypotheses, "char", normalize).rate
