"""Text <-> token ids: characters or sentencepiece (unigram / BPE).

Every tokenizer shares one id layout (the model sizes its heads by
``vocab_size``)::

    0               <blank>   CTC blank (never a target)
    1               <unk>     unknown symbol
    2 .. V-2        ordinary tokens
    V-1             <sos/eos> one id that starts and ends a sentence (ESPnet style)

A tokenizer is stored inside the model bundle as JSON (:meth:`Tokenizer.to_dict`
/ :meth:`Tokenizer.from_dict`); a sentencepiece model travels as its protobuf,
base64-encoded, so no file beside the bundle is needed.

Words: :meth:`Tokenizer.word_spans` groups token ids into words, so CTC forced
alignment can give word timestamps. Characters use the space token as the
boundary; sentencepiece uses the ``▁`` word-start marker.

Example:
    >>> tok = CharTokenizer.train(["bin blue", "set red"])
    >>> tok.decode(tok.encode("bed sun"))
    'bed sun'
    >>> tok.vocab_size, tok.blank_id, tok.unk_id, tok.sos_id == tok.eos_id == tok.vocab_size - 1
    (14, 0, 1, True)
"""

from __future__ import annotations

import base64
import io
from abc import ABC, abstractmethod
from typing import Any, Iterable, Sequence

from avsr.errors import InputError

BLANK = "<blank>"
UNK = "<unk>"
SOS_EOS = "<sos/eos>"
WORD_MARK = "\u2581"  # sentencepiece word-start marker '▁'


class Tokenizer(ABC):
    """Base class: the id layout, special ids and serialisation."""

    blank_id: int = 0
    unk_id: int = 1

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, specials included."""

    @property
    def sos_id(self) -> int:
        """Start-of-sentence id (the last id, shared with end-of-sentence)."""
        return self.vocab_size - 1

    @property
    def eos_id(self) -> int:
        """End-of-sentence id (the same id as :attr:`sos_id`)."""
        return self.vocab_size - 1

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Text -> token ids (no sos/eos, never blank)."""

    @abstractmethod
    def id_to_piece(self, token_id: int) -> str:
        """The surface string of one id (specials give their ``<name>``)."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Token ids -> text. Blank and sos/eos ids are dropped."""

    @abstractmethod
    def starts_word(self, token_id: int) -> bool:
        """Whether ``token_id`` begins a new word (after a boundary)."""

    @abstractmethod
    def is_boundary(self, token_id: int) -> bool:
        """Whether ``token_id`` is only a word boundary (carries no letters)."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-able description; :meth:`from_dict` rebuilds an equal tokenizer."""

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "Tokenizer":
        """Rebuild a tokenizer from :meth:`to_dict` output.

        Raises:
            InputError: unknown ``type`` or missing fields.
        """
        kind = data.get("type") if isinstance(data, dict) else None
        try:
            if kind == "char":
                return CharTokenizer(data["chars"])
            if kind == "sentencepiece":
                return SentencePieceTokenizer(base64.b64decode(data["model"]))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(None, f"bad {kind} tokenizer description: {e}") from None
        raise InputError(None, f"unknown tokenizer type {kind!r}")

    def special_ids(self) -> set[int]:
        """Ids that never appear in text: blank and sos/eos."""
        return {self.blank_id, self.sos_id}

    def word_spans(self, ids: Sequence[int]) -> list[tuple[str, int, int]]:
        """Group token positions into words.

        Args:
            ids: token ids of one sentence (specials are skipped).

        Returns:
            ``(word, first, last)`` per word, where ``first``/``last`` are
            positions in ``ids`` (inclusive) of the word's first and last token
            that carries letters.
        """
        spans: list[tuple[str, int, int]] = []
        current: list[int] = []  # positions of the word being built

        def flush() -> None:
            if current:
                word = self.decode([ids[p] for p in current]).strip()
                if word:
                    spans.append((word, current[0], current[-1]))
                current.clear()

        for pos, tid in enumerate(ids):
            tid = int(tid)
            if tid in self.special_ids():
                continue
            if self.is_boundary(tid):
                flush()
                continue
            if self.starts_word(tid):
                flush()
            current.append(pos)
        flush()
        return spans

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:  # tokenizers are immutable values
        return hash(repr(self.to_dict()))


