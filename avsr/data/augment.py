"""On-the-fly noise for training and evaluation.

A *noise source* gives excerpts of noise of one or more kinds:

* :class:`avsr.audio.noise.NoiseBank`: the synthesised noise library
  (``train`` or ``test`` sources, disjoint);
* :class:`NoiseFolder`: audio files on disk, one kind per first-level
  subfolder (MUSAN's ``music/``, ``noise/``, ``speech/``) or a CSV list with
  ``audio`` (or ``path``) and ``kind`` columns.

:func:`noise_source` builds either from a short spec. :class:`NoiseMixer`
draws, per utterance, a kind and an SNR from the configured list and mixes
with :func:`avsr.audio.noise.mix` (SNR exact over the speech-active
samples). Its random generator is part of the training checkpoint
(SpeechBrain checkpoint hooks), so a resumed run draws the same noise.

Example:
    >>> from avsr.audio.noise import NoiseBank
    >>> mixer = NoiseMixer(NoiseBank("train", kinds=("white",), seconds=1.0, variants=1), ["clean", 0], seed=0)
    >>> x = np.sin(np.arange(8000) / 5.0).astype(np.float32)
    >>> y, kind, snr = mixer(x)
    >>> y.shape, kind in ("white", None)
    ((8000,), True)
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import os
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from speechbrain.utils.distributed import get_rank
from torch import Tensor

from avsr.audio.noise import NOISE_TYPES, NoiseBank, _fit_length, mix
from avsr.errors import InputError

__all__ = ["NoiseSource", "NoiseFolder", "noise_source", "parse_snrs", "NoiseMixer", "AUDIO_EXTENSIONS", "rank_file"]

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus", ".aac")


class NoiseSource(Protocol):
    """Anything with ``kinds`` and ``sample(num_samples, rng, kind=None)``."""

    kinds: tuple[str, ...]

    def sample(self, num_samples: int, rng: np.random.Generator, kind: str | None = None) -> np.ndarray: ...


class NoiseFolder:
    """Noise files on disk (e.g. MUSAN), read lazily, one random excerpt per draw.

    Args:
        root: a folder (kinds are its first-level subfolders; files directly
            in it are of kind ``"noise"``) or a CSV file with an ``audio`` or
            ``path`` column and an optional ``kind`` column.
        kinds: keep only these kinds (default all found).
        sample_rate: Hz of the returned excerpts.

    Raises:
        InputError: no such folder, no audio files, or an unknown kind.
    """

    def __init__(self, root: str | os.PathLike, kinds: Sequence[str] | None = None, sample_rate: int = 16000) -> None:
        self.root = Path(root)
        self.sample_rate = sample_rate
        files: dict[str, list[str]] = {}
        if self.root.is_file() and self.root.suffix.lower() == ".csv":
            with open(self.root, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                col = "audio" if "audio" in (reader.fieldnames or []) else "path"
                if col not in (reader.fieldnames or []):
                    raise InputError(self.root, "noise list needs an 'audio' or 'path' column")
                for row in reader:
                    p = Path(row[col])
                    p = p if p.is_absolute() else self.root.parent / p
                    files.setdefault(row.get("kind") or "noise", []).append(os.fspath(p))
        elif self.root.is_dir():
            for p in sorted(self.root.rglob("*")):
                if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file():
                    rel = p.relative_to(self.root).parts
                    files.setdefault(rel[0] if len(rel) > 1 else "noise", []).append(os.fspath(p))
        else:
            raise InputError(self.root, "no such noise folder or list")
        if not files:
            raise InputError(self.root, f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found")
        if kinds is not None:
            unknown = [k for k in kinds if k not in files]
            if unknown:
                raise InputError(self.root, f"no noise of kind {', '.join(unknown)} (found: {', '.join(sorted(files))})")
            files = {k: files[k] for k in kinds}
        self.files = files
        self.kinds = tuple(sorted(files))
        self._durations: dict[str, float] = {}

    def _duration(self, path: str) -> float:
        if path not in self._durations:
            from avsr.io import probe

            self._durations[path] = float(probe(path).get("duration") or 0.0)
        return self._durations[path]

    def sample(self, num_samples: int, rng: np.random.Generator, kind: str | None = None) -> np.ndarray:
        """A random excerpt of ``num_samples`` samples (looped when the file is shorter)."""
        from avsr.io import read_audio

        if kind is None:
            kind = self.kinds[int(rng.integers(len(self.kinds)))]
        if kind not in self.files:
            raise InputError(self.root, f"no noise of kind {kind!r} (found: {', '.join(self.kinds)})")
        pool = self.files[kind]
        path = pool[int(rng.integers(len(pool)))]
        want = num_samples / self.sample_rate
        total = self._duration(path)
        start = float(rng.uniform(0.0, total - want)) if total > want + 0.01 else None
        x = read_audio(path, start=start, end=None if start is None else start + want, sample_rate=self.sample_rate)
        if len(x) == 0:
            raise InputError(path, "noise file has no samples")
        return _fit_length(x, num_samples, None).astype(np.float32)  # looped when the file is shorter


def noise_source(spec: str, split: str = "train", *, seed: int = 0, seconds: float = 30.0, variants: int = 2) -> NoiseSource:
    """Build a noise source from a spec.

    Args:
        spec: ``"synth"`` (every synthesised type), ``"synth:babble,music"``
            (some types) or a path (:class:`NoiseFolder`: a folder or a CSV list).
        split: ``"train"`` or ``"test"`` sources of the synthesised library.
        seed: first draw of the synthesised library.
        seconds: length of each synthesised signal.
        variants: synthesised signals per type.

    Returns:
        the source.

    Raises:
        InputError: an unknown noise type or a missing path.
    """
    if spec == "synth" or spec.startswith("synth:"):
        kinds = tuple(k for k in spec.partition(":")[2].split(",") if k) or NOISE_TYPES
        unknown = [k for k in kinds if k not in NOISE_TYPES]
        if unknown:
            raise InputError(None, f"unknown noise type {', '.join(unknown)} (choose from {', '.join(NOISE_TYPES)})")
        return NoiseBank(split, kinds=kinds, seconds=seconds, variants=variants, seed=seed)
    return NoiseFolder(spec)


def parse_snrs(values: Sequence[str | float | int] | str) -> list[float]:
    """Parse SNRs: ``clean`` (or ``inf``) or a number of dB each.

    Args:
        values: a list, or a comma-separated string.

    Returns:
        floats, ``math.inf`` for clean.

    Raises:
        InputError: a value that is neither ``clean`` nor a number.

    Example:
        >>> parse_snrs("clean,10,-5")
        [inf, 10.0, -5.0]
    """
    items = values.split(",") if isinstance(values, str) else list(values)
    out = []
    for v in items:
        s = str(v).strip().lower()
        if s in ("clean", "inf", "+inf"):
            out.append(math.inf)
            continue
        try:
            x = float(s)
        except ValueError:
            raise InputError(None, f"SNR {v!r} is not a number of dB or 'clean'") from None
        if math.isnan(x) or x == -math.inf:
            raise InputError(None, f"SNR {v!r} is not a number of dB or 'clean'")
        out.append(x)
    if not out:
        raise InputError(None, "no SNR given")
    return out


def rank_file(path: str | os.PathLike) -> Path:
    """This process's file of a per-rank checkpoint entry: ``path`` on rank 0, ``path.rank<N>`` on rank N."""
    rank = get_rank() or 0
    p = Path(path)
    return p if rank == 0 else p.with_name(f"{p.name}.rank{rank}")


