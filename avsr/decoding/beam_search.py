"""Joint CTC/attention beam search (batched over hypotheses and utterances).

Each hypothesis ``h`` carries the joint score::

    score(h) = (1 - λ) · log p_att(h) + λ · log p_ctc(h ... | x)
               + β · log p_lm(h) + γ · |h|

with ``λ = ctc_weight``, ``β = lm_weight`` (shallow fusion with a
:class:`avsr.models.lm.TokenLM`) and ``γ = length_bonus``. When ``h`` ends the
CTC prefix probability is replaced by the full-sequence probability
``log p_ctc(h | x)`` and the attention/LM scores gain their end-of-sentence
terms. All running hypotheses of all utterances go through the decoder in one
call per step. The CTC prefix scores of all ``(hypothesis, candidate)`` pairs
(by default the whole vocabulary, so the beam is chosen by the exact joint
score) are one log-sum-exp over frames, and the frame-by-frame forward
recursion runs only for the extensions the beam keeps
(:class:`avsr.decoding.ctc.CTCPrefixScorer`).

Without CTC (``ctc_weight == 0``) nothing in that sum holds the length up:
every token adds a negative log-probability, so a raw sum favours outputs that
stop early. There (by default; see ``normalize_length``) finished hypotheses
are ranked by the per-token score ``score(h) / (|h| + 1)``, the ``+ 1``
counting the end of sentence. The beam itself is pruned as before: all
candidates of one step have the same length, so dividing by it changes no
order among them. With CTC the full-sequence CTC probability already
penalises outputs that are too short (or too long), and the raw sum is kept.

End detection is exact for the hypotheses the beam keeps: every term above
can only fall as a hypothesis grows (log-probabilities of longer prefixes are
smaller), so once the ``nbest``-th best ended score beats the best score any
running hypothesis can still reach (its score plus whatever length bonus is
still to be earned, divided by the final length when normalising, maximised
over the lengths still allowed), no running hypothesis can overtake it and
the utterance stops.

The model is anything with ``decoder(tokens, memory, memory_lengths) ->
logits`` (and ``ctc_log_probs(enc)``, ``sos_id``, ``eos_id``), e.g.
:class:`avsr.models.avsr.AVSRModel`, or a bare decoder callable plus explicit
``ctc_log_probs``/``sos_id``/``eos_id``. When the decoder also has the
incremental API of :class:`avsr.models.decoder.TransformerDecoder`
(``precompute_memory``, ``step``, ``select``; see :class:`IncrementalDecoder`),
the search feeds it one token per hypothesis and step, reusing cached
attention keys/values, instead of re-running every prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

import torch
from torch import Tensor

from avsr.decoding.ctc import CTCPrefixScorer, CTCPrefixState
from avsr.errors import InputError

if TYPE_CHECKING:
    from avsr.models.lm import TokenLM

NEG_INF = float("-inf")
FULL_VOCAB_LIMIT = 512
"""Vocabularies up to this size are scored in full by default (no pre-beam)."""
PRE_BEAM_LARGE_VOCAB = 64
"""Default pre-beam for larger vocabularies."""

DecoderFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``(tokens (N, L) long, memory (N, T, D), memory_lengths (N,)) -> logits (N, L, V)``."""


class DecoderModel(Protocol):
    """What the search needs from a model (``AVSRModel`` has all of it)."""

    sos_id: int
    eos_id: int

    def decoder(self, tokens: Tensor, memory: Tensor, memory_lengths: Tensor) -> Tensor: ...

    def ctc_log_probs(self, enc: Tensor) -> Tensor: ...


class IncrementalDecoder(Protocol):
    """Optional decoder API for cached, one-token-per-step decoding.

    ``step`` over ``sos, y1, ..., yL`` must give the logits that the full
    ``decoder(tokens, memory, memory_lengths)`` gives at the matching positions.
    """

    def precompute_memory(self, memory: Tensor, memory_lengths: Tensor) -> Any:
        """``memory (N, T, D)``, ``memory_lengths (N,)`` -> a cache with no tokens fed."""
        ...

    def step(self, tokens: Tensor, cache: Any) -> tuple[Tensor, Any]:
        """``tokens (N,)`` (the newest token per row), cache -> ``(logits (N, V), new cache)``."""
        ...

    def select(self, cache: Any, index: Tensor) -> Any:
        """Keep rows ``index (M,)`` of a cache."""
        ...


