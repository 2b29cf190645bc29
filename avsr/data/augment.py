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
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np
import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from speechbrain.utils.distributed import get_rank
from torch import Tensor

from avsr.audio.noise import NOISE_TYPES, NoiseBank, _fit_length, mix
from avsr.errors import InputError

if TYPE_CHECKING:
    from avsr.data.dataset import Batch
    from avsr.data.manifest import Utterance

__all__ = ["NoiseSource", "NoiseFolder", "noise_source", "parse_snrs", "RankSeeded", "NoiseMixer", "UtteranceJoiner",
           "InterferenceMixer", "TALKER", "AUDIO_EXTENSIONS", "rank_file"]

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
class RankSeeded:
    """Base of the training-time augmenters: a numpy generator checkpointed per DDP rank.

    Args:
        seed: seed of the generator (``self.rng``).
    """

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    # Saved by every DDP rank (each rank draws its own): rank N writes ``path.rank<N>``.
    @mark_as_saver
    def _save(self, path: str | os.PathLike) -> None:
        with open(rank_file(path), "w", encoding="utf-8") as f:
            json.dump(self.rng.bit_generator.state, f)

    @mark_as_loader
    def _load(self, path: str | os.PathLike, end_of_epoch: bool = False) -> None:
        del end_of_epoch
        mine = rank_file(path)
        if not mine.is_file():  # resumed with more ranks than were saved: keep this rank's own seed
            logger.warning("no %s state for this rank in %s; keeping its fresh generator",
                           type(self).__name__, Path(path).parent)
            return
        with open(mine, encoding="utf-8") as f:
            self.rng.bit_generator.state = json.load(f)


class NoiseMixer(RankSeeded):
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
        super().__init__(seed)

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



def _pause_range(pause: Sequence[float]) -> tuple[float, float]:
    """``(shortest, longest)`` seconds, checked."""
    lo, hi = (float(x) for x in pause)
    if not 0.0 <= lo <= hi:
        raise InputError(None, f"pause range must be 0 <= shortest <= longest, got {list(pause)}")
    return lo, hi