@functools.partial(register_checkpoint_hooks, save_on_main_only=False)
class NoiseMixer:
    """Mix noise into utterances at SNRs drawn from a list.

    Args:
        source: a :class:`NoiseSource`.
        snrs: SNRs to draw from uniformly (``"clean"``/``inf`` or dB).
        seed: seed of the mixer's own random generator.
        kinds: kinds to draw from uniformly (default all of the source's).
        sample_rate: Hz.
    """

    def __init__(
        self,
        source: NoiseSource,
        snrs: Sequence[str | float | int] | str,
        seed: int = 0,
        kinds: Sequence[str] | None = None,
        sample_rate: int = 16000,
    ) -> None:
        self.source = source
        self.snrs = parse_snrs(snrs)
        self.kinds = tuple(kinds) if kinds else tuple(source.kinds)
        unknown = [k for k in self.kinds if k not in source.kinds]
        if unknown:
            raise InputError(None, f"noise kind {', '.join(unknown)} is not in the source ({', '.join(source.kinds)})")
        self.sample_rate = sample_rate
        self.rng = np.random.default_rng(seed)

    def __call__(
        self, speech: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, str | None, float]:
        """Mix one utterance.

        Args:
            speech: ``(N,)`` float waveform.
            rng: generator to draw from (default the mixer's own).

        Returns:
            ``(mixture float32 (N,), kind or None for clean, snr)``.
        """
        rng = self.rng if rng is None else rng
        snr = self.snrs[int(rng.integers(len(self.snrs)))]
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        if math.isinf(snr) or len(speech) == 0 or not np.any(speech):
            return np.asarray(speech, np.float32), None, math.inf
        noise = self.source.sample(len(speech), rng, kind)
        return mix(speech, noise, snr, self.sample_rate, rng=rng), kind, snr

    def mix_batch(self, audio: Tensor, lengths: Tensor) -> Tensor:
        """Mix every utterance of a padded batch (padding stays zero).

        Args:
            audio: (B, N) float waveforms.
            lengths: (B,) valid samples.

        Returns:
            (B, N) noisy waveforms on ``audio``'s device.
        """
        out = audio.detach().cpu().clone()
        for i, n in enumerate(lengths.tolist()):
            y, _, _ = self(out[i, : int(n)].numpy())
            out[i, : int(n)] = torch.from_numpy(y)
        return out.to(audio.device)

    # Saved by every DDP rank (each rank draws its own noise): rank N writes ``path.rank<N>``.
    @mark_as_saver
    def _save(self, path: str | os.PathLike) -> None:
        with open(rank_file(path), "w", encoding="utf-8") as f:
            json.dump(self.rng.bit_generator.state, f)

    @mark_as_loader
    def _load(self, path: str | os.PathLike, end_of_epoch: bool = False) -> None:
        del end_of_epoch
        mine = rank_file(path)
        if not mine.is_file():  # resumed with more ranks than were saved: keep this rank's own seed
            logger.warning("no noise-mixer state for this rank in %s; keeping its fresh generator", Path(path).parent)
            return
        with open(mine, encoding="utf-8") as f:
            self.rng.bit_generator.state = json.load(f)