def incremental_decoder(decoder: object) -> IncrementalDecoder | None:
    """``decoder`` itself when it has ``precompute_memory``, ``step`` and ``select``, else ``None``."""
    names = ("precompute_memory", "step", "select")
    return decoder if all(callable(getattr(decoder, n, None)) for n in names) else None  # type: ignore[return-value]


@dataclass
class Hypothesis:
    """One finished decoding result.

    Attributes:
        tokens: token ids, without sos/eos.
        score: the score used for ranking: the joint score, divided by
            ``len(tokens) + 1`` when the search normalises by length.
        att_score: ``log p_att(tokens, eos)`` (0 when the decoder was unused).
        ctc_score: ``log p_ctc(tokens | x)`` (0 when CTC was unused).
        lm_score: ``log p_lm(tokens, eos)`` (0 without an LM).
    """

    tokens: list[int]
    score: float
    att_score: float = 0.0
    ctc_score: float = 0.0
    lm_score: float = 0.0


@dataclass
class _Resolved:
    decoder: DecoderFn | None
    ctc_log_probs: Tensor | None
    sos_id: int
    eos_id: int
    incremental: IncrementalDecoder | None = None  # set when the search uses the cached decoder API


def _resolve(
    model: DecoderModel | DecoderFn,
    enc: Tensor,
    ctc_log_probs: Tensor | None,
    sos_id: int | None,
    eos_id: int | None,
    need_ctc: bool,
) -> _Resolved:
    """Pull the decoder, CTC scores and special ids from a model or arguments."""
    is_model = hasattr(model, "decoder") and callable(getattr(model, "decoder"))
    decoder = model.decoder if is_model else model  # type: ignore[union-attr]
    if sos_id is None:
        sos_id = getattr(model, "sos_id", None)
    if eos_id is None:
        eos_id = getattr(model, "eos_id", sos_id)
    if sos_id is None or eos_id is None:
        raise InputError(None, "beam search needs sos_id/eos_id (from the model or as arguments)")
    if need_ctc and ctc_log_probs is None:
        if not hasattr(model, "ctc_log_probs"):
            raise InputError(None, "ctc_weight > 0 needs ctc_log_probs (or a model that has them)")
        ctc_log_probs = model.ctc_log_probs(enc)  # type: ignore[union-attr]
    return _Resolved(decoder, ctc_log_probs, int(sos_id), int(eos_id))


def _max_lengths(enc_lengths: Tensor, max_len_ratio: float, max_len: int | None, use_ctc: bool) -> Tensor:
    """Longest output (tokens, eos excluded) allowed per utterance, ``(B,)``."""
    lengths = enc_lengths.long().cpu()
    if max_len is not None:
        out = torch.full_like(lengths, int(max_len))
    else:
        out = torch.ceil(lengths.float() * max_len_ratio).long()
    if use_ctc:  # CTC cannot emit more tokens than frames
        out = torch.minimum(out, lengths)
    return out.clamp(min=0)


