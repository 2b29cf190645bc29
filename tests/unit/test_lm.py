"""Token LM: trains on text alone, lowers perplexity, steers beam search by shallow fusion."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from avsr.checkpoints import load_lm, load_model, save_model
from avsr.decoding import joint_beam_search
from avsr.errors import InputError
from avsr.models.avsr import build_model
from avsr.models.lm import TokenLM, build_lm, perplexity, train_token_lm
from avsr.tokenizer import CharTokenizer
from tiny_configs import SMALL_MODEL


def grid_like(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    cols = [["bin", "lay", "place", "set"], ["blue", "green", "red", "white"], ["at", "by", "in", "with"],
            list("abcdefg"), ["one", "two", "three", "four"], ["again", "now", "please", "soon"]]
    return [" ".join(rng.choice(c) for c in cols) for _ in range(n)]


def test_training_lowers_perplexity() -> None:
    train, held_out = grid_like(48, 0), grid_like(16, 1)
    tok = CharTokenizer.train(train + held_out)
    torch.manual_seed(0)
    untrained = TokenLM(tok.vocab_size, embed_dim=32, hidden_dim=64).eval()
    before = perplexity(untrained, held_out, tok)
    lm = train_token_lm(train, tok, epochs=12, seed=0, embed_dim=32, hidden_dim=64)
    after = perplexity(lm, held_out, tok)
    assert before > 0.8 * tok.vocab_size  # an untrained model is close to uniform
    assert after < 0.4 * before
    assert not lm.training


def test_step_scoring_matches_full_forward() -> None:
    torch.manual_seed(0)
    lm = TokenLM(12, embed_dim=8, hidden_dim=16, num_layers=2).eval()
    seq = torch.tensor([[11, 3, 5, 7, 2]])
    full = lm(seq)[0][0].log_softmax(-1)
    state = lm.init_state(3)
    state = TokenLM.select_state(state, torch.tensor([1]))
    for i in range(seq.shape[1]):
        step, state = lm.score(seq[:, i], state)
        assert torch.allclose(step[0], full[i], atol=1e-5)
    rebuilt = build_lm(lm.config)
    assert rebuilt.config == lm.config


def test_shallow_fusion_moves_beam_output_toward_lm_text() -> None:
    """CTC hears 'cot' slightly more than 'cat'; an LM that knows only cats flips the result."""
    texts = [f"{a} cat {b}" for a in ["the", "a", "my", "one"] for b in ["sat", "ran", "naps", "is here"]]
    texts += ["cat", "the cat", "cat sat"] * 4
    tok = CharTokenizer.train(texts + ["o"])
    lm = train_token_lm(texts, tok, epochs=15, seed=0, embed_dim=32, hidden_dim=64)
    c, a, o, t = (tok.encode(ch)[0] for ch in "caot")
    V = tok.vocab_size
    probs = torch.full((6, V), 1e-4)
    frames = [{c: 0.9}, {c: 0.5, 0: 0.4}, {o: 0.52, a: 0.43}, {0: 0.9}, {t: 0.9}, {0: 0.9}]
    for i, frame in enumerate(frames):
        for k, p in frame.items():
            probs[i, k] = p
    lp = (probs / probs.sum(-1, keepdim=True)).log()[None]
    kw = dict(ctc_log_probs=lp, sos_id=tok.sos_id, beam_size=4, ctc_weight=1.0)
    enc, lens = torch.zeros(1, 6, 4), torch.tensor([6])
    plain = joint_beam_search(lambda *x: None, enc, lens, **kw)[0][0]
    fused = joint_beam_search(lambda *x: None, enc, lens, lm=lm, lm_weight=0.5, **kw)[0][0]
    assert tok.decode(plain.tokens) == "cot"
    assert tok.decode(fused.tokens) == "cat"
    assert fused.lm_score > -5.0  # 'cat' is likely text for the LM


def test_lm_bundle_round_trip_and_wrong_bundles(tmp_path: Path) -> None:
    """An LM saved with its tokenizer loads back identical; mixing LM and model bundles is a clear error."""
    texts = grid_like(24, 0)
    tok = CharTokenizer.train(texts)
    lm = train_token_lm(texts, tok, epochs=1, seed=0, embed_dim=16, hidden_dim=32, num_layers=2)
    path = tmp_path / "lm.safetensors"
    save_model(path, lm, tok, extra={"epochs": 1})
    loaded, loaded_tok = load_lm(path, tokenizer=tok)
    assert loaded_tok == tok and loaded.config == lm.config and not loaded.training
    for name, value in lm.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)
    assert perplexity(loaded, texts[:4], tok) == perplexity(lm, texts[:4], tok)

    other = CharTokenizer.train(texts + ["xyz"])
    with pytest.raises(InputError) as err:
        load_lm(path, tokenizer=other)
    assert str(err.value) == (f"{path}: language model was trained with another tokenizer than the recognition "
                              "model's (train the LM with the model's tokenizer)")
    with pytest.raises(InputError, match="not a recognition model"):
        load_model(path)
    model_path = tmp_path / "model.safetensors"
    save_model(model_path, build_model({**SMALL_MODEL, "vocab_size": tok.vocab_size}), tok)
    with pytest.raises(InputError, match="not a token language model bundle"):
        load_lm(model_path)