class UtteranceJoiner(RankSeeded):
    """Join the utterances of a training batch into longer ones, with pauses between them.

    A recogniser trained only on single short sentences learns where a
    sentence starts and ends from the edges of its input, and stops after
    one sentence when a segment holds two (as happens when a voice activity
    detector cannot find the pauses in babble). Joining teaches it that
    speech goes on. With probability ``prob`` a batch is regrouped: runs of
    2 to ``max_join`` consecutive utterances become one, separated by pauses
    of ``pause`` seconds (silence in the audio, the previous utterance's last
    mouth frame held in the video); joining keeps the batch's total duration.

    Edge pauses: real clips often show a still face before the first word
    and after the last, and a recogniser that has only seen speech from the
    first frame reads words off that face. With probability ``edge_prob``
    each (joined or single) utterance gets a pause of ``edge_pause`` seconds
    before it (its first mouth frame held), and independently one after it
    (its last frame held); these add to the batch's duration.

    Args:
        prob: probability that a batch is joined (0 disables).
        max_join: most utterances in one joined utterance (>= 2).
        pause: ``(shortest, longest)`` pause in seconds.
        seed: seed of the joiner's own generator (checkpointed).
        samples_per_frame: audio samples per video frame (16 kHz / 25 fps).
        edge_prob: probability of a pause before, and (drawn apart) after,
            each utterance (0 disables, and draws nothing).
        edge_pause: ``(shortest, longest)`` edge pause in seconds.

    Raises:
        InputError: a probability outside ``[0, 1]``, ``max_join < 2`` or a bad pause range.
    """

    def __init__(self, prob: float, max_join: int = 3, pause: Sequence[float] = (0.2, 1.0), seed: int = 0,
                 samples_per_frame: int = 640, edge_prob: float = 0.0,
                 edge_pause: Sequence[float] = (0.2, 1.0)) -> None:
        for name, value in (("join", prob), ("edge pause", edge_prob)):
            if not 0.0 <= float(value) <= 1.0:
                raise InputError(None, f"{name} probability must be in [0, 1], got {value}")
        if int(max_join) < 2:
            raise InputError(None, f"max_join must be at least 2, got {max_join}")
        super().__init__(seed)
        self.prob, self.max_join = float(prob), int(max_join)
        self.pause, self.edge_pause = _pause_range(pause), _pause_range(edge_pause)
        self.edge_prob = float(edge_prob)
        self.samples_per_frame = int(samples_per_frame)

    def groups(self, n: int) -> list[list[int]]:
        """Consecutive index groups covering ``range(n)`` (all singletons when not joining)."""
        if n < 2 or self.rng.random() >= self.prob:
            return [[i] for i in range(n)]
        out, i = [], 0
        while i < n:
            size = int(self.rng.integers(2, self.max_join + 1))
            out.append(list(range(i, min(n, i + size))))
            i += size
        return out

    def edges(self, n: int) -> list[tuple[int, int]]:
        """Per utterance, the (before, after) edge pauses in frames (no draws when ``edge_prob`` is 0)."""
        if self.edge_prob == 0.0:
            return [(0, 0)] * n

        def one() -> int:
            drawn = self.rng.random() < self.edge_prob
            length = int(round(self.rng.uniform(*self.edge_pause) * 25))
            return length if drawn else 0

        return [(one(), one()) for _ in range(n)]

    def __call__(self, batch: "Batch") -> "Batch":
        """The batch, joined and edge-padded (or unchanged when nothing is drawn)."""
        from avsr.data.dataset import Batch

        groups = self.groups(len(batch.ids))
        edges = self.edges(len(groups))
        if all(len(g) == 1 for g in groups) and not any(any(e) for e in edges):
            return batch
        spf = self.samples_per_frame
        audios, videos, targets = [], [], []
        for group, (lead, trail) in zip(groups, edges):
            a_parts, v_parts, t_parts = [], [], []
            for j, i in enumerate(group):
                pause = lead if j == 0 else int(round(self.rng.uniform(*self.pause) * 25))
                if batch.video is not None:
                    n_v = int(batch.video_lengths[i])
                    if pause:  # hold the previous member's last frame (the first frame before the first)
                        held = v_parts[-1][-1:] if v_parts else batch.video[i, :1]
                        v_parts.append(held.expand(pause, *held.shape[1:]))
                    v_parts.append(batch.video[i, :n_v])
                if batch.audio is not None:
                    n_a = int(batch.audio_lengths[i])
                    a = batch.audio[i, :n_a]
                    if batch.video is not None:  # keep the streams in step: exactly spf samples a frame
                        a = torch.nn.functional.pad(a, (0, max(0, n_v * spf - n_a)))[: n_v * spf]
                    if pause:
                        a_parts.append(a.new_zeros(pause * spf))
                    a_parts.append(a)
                t = batch.targets[i]
                t_parts.append(t[t >= 0])
            if trail and v_parts:
                v_parts.append(v_parts[-1][-1:].expand(trail, *v_parts[-1].shape[1:]))
            if trail and a_parts:
                a_parts.append(a_parts[-1].new_zeros(trail * spf))
            if a_parts:
                audios.append(torch.cat(a_parts))
            if v_parts:
                videos.append(torch.cat(v_parts))
            targets.append(torch.cat(t_parts))

        def pad(seqs: list[Tensor], value: float = 0) -> tuple[Tensor, Tensor]:
            lengths = torch.tensor([len(x) for x in seqs], device=seqs[0].device)
            return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=value), lengths

        audio, audio_lengths = pad(audios) if audios else (None, None)
        video, video_lengths = pad(videos) if videos else (None, None)
        padded_targets, _ = pad(targets, -1)
        return Batch(
            ids=["+".join(batch.ids[i] for i in g) for g in groups],
            texts=[" ".join(batch.texts[i] for i in g) for g in groups],
            audio=audio, audio_lengths=audio_lengths, video=video, video_lengths=video_lengths,
            targets=padded_targets,
        )


#: Kind name of a competing talker in :class:`InterferenceMixer` draws.
TALKER = "talker"