@torch.no_grad()
def greedy_attention(
    model: DecoderModel | DecoderFn,
    enc: Tensor,
    enc_lengths: Tensor,
    *,
    sos_id: int | None = None,
    eos_id: int | None = None,
    blank_id: int = 0,
    max_len_ratio: float = 1.0,
    max_len: int | None = None,
    use_cache: bool = True,
) -> list[list[int]]:
    """Greedy attention decoding (argmax each step, blank excluded), batched.

    Args:
        model: a model with ``decoder`` or a decoder callable.
        enc: ``(B, T, D)`` encoder output (the decoder's memory).
        enc_lengths: ``(B,)`` valid frames.
        sos_id, eos_id: special ids (default: the model's).
        blank_id: never emitted.
        max_len_ratio: longest output as a fraction of the frames.
        max_len: absolute longest output (overrides ``max_len_ratio``).
        use_cache: use the decoder's incremental API (:class:`IncrementalDecoder`)
            when it has one.

    Returns:
        Token ids per utterance (no sos/eos).
    """
    res = _resolve(model, enc, None, sos_id, eos_id, need_ctc=False)
    device, B = enc.device, enc.shape[0]
    enc_lengths = enc_lengths.to(device)
    limit = _max_lengths(enc_lengths, max_len_ratio, max_len, use_ctc=False).to(device)
    tokens = torch.full((B, 1), res.sos_id, dtype=torch.long, device=device)
    running = torch.ones(B, dtype=torch.bool, device=device)
    out: list[list[int]] = [[] for _ in range(B)]
    inc = incremental_decoder(res.decoder) if use_cache else None
    cache = inc.precompute_memory(enc, enc_lengths) if inc is not None else None
    cache_rows = torch.arange(B, device=device)  # utterance of each cache row
    step = 0
    while True:
        running &= limit > step
        if not running.any():
            return out
        idx = running.nonzero().squeeze(1)
        if inc is not None:
            if idx.numel() != cache_rows.numel():  # drop finished rows (both sorted, idx a subset)
                cache = inc.select(cache, torch.searchsorted(cache_rows, idx))
                cache_rows = idx
            logits, cache = inc.step(tokens[idx, -1], cache)
            logits = logits.float()
        else:
            logits = res.decoder(tokens[idx], enc[idx], enc_lengths[idx])[:, -1].float()
        logits[:, blank_id] = NEG_INF
        best = logits.argmax(-1)
        new_col = torch.full((B, 1), res.eos_id, dtype=torch.long, device=device)
        new_col[idx, 0] = best
        tokens = torch.cat([tokens, new_col], dim=1)
        for i, tok in zip(idx.tolist(), best.tolist()):
            if tok == res.eos_id:
                running[i] = False
            else:
                out[i].append(tok)
        step += 1


@dataclass
class _Settings:
    """Search settings passed to every step."""

    w_att: float
    w_ctc: float
    w_lm: float
    bonus: float
    beam_size: int
    blank_id: int
    pre_beam: int | None
    nbest: int
    end_margin: float | None
    normalize: bool = False  # rank ended hypotheses by score / (tokens + eos)


@dataclass
class _Beam:
    """Running hypotheses of all utterances, rows grouped by utterance then rank."""

    tokens: Tensor  # (R, L) without sos
    utt: Tensor  # (R,) utterance of each row
    slot: Tensor  # (R,) rank of the row inside its utterance
    att: Tensor  # (R,) summed attention log-probs
    lm: Tensor  # (R,) summed LM log-probs
    score: Tensor  # (R,) joint score
    ctc: CTCPrefixState | None
    lm_state: Any
    ended: list[list[Hypothesis]] = field(default_factory=list)
    dec_cache: Any = None  # incremental decoder state, one row per hypothesis (or None)

    @property
    def length(self) -> int:
        return self.tokens.shape[1]


def _ranks_within(utt: Tensor) -> Tensor:
    """Position of each row among the rows of its utterance (``utt`` sorted)."""
    if utt.numel() == 0:
        return utt.clone()
    start = torch.ones_like(utt, dtype=torch.bool)
    start[1:] = utt[1:] != utt[:-1]
    idx = torch.arange(utt.numel(), device=utt.device)
    first = torch.cummax(torch.where(start, idx, torch.zeros_like(idx)), dim=0).values
    return idx - first


