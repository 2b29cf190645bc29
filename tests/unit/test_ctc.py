"""CTC helpers: greedy decoding, prefix scoring against brute force, alignment."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from avsr.decoding import CTCPrefixScorer, forced_align, greedy_ctc, word_timestamps
from avsr.errors import InputError
from avsr.tokenizer import CharTokenizer


def collapse(path: tuple[int, ...], blank: int = 0) -> tuple[int, ...]:
    out, prev = [], None
    for s in path:
        if s != prev and s != blank:
            out.append(s)
        prev = s
    return tuple(out)


def brute_force(log_probs: torch.Tensor) -> dict[tuple[int, ...], float]:
    """p(y | x) for every output y, summing all V**T alignment paths."""
    T, V = log_probs.shape
    probs: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(V), repeat=T):
        p = math.exp(sum(float(log_probs[t, s]) for t, s in enumerate(path)))
        y = collapse(path)
        probs[y] = probs.get(y, 0.0) + p
    return probs


@pytest.mark.parametrize("seed,V,lengths", [(0, 3, (6, 4)), (1, 4, (5, 5)), (2, 4, (3, 6))])
def test_prefix_scorer_matches_brute_force(seed: int, V: int, lengths: tuple[int, int]) -> None:
    torch.manual_seed(seed)
    T = max(lengths)
    lp = torch.randn(2, T, V).mul(1.5).log_softmax(-1)
    scorer = CTCPrefixScorer(lp, torch.tensor(lengths))
    for b, Tb in enumerate(lengths):
        full = brute_force(lp[b, :Tb])
        assert sum(full.values()) == pytest.approx(1.0, abs=1e-6)
        outputs = [y for n in range(4) for y in itertools.product(range(1, V), repeat=n)]
        for y in outputs:
            want_full = full.get(y, 0.0)
            want_prefix = sum(p for z, p in full.items() if z[: len(y)] == y)
            got_prefix, got_full = scorer.sequence_scores(b, y)
            assert math.exp(got_full) == pytest.approx(want_full, rel=1e-4, abs=1e-9), y
            assert math.exp(got_prefix) == pytest.approx(want_prefix, rel=1e-4, abs=1e-9), y


def test_batched_candidate_scores_match_single_sequences() -> None:
    """Scoring (hypotheses x candidates) at once equals scoring each sequence alone."""
    torch.manual_seed(4)
    lp = torch.randn(2, 7, 6).log_softmax(-1)
    scorer = CTCPrefixScorer(lp, torch.tensor([7, 5]))
    prefixes = [(0, (2,)), (1, (3,)), (0, (4,)), (1, (2,))]  # (utterance, one-token prefix)
    state = scorer.initial_state(torch.tensor([0, 1]))
    state = scorer.extend(state, torch.tensor([u for u, _ in prefixes]), torch.tensor([p[0] for _, p in prefixes]))
    cand = torch.tensor([[1, 2, 3, 4, 5]] * 4)
    pre = scorer.prefix_scores(state, cand)
    final = scorer.final_scores(state)
    for i, (u, p) in enumerate(prefixes):
        assert float(state.prefix[i]) == pytest.approx(scorer.sequence_scores(u, p)[0], abs=1e-5)
        assert float(final[i]) == pytest.approx(scorer.sequence_scores(u, p)[1], abs=1e-5)
        for k, c in enumerate(cand[i].tolist()):
            assert float(pre[i, k]) == pytest.approx(scorer.sequence_scores(u, p + (c,))[0], abs=1e-5)
    # extending by a candidate gives the prefix score computed without the recursion
    ext = scorer.extend(state, torch.arange(4), cand[:, 1])
    assert torch.allclose(ext.prefix, pre[:, 1], atol=1e-5)


def test_greedy_ctc_merges_repeats_and_respects_lengths() -> None:
    V = 5
    best = torch.tensor([[1, 1, 0, 1, 2, 2, 3, 3], [4, 0, 4, 4, 2, 0, 0, 0]])
    lp = torch.nn.functional.one_hot(best, V).float().mul(5).log_softmax(-1)
    assert greedy_ctc(lp, torch.tensor([8, 4])) == [[1, 1, 2, 3], [4, 4]]
    assert greedy_ctc(lp) == [[1, 1, 2, 3], [4, 4, 2]]
    with pytest.raises(InputError):
        greedy_ctc(lp[0])


def test_forced_align_and_word_timestamps() -> None:
    tok = CharTokenizer.train(["ab ba"])
    ids = tok.encode("ab ba")
    a, b, space = ids[0], ids[1], ids[2]
    # frame:  0  1  2  3  4  5      6  7  8  9
    best = [0, a, a, b, 0, space, 0, b, a, a]
    lp = torch.nn.functional.one_hot(torch.tensor(best), tok.vocab_size).float().mul(10).log_softmax(-1)
    spans = forced_align(lp, ids)
    assert spans == [(1, 2), (3, 3), (5, 5), (7, 7), (8, 9)]
    words = word_timestamps(lp, ids, tok, frame_rate=25.0)
    assert [w.word for w in words] == ["ab", "ba"]
    assert words[0].start == pytest.approx(1 / 25) and words[0].end == pytest.approx(4 / 25)
    assert words[1].start == pytest.approx(7 / 25) and words[1].end == pytest.approx(10 / 25)
    with pytest.raises(InputError):
        forced_align(lp[:3], ids)  # five tokens cannot fit in three frames


def test_word_timestamps_with_sentencepiece_word_marker() -> None:
    from avsr.tokenizer import SentencePieceTokenizer

    texts = ["bin blue at f two now", "place red by g nine soon", "set white with p four please"] * 5
    tok = SentencePieceTokenizer.train(texts, vocab_size=40, model_type="bpe")
    ids = tok.encode("blue at now")
    path = []
    for t in ids:  # the k-th token on frames 3k+1 and 3k+2, blanks between
        path += [0, t, t]
    path.append(0)
    lp = torch.nn.functional.one_hot(torch.tensor(path), tok.vocab_size).float().mul(10).log_softmax(-1)
    words = word_timestamps(lp, ids, tok)
    assert [w.word for w in words] == ["blue", "at", "now"]
    spans = tok.word_spans(ids)
    for w, (_, first, last) in zip(words, spans):
        assert w.start == pytest.approx((3 * first + 1) / 25)
        assert w.end == pytest.approx((3 * last + 3) / 25)
    assert all(a.end <= b.start for a, b in zip(words, words[1:]))
