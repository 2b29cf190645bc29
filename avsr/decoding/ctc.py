"""CTC decoding helpers: greedy decoding, prefix scoring, forced alignment.

* :func:`greedy_ctc` — best path, repeats merged, blanks dropped.
* :class:`CTCPrefixScorer` — log-domain CTC prefix probabilities for many
  hypotheses and candidate tokens at once, the CTC half of joint
  CTC/attention beam search.
* :func:`forced_align` / :func:`word_timestamps` — Viterbi alignment of a known
  token sequence, and word start/end times from it.

Notation used below: ``T`` frames, ``V`` vocabulary, ``N`` hypotheses, ``K``
candidate tokens per hypothesis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor

from avsr.errors import InputError

if TYPE_CHECKING:
    from avsr.tokenizer import Tokenizer

NEG_INF = float("-inf")


def greedy_ctc(log_probs: Tensor, lengths: Tensor | None = None, blank: int = 0) -> list[list[int]]:
    """Best-path CTC decoding.

    Args:
        log_probs: ``(B, T, V)`` frame scores (log-probabilities or logits).
        lengths: ``(B,)`` valid frames per utterance; ``None`` means all ``T``.
        blank: the blank id.

    Returns:
        One token-id list per utterance.

    Example:
        >>> lp = torch.log(torch.tensor([[[.1, .9, 0], [.1, .9, 0], [.8, .1, .1], [.1, .9, 0]]]))
        >>> greedy_ctc(lp)
        [[1, 1]]
    """
    if log_probs.dim() != 3:
        raise InputError(None, f"log_probs must be (B, T, V), got shape {tuple(log_probs.shape)}")
    B, T, _ = log_probs.shape
    best = log_probs.argmax(dim=-1)  # (B, T)
    if lengths is None:
        lengths = torch.full((B,), T, dtype=torch.long)
    keep = torch.ones_like(best, dtype=torch.bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != blank
    keep &= torch.arange(T, device=best.device)[None, :] < lengths.to(best.device)[:, None]
    return [best[b][keep[b]].tolist() for b in range(B)]


def _masked_frames(log_probs: Tensor, lengths: Tensor, blank: int) -> Tensor:
    """Pad frames past each length with a certain blank (log 1), others log 0.

    A path then keeps its probability through the padding by staying in the
    blank state, so scores read at frame ``T`` equal those at each utterance's
    own last frame.
    """
    x = log_probs.clone()
    pad = torch.arange(x.shape[1], device=x.device)[None, :] >= lengths.to(x.device)[:, None]
    x[pad] = NEG_INF
    x[..., blank][pad] = 0.0
    return x


@dataclass
class CTCPrefixState:
    """CTC prefix statistics of ``N`` hypotheses (all of the same length ``L``).

    Attributes:
        r: ``(N, T + 1, 2)`` log-probabilities that the first ``t`` frames
            (index ``t``; index 0 is "before any frame") emit exactly the prefix
            and end in a non-blank (``[..., 0]``) or blank (``[..., 1]``).
        prefix: ``(N,)`` log-probability of the prefix followed by anything.
        last: ``(N,)`` last token of the prefix (``-1`` for the empty prefix).
        utt: ``(N,)`` utterance index of each hypothesis.
        length: ``L``, tokens in each prefix.
    """

    r: Tensor
    prefix: Tensor
    last: Tensor
    utt: Tensor
    length: int


class CTCPrefixScorer:
    """Vectorised CTC prefix scoring (log domain) over hypotheses and candidates.

    Two phases per decoding step, both tensor operations over all hypotheses:

    1. :meth:`prefix_scores`: the exact prefix probability
       ``log p(h c ... | x) = log sum_t phi_h(t) x_t(c)`` of every candidate
       ``c`` of every hypothesis ``h`` — one log-sum-exp over frames, no loop
       (``phi_h(t)``: probability that the first ``t`` frames emit ``h`` in a
       state from which ``c`` may start).
    2. :meth:`extend`: the forward variables of the few extensions the beam
       keeps — a loop over frames whose body works on all of them at once.

    :meth:`final_scores` gives ``log p(h | x)`` for hypotheses that end.

    Args:
        log_probs: ``(B, T, V)`` CTC log-probabilities.
        lengths: ``(B,)`` valid frames per utterance (``None``: all ``T``).
        blank: the blank id.

    Example:
        >>> lp = torch.randn(1, 5, 4).log_softmax(-1)
        >>> scorer = CTCPrefixScorer(lp)
        >>> st = scorer.initial_state(torch.tensor([0]))
        >>> scorer.prefix_scores(st, torch.tensor([[1, 2, 3]])).shape
        torch.Size([1, 3])
        >>> st = scorer.extend(st, torch.tensor([0, 0]), torch.tensor([1, 2]))
        >>> st.r.shape, st.length
        (torch.Size([2, 6, 2]), 1)
    """

    def __init__(self, log_probs: Tensor, lengths: Tensor | None = None, blank: int = 0):
        if log_probs.dim() != 3:
            raise InputError(None, f"log_probs must be (B, T, V), got {tuple(log_probs.shape)}")
        B, T, V = log_probs.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long)
        self.blank = blank
        self.T = T
        self.V = V
        self.lengths = lengths.to(log_probs.device).long()
        self.x = _masked_frames(log_probs.float(), self.lengths, blank)  # (B, T, V)

    def initial_state(self, utt: Tensor) -> CTCPrefixState:
        """State of the empty prefix for each utterance index in ``utt``.

        Args:
            utt: ``(N,)`` utterance indices (one hypothesis each).
        """
        utt = utt.to(self.x.device)
        N = utt.numel()
        r = torch.full((N, self.T + 1, 2), NEG_INF, device=self.x.device)
        r[:, 0, 1] = 0.0  # before any frame: empty prefix, "in blank"
        r[:, 1:, 1] = torch.cumsum(self.x[utt, :, self.blank], dim=1)
        prefix = torch.zeros(N, device=self.x.device)
        last = torch.full((N,), -1, dtype=torch.long, device=self.x.device)
        return CTCPrefixState(r=r, prefix=prefix, last=last, utt=utt, length=0)

    def final_scores(self, state: CTCPrefixState) -> Tensor:
        """``log p(h | x)`` for each hypothesis: the prefix is the whole output.

        Returns:
            ``(N,)`` log-probabilities.
        """
        return torch.logsumexp(state.r[:, -1, :], dim=-1)

    def _phi(self, r: Tensor, last: Tensor, tokens: Tensor) -> Tensor:
        """Mass from which ``tokens`` may start, ``(N, T + 1, K)``.

        ``r`` is ``(N, T + 1, 2)``, ``last`` ``(N,)``, ``tokens`` ``(N, K)``. If a
        token repeats the prefix's last one, a blank must come in between.
        """
        total = torch.logsumexp(r, dim=-1)[:, :, None]  # (N, T+1, 1)
        same = (tokens == last[:, None])[:, None, :]  # (N, 1, K)
        return torch.where(same, r[:, :, 1:2], total)

    def prefix_scores(self, state: CTCPrefixState, candidates: Tensor) -> Tensor:
        """``log p(h c ... | x)`` for every hypothesis ``h`` and candidate ``c``.

        Args:
            state: statistics of ``N`` prefixes ``h``.
            candidates: ``(N, K)`` token ids (blank not allowed; the value for
                an end-of-sentence id is meaningless, use :meth:`final_scores`).

        Returns:
            ``(N, K)`` log-probabilities.
        """
        N, K = candidates.shape
        T = self.T
        x = self.x[state.utt]  # (N, T, V)
        xc = torch.gather(x, 2, candidates[:, None, :].expand(N, T, K))  # (N, T, K)
        # c first appears at frame t after h filled frames 0..t-1
        return torch.logsumexp(self._phi(state.r, state.last, candidates)[:, :T] + xc, dim=1)

    def extend(self, state: CTCPrefixState, index: Tensor, tokens: Tensor) -> CTCPrefixState:
        """Statistics of the extensions ``h[index[i]] + tokens[i]``.

        Args:
            state: statistics of the parents.
            index: ``(M,)`` parent rows.
            tokens: ``(M,)`` appended tokens (no blank, no end-of-sentence).

        Returns:
            The state of the ``M`` extended prefixes.
        """
        M, T, L = index.numel(), self.T, state.length
        utt = state.utt[index]
        x = self.x[utt]  # (M, T, V)
        xc = x.gather(2, tokens[:, None, None].expand(M, T, 1))[:, :, 0]  # (M, T)
        xb = x[:, :, self.blank]
        phi = self._phi(state.r[index], state.last[index], tokens[:, None])[:, :, 0]  # (M, T+1)
        r = torch.full((M, T + 1, 2), NEG_INF, device=x.device)
        # L+1 tokens need at least L+1 frames: nothing before frame L
        rn = torch.full((M,), NEG_INF, device=x.device)
        rb = torch.full((M,), NEG_INF, device=x.device)
        steps = []
        for t in range(L, T):
            rn, rb = torch.logaddexp(rn, phi[:, t]) + xc[:, t], torch.logaddexp(rn, rb) + xb[:, t]
            steps.append(torch.stack((rn, rb), dim=-1))
        if steps:
            r[:, L + 1 :] = torch.stack(steps, dim=1)
        prefix = torch.logsumexp(phi[:, :T] + xc, dim=1)
        return CTCPrefixState(r=r, prefix=prefix, last=tokens, utt=utt, length=L + 1)

    def sequence_scores(self, utt: int, tokens: Sequence[int]) -> tuple[float, float]:
        """``(log p(tokens ... | x), log p(tokens | x))`` for one utterance.

        Convenient for checks; decoding uses the batched methods.
        """
        state = self.initial_state(torch.tensor([utt]))
        zero = torch.zeros(1, dtype=torch.long, device=self.x.device)
        for tok in tokens:
            state = self.extend(state, zero, torch.tensor([int(tok)], device=self.x.device))
        return float(state.prefix[0]), float(self.final_scores(state)[0])


def forced_align(log_probs: Tensor, tokens: Sequence[int], blank: int = 0) -> list[tuple[int, int]]:
    """Viterbi CTC alignment of a known token sequence.

    Args:
        log_probs: ``(T, V)`` CTC log-probabilities of one utterance.
        tokens: the ``U`` token ids to align (no blanks).
        blank: the blank id.

    Returns:
        ``(start_frame, end_frame)`` per token, inclusive frame indices.

    Raises:
        InputError: the sequence cannot fit in ``T`` frames.
    """
    import torchaudio.functional as AF

    tokens = [int(t) for t in tokens]
    if not tokens:
        return []
    T = log_probs.shape[0]
    repeats = sum(a == b for a, b in zip(tokens, tokens[1:]))
    if len(tokens) + repeats > T:
        raise InputError(None, f"{len(tokens)} tokens cannot be aligned to {T} frames")
    if blank in tokens:
        raise InputError(None, "tokens to align must not contain the blank id")
    targets = torch.tensor([tokens], dtype=torch.int32)
    path, _ = AF.forced_align(log_probs[None].float().cpu(), targets, blank=blank)
    path = path[0].tolist()
    spans: list[tuple[int, int]] = []
    u = -1
    prev = blank
    for t, label in enumerate(path):
        if label != blank and (label != prev or u < 0):
            u += 1
            spans.append((t, t))
        elif label != blank:
            spans[u] = (spans[u][0], t)
        prev = label
    return spans


@dataclass
class WordTiming:
    """A word, its time span in seconds and how sure CTC is of it.

    Attributes:
        word: the word's text.
        start: time of its first frame.
        end: end of its last frame.
        confidence: geometric mean over the word's tokens of each token's
            highest CTC posterior on the frames aligned to it, in ``[0, 1]``.
    """

    word: str
    start: float
    end: float
    confidence: float = 1.0


def word_timestamps(
    log_probs: Tensor,
    tokens: Sequence[int],
    tokenizer: "Tokenizer",
    frame_rate: float = 25.0,
    blank: int = 0,
) -> list[WordTiming]:
    """Word start/end times from CTC forced alignment.

    Args:
        log_probs: ``(T, V)`` CTC log-probabilities of one utterance.
        tokens: token ids of the transcript (e.g. a decoding result).
        tokenizer: gives the word boundaries (space token or ``▁`` marker).
        frame_rate: CTC frames per second (25 for this toolkit).
        blank: the blank id.

    Returns:
        One :class:`WordTiming` per word; ``end`` is the end of the word's last
        frame.
    """
    tokens = [int(t) for t in tokens if int(t) not in tokenizer.special_ids()]
    spans = forced_align(log_probs, tokens, blank=blank)
    lp = log_probs.detach().float().cpu()
    # log of each token's best posterior on its own frames
    token_lp = [float(lp[a : b + 1, tok].max()) for tok, (a, b) in zip(tokens, spans)]
    words = []
    for word, first, last in tokenizer.word_spans(tokens):
        confidence = math.exp(sum(token_lp[first : last + 1]) / (last - first + 1))
        words.append(WordTiming(word, spans[first][0] / frame_rate, (spans[last][1] + 1) / frame_rate,
                                min(1.0, confidence)))
    return words