@torch.no_grad()
def joint_beam_search(
    model: DecoderModel | DecoderFn,
    enc: Tensor,
    enc_lengths: Tensor,
    *,
    ctc_log_probs: Tensor | None = None,
    sos_id: int | None = None,
    eos_id: int | None = None,
    blank_id: int = 0,
    beam_size: int = 10,
    ctc_weight: float = 0.3,
    lm: "TokenLM | None" = None,
    lm_weight: float = 0.0,
    length_bonus: float = 0.0,
    max_len_ratio: float = 1.0,
    max_len: int | None = None,
    pre_beam: int | None = None,
    nbest: int | None = None,
    end_margin: float | None = None,
    normalize_length: bool | None = None,
    use_cache: bool = True,
) -> list[list[Hypothesis]]:
    """Joint CTC/attention beam search with optional LM shallow fusion.

    Args:
        model: a model (``decoder``, ``ctc_log_probs``, ``sos_id``, ``eos_id``)
            or a decoder callable ``(tokens (N, L), memory (N, T, D),
            memory_lengths (N,)) -> logits (N, L, V)``.
        enc: ``(B, T, D)`` encoder output.
        enc_lengths: ``(B,)`` valid frames.
        ctc_log_probs: ``(B, T, V)`` CTC log-probabilities (default: the
            model's ``ctc_log_probs(enc)`` when ``ctc_weight > 0``).
        sos_id, eos_id: special ids (default: the model's).
        blank_id: the CTC blank, never emitted.
        beam_size: running hypotheses kept per utterance.
        ctc_weight: ``λ`` in [0, 1]; 1 means CTC prefix search without the
            decoder.
        lm: optional token LM for shallow fusion.
        lm_weight: ``β``.
        length_bonus: ``γ``, added per emitted token (eos excluded).
        max_len_ratio: longest output as a fraction of the frames.
        max_len: absolute longest output (overrides ``max_len_ratio``).
        pre_beam: candidate tokens per hypothesis whose CTC prefix score is
            computed, chosen by attention (+LM) score; end of sentence is
            always scored too. Default: the whole vocabulary up to
            ``FULL_VOCAB_LIMIT`` (512) tokens, else ``max(64, 1.5 * beam)``.
            Without a decoder and LM (``ctc_weight == 1``) every token is
            scored.
        nbest: finished hypotheses returned per utterance (default
            ``beam_size``).
        end_margin: ``None`` (default) stops an utterance only when no running
            hypothesis can still win (exact). A number caps the length bonus a
            running hypothesis is assumed still able to earn: a faster,
            heuristic stop that matters only with ``length_bonus > 0``.
        normalize_length: rank finished hypotheses by their joint score
            divided by their length (tokens + 1 for eos), and report that as
            ``Hypothesis.score``. ``None`` (default) normalises exactly when
            ``ctc_weight == 0``: a raw sum of attention (+LM) log-probabilities
            prefers outputs that stop early, while the CTC term keeps the
            length in check in joint decoding. Beam pruning is the same
            either way (one step's candidates share one length).
        use_cache: feed the decoder one token per step with cached keys/values
            when it has the incremental API (:class:`IncrementalDecoder`);
            ``False`` re-runs the whole prefix every step (same results up to
            float rounding).

    Returns:
        Per utterance, the best finished hypotheses, best first.
    """
    if not 0.0 <= ctc_weight <= 1.0:
        raise InputError(None, f"ctc_weight must be in [0, 1], got {ctc_weight}")
    if beam_size < 1:
        raise InputError(None, f"beam_size must be >= 1, got {beam_size}")
    if lm_weight < 0:  # end detection relies on every score term falling as hypotheses grow
        raise InputError(None, f"lm_weight must be >= 0, got {lm_weight}")
    use_ctc = ctc_weight > 0
    use_lm = lm is not None and lm_weight != 0
    normalize = not use_ctc if normalize_length is None else bool(normalize_length)
    res = _resolve(model, enc, ctc_log_probs, sos_id, eos_id, need_ctc=use_ctc)
    nbest = beam_size if nbest is None else nbest
    device = enc.device
    B = enc.shape[0]
    enc_lengths = enc_lengths.to(device)
    limit = _max_lengths(enc_lengths, max_len_ratio, max_len, use_ctc).to(device)
    scorer = CTCPrefixScorer(res.ctc_log_probs, enc_lengths, blank=blank_id) if use_ctc else None
    V = res.ctc_log_probs.shape[-1] if use_ctc else None
    if use_cache and ctc_weight < 1:
        res.incremental = incremental_decoder(res.decoder)

    utt = torch.arange(B, device=device)
    beam = _Beam(
        tokens=torch.zeros((B, 0), dtype=torch.long, device=device),
        utt=utt,
        slot=torch.zeros(B, dtype=torch.long, device=device),
        att=torch.zeros(B, device=device),
        lm=torch.zeros(B, device=device),
        score=torch.zeros(B, device=device),
        ctc=scorer.initial_state(utt) if scorer is not None else None,
        lm_state=lm.init_state(B) if use_lm else None,
        ended=[[] for _ in range(B)],
        dec_cache=res.incremental.precompute_memory(enc, enc_lengths) if res.incremental is not None else None,
    )
    settings = _Settings(
        w_att=1.0 - ctc_weight, w_ctc=ctc_weight, w_lm=lm_weight, bonus=length_bonus, beam_size=beam_size,
        blank_id=blank_id, pre_beam=pre_beam, nbest=nbest, end_margin=end_margin, normalize=normalize,
    )
    while beam.utt.numel() > 0:
        beam = _step(beam, res, enc, enc_lengths, limit, scorer, lm if use_lm else None, settings, V)
    results = []
    for hyps in beam.ended:
        hyps = sorted(hyps, key=lambda h: h.score, reverse=True)[:nbest]
        results.append(hyps or [Hypothesis([], NEG_INF)])
    return results


