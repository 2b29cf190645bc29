"""Noise sources and SNR-exact mixing.

Sources (all synthesised, so nothing needs downloading):

``white``, ``pink``, ``brown``
    Gaussian noise with a flat, 1/f or 1/f^2 power spectrum.
``speech_shaped``
    Gaussian noise with the long-term average spectrum of speech.
``babble``
    Several eSpeak NG talkers at once, in voices that SynthGRID never uses as
    targets (other languages), reading random word strings.
``music``
    Synthetic music: chords, a bass line and a melody from additive-synthesis
    instruments, plus hi-hat noise bursts.

Train and test sources are disjoint: the random streams are seeded from
different namespaces, babble uses disjoint sets of voices and words
(:data:`BABBLE_VOICES`, :data:`BABBLE_WORDS`), and music uses disjoint
instruments and scales (:data:`MUSIC_INSTRUMENTS`, :data:`MUSIC_SCALES`).
:func:`noise_sources` lists the identifiers of each split's sources.

:func:`mix` scales the noise so that the SNR measured over the
speech-active samples (:func:`speech_activity`) is exactly the one asked for.
"""

from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np

from avsr.errors import InputError

__all__ = [
    "NOISE_TYPES", "NOISE_SPLITS", "BABBLE_VOICES", "BABBLE_WORDS", "MUSIC_INSTRUMENTS", "MUSIC_SCALES",
    "make_noise", "noise_sources", "speech_activity", "measure_snr", "mix", "NoiseBank",
]

#: Names of the noise types :func:`make_noise` knows.
NOISE_TYPES: tuple[str, ...] = ("white", "pink", "brown", "speech_shaped", "babble", "music")
#: Noise splits: "train" for training, validation and model selection (other seeds),
#: "test" for evaluation only.
NOISE_SPLITS: tuple[str, ...] = ("train", "test")

#: eSpeak voices for babble, per split (none of them is a SynthGRID target voice).
BABBLE_VOICES: dict[str, tuple[str, ...]] = {
    "train": ("de", "fr", "es", "it", "nl", "sv", "da"),
    "test": ("pl", "pt", "cs", "fi", "hu", "ro", "hr"),
}
#: Harmonic amplitude profiles (relative amplitudes of partials 1..6), per split.
MUSIC_INSTRUMENTS: dict[str, tuple[tuple[float, ...], ...]] = {
    "train": ((1.0, 0.5, 0.33, 0.25, 0.2, 0.16), (1.0, 0.0, 0.33, 0.0, 0.2, 0.0), (1.0, 0.8, 0.2, 0.1, 0.05, 0.0)),
    "test": ((1.0, 0.2, 0.6, 0.1, 0.4, 0.05), (1.0, 0.9, 0.8, 0.7, 0.6, 0.5), (1.0, 0.05, 0.02, 0.3, 0.0, 0.1)),
}
#: Scales (semitones above the key) per split.
MUSIC_SCALES: dict[str, tuple[tuple[int, ...], ...]] = {
    "train": ((0, 2, 4, 5, 7, 9, 11), (0, 2, 4, 7, 9)),
    "test": ((0, 2, 3, 5, 7, 8, 10), (0, 3, 5, 7, 10)),
}
# words the babble talkers read (their voices pronounce them in their own language)
_WORD_POOL = (
    "alpha tempo mano casa porta linea sole luna vento mare terra fuoco notte giorno strada parola "
    "musica tavola bello grande piccolo presto lento sempre mai forse oggi domani sera mattina "
    "banana radio piano kilo metro zona nota data idea camera foto moto auto bravo ciao dolce"
).split()
#: Words the babble talkers read, per split (disjoint halves of one pool).
BABBLE_WORDS: dict[str, tuple[str, ...]] = {"train": tuple(_WORD_POOL[0::2]), "test": tuple(_WORD_POOL[1::2])}


