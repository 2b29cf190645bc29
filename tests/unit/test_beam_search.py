"""Joint CTC/attention beam search against greedy decoding and exhaustive search.

The model is a tiny stand-in (embedding + GRU conditioned on the masked mean
of the memory), so these tests do not depend on avsr.models.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor, nn

from avsr.decoding import CTCPrefixScorer, greedy_attention, greedy_ctc, joint_beam_search
from avsr.errors import InputError
from avsr.models.lm import TokenLM

BLANK = 0


class StandInDecoder(nn.Module):
    """``decoder(tokens (N, L), memory (N, T, D), memory_lengths (N,)) -> logits (N, L, V)``."""

    def __init__(self, vocab: int, dim: int = 16, sharpness: float = 3.0):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.rnn = nn.GRU(dim, dim, batch_first=True)
        self.out = nn.Linear(dim, vocab)
        self.sharpness = sharpness

    def forward(self, tokens: Tensor, memory: Tensor, memory_lengths: Tensor) -> Tensor:
        mask = torch.arange(memory.shape[1])[None, :] < memory_lengths[:, None]
        ctx = (memory * mask[..., None]).sum(1) / memory_lengths[:, None].clamp(min=1)
        h, _ = self.rnn(self.embed(tokens) + ctx[:, None, :])
        return self.sharpness * self.out(h)


class StandInModel(nn.Module):
    """What the search expects from an AVSR model: decoder, ctc_log_probs, sos/eos ids."""

    def __init__(self, vocab: int, dim: int = 16):
        super().__init__()
        self.decoder = StandInDecoder(vocab, dim)
        self.ctc = nn.Linear(dim, vocab)
        self.sos_id = self.eos_id = vocab - 1
        with torch.no_grad():  # random models tend to stop at once; make outputs a few tokens long
            self.decoder.out.bias[self.eos_id] -= 0.5

    def ctc_log_probs(self, enc: Tensor) -> Tensor:
        return (2.0 * self.ctc(enc)).log_softmax(-1)


def make_case(seed: int, vocab: int = 8, lengths: tuple[int, ...] = (7, 5, 9), dim: int = 16):
    torch.manual_seed(seed)
    model = StandInModel(vocab, dim).eval()
    lens = torch.tensor(lengths)
    enc = torch.randn(len(lengths), int(lens.max()), dim)
    return model, enc, lens


def joint_score(model: StandInModel, enc: Tensor, length: int, tokens: list[int], ctc_weight: float,
                lm: TokenLM | None = None, lm_weight: float = 0.0, bonus: float = 0.0,
                ctc: Tensor | None = None) -> float:
    """The joint score of a finished hypothesis, computed independently of the search."""
    eos = model.eos_id
    inp = torch.tensor([[model.sos_id] + tokens])
    with torch.no_grad():
        logp = model.decoder(inp, enc[None, :length], torch.tensor([length]))[0].log_softmax(-1)
    att = sum(float(logp[i, t]) for i, t in enumerate(tokens + [eos]))
    score = (1 - ctc_weight) * att + bonus * len(tokens)
    if ctc_weight > 0:
        lp = model.ctc_log_probs(enc[None, :length]).detach() if ctc is None else ctc[None, :length]
        scorer = CTCPrefixScorer(lp)
        score += ctc_weight * scorer.sequence_scores(0, tokens)[1]
    if lm is not None:
        with torch.no_grad():
            lp, _ = lm(torch.tensor([[lm.sos_id] + tokens]))
        lp = lp[0].log_softmax(-1)
        score += lm_weight * sum(float(lp[i, t]) for i, t in enumerate(tokens + [eos]))
    return score


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_beam_one_without_ctc_is_greedy_attention(seed: int) -> None:
    model, enc, lens = make_case(seed)
    greedy = greedy_attention(model, enc, lens)
    beam = joint_beam_search(model, enc, lens, beam_size=1, ctc_weight=0.0)
    assert [h[0].tokens for h in beam] == greedy
    assert any(len(g) > 0 for g in greedy)  # the case is not trivially empty


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_exhaustive_beam_finds_global_best_and_beats_small_beams(seed: int) -> None:
    """A larger beam is only *guaranteed* to do at least as well when it is exhaustive.

    Beam search is not monotone in the beam size in general: a wider beam can
    keep prefixes that look better early but end worse, pushing out the prefix
    a narrow beam would have finished. What must hold: with 3 ordinary tokens
    and at most 3 output tokens there are 1 + 3 + 9 + 27 = 40 sequences, so a
    beam of 40 with every token CTC-scored prunes nothing, and exact end
    detection (ended hypotheses are never pruned before the best is settled)
    makes it return the global optimum of the joint score. That optimum is >=
    whatever beam 1 or 2 returns, and equals a brute-force maximum.
    """
    vocab, max_len, w = 5, 3, 0.4  # ids: 0 blank, 1 unk, 2-3 letters, 4 sos/eos
    model, enc, lens = make_case(seed, vocab=vocab, lengths=(6, 4))
    ordinary = [1, 2, 3]
    results = {
        b: joint_beam_search(model, enc, lens, beam_size=b, ctc_weight=w, max_len=max_len, pre_beam=vocab)
        for b in (1, 2, 40)
    }
    for u, length in enumerate(lens.tolist()):
        seqs = [list(s) for n in range(max_len + 1) for s in itertools.product(ordinary, repeat=n)]
        scored = [(joint_score(model, enc[u], length, s, w), s) for s in seqs]
        best_score, best_seq = max(scored, key=lambda x: x[0])
        top = results[40][u][0]
        assert top.score == pytest.approx(best_score, abs=1e-4)
        assert top.tokens == best_seq
        for b in (1, 2):
            assert top.score >= results[b][u][0].score - 1e-5


@pytest.mark.parametrize("ctc_weight,pre_beam", [(0.0, None), (0.3, None), (0.3, 3), (1.0, None)])
def test_batched_equals_one_at_a_time(ctc_weight: float, pre_beam: int | None) -> None:
    model, enc, lens = make_case(7, vocab=10, lengths=(8, 5, 11, 6))
    torch.manual_seed(3)
    lm = TokenLM(10, embed_dim=8, hidden_dim=16).eval()
    kw = dict(beam_size=4, ctc_weight=ctc_weight, lm=lm, lm_weight=0.3, length_bonus=0.1, pre_beam=pre_beam)
    batched = joint_beam_search(model, enc, lens, **kw)
    for u, length in enumerate(lens.tolist()):
        single = joint_beam_search(model, enc[u : u + 1, :length], lens[u : u + 1], **kw)[0]
        assert [h.tokens for h in single] == [h.tokens for h in batched[u]]
        for a, b in zip(single, batched[u]):
            assert a.score == pytest.approx(b.score, abs=1e-4)


def test_returned_scores_match_independent_rescoring() -> None:
    model, enc, lens = make_case(11, vocab=9, lengths=(9, 7))
    torch.manual_seed(5)
    lm = TokenLM(9, embed_dim=8, hidden_dim=16).eval()
    hyps = joint_beam_search(model, enc, lens, beam_size=3, ctc_weight=0.5, lm=lm, lm_weight=0.5,
                             length_bonus=0.2, nbest=3)
    for u, length in enumerate(lens.tolist()):
        assert 1 <= len(hyps[u]) <= 3
        assert [h.score for h in hyps[u]] == sorted((h.score for h in hyps[u]), reverse=True)
        for h in hyps[u]:
            expect = joint_score(model, enc[u], length, h.tokens, 0.5, lm, 0.5, 0.2)
            assert h.score == pytest.approx(expect, abs=1e-4)
            assert BLANK not in h.tokens and model.eos_id not in h.tokens


def test_pure_ctc_beam_search_matches_greedy_on_peaky_posteriors() -> None:
    """With one dominant label per frame the best CTC sequence is the best path."""
    torch.manual_seed(0)
    V, T = 7, 12
    labels = torch.tensor([0, 2, 2, 0, 3, 0, 0, 3, 5, 5, 0, 1])
    logits = torch.randn(1, T, V) + 8.0 * nn.functional.one_hot(labels, V)
    lp = logits.log_softmax(-1)
    hyp = joint_beam_search(lambda *a: None, torch.zeros(1, T, 4), torch.tensor([T]), ctc_log_probs=lp,
                            sos_id=V - 1, beam_size=5, ctc_weight=1.0)[0][0]
    assert hyp.tokens == greedy_ctc(lp)[0] == [2, 3, 3, 5, 1]


def test_output_length_is_capped() -> None:
    model, enc, lens = make_case(0)
    kw = dict(beam_size=3, ctc_weight=0.0, length_bonus=5.0)
    free = joint_beam_search(model, enc, lens, **kw)
    assert max(len(h.tokens) for hyps in free for h in hyps) > 2  # the bonus favours long outputs
    capped = joint_beam_search(model, enc, lens, max_len=2, **kw)
    assert all(len(h.tokens) <= 2 for hyps in capped for h in hyps)
    assert all(len(g) <= 2 for g in greedy_attention(model, enc, lens, max_len=2))


def test_end_margin_stops_earlier_with_a_length_bonus() -> None:
    """With a bonus the exact stop must allow for bonus still to come; ``end_margin`` caps that.

    CTC clearly hears 3 tokens in 30 frames. Longer outputs soon score far worse, but the
    exact rule keeps going while the bonus for the remaining frames could still make up
    the gap; with ``end_margin=0`` the search stops once the best ended output leads.
    """
    model, enc, lens = make_case(5, vocab=9, lengths=(30,))
    labels = torch.zeros(30, dtype=torch.long)
    labels[[5, 15, 25]] = torch.tensor([2, 3, 4])
    ctc = (torch.randn(1, 30, 9) + 10.0 * nn.functional.one_hot(labels, 9)).log_softmax(-1)
    calls = []

    def counting(tokens, memory, lengths):
        calls.append(tokens.shape[0])
        return model.decoder(tokens, memory, lengths)

    kw = dict(ctc_log_probs=ctc, sos_id=model.sos_id, beam_size=3, ctc_weight=0.5, length_bonus=1.0, nbest=1)
    exact = joint_beam_search(counting, enc, lens, **kw)[0][0]
    exact_calls, calls[:] = len(calls), []
    quick = joint_beam_search(counting, enc, lens, end_margin=0.0, **kw)[0][0]
    assert len(calls) < exact_calls
    assert quick.tokens == [2, 3, 4]
    expect = joint_score(model, enc[0], 30, quick.tokens, 0.5, bonus=1.0, ctc=ctc[0])
    assert quick.score == pytest.approx(expect, abs=1e-4)
    assert quick.score <= exact.score + 1e-5  # same beam, fewer steps: it cannot beat the exact stop


def test_end_is_always_scored_with_a_small_pre_beam() -> None:
    """Even when eos is never among the top pre-beam tokens, hypotheses end at the cap."""
    model, enc, lens = make_case(0, vocab=12)
    with torch.no_grad():
        model.decoder.out.bias[model.eos_id] = -30.0
    hyps = joint_beam_search(model, enc, lens, beam_size=2, ctc_weight=0.3, pre_beam=2, max_len=4)
    for h in hyps:
        assert len(h[0].tokens) == 4 and h[0].score > float("-inf")


def test_bad_arguments_raise_input_error() -> None:
    model, enc, lens = make_case(0)
    with pytest.raises(InputError):
        joint_beam_search(model, enc, lens, ctc_weight=1.5)
    with pytest.raises(InputError):
        joint_beam_search(model.decoder, enc, lens, ctc_weight=0.0)  # no sos/eos known


class PrefixTableModel:
    """A hand-built :class:`~avsr.decoding.beam_search.DecoderModel`: next-token
    probabilities looked up by prefix, the end of sentence nearly certain elsewhere.

    Ids: 0 blank, 1-3 letters, 4 sos/eos. Greedy stops after ``[1]``; the
    longer ``[1, 2, 3]`` is likelier per token:

    * ``[1]``: log 0.9 + log 0.5 = -0.80 in total, -0.40 per token (eos included);
    * ``[1, 2, 3]``: log 0.9 + log 0.45 + 2 log 0.95 = -1.01 in total, -0.25 per token.
    """

    vocab = 5
    sos_id = eos_id = 4
    table = {
        (): {1: 0.9},
        (1,): {4: 0.5, 2: 0.45},
        (1, 2): {3: 0.95},
        (1, 2, 3): {4: 0.95},
    }

    def next_log_probs(self, prefix: tuple[int, ...]) -> Tensor:
        given = self.table.get(prefix, {self.eos_id: 0.97})
        rest = (1.0 - sum(given.values())) / (self.vocab - len(given))
        probs = torch.full((self.vocab,), rest)
        for tok, p in given.items():
            probs[tok] = p
        return probs.log()

    def decoder(self, tokens: Tensor, memory: Tensor, memory_lengths: Tensor) -> Tensor:
        rows = [
            torch.stack([self.next_log_probs(tuple(row[1 : i + 1])) for i in range(len(row))])
            for row in tokens.tolist()
        ]
        return torch.stack(rows)  # log-probabilities are valid logits

    def ctc_log_probs(self, enc: Tensor) -> Tensor:
        raise AssertionError("attention-only search must not ask for CTC scores")


def test_attention_only_beam_ranks_finished_outputs_per_token() -> None:
    """A raw log-prob sum prefers the short output; ``ctc_weight=0`` ranks by score / length."""
    model = PrefixTableModel()
    enc, lens = torch.zeros(1, 10, 4), torch.tensor([10])
    assert greedy_attention(model, enc, lens) == [[1]]
    best = joint_beam_search(model, enc, lens, beam_size=2, ctc_weight=0.0, nbest=1)[0][0]
    assert best.tokens == [1, 2, 3]
    expect_att = math.log(0.9) + math.log(0.45) + 2 * math.log(0.95)
    assert best.att_score == pytest.approx(expect_att, abs=1e-5)
    assert best.score == pytest.approx(expect_att / 4, abs=1e-5)
    ranked = joint_beam_search(model, enc, lens, beam_size=2, ctc_weight=0.0, nbest=2)[0]
    assert [h.tokens for h in ranked] == [[1, 2, 3], [1]]
    # the raw sum is still there on request, and it prefers the short output
    raw = joint_beam_search(model, enc, lens, beam_size=2, ctc_weight=0.0, normalize_length=False)[0][0]
    assert raw.tokens == [1]
    assert raw.score == pytest.approx(math.log(0.9) + math.log(0.5), abs=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exhaustive_attention_only_beam_finds_best_per_token_score(seed: int) -> None:
    """Normalised end detection is exact: an exhaustive beam returns the best ``score / (|h| + 1)``."""
    vocab, max_len = 5, 3
    model, enc, lens = make_case(seed, vocab=vocab, lengths=(6, 4))
    hyps = joint_beam_search(model, enc, lens, beam_size=40, ctc_weight=0.0, max_len=max_len, nbest=1)
    for u, length in enumerate(lens.tolist()):
        seqs = [list(s) for n in range(max_len + 1) for s in itertools.product([1, 2, 3], repeat=n)]
        scored = [(joint_score(model, enc[u], length, s, 0.0) / (len(s) + 1), s) for s in seqs]
        best_score, best_seq = max(scored, key=lambda x: x[0])
        assert hyps[u][0].tokens == best_seq
        assert hyps[u][0].score == pytest.approx(best_score, abs=1e-4)