def _step(
    beam: _Beam,
    res: _Resolved,
    enc: Tensor,
    enc_lengths: Tensor,
    limit: Tensor,
    scorer: CTCPrefixScorer | None,
    lm: "TokenLM | None",
    cfg: _Settings,
    V: int | None,
) -> _Beam:
    """Extend every running hypothesis by one token and prune to the beam."""
    att_lp, dec_cache, lm_lp, lm_state = _next_token_scores(beam, res, enc, enc_lengths, lm, cfg)
    V = next(t.shape[-1] for t in (att_lp, lm_lp) if t is not None) if V is None else V
    full = scorer is None or (att_lp is None and lm is None)  # nothing to pre-select with, or no need
    cand = _candidates(beam, att_lp, lm_lp, res.eos_id, V, cfg, full=full)
    att_new, ctc_new, lm_new, total = _candidate_scores(
        beam, cand, att_lp, lm_lp, scorer, limit, res.eos_id, cfg
    )
    sel_utt, row, kk = _top_per_utterance(beam, total, cfg.beam_size)
    tok = cand[row, kk]
    sel_score, sel_att, sel_lm, sel_ctc = (x[row, kk] for x in (total, att_new, lm_new, ctc_new))

    ended = tok == res.eos_id
    if ended.any():
        _record_ended(beam, sel_utt[ended], row[ended], sel_score[ended], sel_att[ended],
                      sel_ctc[ended], sel_lm[ended], cfg, use_lm=lm is not None)
    # running hypotheses, minus utterances whose best results are settled
    keep = ~ended
    done = _finished_utterances(beam.ended, sel_utt[keep], sel_score[keep], limit, beam.length + 1, cfg)
    keep &= ~done[sel_utt]
    row, tok, u = row[keep], tok[keep], sel_utt[keep]
    return _Beam(
        tokens=torch.cat([beam.tokens[row], tok[:, None]], dim=1),
        utt=u,
        slot=_ranks_within(u),
        att=sel_att[keep],
        lm=sel_lm[keep],
        score=sel_score[keep],
        ctc=scorer.extend(beam.ctc, row, tok) if scorer is not None else None,
        lm_state=lm.select_state(lm_state, row) if lm is not None else None,
        ended=beam.ended,
        dec_cache=res.incremental.select(dec_cache, row) if res.incremental is not None else None,
    )


def _next_token_scores(
    beam: _Beam, res: _Resolved, enc: Tensor, enc_lengths: Tensor, lm: "TokenLM | None", cfg: _Settings
) -> tuple[Tensor | None, Any, Tensor | None, Any]:
    """Attention and LM log-probabilities of the next token, ``(R, V)`` each (or ``None``).

    Returns:
        ``(att_lp, new_decoder_cache, lm_lp, new_lm_state)``; the cache is
        ``None`` unless the incremental decoder API is in use.
    """
    R, device = beam.utt.numel(), enc.device
    last = beam.tokens[:, -1] if beam.length > 0 else torch.full((R,), res.sos_id, dtype=torch.long, device=device)
    att_lp, dec_cache = None, None
    if res.incremental is not None:
        logits, dec_cache = res.incremental.step(last, beam.dec_cache)
        att_lp = logits.float().log_softmax(-1)
    elif cfg.w_att > 0:
        sos = torch.full((R, 1), res.sos_id, dtype=torch.long, device=device)
        logits = res.decoder(torch.cat([sos, beam.tokens], 1), enc[beam.utt], enc_lengths[beam.utt])[:, -1]
        att_lp = logits.float().log_softmax(-1)
    lm_lp, lm_state = None, None
    if lm is not None:
        lm_lp, lm_state = lm.score(last, beam.lm_state)
    return att_lp, dec_cache, lm_lp, lm_state


