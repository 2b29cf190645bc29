"""Incremental (cached) transformer decoding equals full-prefix recomputation.

Checks :meth:`TransformerDecoder.step` / ``precompute_memory`` / ``select``
against :meth:`TransformerDecoder.forward`, and that beam search and greedy
attention decoding give the same results with and without the cache.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from avsr.decoding import greedy_attention, joint_beam_search
from avsr.decoding.beam_search import incremental_decoder
from avsr.models.decoder import DecoderCache, TransformerDecoder

VOCAB = 11
DIM = 32


def make_decoder(seed: int = 0, layers: int = 2) -> TransformerDecoder:
    torch.manual_seed(seed)
    return TransformerDecoder(VOCAB, d_model=DIM, n_layers=layers, n_heads=4, d_ff=64, dropout=0.1).eval()


def make_memory(lengths: list[int], seed: int = 1) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lengths)
    memory = torch.randn(len(lengths), max(lengths), DIM, generator=g)
    memory = memory * (torch.arange(max(lengths))[None, :] < lens[:, None])[..., None]
    return memory, lens


@torch.no_grad()
def test_step_logits_equal_full_recompute() -> None:
    dec = make_decoder()
    memory, lens = make_memory([7, 4, 9])
    g = torch.Generator().manual_seed(2)
    tokens = torch.cat([torch.full((3, 1), VOCAB - 1), torch.randint(1, VOCAB - 1, (3, 6), generator=g)], 1)
    full = dec(tokens, memory, lens)  # (3, 7, V)
    cache = dec.precompute_memory(memory, lens)
    assert isinstance(cache, DecoderCache) and cache.length == 0 and cache.rows == 3
    for i in range(tokens.shape[1]):
        logits, cache = dec.step(tokens[:, i], cache)
        assert logits.shape == (3, VOCAB)
        torch.testing.assert_close(logits, full[:, i], atol=1e-5, rtol=0)
    assert cache.length == tokens.shape[1]
    assert all(k.shape == (3, 4, 7, DIM // 4) for k in cache.self_keys)


@torch.no_grad()
def test_select_reorders_and_repeats_rows() -> None:
    dec = make_decoder(seed=3)
    memory, lens = make_memory([5, 8], seed=4)
    tokens = torch.tensor([[VOCAB - 1, 2, 3, 4], [VOCAB - 1, 5, 6, 7]])
    cache = dec.precompute_memory(memory, lens)
    for i in range(2):
        _, cache = dec.step(tokens[:, i], cache)
    index = torch.tensor([1, 0, 1])
    before = cache
    cache = dec.select(cache, index)
    assert before.rows == 2 and before.self_keys[0].shape[0] == 2  # the old cache is untouched
    for i in range(2, 4):
        logits, cache = dec.step(tokens[index, i], cache)
    full = dec(tokens[index], memory[index], lens[index])
    torch.testing.assert_close(logits, full[:, -1], atol=1e-5, rtol=0)


@torch.no_grad()
def test_dropout_is_off_in_eval_and_step_matches_in_train_without_dropout() -> None:
    torch.manual_seed(5)
    dec = TransformerDecoder(VOCAB, d_model=DIM, n_layers=1, n_heads=2, d_ff=48, dropout=0.0).train()
    memory, lens = make_memory([6, 3], seed=6)
    tokens = torch.tensor([[VOCAB - 1, 4, 2], [VOCAB - 1, 9, 9]])
    full = dec(tokens, memory, lens)
    cache = dec.precompute_memory(memory, lens)
    for i in range(3):
        logits, cache = dec.step(tokens[:, i], cache)
        torch.testing.assert_close(logits, full[:, i], atol=1e-5, rtol=0)


class Model(nn.Module):
    """A transformer decoder and a CTC projection: what the search expects of a model."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.decoder = make_decoder(seed)
        self.ctc = nn.Linear(DIM, VOCAB)
        self.sos_id = self.eos_id = VOCAB - 1
        with torch.no_grad():  # random decoders tend to stop at once; make outputs a few tokens long
            self.decoder.out.bias[self.eos_id] -= 2.0

    def ctc_log_probs(self, enc: Tensor) -> Tensor:
        return (2.0 * self.ctc(enc)).log_softmax(-1)


class Uncached(nn.Module):
    """The same model with the decoder hidden behind a plain callable (no incremental API)."""

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.inner = model
        self.sos_id = self.eos_id = model.sos_id

    def decoder(self, tokens: Tensor, memory: Tensor, memory_lengths: Tensor) -> Tensor:
        return self.inner.decoder(tokens, memory, memory_lengths)

    def ctc_log_probs(self, enc: Tensor) -> Tensor:
        return self.inner.ctc_log_probs(enc)


def test_incremental_api_is_detected() -> None:
    model = Model(0).eval()
    assert incremental_decoder(model.decoder) is model.decoder
    assert incremental_decoder(Uncached(model).decoder) is None


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ctc_weight", [0.0, 0.3])
def test_beam_search_identical_with_and_without_cache(seed: int, ctc_weight: float) -> None:
    model = Model(seed).eval()
    enc, lens = make_memory([9, 6, 12], seed=10 + seed)
    kwargs = dict(beam_size=4, ctc_weight=ctc_weight, max_len=8, nbest=3)
    cached = joint_beam_search(model, enc, lens, **kwargs)
    plain = joint_beam_search(model, enc, lens, use_cache=False, **kwargs)
    wrapped = joint_beam_search(Uncached(model), enc, lens, **kwargs)
    assert any(len(h[0].tokens) > 1 for h in cached)  # not a trivial search
    for a, b, c in zip(cached, plain, wrapped):
        assert [h.tokens for h in a] == [h.tokens for h in b] == [h.tokens for h in c]
        for ha, hb in zip(a, b):
            assert ha.score == pytest.approx(hb.score, abs=1e-4)
            assert ha.att_score == pytest.approx(hb.att_score, abs=1e-4)


def test_greedy_attention_identical_with_and_without_cache() -> None:
    model = Model(4).eval()
    enc, lens = make_memory([9, 3, 12, 7], seed=20)
    cached = greedy_attention(model, enc, lens)  # output capped at the frames: rows stop at different steps
    assert cached == greedy_attention(model, enc, lens, use_cache=False)
    assert cached == greedy_attention(Uncached(model), enc, lens)
    assert len({len(t) for t in cached}) > 1  # so the cache dropped finished rows on the way
