"""A small token language model (LSTM) for shallow fusion in beam search.

It shares the tokenizer's id layout (``sos == eos`` is the last id; blank is
never predicted in practice) and trains on text alone:

    >>> from avsr.tokenizer import CharTokenizer
    >>> texts = ["bin blue at f two now", "set red by a one please"] * 4
    >>> tok = CharTokenizer.train(texts)
    >>> lm = train_token_lm(texts, tok, epochs=2, seed=0)
    >>> state = lm.init_state(2)
    >>> logp, state = lm.score(torch.full((2,), tok.sos_id), state)
    >>> tuple(logp.shape) == (2, tok.vocab_size)
    True
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from avsr.tokenizer import Tokenizer

LMState = tuple[Tensor, Tensor]  # LSTM (h, c), each (layers, N, hidden)


class TokenLM(nn.Module):
    """LSTM language model over token ids.

    Args:
        vocab_size: number of token ids (the tokenizer's ``vocab_size``).
        embed_dim: token embedding size.
        hidden_dim: LSTM state size.
        num_layers: LSTM layers.
        dropout: dropout on embeddings and LSTM outputs (training only).
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 128,
        hidden_dim: int = 256,
        num_layers: int = 1,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.config: dict[str, Any] = {
            "kind": "token_lm",
            "vocab_size": vocab_size,
            "embed_dim": embed_dim,
            "hidden_dim": hidden_dim,
            "num_layers": num_layers,
            "dropout": dropout,
        }
        self.vocab_size = vocab_size
        self.sos_id = self.eos_id = vocab_size - 1
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.drop = nn.Dropout(dropout)
        self.lstm = nn.LSTM(
            embed_dim, hidden_dim, num_layers=num_layers, batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.out = nn.Linear(hidden_dim, vocab_size)

    def forward(self, tokens: Tensor, state: LMState | None = None) -> tuple[Tensor, LMState]:
        """Next-token logits for every position.

        Args:
            tokens: ``(B, L)`` ids, starting with ``sos``.
            state: optional LSTM state to continue from.

        Returns:
            ``logits`` ``(B, L, V)`` and the final LSTM state.
        """
        h, state = self.lstm(self.drop(self.embed(tokens)), state)
        return self.out(self.drop(h)), state

    def init_state(self, n: int) -> LMState:
        """Zero state for ``n`` hypotheses."""
        p = next(self.parameters())
        shape = (self.lstm.num_layers, n, self.lstm.hidden_size)
        return (p.new_zeros(shape), p.new_zeros(shape))

    @torch.no_grad()
    def score(self, last_tokens: Tensor, state: LMState) -> tuple[Tensor, LMState]:
        """One decoding step: log-probabilities of the next token.

        Args:
            last_tokens: ``(N,)`` the most recent token of each hypothesis
                (``sos`` at the start).
            state: the hypotheses' LM state.

        Returns:
            ``log_probs`` ``(N, V)`` and the updated state.
        """
        logits, state = self.forward(last_tokens[:, None], state)
        return logits[:, 0].float().log_softmax(-1), state

    @staticmethod
    def select_state(state: LMState, index: Tensor) -> LMState:
        """Rows ``index`` of a state (hypotheses kept by the beam)."""
        return (state[0].index_select(1, index), state[1].index_select(1, index))

    def sentence_loss(self, batch: Sequence[Sequence[int]]) -> tuple[Tensor, int]:
        """Summed negative log-likelihood of sentences, ``eos`` included.

        Args:
            batch: token-id lists (no sos/eos).

        Returns:
            ``(total_nll, n_predicted_tokens)``.
        """
        inputs, targets = _lm_batch(batch, self.sos_id, self.eos_id, next(self.parameters()).device)
        logits, _ = self.forward(inputs)
        nll = nn.functional.cross_entropy(
            logits.reshape(-1, self.vocab_size), targets.reshape(-1), ignore_index=-1, reduction="sum"
        )
        return nll, int((targets >= 0).sum())


def build_lm(config: dict[str, Any]) -> TokenLM:
    """Rebuild a :class:`TokenLM` from its ``config``."""
    kwargs = {k: v for k, v in config.items() if k != "kind"}
    return TokenLM(**kwargs)


def _lm_batch(batch: Sequence[Sequence[int]], sos: int, eos: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(inputs (B, L+1), targets (B, L+1))``: sos+ids -> ids+eos, targets padded with -1."""
    longest = max(len(s) for s in batch) + 1
    inputs = torch.full((len(batch), longest), eos, dtype=torch.long)
    targets = torch.full((len(batch), longest), -1, dtype=torch.long)
    for i, ids in enumerate(batch):
        inputs[i, 0] = sos
        inputs[i, 1 : len(ids) + 1] = torch.as_tensor(list(ids), dtype=torch.long)
        targets[i, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
        targets[i, len(ids)] = eos
    return inputs.to(device), targets.to(device)


@torch.no_grad()
def perplexity(lm: TokenLM, texts: Sequence[str], tokenizer: "Tokenizer", batch_size: int = 32) -> float:
    """Per-token perplexity of ``texts`` (end of sentence counted as a token)."""
    was_training = lm.training
    lm.eval()
    total, count = 0.0, 0
    ids = [tokenizer.encode(t) for t in texts]
    for i in range(0, len(ids), batch_size):
        nll, n = lm.sentence_loss(ids[i : i + batch_size])
        total += float(nll)
        count += n
    lm.train(was_training)
    return math.exp(total / max(count, 1))


def train_token_lm(
    texts: Sequence[str],
    tokenizer: "Tokenizer",
    *,
    lm: TokenLM | None = None,
    epochs: int = 10,
    batch_size: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    **config: Any,
) -> TokenLM:
    """Train a token LM on text alone.

    Args:
        texts: training sentences.
        tokenizer: maps text to ids (its ``vocab_size`` sizes the LM).
        lm: continue training this model instead of building a new one.
        epochs: passes over ``texts``.
        batch_size: sentences per step.
        lr: Adam learning rate.
        seed: shuffling and initialisation seed.
        **config: :class:`TokenLM` keyword arguments for a new model.

    Returns:
        The trained model (in eval mode).
    """
    torch.manual_seed(seed)
    rng = random.Random(seed)
    if lm is None:
        lm = TokenLM(tokenizer.vocab_size, **config)
    ids = [tokenizer.encode(t) for t in texts if t.strip()]
    opt = torch.optim.Adam(lm.parameters(), lr=lr)
    lm.train()
    for _ in range(epochs):
        rng.shuffle(ids)
        for i in range(0, len(ids), batch_size):
            nll, n = lm.sentence_loss(ids[i : i + batch_size])
            opt.zero_grad()
            (nll / max(n, 1)).backward()
            nn.utils.clip_grad_norm_(lm.parameters(), 5.0)
            opt.step()
    lm.eval()
    return lm