def _candidates(
    beam: _Beam, att_lp: Tensor | None, lm_lp: Tensor | None, eos: int, V: int, cfg: _Settings, full: bool
) -> Tensor:
    """Candidate tokens ``(R, K)`` whose joint score is computed (blank never)."""
    R, device = beam.utt.numel(), beam.tokens.device
    if cfg.pre_beam is not None:
        k = max(1, cfg.pre_beam)
    else:
        k = V if V <= FULL_VOCAB_LIMIT else max(PRE_BEAM_LARGE_VOCAB, int(1.5 * cfg.beam_size))
    if full or k >= V - 2:  # every token
        cand = torch.arange(V, device=device)
        return cand[cand != cfg.blank_id][None, :].expand(R, V - 1)
    # the best tokens by attention (+LM) score, and always the end
    pre = torch.zeros((R, V), device=device)
    for weight, part in ((cfg.w_att, att_lp), (cfg.w_lm, lm_lp)):
        if part is not None:
            pre = pre + weight * part
    pre[:, cfg.blank_id] = NEG_INF
    pre[:, eos] = NEG_INF
    top = pre.topk(k, dim=-1).indices
    return torch.cat([top, torch.full((R, 1), eos, dtype=torch.long, device=device)], dim=1)


def _candidate_scores(
    beam: _Beam,
    cand: Tensor,
    att_lp: Tensor | None,
    lm_lp: Tensor | None,
    scorer: CTCPrefixScorer | None,
    limit: Tensor,
    eos: int,
    cfg: _Settings,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Accumulated attention, CTC and LM scores and the joint score, ``(R, K)`` each.

    Candidates past the length limit (anything but eos there) score ``-inf``.
    """
    L, device = beam.length, beam.tokens.device
    is_eos = cand == eos
    zeros = torch.zeros(cand.shape, device=device)
    att_new = beam.att[:, None] + (att_lp.gather(1, cand) if att_lp is not None else zeros)
    lm_new = beam.lm[:, None] + (lm_lp.gather(1, cand) if lm_lp is not None else zeros)
    ctc_new = zeros
    if scorer is not None:
        prefix = scorer.prefix_scores(beam.ctc, cand)
        final = scorer.final_scores(beam.ctc)  # the hypothesis ends here
        ctc_new = torch.where(is_eos, final[:, None].expand_as(prefix), prefix)
    total = cfg.bonus * torch.where(is_eos, L, L + 1).float()
    for weight, part in ((cfg.w_att, att_new), (cfg.w_ctc, ctc_new), (cfg.w_lm, lm_new)):
        if weight != 0:  # skip unused terms: 0 * -inf would be nan
            total = total + weight * part
    allowed = (limit[beam.utt] > L)[:, None] | is_eos
    total = total.masked_fill(~allowed | total.isnan(), NEG_INF)
    return att_new, ctc_new, lm_new, total


def _top_per_utterance(beam: _Beam, total: Tensor, beam_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """The ``beam_size`` best (hypothesis, candidate) pairs of each utterance.

    Args:
        beam: running hypotheses (``utt``/``slot`` place each row).
        total: ``(R, K)`` joint scores.
        beam_size: pairs kept per utterance.

    Returns:
        ``(utt, row, k)`` of the kept pairs, ``(M,)`` each, grouped by
        utterance, best first; pairs scoring ``-inf`` are dropped.
    """
    R, K = total.shape
    B, device = len(beam.ended), total.device
    grid = torch.full((B, beam_size, K), NEG_INF, device=device)
    grid[beam.utt, beam.slot] = total
    row_of = torch.full((B, beam_size), -1, dtype=torch.long, device=device)
    row_of[beam.utt, beam.slot] = torch.arange(R, device=device)
    top_val, top_idx = grid.view(B, beam_size * K).topk(beam_size, dim=-1)
    sel_utt, sel_rank = (top_val > NEG_INF).nonzero(as_tuple=True)
    flat = top_idx[sel_utt, sel_rank]
    return sel_utt, row_of[sel_utt, flat // K], flat % K


def _record_ended(
    beam: _Beam,
    utt: Tensor,
    row: Tensor,
    score: Tensor,
    att: Tensor,
    ctc: Tensor,
    lm: Tensor,
    cfg: _Settings,
    use_lm: bool,
) -> None:
    """Add finished hypotheses to ``beam.ended`` (kept sorted, at most ``nbest`` each).

    With ``cfg.normalize`` the stored score is the joint score per token, eos
    included (``beam.length + 1`` tokens).
    """
    tokens = beam.tokens[row].tolist()
    if cfg.normalize:
        score = score / (beam.length + 1)
    columns = (utt.tolist(), tokens, score.tolist(), att.tolist(), ctc.tolist(), lm.tolist())
    for u, t, s, a, c, m in zip(*columns):
        beam.ended[u].append(Hypothesis(t, s, a if cfg.w_att > 0 else 0.0, c if cfg.w_ctc > 0 else 0.0,
                                        m if use_lm else 0.0))
    for u in set(utt.tolist()):  # only the nbest best can be returned
        beam.ended[u] = sorted(beam.ended[u], key=lambda h: h.score, reverse=True)[: cfg.nbest]


def _finished_utterances(
    ended: list[list[Hypothesis]],
    run_utt: Tensor,
    run_score: Tensor,
    limit: Tensor,
    length: int,
    cfg: "_Settings",
) -> Tensor:
    """Utterances whose ``nbest`` best ended hypotheses no running one can beat.

    Args:
        ended: finished hypotheses per utterance.
        run_utt: ``(M,)`` utterance of each running hypothesis.
        run_score: ``(M,)`` their joint scores (length ``length``).
        limit: ``(B,)`` longest allowed outputs.
        length: tokens in the running hypotheses.
        cfg: search settings (length bonus, end margin, nbest, normalisation).

    Returns:
        ``(B,)`` bool.
    """
    B = len(ended)
    best_running = torch.full((B,), NEG_INF, device=run_score.device)
    best_running = best_running.scatter_reduce(0, run_utt, run_score, reduce="amax")
    bound = _reachable_bound(best_running, limit, length, cfg).tolist()
    done = torch.zeros(B, dtype=torch.bool, device=run_score.device)
    for b in range(B):
        if len(ended[b]) >= cfg.nbest:  # ended lists are kept sorted, best first
            done[b] = ended[b][cfg.nbest - 1].score >= bound[b]
    return done


def _reachable_bound(best_running: Tensor, limit: Tensor, length: int, cfg: _Settings) -> Tensor:
    """Highest ranking score a running hypothesis can still finish with, per utterance.

    A hypothesis with ``length`` tokens and joint score ``s`` that ends after
    ``n`` tokens (``length <= n <= limit``) scores at most ``s + h(n)``, where
    ``h(n) = max(γ, 0) · (n - length)`` is the length bonus still to come
    (capped at ``end_margin`` when given); every other term only falls.
    Ranked raw, that peaks at ``n = limit``; normalised, the bound is the
    largest ``(s + h(n)) / (n + 1)`` over the allowed ``n``.

    Args:
        best_running: ``(B,)`` best running joint score per utterance
            (``-inf`` where none runs).
        limit: ``(B,)`` longest allowed outputs.
        length: tokens in the running hypotheses.
        cfg: search settings.

    Returns:
        ``(B,)`` float bounds, comparable with ``Hypothesis.score``.
    """
    bonus = max(cfg.bonus, 0.0)  # only a positive length bonus can raise a running score
    if not cfg.normalize:
        headroom = bonus * (limit - length).clamp(min=0).float()
        if cfg.end_margin is not None:
            headroom = headroom.clamp(max=cfg.end_margin)
        return best_running + headroom
    top = max(int(limit.max()) if limit.numel() else length, length)
    n = torch.arange(length, top + 1, device=best_running.device)
    headroom = bonus * (n - length).float()
    if cfg.end_margin is not None:
        headroom = headroom.clamp(max=cfg.end_margin)
    reach = (best_running[:, None] + headroom[None, :]) / (n + 1).float()[None, :]
    reach = reach.masked_fill(n[None, :] > limit.to(n.device)[:, None], NEG_INF)
    return reach.max(dim=1).values
