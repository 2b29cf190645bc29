"""Tokenizers: id layout, round trips, JSON serialisation, word boundaries."""

from __future__ import annotations

import json

import pytest

from avsr.errors import InputError
from avsr.tokenizer import CharTokenizer, SentencePieceTokenizer, Tokenizer

TEXTS = [
    "bin blue at f two now",
    "place red by g nine soon",
    "lay white with p four again",
    "set green in a one please",
    "bin red at l eight now",
] * 6


def make(kind: str) -> Tokenizer:
    if kind == "char":
        return CharTokenizer.train(TEXTS)
    return SentencePieceTokenizer.train(TEXTS, vocab_size=48, model_type=kind)


KINDS = ["char", "unigram", "bpe"]


@pytest.mark.parametrize("kind", KINDS)
def test_id_layout(kind: str) -> None:
    tok = make(kind)
    assert tok.blank_id == 0 and tok.unk_id == 1
    assert tok.sos_id == tok.eos_id == tok.vocab_size - 1
    ids = [i for t in TEXTS for i in tok.encode(t)]
    assert min(ids) >= 1 and max(ids) < tok.sos_id  # never blank, never sos/eos
    assert len({tok.id_to_piece(i) for i in range(tok.vocab_size)}) == tok.vocab_size


@pytest.mark.parametrize("kind", KINDS)
def test_encode_decode_round_trip(kind: str) -> None:
    tok = make(kind)
    for text in ["bin blue at f two now", "green again soon", "place  white   by a"]:
        assert tok.decode(tok.encode(text)) == " ".join(text.split())
    ids = tok.encode("red now")
    assert tok.decode([tok.blank_id, *ids, tok.eos_id]) == "red now"  # specials dropped


@pytest.mark.parametrize("kind", KINDS)
def test_json_round_trip(kind: str) -> None:
    tok = make(kind)
    data = json.loads(json.dumps(tok.to_dict()))
    tok2 = Tokenizer.from_dict(data)
    assert type(tok2) is type(tok) and tok2 == tok
    for text in TEXTS[:5]:
        assert tok2.encode(text) == tok.encode(text)


def test_sentencepiece_uses_subwords_and_the_word_marker() -> None:
    tok = make("unigram")
    assert tok.vocab_size <= 48
    ids = tok.encode("bin blue")
    assert len(ids) < len("bin blue")  # pieces longer than one character
    assert tok.starts_word(ids[0])


@pytest.mark.parametrize("kind", KINDS)
def test_word_spans(kind: str) -> None:
    tok = make(kind)
    ids = tok.encode("place red by g")
    spans = tok.word_spans(ids)
    assert [w for w, _, _ in spans] == ["place", "red", "by", "g"]
    for word, first, last in spans:
        assert first <= last
        assert tok.decode(ids[first : last + 1]).strip() == word
    assert tok.word_spans([tok.sos_id, *ids, tok.eos_id])[1][0] == "red"


def test_unknown_characters_map_to_unk() -> None:
    tok = CharTokenizer.train(["ab"])
    assert tok.encode("az") == [tok.encode("a")[0], tok.unk_id]
    sp = make("bpe")
    assert sp.unk_id in sp.encode("bin q")  # 'q' never seen


def test_bad_input() -> None:
    with pytest.raises(InputError):
        Tokenizer.from_dict({"type": "wordpiece"})
    with pytest.raises(InputError):
        Tokenizer.from_dict({"type": "sentencepiece", "model": "bm90IGEgbW9kZWw="})
    with pytest.raises(InputError):
        CharTokenizer(["a", "a"])
    with pytest.raises(InputError):
        SentencePieceTokenizer.train([], vocab_size=32)
    with pytest.raises(InputError):
        SentencePieceTokenizer.train(TEXTS, model_type="word")
    with pytest.raises(InputError):
        CharTokenizer(list("ab")).id_to_piece(99)
