"""Phonemes to a smooth track of mouth shapes (visemes) at the video rate.

Each eSpeak phoneme maps to a target mouth shape with five parameters
(:data:`PARAMS`):

* ``open``: vertical lip aperture, 0 (lips shut) .. 1 (wide open);
* ``spread``: lip corners pulled apart (+1, as in /i:/) or drawn in (-1, as in /u:/);
* ``round``: lip rounding / protrusion, 0 .. 1;
* ``teeth``: how much of the teeth shows, 0 .. 1;
* ``tongue``: how much of the tongue tip shows, 0 .. 1.

Lips close fully for /p b m/; the lower lip tucks under the upper teeth for
/f v/; the tongue shows between the teeth for /T D/ (and a little for /l/);
/w u: U O/ round. As in real lip reading, /p b m/ look alike, as do /f v/,
/t d n/, /s z/ and /k g/: voicing and nasality are invisible.

Coarticulation: targets are sampled on a fine grid and blended with a
Gaussian kernel weighted by each phoneme's *dominance* (Cohen & Massaro's
idea): a bilabial closure or a rounded /w/ dominates its neighbours, while
/h k g/ barely constrain the lips and take their shape from the context.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["PARAMS", "REST", "viseme_of", "viseme_track"]

#: Names of the mouth shape parameters, in column order.
PARAMS: tuple[str, ...] = ("open", "spread", "round", "teeth", "tongue")

#: Mouth shape at rest (silence).
REST = np.array([0.04, 0.0, 0.0, 0.0, 0.0])

# phoneme -> (open, spread, round, teeth, tongue, dominance)
_TABLE: dict[str, tuple[float, float, float, float, float, float]] = {
    "_": (*REST, 0.6),
    # consonants
    "p": (0.0, 0.0, 0.0, 0.0, 0.0, 6.0), "b": (0.0, 0.0, 0.0, 0.0, 0.0, 6.0), "m": (0.0, 0.0, 0.0, 0.0, 0.0, 6.0),
    "f": (0.09, 0.1, 0.0, 1.0, 0.0, 4.0), "v": (0.09, 0.1, 0.0, 1.0, 0.0, 4.0),
    "T": (0.2, 0.1, 0.0, 0.7, 1.0, 3.0), "D": (0.2, 0.1, 0.0, 0.7, 1.0, 3.0),
    "t": (0.18, 0.15, 0.0, 0.7, 0.15, 1.5), "d": (0.18, 0.15, 0.0, 0.7, 0.15, 1.5),
    "n": (0.18, 0.15, 0.0, 0.6, 0.2, 1.2), "l": (0.22, 0.1, 0.0, 0.5, 0.6, 1.5),
    "s": (0.12, 0.35, 0.0, 0.95, 0.0, 2.5), "z": (0.12, 0.35, 0.0, 0.95, 0.0, 2.5),
    "S": (0.14, -0.3, 0.6, 0.7, 0.0, 2.5), "Z": (0.14, -0.3, 0.6, 0.7, 0.0, 2.5),
    "tS": (0.12, -0.3, 0.6, 0.7, 0.0, 2.5), "dZ": (0.12, -0.3, 0.6, 0.7, 0.0, 2.5),
    "k": (0.24, 0.0, 0.0, 0.3, 0.0, 0.5), "g": (0.24, 0.0, 0.0, 0.3, 0.0, 0.5), "N": (0.2, 0.0, 0.0, 0.3, 0.0, 0.5),
    "h": (0.3, 0.0, 0.0, 0.2, 0.0, 0.2), "x": (0.24, 0.0, 0.0, 0.3, 0.0, 0.5),
    "r": (0.14, -0.35, 0.5, 0.2, 0.0, 2.0), "w": (0.07, -0.9, 1.0, 0.0, 0.0, 4.0),
    "j": (0.12, 0.55, 0.0, 0.5, 0.0, 1.5), "?": (0.1, 0.0, 0.0, 0.2, 0.0, 0.5),
    # vowels
    "i:": (0.2, 1.0, 0.0, 0.75, 0.0, 2.0), "i": (0.22, 0.8, 0.0, 0.7, 0.0, 1.5),
    "I": (0.3, 0.6, 0.0, 0.55, 0.0, 1.5), "e": (0.4, 0.55, 0.0, 0.5, 0.0, 1.5),
    "E": (0.46, 0.45, 0.0, 0.45, 0.0, 1.5), "a": (0.78, 0.25, 0.0, 0.3, 0.05, 2.0),
    "A": (0.85, 0.0, 0.0, 0.2, 0.05, 2.0), "A:": (0.85, 0.0, 0.0, 0.2, 0.05, 2.0),
    "0": (0.62, -0.25, 0.4, 0.2, 0.0, 2.0), "O": (0.5, -0.45, 0.7, 0.1, 0.0, 2.0),
    "O:": (0.5, -0.45, 0.7, 0.1, 0.0, 2.0), "o": (0.4, -0.55, 0.8, 0.1, 0.0, 2.0),
    "V": (0.55, 0.0, 0.0, 0.3, 0.0, 1.5), "@": (0.32, 0.0, 0.0, 0.3, 0.0, 0.8),
    "3": (0.35, -0.1, 0.25, 0.3, 0.0, 1.2), "3:": (0.35, -0.1, 0.25, 0.3, 0.0, 1.2),
    "U": (0.24, -0.55, 0.7, 0.15, 0.0, 2.0), "u:": (0.14, -0.85, 1.0, 0.05, 0.0, 3.0),
    "u": (0.16, -0.8, 0.95, 0.05, 0.0, 2.5),
}
# diphthongs (and r-coloured vowels): first half, second half
_DIPHTHONGS: dict[str, tuple[str, ...]] = {
    "eI": ("E", "i"), "aI": ("a", "I"), "aU": ("a", "U"), "oU": ("O", "U"), "@U": ("@", "U"),
    "OI": ("O", "I"), "i@": ("i", "@"), "e@": ("E", "@"), "U@": ("U", "@"), "aI@": ("a", "I", "@"),
    "aU@": ("a", "U", "@"), "A@": ("A", "r"), "O@": ("O", "r"), "o@": ("o", "@"), "i@3": ("i", "@"),
    "@L": ("@", "l"), "@5": ("@", "l"),
}
_STRIP = re.compile(r"[#0-9\[/;\-!']+$")


def _lookup(phoneme: str) -> tuple[str, ...]:
    """Table keys for an eSpeak phoneme mnemonic (one per part of a diphthong)."""
    for cand in (phoneme, _STRIP.sub("", phoneme) or phoneme):
        if cand in _DIPHTHONGS:
            return _DIPHTHONGS[cand]
        if cand in _TABLE:
            return (cand,)
        if cand.rstrip(":") in _TABLE:
            return (cand.rstrip(":"),)
    if phoneme.startswith("_"):
        return ("_",)
    if phoneme[:1] in _TABLE:
        return (phoneme[:1],)
    return ("@",)  # unknown: a neutral, weakly dominant shape


def viseme_of(phoneme: str) -> np.ndarray:
    """Target shape(s) of one eSpeak phoneme.

    Args:
        phoneme: eSpeak mnemonic, e.g. ``"b"``, ``"u:"``, ``"aI2"``, ``"_:"``.

    Returns:
        ``(P, 6)`` rows of ``(open, spread, round, teeth, tongue, dominance)``,
        one row per part (``P = 2`` for a diphthong).

    Example:
        >>> viseme_of("m")[0, 0]  # lips shut
        np.float64(0.0)
        >>> viseme_of("aI").shape
        (2, 6)
    """
    return np.array([_TABLE[k] for k in _lookup(phoneme)], dtype=np.float64)


def viseme_track(
    phonemes: list[tuple[str, float, float]],
    num_frames: int,
    fps: float = 25.0,
    sigma: float = 0.03,
    gains: np.ndarray | None = None,
    grid_rate: float = 200.0,
) -> np.ndarray:
    """Mouth shape per video frame from timed phonemes.

    Args:
        phonemes: ``(mnemonic, start, end)`` in seconds, in time order.
        num_frames: frames to produce; frame ``k`` covers ``[k/fps, (k+1)/fps)``.
        fps: video frame rate.
        sigma: coarticulation kernel width (s); larger is sloppier speech.
        gains: ``(5,)`` per-speaker multipliers of the five parameters
            (e.g. a speaker who opens wide); ``None`` = ones.
        grid_rate: rate (Hz) of the fine grid the targets are blended on.

    Returns:
        ``float32 (num_frames, 5)``, columns :data:`PARAMS`, clipped to their ranges.
    """
    n = max(int(np.ceil(num_frames / fps * grid_rate)), 1)
    t = (np.arange(n) + 0.5) / grid_rate
    target = np.tile(REST, (n, 1))
    weight = np.full(n, 0.3)
    for mnemonic, start, end in phonemes:
        parts = viseme_of(mnemonic)
        edges = np.linspace(start, end, len(parts) + 1)
        for row, a, b in zip(parts, edges[:-1], edges[1:]):
            sel = (t >= a) & (t < b)
            target[sel] = row[:5]
            weight[sel] = row[5]
    # dominance-weighted Gaussian blending (normalised convolution)
    half = int(np.ceil(3 * sigma * grid_rate))
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / (sigma * grid_rate)) ** 2)
    num = np.stack([np.convolve(np.pad(weight * target[:, j], half, mode="edge"), k, "valid") for j in range(5)], 1)
    den = np.convolve(np.pad(weight, half, mode="edge"), k, "valid")[:, None]
    smooth = num / den
    if gains is not None:
        smooth = smooth * np.asarray(gains, dtype=np.float64)[None, :]
    # average the fine grid over each frame's exposure
    frame_of = np.minimum((t * fps).astype(np.int64), num_frames - 1)
    counts = np.bincount(frame_of, minlength=num_frames).astype(np.float64)
    out = np.stack([np.bincount(frame_of, smooth[:, j], minlength=num_frames) for j in range(5)], 1)
    out = out / np.maximum(counts, 1)[:, None]
    out[counts == 0] = REST
    lo = np.array([0.0, -1.0, 0.0, 0.0, 0.0])
    hi = np.array([1.0, 1.0, 1.0, 1.0, 1.0])
    return np.clip(out, lo, hi).astype(np.float32)
