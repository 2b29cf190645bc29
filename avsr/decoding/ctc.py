"""CTC decoding helpers: greedy decoding, prefix scoring, forced alignment.

* :func:`greedy_ctc` — best path, repeats merged, blanks dropped.
* :class:`CTCPrefixScorer` — log-domain CTC prefix probabilities for many
  hypotheses at once, the CTC half of joint CTC/attention beam search.
* :func:`forced_align` / :func:`word_timestamps` — Viterbi alignment of a known
  token sequence, and word start/end times from it.

Notation used below: ``T`` frames, ``V`` vocabulary, ``N`` hypotheses, ``K``
candidate tokens per hypothesis.
"""

from __future__ import annotations

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

    def index_select(self, index: Tensor, tokens: Tensor, r: Tensor, prefix: Tensor) -> "CTCPrefixState":
        """State of extended hypotheses (used by :meth:`CTCPrefixScorer.extend`)."""
        return CTCPrefixState(r=r, prefix=prefix, last=tokens, utt=self.utt[index], length=self.length + 1)


class CTCPrefixScorer:
    """Vectorised CTC prefix scoring (log domain) over hypotheses and candidates.

    For a prefix ``h`` and candidate token ``c`` it computes the prefix
    probability ``log p(h c ... | x)`` with one loop over frames whose body is
    tensor operations over all ``(N, K)`` pairs, and the full-sequence
    probability ``log p(h | x)`` used when ``h`` ends.

    Args:
        log_probs: ``(B, T, V)`` CTC log-probabilities.
        lengths: ``(B,)`` valid frames per utterance (``None``: all ``T``).
        blank: the blank id.

    Example:
        >>> lp = torch.randn(1, 5, 4).log_softmax(-1)
        >>> scorer = CTCPrefixScorer(lp)
        >>> st = scorer.initial_state(torch.tensor([0]))
        >>> prefix, r = scorer.score_candidates(st, torch.tensor([[1, 2]]))
        >>> prefix.shape, r.shape
        (torch.Size([1, 2]), torch.Size([1, 2, 6, 2]))
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
        N = utt.numel()
        r = torch.full((N, self.T + 1, 2), NEG_INF, device=self.x.device)
        r[:, 0, 1] = 0.0  # before any frame: empty prefix, "in blank"
        r[:, 1:, 1] = torch.cumsum(self.x[utt, :, self.blank], dim=1)
        prefix = torch.zeros(N, device=self.x.device)
        last = torch.full((N,), -1, dtype=torch.long, device=self.x.device)
        return CTCPrefixState(r=r, prefix=prefix, last=last, utt=utt.to(self.x.device), length=0)

    def final_scores(self, state: CTCPrefixState) -> Tensor:
        """``log p(h | x)`` for each hypothesis: the prefix is the whole output.

        Returns:
            ``(N,)`` log-probabilities.
        """
        return torch.logsumexp(state.r[:, -1, :], dim=-1)

    def score_candidates(self, state: CTCPrefixState, candidates: Tensor) -> tuple[Tensor, Tensor]:
        """Prefix scores of every ``h + c``.

        Args:
            state: statistics of ``N`` prefixes ``h``.
            candidates: ``(N, K)`` token ids ``c`` (blank not allowed; the
                result for an end-of-sentence id is meaningless, use
                :meth:`final_scores`).

        Returns:
            ``prefix``: ``(N, K)`` values of ``log p(h c ... | x)``;
            ``r``: ``(N, K, T + 1, 2)`` statistics of the extended prefixes.
        """
        N, K = candidates.shape
        T, L = self.T, state.length
        x = self.x[state.utt]  # (N, T, V)
        xc = torch.gather(x, 2, candidates[:, None, :].expand(N, T, K))  # (N, T, K)
        xb = x[:, :, self.blank]  # (N, T)
        # phi[t]: mass of h over the first t frames that may be followed by c
        # (if c repeats h's last token, a blank must come in between).
        r_total = torch.logsumexp(state.r, dim=-1)  # (N, T+1)
        phi = r_total[:, :, None].expand(N, T + 1, K).clone()
        same = candidates == state.last[:, None]  # (N, K)
        phi_same = state.r[:, :, 1][:, :, None].expand(N, T + 1, K)
        phi = torch.where(same[:, None, :], phi_same, phi)
        r = torch.full((N, K, T + 1, 2), NEG_INF, device=x.device)
        # An output of L+1 tokens needs at least L+1 frames: start at frame L.
        start = L
        if start < T:
            # prefix = sum_t phi[t] + x_t(c): the extension's last token first appears at frame t.
            enter = phi[:, start:T, :] + xc[:, start:, :]  # (N, T-start, K)
            prefix = torch.logsumexp(enter, dim=1)
            rn = torch.full((N, K), NEG_INF, device=x.device)
            rb = torch.full((N, K), NEG_INF, device=x.device)
            steps = []
            for t in range(start, T):
                rn, rb = (
                    torch.logaddexp(rn, phi[:, t, :]) + xc[:, t, :],
                    torch.logaddexp(rn, rb) + xb[:, t, None],
                )
                steps.append(torch.stack((rn, rb), dim=-1))  # (N, K, 2)
            r[:, :, start + 1 :, :] = torch.stack(steps, dim=2)
        else:
            prefix = torch.full((N, K), NEG_INF, device=x.device)
        return prefix, r

    def extend(
        self, state: CTCPrefixState, hyp_index: Tensor, tokens: Tensor, r: Tensor, prefix: Tensor
    ) -> CTCPrefixState:
        """Keep chosen extensions.

        Args:
            state: statistics of the parents.
            hyp_index: ``(M,)`` parent row of each kept extension.
            tokens: ``(M,)`` the appended token.
            r: ``(M, T + 1, 2)`` the extensions' statistics (rows of
                :meth:`score_candidates`'s ``r``).
            prefix: ``(M,)`` the extensions' prefix scores.
        """
        return state.index_select(hyp_index, tokens, r, prefix)

    def sequence_scores(self, utt: int, tokens: Sequence[int]) -> tuple[float, float]:
        """``(log p(tokens ... | x), log p(tokens | x))`` for one utterance.

        Convenient for checks; decoding uses the batched methods.
        """
        state = self.initial_state(torch.tensor([utt], device=self.x.device))
        for tok in tokens:
            cand = torch.tensor([[int(tok)]], device=self.x.device)
            prefix, r = self.score_candidates(state, cand)
            state = self.extend(state, torch.tensor([0]), cand[:, 0], r[:, 0], prefix[:, 0])
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
    """A word and its time span in seconds."""

    word: str
    start: float
    end: float


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
    words = []
    for word, first, last in tokenizer.word_spans(tokens):
        words.append(WordTiming(word, spans[first][0] / frame_rate, (spans[last][1] + 1) / frame_rate))
    return words