class CharTokenizer(Tokenizer):
    """One token per character; the space character is the word boundary.

    Args:
        chars: the ordinary characters, in id order (ids 2, 3, ...). Must be
            distinct single characters.

    Example:
        >>> tok = CharTokenizer(list("ab "))
        >>> tok.encode("ab ba"), tok.decode([2, 3, 4, 0, 3])
        ([2, 3, 4, 3, 2], 'ab b')
    """

    def __init__(self, chars: Sequence[str]):
        chars = list(chars)
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise InputError(None, "character tokenizer needs single characters")
        if len(set(chars)) != len(chars):
            raise InputError(None, "character tokenizer has repeated characters")
        self.chars = chars
        self._index = {c: i + 2 for i, c in enumerate(chars)}

    @classmethod
    def train(cls, texts: Iterable[str]) -> "CharTokenizer":
        """Collect the characters of ``texts`` (sorted, space included).

        Args:
            texts: training sentences.

        Returns:
            A tokenizer covering every character seen.
        """
        seen: set[str] = {" "}
        for text in texts:
            seen.update(text)
        seen.discard("\n")
        return cls(sorted(seen))

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 3

    def encode(self, text: str) -> list[int]:
        text = " ".join(text.split())  # collapse runs of whitespace
        return [self._index.get(c, self.unk_id) for c in text]

    def id_to_piece(self, token_id: int) -> str:
        token_id = int(token_id)
        if token_id == self.blank_id:
            return BLANK
        if token_id == self.unk_id:
            return UNK
        if token_id == self.sos_id:
            return SOS_EOS
        if 2 <= token_id < self.sos_id:
            return self.chars[token_id - 2]
        raise InputError(None, f"token id {token_id} outside vocabulary of {self.vocab_size}")

    def decode(self, ids: Sequence[int]) -> str:
        out = []
        for tid in ids:
            tid = int(tid)
            if tid in self.special_ids():
                continue
            out.append("\u2047" if tid == self.unk_id else self.id_to_piece(tid))
        return "".join(out)

    def starts_word(self, token_id: int) -> bool:
        return False  # words start after a space token, handled by is_boundary

    def is_boundary(self, token_id: int) -> bool:
        return int(token_id) >= 2 and self.id_to_piece(token_id).isspace()

    def to_dict(self) -> dict[str, Any]:
        return {"type": "char", "chars": list(self.chars)}

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


class SentencePieceTokenizer(Tokenizer):
    """Sentencepiece subwords (unigram or BPE), ids shifted into the shared layout.

    Sentencepiece id ``i`` (its ``<unk>`` is 0) becomes ``i + 1``; blank is 0
    and sos/eos the last id. Control symbols of the model (``<s>``, ``</s>``
    of models trained with sentencepiece's defaults, e.g. Auto-AVSR's) keep
    their ids but are never produced by :meth:`encode` nor written by
    :meth:`decode`.

    Args:
        model_proto: the serialised sentencepiece model (bytes).
    """

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm

        self.model_proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(self.model_proto)
        except (RuntimeError, OSError) as e:
            raise InputError(None, f"not a sentencepiece model: {e}") from None
        if self._sp.unk_id() != 0:
            raise InputError(None, "sentencepiece model must have unk_id=0")
        for special in (self._sp.bos_id(), self._sp.eos_id(), self._sp.pad_id()):
            if special >= 0 and not self._sp.is_control(special):
                raise InputError(None, "sentencepiece model's bos/eos/pad must be control symbols")
        self._n = self._sp.get_piece_size()

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 256,
        model_type: str = "unigram",
        character_coverage: float = 1.0,
    ) -> "SentencePieceTokenizer":
        """Train a sentencepiece model in memory from a list of sentences.

        Args:
            texts: training sentences.
            vocab_size: wanted total vocabulary (specials included). Small
                corpora may give fewer pieces; the real size is :attr:`vocab_size`.
            model_type: ``"unigram"`` or ``"bpe"``.
            character_coverage: fraction of characters covered (1.0 for small
                alphabets).

        Returns:
            The trained tokenizer.

        Raises:
            InputError: bad arguments or no text.
        """
        import sentencepiece as spm

        if model_type not in ("unigram", "bpe"):
            raise InputError(None, f"model_type must be 'unigram' or 'bpe', not {model_type!r}")
        texts = [t.strip() for t in texts if t and t.strip()]
        if not texts:
            raise InputError(None, "no text to train the tokenizer on")
        if vocab_size < 5:
            raise InputError(None, "vocab_size must be at least 5")
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts),
            model_writer=buf,
            vocab_size=vocab_size - 2,
            model_type=model_type,
            character_coverage=character_coverage,
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            hard_vocab_limit=False,
            minloglevel=2,
        )
        return cls(buf.getvalue())

    @property
    def vocab_size(self) -> int:
        return self._n + 2

    def encode(self, text: str) -> list[int]:
        return [i + 1 for i in self._sp.encode(" ".join(text.split()))]

    def id_to_piece(self, token_id: int) -> str:
        token_id = int(token_id)
        if token_id == self.blank_id:
            return BLANK
        if token_id == self.sos_id:
            return SOS_EOS
        if 1 <= token_id < self.sos_id:
            return self._sp.id_to_piece(token_id - 1)
        raise InputError(None, f"token id {token_id} outside vocabulary of {self.vocab_size}")

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([int(i) - 1 for i in ids if int(i) not in self.special_ids()])

    def starts_word(self, token_id: int) -> bool:
        return self.id_to_piece(token_id).startswith(WORD_MARK)

    def is_boundary(self, token_id: int) -> bool:
        return self.id_to_piece(token_id) == WORD_MARK

    def to_dict(self) -> dict[str, Any]:
        return {"type": "sentencepiece", "model": base64.b64encode(self.model_proto).decode("ascii")}

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer(vocab_size={self.vocab_size})"
