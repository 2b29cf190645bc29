"""Word and character error rates (computed with jiwer) and enhancement metrics (SI-SDR, PESQ, STOI).

Rates are corpus-level: total edits over total reference units, not a mean of
per-sentence rates. By default text is normalised first (lower case,
punctuation other than apostrophes removed, whitespace collapsed), so
``"Bin blue, at F2!"`` and ``"bin blue at f2"`` match.

Example:
    >>> wer(["bin blue at f two now"], ["bin blue at f to now"])
    0.16666666666666666
    >>> cer(["abc"], ["abd"])
    0.3333333333333333
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Sequence

from avsr.errors import InputError

_PUNCT = re.compile(r"[^\w\s']", flags=re.UNICODE)


def normalize_text(text: str) -> str:
    """Lower case, drop punctuation (apostrophes kept), collapse whitespace.

    Example:
        >>> normalize_text("  Don't  STOP, now! ")
        "don't stop now"
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = _PUNCT.sub(" ", text)
    return " ".join(text.split())


@dataclass
class ErrorCounts:
    """Edit counts of a corpus.

    Attributes:
        substitutions, deletions, insertions, hits: alignment counts.
        reference_length: number of reference units (words or characters).
    """

    substitutions: int
    deletions: int
    insertions: int
    hits: int
    reference_length: int

    @property
    def errors(self) -> int:
        """Total edits."""
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """Edits per reference unit (``inf`` for insertions against an empty reference)."""
        if self.reference_length == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.reference_length


def error_counts(
    references: Sequence[str], hypotheses: Sequence[str], unit: str = "word", normalize: bool = True
) -> ErrorCounts:
    """Align hypotheses to references and count edits.

    Args:
        references: reference transcripts.
        hypotheses: system outputs, one per reference.
        unit: ``"word"`` or ``"char"`` (characters of the space-joined words).
        normalize: apply :func:`normalize_text` to both sides first.

    Returns:
        The corpus :class:`ErrorCounts`.

    Raises:
        InputError: different numbers of references and hypotheses, or bad unit.
    """
    import jiwer

    if isinstance(references, str) or isinstance(hypotheses, str):
        raise InputError(None, "pass lists of sentences, not single strings")
    if len(references) != len(hypotheses):
        raise InputError(None, f"{len(references)} references but {len(hypotheses)} hypotheses")
    if unit not in ("word", "char"):
        raise InputError(None, f"unit must be 'word' or 'char', not {unit!r}")
    prep = normalize_text if normalize else (lambda s: " ".join(s.split()))
    refs = [prep(r) for r in references]
    hyps = [prep(h) for h in hypotheses]
    if not refs:
        return ErrorCounts(0, 0, 0, 0, 0)
    if unit == "word":
        out = jiwer.process_words(refs, hyps)
        n_ref = sum(len(r.split()) for r in refs)
    else:
        out = jiwer.process_characters(refs, hyps)
        n_ref = sum(len(r) for r in refs)
    return ErrorCounts(out.substitutions, out.deletions, out.insertions, out.hits, n_ref)


def wer(references: Sequence[str], hypotheses: Sequence[str], normalize: bool = True) -> float:
    """Corpus word error rate (see :func:`error_counts`)."""
    return error_counts(references, hypotheses, "word", normalize).rate


def cer(references: Sequence[str], hypotheses: Sequence[str], normalize: bool = True) -> float:
    """Corpus character error rate, spaces counted (see :func:`error_counts`)."""
    return error_counts(references, hypotheses, "char", normalize).rate


# --------------------------------------------------------------------------- enhancement


