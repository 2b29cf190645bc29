"""Synthetic speakers: eSpeak voice x variant x rate x pitch, split disjointly.

A speaker's voice is an eSpeak NG voice (accent), a voice variant (timbre),
a speaking rate and a base pitch; the look of its mouth (size, colours, lip
shape) is drawn from a generator seeded by the speaker id, so a speaker looks
the same in every utterance and every run.

Splits are disjoint at the level of (voice, variant) *groups*: a test speaker
shares neither timbre+accent nor appearance with any training speaker. The
assignment is fixed (independent of the generation seed), so train, valid
and test made in separate runs never overlap.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from avsr.errors import InputError

__all__ = [
    "VOICES", "VARIANTS", "RATES", "PITCHES", "SPLITS", "Speaker", "all_speakers", "speakers_for_split",
    "validate_voices", "stable_seed", "split_of",
]

#: English eSpeak NG voices (accents) used as targets.
VOICES: tuple[str, ...] = (
    "en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029", "en-us-nyc",
)
#: eSpeak voice variants (``voice+variant``) used as targets.
VARIANTS: tuple[str, ...] = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
#: Speaking rates, words per minute.
RATES: tuple[int, ...] = (145, 170, 195)
#: Base pitches (eSpeak 0..99).
PITCHES: tuple[int, ...] = (35, 50, 65)
#: Split names and the share of (voice, variant) groups each gets.
SPLITS: dict[str, float] = {"train": 0.8, "valid": 0.1, "test": 0.1}

_SPLIT_SEED = 20240611  # fixed: the split assignment never depends on the generation seed


def stable_seed(*parts: object) -> int:
    """A 63-bit integer from ``parts`` that is the same in every process and run.

    (Python's ``hash`` of strings is salted per process, so it cannot be used.)
    """
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker.

    Attributes:
        voice: eSpeak voice name (e.g. ``"en-us"``).
        variant: eSpeak variant (e.g. ``"f3"``).
        rate: words per minute.
        pitch: base pitch 0..99.
    """

    voice: str
    variant: str
    rate: int
    pitch: int

    @property
    def id(self) -> str:
        """Speaker id, e.g. ``"en-us+f3-r170-p50"`` (safe in file names)."""
        return f"{self.voice}+{self.variant}-r{self.rate}-p{self.pitch}"

    @property
    def espeak_voice(self) -> str:
        """The name to pass to eSpeak (``voice+variant``)."""
        return f"{self.voice}+{self.variant}"

    @property
    def group(self) -> tuple[str, str]:
        """The (voice, variant) group that decides the split."""
        return (self.voice, self.variant)


def _group_splits() -> dict[tuple[str, str], str]:
    groups = [(v, var) for v in VOICES for var in VARIANTS]
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(groups))
    n_valid = round(SPLITS["valid"] * len(groups))
    n_test = round(SPLITS["test"] * len(groups))
    out = {}
    for rank, i in enumerate(order):
        out[groups[i]] = "test" if rank < n_test else "valid" if rank < n_test + n_valid else "train"
    return out


_GROUP_SPLIT = _group_splits()


def all_speakers() -> list[Speaker]:
    """Every speaker of the grid (8 voices x 12 variants x 3 rates x 3 pitches = 864)."""
    return [Speaker(v, var, r, p) for v in VOICES for var in VARIANTS for r in RATES for p in PITCHES]


def split_of(speaker: Speaker) -> str:
    """The split (``"train"``, ``"valid"``, ``"test"``) a speaker belongs to."""
    return _GROUP_SPLIT[speaker.group]


def speakers_for_split(split: str, voices: tuple[str, ...] | list[str] | None = None) -> list[Speaker]:
    """The speakers of one split, optionally restricted to some voices.

    Args:
        split: ``"train"``, ``"valid"`` or ``"test"``.
        voices: keep only these eSpeak voices (``None``: all of :data:`VOICES`).

    Returns:
        The speakers, in a fixed order.

    Raises:
        InputError: unknown split or voice, or no speaker left.
    """
    if split not in SPLITS:
        raise InputError(None, f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    keep = set(validate_voices(voices)) if voices is not None else set(VOICES)
    out = [s for s in all_speakers() if split_of(s) == split and s.voice in keep]
    if not out:
        raise InputError(None, f"no {split} speakers for voices {sorted(keep)}")
    return out


def validate_voices(voices: tuple[str, ...] | list[str]) -> list[str]:
    """Check voice names; :data:`VOICES` are the English accents SynthGRID knows.

    Raises:
        InputError: a name that is not one of :data:`VOICES` (``"en-gb"`` is
            not an eSpeak voice name: use ``"en"`` or ``"en-gb-x-rp"``).
    """
    out = []
    for v in voices:
        v = v.strip()
        if v not in VOICES:
            hint = " ('en-gb' is not an eSpeak voice name: use 'en' or 'en-gb-x-rp')" if v == "en-gb" else ""
            raise InputError(None, f"unknown voice {v!r}{hint} (choose from {', '.join(VOICES)})")
        out.append(v)
    if not out:
        raise InputError(None, "empty voice list")
    return out