def _rng(kind: str, split: str, seed: int) -> np.random.Generator:
    """A generator private to (kind, split, seed): train and test draws never coincide."""
    digest = hashlib.blake2b(f"noise\x1f{kind}\x1f{split}\x1f{seed}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def _check(kind: str, split: str, num_samples: int) -> None:
    if kind not in NOISE_TYPES:
        raise InputError(None, f"unknown noise type {kind!r} (choose from {', '.join(NOISE_TYPES)})")
    if split not in NOISE_SPLITS:
        raise InputError(None, f"unknown noise split {split!r} (choose from {', '.join(NOISE_SPLITS)})")
    if num_samples < 1:
        raise InputError(None, f"noise length must be positive, got {num_samples}")


def _normalise(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    rms = float(np.sqrt(np.mean(x**2)))
    return (x / rms * 0.1 if rms > 0 else x).astype(np.float32)


def _shaped(
    rng: np.random.Generator, n: int, sample_rate: int, gain_of_freq: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Gaussian noise with amplitude spectrum ``gain_of_freq(f)`` (FFT shaping)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    return np.fft.irfft(spec * gain_of_freq(f), n)


def _speech_spectrum(f: np.ndarray) -> np.ndarray:
    """Approximate long-term average speech spectrum (amplitude): a band-pass
    with its peak around 400-500 Hz and about -9 dB/octave above 1 kHz."""
    f = np.maximum(f, 1.0)
    low = (f / 120.0) ** 2 / (1.0 + (f / 120.0) ** 2)  # high-pass near 120 Hz
    high = 1.0 / (1.0 + (f / 500.0) ** 1.5)
    return low * high


def _babble(rng: np.random.Generator, n: int, sample_rate: int, split: str) -> np.ndarray:
    from avsr.data.synth.espeak import get_engine, resample

    engine = get_engine()
    voices = BABBLE_VOICES[split]
    talkers = int(rng.integers(4, 8))
    out = np.zeros(n)
    for _ in range(talkers):
        voice = voices[int(rng.integers(len(voices)))]
        track = np.zeros(0)
        while len(track) < n:
            text = " ".join(rng.choice(BABBLE_WORDS[split], int(rng.integers(8, 16))))
            wav, _ = engine.synth_isolated(
                text, voice=voice, rate=int(rng.integers(140, 210)), pitch=int(rng.integers(20, 80)),
                seed=int(rng.integers(2**31)),
            )
            speech = resample(wav, engine.sample_rate, sample_rate)
            pause = np.zeros(int(rng.uniform(0.0, 0.3) * sample_rate))
            track = np.concatenate([track, speech, pause])
        start = int(rng.integers(0, max(1, len(track) - n)))
        seg = track[start:start + n]
        rms = np.sqrt(np.mean(seg**2))
        out += seg / rms if rms > 0 else seg
    return out


def _add_note(out: np.ndarray, sample_rate: int, midi: float, start: float, dur: float,
              partials: tuple[float, ...], amp: float) -> None:
    """Add one plucked note (additive synthesis, exponential decay) to ``out`` in place."""
    a, b = int(start * sample_rate), min(len(out), int((start + dur) * sample_rate))
    if b <= a:
        return
    t = np.arange(b - a) / sample_rate
    f0 = 440.0 * 2 ** ((midi - 69) / 12.0)
    env = np.minimum(1.0, t / 0.01) * np.exp(-t / (0.35 * dur + 0.05))
    wave = np.zeros_like(t)
    for k, h in enumerate(partials, start=1):
        if h > 0 and f0 * k < sample_rate / 2:
            wave += h * np.sin(2 * np.pi * f0 * k * t)
    out[a:b] += amp * env * wave


def _scale_note(key: int, scale: np.ndarray, index: int) -> int:
    """MIDI note of scale degree ``index`` (wrapping into higher octaves)."""
    return key + int(scale[index % len(scale)]) + 12 * (index // len(scale))


def _music(rng: np.random.Generator, n: int, sample_rate: int, split: str) -> np.ndarray:
    """Bars of a triad, a bass note and four melody notes with hi-hats, from the split's
    instruments and scales."""
    instruments = MUSIC_INSTRUMENTS[split]
    scale = np.array(MUSIC_SCALES[split][int(rng.integers(len(MUSIC_SCALES[split])))])
    key = int(rng.integers(45, 57))  # MIDI note of the key (A2..G#3)
    beat = 60.0 / rng.uniform(80, 140)
    chord_inst, lead_inst = (instruments[int(i)] for i in rng.integers(len(instruments), size=2))
    out = np.zeros(n)
    hat = int(0.05 * sample_rate)
    t = 0.0
    while t < n / sample_rate:
        degree = int(rng.integers(len(scale)))
        for step in (0, 2, 4):  # a triad on the scale
            _add_note(out, sample_rate, _scale_note(key + 12, scale, degree + step), t, 4 * beat, chord_inst, 0.25)
        _add_note(out, sample_rate, _scale_note(key - 12, scale, degree), t, 2 * beat, instruments[0], 0.5)
        for k in range(4):  # melody note and hi-hat on each beat
            note = _scale_note(key + 24, scale, int(rng.integers(len(scale) * 2)))
            _add_note(out, sample_rate, note, t + k * beat, 0.9 * beat, lead_inst, 0.3)
            a = int((t + k * beat) * sample_rate)
            m = min(n - a, hat)
            if m > 0:
                out[a:a + m] += 0.15 * rng.standard_normal(m) * np.exp(-np.arange(m) / (0.01 * sample_rate))
        t += 4 * beat
    return out


def make_noise(
    kind: str, num_samples: int, split: str = "train", seed: int = 0, sample_rate: int = 16000
) -> np.ndarray:
    """Synthesise one noise signal.

    Args:
        kind: one of :data:`NOISE_TYPES`.
        num_samples: length ``N``.
        split: ``"train"`` or ``"test"`` sources (disjoint).
        seed: which draw; the same ``(kind, split, seed)`` gives the same noise.
        sample_rate: Hz.

    Returns:
        ``float32 (N,)`` zero-mean noise with RMS 0.1.

    Raises:
        InputError: unknown kind or split, or a non-positive length.

    Example:
        >>> x = make_noise("pink", 16000, "train", seed=1)
        >>> x.shape, round(float(np.sqrt(np.mean(x ** 2))), 3)
        ((16000,), 0.1)
    """
    _check(kind, split, int(num_samples))
    n = int(num_samples)
    rng = _rng(kind, split, seed)
    if kind == "white":
        x = rng.standard_normal(n)
    elif kind == "pink":
        x = _shaped(rng, n, sample_rate, lambda f: 1.0 / np.sqrt(np.maximum(f, 20.0)))
    elif kind == "brown":
        x = _shaped(rng, n, sample_rate, lambda f: 1.0 / np.maximum(f, 20.0))
    elif kind == "speech_shaped":
        x = _shaped(rng, n, sample_rate, _speech_spectrum)
    elif kind == "babble":
        x = _babble(rng, n, sample_rate, split)
    else:
        x = _music(rng, n, sample_rate, split)
    return _normalise(x)


def noise_sources(split: str) -> set[str]:
    """Identifiers of every source a split's noise is made from.

    Train and test share none of them: different random-stream namespaces,
    babble voices and words, music instruments and scales.
    """
    if split not in NOISE_SPLITS:
        raise InputError(None, f"unknown noise split {split!r} (choose from {', '.join(NOISE_SPLITS)})")
    ids = {f"{kind}:stream:{split}" for kind in NOISE_TYPES}
    ids |= {f"babble:voice:{v}" for v in BABBLE_VOICES[split]}
    ids |= {f"babble:word:{w}" for w in BABBLE_WORDS[split]}
    ids |= {f"music:instrument:{','.join(map(str, p))}" for p in MUSIC_INSTRUMENTS[split]}
    ids |= {f"music:scale:{','.join(map(str, s))}" for s in MUSIC_SCALES[split]}
    return ids


# --------------------------------------------------------------------------- mixing


def speech_activity(
    speech: np.ndarray, sample_rate: int = 16000, frame: float = 0.02, threshold_db: float = -40.0
) -> np.ndarray:
    """Which samples belong to active speech (frame energy within ``threshold_db`` of the loudest frame).

    Args:
        speech: ``(N,)`` waveform.
        sample_rate: Hz.
        frame: analysis frame length in seconds (non-overlapping).
        threshold_db: activity threshold relative to the loudest frame.

    Returns:
        ``bool (N,)`` mask (all ``True`` if nothing passes, e.g. a constant signal).
    """
    x = np.asarray(speech, dtype=np.float64)
    n = len(x)
    hop = max(1, int(frame * sample_rate))
    n_frames = -(-n // hop)
    padded = np.zeros(n_frames * hop)
    padded[:n] = x
    energy = (padded.reshape(n_frames, hop) ** 2).mean(axis=1)
    top = energy.max() if n_frames else 0.0
    if top <= 0:
        return np.ones(n, bool)
    active = energy >= top * 10 ** (threshold_db / 10.0)
    return np.repeat(active, hop)[:n]


def measure_snr(
    speech: np.ndarray, noise: np.ndarray, active: np.ndarray | None = None, sample_rate: int = 16000
) -> float:
    """SNR in dB over the speech-active samples.

    Args:
        speech: ``(N,)`` clean speech.
        noise: ``(>= N,)`` the noise that was added (first ``N`` samples used).
        active: ``bool (N,)`` samples to measure on (default :func:`speech_activity` of ``speech``).
        sample_rate: Hz.

    Returns:
        ``10 log10(P_speech / P_noise)`` over the active samples.
    """
    s = np.asarray(speech, np.float64)
    v = np.asarray(noise, np.float64)[: len(s)]
    mask = speech_activity(s, sample_rate) if active is None else active
    return float(10 * np.log10(np.mean(s[mask] ** 2) / np.mean(v[mask] ** 2)))


def _signal(x: np.ndarray, what: str) -> np.ndarray:
    """``x`` as a finite 1-D float64 array, or a clear error."""
    try:
        a = np.asarray(x, np.float64)
    except (TypeError, ValueError):
        raise InputError(None, f"{what} must be a numeric 1-D array") from None
    if a.ndim != 1 or len(a) == 0:
        raise InputError(None, f"{what} must be a non-empty 1-D array (mono), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(None, f"{what} contains NaN or infinite values")
    return a


def _fit_length(noise: np.ndarray, n: int, rng: np.random.Generator | None) -> np.ndarray:
    """Loop or cut ``noise`` to ``n`` samples (random start when ``rng`` is given)."""
    noise = np.asarray(noise, np.float64)
    if noise.ndim != 1 or len(noise) == 0:
        raise InputError(None, f"noise must be a non-empty 1-D array (mono), got shape {noise.shape}")
    reps = -(-n // len(noise)) + (1 if rng is not None else 0)
    tiled = np.tile(noise, reps)
    start = int(rng.integers(0, len(tiled) - n + 1)) if rng is not None else 0
    return tiled[start:start + n]


def mix(
    speech: np.ndarray,
    noise: np.ndarray,
    snr_db: float,
    sample_rate: int = 16000,
    rng: np.random.Generator | None = None,
    return_noise: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Add noise to speech at an exact SNR measured over the speech-active samples.

    The noise is looped or cut to the speech length (from a random offset
    when ``rng`` is given), then scaled so that
    ``10 log10(P_speech / P_noise) = snr_db`` with both powers measured on the
    samples :func:`speech_activity` marks. The mixture is not clipped: at low
    SNR it may exceed ``[-1, 1]``; scale it (speech and noise together, which
    keeps the SNR) before writing it to a fixed-point file.

    Args:
        speech: ``(N,)`` float waveform.
        noise: ``(M,)`` float waveform (any length).
        snr_db: target SNR in dB (``inf`` returns the speech unchanged).
        sample_rate: Hz (for the activity detector).
        rng: random start in the noise; ``None`` starts at 0.
        return_noise: also return the scaled noise that was added.

    Returns:
        ``float32 (N,)`` mixture, or ``(mixture, scaled_noise)``.

    Raises:
        InputError: silent speech, silent noise, a NaN or ``-inf`` SNR, or
            speech / noise that is not a finite, non-empty 1-D array.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> s = np.sin(np.arange(16000) / 10.0) * 0.3
        >>> y, v = mix(s, make_noise("white", 8000), 5.0, return_noise=True)
        >>> round(measure_snr(s, v), 6)
        5.0
    """
    s = _signal(speech, "speech")
    try:
        snr_db = float(snr_db)
    except (TypeError, ValueError):
        raise InputError(None, f"the SNR must be a number of dB, got {snr_db!r}") from None
    if np.isnan(snr_db) or snr_db == -np.inf:
        raise InputError(None, f"the SNR must be a number of dB or +inf, got {snr_db}")
    if snr_db == np.inf:
        out = s.astype(np.float32)
        return (out, np.zeros_like(out)) if return_noise else out
    v = _fit_length(_signal(noise, "noise"), len(s), rng)
    active = speech_activity(s, sample_rate)
    p_s = float(np.mean(s[active] ** 2))
    p_v = float(np.mean(v[active] ** 2))
    if p_s <= 0:
        raise InputError(None, "speech is silent: the SNR is undefined")
    if p_v <= 0:
        raise InputError(None, "noise is silent over the speech: the SNR is undefined")
    v = v * np.sqrt(p_s / (p_v * 10 ** (snr_db / 10.0)))
    y = s + v
    return (y.astype(np.float32), v.astype(np.float32)) if return_noise else y.astype(np.float32)


class NoiseBank:
    """A pool of pre-made noise for one split, to draw excerpts from quickly.

    Args:
        split: ``"train"`` or ``"test"``.
        kinds: noise types in the pool (default: all).
        seconds: length of each pooled signal.
        variants: signals per type.
        seed: first draw.
        sample_rate: Hz.

    Example:
        >>> bank = NoiseBank("train", kinds=("white", "pink"), seconds=2.0, variants=1)
        >>> bank.sample(8000, np.random.default_rng(0)).shape
        (8000,)
    """

    def __init__(
        self, split: str = "train", kinds: tuple[str, ...] | list[str] | None = None, seconds: float = 30.0,
        variants: int = 2, seed: int = 0, sample_rate: int = 16000,
    ) -> None:
        self.split = split
        self.kinds = tuple(kinds) if kinds is not None else NOISE_TYPES
        self.sample_rate = sample_rate
        n = int(seconds * sample_rate)
        self.signals: dict[str, list[np.ndarray]] = {
            k: [make_noise(k, n, split, seed + i, sample_rate) for i in range(variants)] for k in self.kinds
        }

    def sample(self, num_samples: int, rng: np.random.Generator, kind: str | None = None) -> np.ndarray:
        """A random excerpt of ``num_samples`` (looped if needed) of ``kind`` (random when ``None``)."""
        if kind is None:
            kind = self.kinds[int(rng.integers(len(self.kinds)))]
        if kind not in self.signals:
            raise InputError(None, f"noise type {kind!r} is not in this bank ({', '.join(self.kinds)})")
        pool = self.signals[kind]
        return _fit_length(pool[int(rng.integers(len(pool)))], int(num_samples), rng).astype(np.float32)