def _pair(estimate: "np.ndarray", reference: "np.ndarray", what: str) -> tuple["np.ndarray", "np.ndarray"]:
    """Two finite, non-empty 1-D float64 signals of one length, or a clear error."""
    import numpy as np

    try:
        est = np.asarray(estimate, dtype=np.float64)
        ref = np.asarray(reference, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(None, f"{what}: signals must be numeric arrays") from None
    if est.ndim != 1 or ref.ndim != 1 or len(ref) == 0:
        raise InputError(None, f"{what}: signals must be non-empty 1-D arrays (mono), got {est.shape} and {ref.shape}")
    if est.shape != ref.shape:
        raise InputError(None, f"{what}: estimate and reference differ in length ({len(est)} vs {len(ref)} samples)")
    if not (np.isfinite(est).all() and np.isfinite(ref).all()):
        raise InputError(None, f"{what}: signals contain NaN or infinite values")
    return est, ref


def si_sdr(estimate: "np.ndarray", reference: "np.ndarray", eps: float = 1e-10) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al., 2019).

    Both signals are made zero-mean; the reference is scaled to best fit the
    estimate, ``s = (<e, r> / |r|²) r``, and the ratio is ``|s|² / |e - s|²``.

    Args:
        estimate: ``(N,)`` enhanced (or noisy) signal.
        reference: ``(N,)`` clean signal.
        eps: stabiliser (keeps silent or perfect signals finite).

    Returns:
        SI-SDR in dB (higher is better; ``+inf``-like ~100 dB for a perfect estimate).

    Raises:
        InputError: signals of different lengths, not 1-D, empty or not finite, or a silent reference.

    Example:
        >>> import numpy as np
        >>> r = np.sin(np.arange(1000) / 7.0)
        >>> round(si_sdr(3.0 * r, r), 1) >= 90, round(si_sdr(r + 0.1 * np.cos(np.arange(1000) / 7.0), r), 1)
        (True, 20.0)
    """
    import numpy as np

    est, ref = _pair(estimate, reference, "SI-SDR")
    est, ref = est - est.mean(), ref - ref.mean()
    power = float(np.dot(ref, ref))
    if power <= eps:
        raise InputError(None, "SI-SDR: the reference is silent")
    target = (float(np.dot(est, ref)) / power) * ref
    noise = est - target
    return float(10 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


def pesq_wb(estimate: "np.ndarray", reference: "np.ndarray", sample_rate: int = 16000) -> float:
    """Wide-band PESQ (ITU-T P.862.2) with the ``pesq`` package, MOS-LQO in about ``[1.04, 4.64]``.

    Args:
        estimate: ``(N,)`` degraded / enhanced signal.
        reference: ``(N,)`` clean signal.
        sample_rate: 16000 (wide band needs it).

    Returns:
        the PESQ score.

    Raises:
        InputError: bad signals, another sample rate, or a reference PESQ finds no speech in.
    """
    from pesq import PesqError, pesq

    est, ref = _pair(estimate, reference, "PESQ")
    if sample_rate != 16000:
        raise InputError(None, f"wide-band PESQ needs 16000 Hz audio, got {sample_rate} Hz")
    if not ref.any():
        raise InputError(None, "PESQ: the reference is silent")
    try:
        return float(pesq(sample_rate, ref, est, "wb"))
    except PesqError as e:
        raise InputError(None, f"PESQ: {type(e).__name__} ({e})") from None


def stoi(estimate: "np.ndarray", reference: "np.ndarray", sample_rate: int = 16000, extended: bool = False) -> float:
    """Short-time objective intelligibility (``extended``: ESTOI), with the ``pystoi`` package.

    Args:
        estimate: ``(N,)`` degraded / enhanced signal.
        reference: ``(N,)`` clean signal.
        sample_rate: Hz (resampled to 10 kHz inside ``pystoi``).
        extended: ESTOI (Jensen & Taal, 2016) instead of STOI.

    Returns:
        the score, about ``[0, 1]`` (higher is more intelligible).

    Raises:
        InputError: bad signals, or a signal too short to score (under ~0.4 s of speech).
    """
    import warnings

    from pystoi import stoi as _stoi

    est, ref = _pair(estimate, reference, "ESTOI" if extended else "STOI")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            score = float(_stoi(ref, est, int(sample_rate), extended=extended))
        except (IndexError, ValueError):  # pystoi fails this way on signals of a few frames
            raise InputError(None, "STOI: the signal is too short to score") from None
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        raise InputError(None, "STOI: the signal is too short (or too silent) to score")
    return score