class InterferenceMixer(RankSeeded):
    """Noisy / clean pairs for enhancement: noise or a competing talker at a random SNR.

    Per utterance it draws clean (probability ``clean_prob``), a competing
    talker (``talker_prob``: another utterance of the pool, by a different
    speaker, looped or cut to length from a random offset) or noise (the
    rest: a kind of ``source``), and an SNR uniform in ``snr_range``, measured
    over the target's speech-active samples (:func:`avsr.audio.noise.mix`).
    The target itself is never scaled, so it is the clean reference as read.

    Args:
        source: noise source (``None``: no noise, only talkers and clean).
        talkers: utterances the competing talkers are drawn from (with
            ``audio`` files and a ``speaker`` column; ``[]``: no talkers).
        snr_range: ``(lowest, highest)`` SNR in dB.
        clean_prob: probability of leaving an utterance clean.
        talker_prob: probability of a competing talker.
        seed: seed of the mixer's generator (checkpointed per rank).
        kinds: noise kinds to draw from (default all of the source's).
        sample_rate: Hz.

    Raises:
        InputError: bad probabilities or SNR range, talkers of only one
            speaker, or talkers asked for without any.

    Example:
        >>> from avsr.audio.noise import NoiseBank
        >>> bank = NoiseBank("train", kinds=("white",), seconds=1.0, variants=1)
        >>> mixer = InterferenceMixer(bank, [], talker_prob=0.0, seed=0)
        >>> y, kind, snr = mixer(np.sin(np.arange(8000) / 5.0).astype(np.float32), "s1")
        >>> y.shape, kind in ("white", None), -10 <= snr <= 10 or snr == math.inf
        ((8000,), True, True)
    """

    def __init__(
        self,
        source: NoiseSource | None,
        talkers: Sequence["Utterance"],
        snr_range: Sequence[float] = (-10.0, 10.0),
        clean_prob: float = 0.1,
        talker_prob: float = 0.4,
        seed: int = 0,
        kinds: Sequence[str] | None = None,
        sample_rate: int = 16000,
    ) -> None:
        lo, hi = (float(x) for x in snr_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise InputError(None, f"SNR range must be two finite dB values, lowest first, got {list(snr_range)}")
        clean_prob, talker_prob = float(clean_prob), float(talker_prob)
        if not (0 <= clean_prob <= 1 and 0 <= talker_prob <= 1 and clean_prob + talker_prob <= 1):
            raise InputError(None, f"clean_prob {clean_prob} and talker_prob {talker_prob} must be in [0, 1] "
                                   "with a sum of at most 1")
        self.pool = [(u.audio, u.extra.get("speaker") or u.id) for u in talkers if u.audio]
        if talker_prob > 0 and len({spk for _, spk in self.pool}) < 2:
            raise InputError(None, "a competing talker needs utterances of at least two speakers")
        if source is None and clean_prob + talker_prob < 1:
            raise InputError(None, "noise is asked for (clean_prob + talker_prob < 1) but there is no noise source")
        self.source = source
        self.kinds = tuple(kinds) if kinds else (tuple(source.kinds) if source is not None else ())
        if source is not None:
            unknown = [k for k in self.kinds if k not in source.kinds]
            if unknown:
                raise InputError(None, f"noise kind {', '.join(unknown)} is not in the source ({', '.join(source.kinds)})")
        self.snr_range = (lo, hi)
        self.clean_prob, self.talker_prob = clean_prob, talker_prob
        self.sample_rate = sample_rate
        super().__init__(seed)

    def talker(self, num_samples: int, speaker: str, rng: np.random.Generator) -> np.ndarray:
        """A competing talker's speech (not ``speaker``), ``num_samples`` long, from a random offset."""
        from avsr.data.dataset import load_audio

        for _ in range(100):
            path, other = self.pool[int(rng.integers(len(self.pool)))]
            if other != speaker:
                break
        else:  # the pool is nearly all one speaker: take the first other one
            path = next(p for p, spk in self.pool if spk != speaker)
        return _fit_length(load_audio(path).numpy(), num_samples, rng).astype(np.float32)

    def __call__(
        self, speech: np.ndarray, speaker: str, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, str | None, float]:
        """Mix one utterance.

        Args:
            speech: ``(N,)`` clean float waveform.
            speaker: its speaker (a competing talker is someone else).
            rng: generator to draw from (default the mixer's own).

        Returns:
            ``(mixture float32 (N,), kind, snr)``: kind is a noise kind,
            :data:`TALKER`, or ``None`` for clean (snr ``inf``).
        """
        rng = self.rng if rng is None else rng
        u = float(rng.random())
        snr = float(rng.uniform(*self.snr_range))
        if u < self.clean_prob or len(speech) == 0 or not np.any(speech):
            return np.asarray(speech, np.float32), None, math.inf
        if u < self.clean_prob + self.talker_prob:
            kind, interference = TALKER, self.talker(len(speech), speaker, rng)
        else:
            kind = self.kinds[int(rng.integers(len(self.kinds)))]
            interference = self.source.sample(len(speech), rng, kind)
        try:
            return mix(speech, interference, snr, self.sample_rate, rng=rng), kind, snr
        except InputError:  # an excerpt silent over the target's speech (a talker's pause): leave it clean
            return np.asarray(speech, np.float32), None, math.inf

    def mix_batch(self, audio: Tensor, lengths: Tensor, speakers: Sequence[str]) -> tuple[Tensor, list[str | None]]:
        """Mix every utterance of a padded batch (padding stays zero).

        Args:
            audio: (B, N) clean float waveforms.
            lengths: (B,) valid samples.
            speakers: the B speakers.

        Returns:
            ``((B, N) mixtures on audio's device, the B kinds)``.
        """
        out = audio.detach().cpu().clone()
        kinds: list[str | None] = []
        for i, n in enumerate(lengths.tolist()):
            y, kind, _ = self(out[i, : int(n)].numpy(), speakers[i])
            out[i, : int(n)] = torch.from_numpy(y)
            kinds.append(kind)
        return out.to(audio.device), kinds
