"""WER/CER: hand-counted cases, normalisation, corpus-level pooling, bad input."""

from __future__ import annotations

import pytest

from avsr.errors import InputError
from avsr.metrics import cer, error_counts, normalize_text, wer


def test_wer_counts_each_edit_kind() -> None:
    c = error_counts(["a b c d"], ["a x c d e"])  # 1 substitution, 1 insertion
    assert (c.substitutions, c.deletions, c.insertions, c.hits) == (1, 0, 1, 3)
    assert c.reference_length == 4 and c.rate == pytest.approx(0.5)
    c = error_counts(["a b c d"], ["a d"])  # 2 deletions
    assert (c.deletions, c.errors) == (2, 2)


def test_rates_are_pooled_over_the_corpus_not_averaged() -> None:
    refs = ["one", "two three four five"]
    hyps = ["won", "two three four five"]
    assert wer(refs, hyps) == pytest.approx(1 / 5)  # a per-sentence mean would give 0.5


def test_cer_counts_characters_including_spaces() -> None:
    assert cer(["ab cd"], ["ab cx"]) == pytest.approx(1 / 5)
    assert cer(["abc"], ["abc"]) == 0.0


def test_normalisation_is_optional() -> None:
    assert normalize_text("  Don't  STOP, now! ") == "don't stop now"
    assert wer(["Bin blue, at F2!"], ["bin blue at f2"]) == 0.0
    assert wer(["Bin blue"], ["bin blue"], normalize=False) == pytest.approx(0.5)


def test_empty_references() -> None:
    assert wer([""], [""]) == 0.0
    assert wer(["", "a b"], ["x", "a b"]) == pytest.approx(1 / 2)
    assert wer([""], ["x"]) == float("inf")
    assert wer([], []) == 0.0


def test_bad_input() -> None:
    with pytest.raises(InputError):
        wer(["a"], ["a", "b"])
    with pytest.raises(InputError):
        wer("abc", "abd")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        error_counts(["a"], ["a"], unit="phone")
