"""Manifest -> SpeechBrain ``DynamicItemDataset`` -> batches by total duration.

Pipelines (lazy, per utterance):

* ``audio``: the waveform, float32 mono 16 kHz (``avsr.io.read_audio``);
* ``mouths``: (T, 96, 96) uint8 crops from the npz (``mouths`` array);
* ``tokens``: the transcript's token ids, or given targets such as cluster ids
  (``LongTensor``; absent for a dataset without either, e.g. enhancement).

Batches are :class:`speechbrain.dataio.batch.PaddedBatch` (zero padding,
*relative* lengths); :func:`batch_tensors` turns one into the model's
inputs with absolute lengths and ``-1`` padded targets. Noise is not added
here: training adds it on the batch (:class:`avsr.data.augment.NoiseMixer`)
so that its random state lives in the main process and in the checkpoint.

Example:
    >>> import tempfile, pathlib, numpy as np, soundfile as sf
    >>> from avsr.tokenizer import CharTokenizer
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> sf.write(d / "a.flac", np.zeros(16000, np.float32), 16000)
    >>> np.savez(d / "a.npz", mouths=np.zeros((25, 96, 96), np.uint8))
    >>> _ = (d / "m.csv").write_text("id,text,duration,audio,mouths\\nu1,ab,1.0,a.flac,a.npz\\n")
    >>> tok = CharTokenizer.train(["ab"])
    >>> ds = make_dataset(read_manifest(d / "m.csv"), tok)
    >>> item = ds[0]
    >>> tuple(item["audio"].shape), tuple(item["mouths"].shape), item["tokens"].tolist() == tok.encode("ab")
    ((16000,), (25, 96, 96), True)
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.sampler import DynamicBatchSampler
from torch import Tensor

from avsr.data.manifest import Utterance, read_manifest
from avsr.errors import InputError
from avsr.tokenizer import Tokenizer

__all__ = ["read_manifest", "load_audio", "load_mouths", "make_dataset", "duration_batches", "Batch", "batch_tensors"]

SAMPLE_RATE = 16000


def load_audio(path: str) -> Tensor:
    """Read an audio file as a float32 mono 16 kHz tensor (clear error on a bad file)."""
    from avsr.io import read_audio

    return torch.from_numpy(np.ascontiguousarray(read_audio(path, sample_rate=SAMPLE_RATE)))


def load_mouths(path: str) -> Tensor:
    """Read the ``mouths`` array (T, H, W) uint8 of an npz file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            mouths = data["mouths"]
    except KeyError:
        raise InputError(path, "not a mouth-crop npz (no 'mouths' array)") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        raise InputError(path, "not a mouth-crop npz (unreadable or truncated file)") from None
    if mouths.ndim != 3 or mouths.dtype != np.uint8:
        raise InputError(path, f"mouths must be (T, H, W) uint8, got {mouths.shape} {mouths.dtype}")
    return torch.from_numpy(np.ascontiguousarray(mouths))


def make_dataset(
    utterances: Sequence[Utterance],
    tokenizer: Tokenizer | None,
    *,
    audio: bool = True,
    video: bool = True,
    targets: Mapping[str, Tensor] | None = None,
) -> DynamicItemDataset:
    """Build the dataset of a manifest.

    The ``tokens`` item is the tokenized transcript, or the given
    ``targets``; with neither (``tokenizer=None``, no ``targets``) there is
    no ``tokens`` item, for tasks without transcripts such as enhancement.

    Args:
        utterances: rows from :func:`avsr.data.manifest.read_manifest`.
        tokenizer: turns ``text`` into ``tokens`` (unused with ``targets``;
            ``None`` without them: no ``tokens`` item).
        audio: provide the ``audio`` item (rows must then have audio files).
        video: provide the ``mouths`` item (rows must then have mouth files).
        targets: per-utterance target sequences to serve as ``tokens``
            instead of the tokenized transcript (pretraining's cluster ids
            at 25 fps, :func:`avsr.training.clusters.load_targets`).

    Returns:
        a ``DynamicItemDataset`` with output keys ``id``, ``text``,
        ``duration``, ``tokens`` (with a tokenizer or targets) and the chosen
        modality items.

    Raises:
        InputError: a row lacks the file of a requested modality, or its targets.
    """
    data = {}
    for u in utterances:
        if targets is not None and u.id not in targets:
            raise InputError(None, f"utterance {u.id!r} has no cluster targets (make targets for its manifest)")
        if audio and u.audio is None:
            raise InputError(None, f"utterance {u.id!r} has no audio file")
        if video and u.mouths is None:
            raise InputError(None, f"utterance {u.id!r} has no mouths file")
        data[u.id] = {"text": u.text, "duration": u.duration, "audio_path": u.audio or "", "mouths_path": u.mouths or ""}
    ds = DynamicItemDataset(data)
    keys = ["id", "text", "duration"]
    if targets is not None:
        ds.add_dynamic_item(lambda uid: targets[uid].long(), takes="id", provides="tokens")
        keys.append("tokens")
    elif tokenizer is not None:
        ds.add_dynamic_item(lambda text: torch.tensor(tokenizer.encode(text), dtype=torch.long), takes="text",
                            provides="tokens")
        keys.append("tokens")
    if audio:
        ds.add_dynamic_item(load_audio, takes="audio_path", provides="audio")
        keys.append("audio")
    if video:
        ds.add_dynamic_item(load_mouths, takes="mouths_path", provides="mouths")
        keys.append("mouths")
    ds.set_output_keys(keys)
    return ds


def duration_batches(
    dataset: DynamicItemDataset, max_seconds: float, *, shuffle: bool = True, seed: int = 0, num_buckets: int = 20
) -> DynamicBatchSampler:
    """SpeechBrain's ``DynamicBatchSampler``: batches of at most ``max_seconds`` of speech.

    Args:
        dataset: from :func:`make_dataset`.
        max_seconds: total (padded) duration per batch.
        shuffle: shuffle within and across buckets (deterministic per seed and epoch).
        seed: shuffling seed.
        num_buckets: length buckets.

    Returns:
        the batch sampler (call ``set_epoch`` each epoch; SpeechBrain's Brain does).
    """
    return DynamicBatchSampler(
        dataset,
        max_batch_length=max_seconds,
        num_buckets=num_buckets,
        length_func=lambda x: x["duration"],
        shuffle=shuffle,
        batch_ordering="random" if shuffle else "ascending",
        seed=seed,
    )


@dataclass
class Batch:
    """Model inputs of a padded batch (``None`` for an absent modality).

    Attributes:
        ids: utterance ids.
        texts: transcripts.
        audio: (B, N) float waveforms or ``None``.
        audio_lengths: (B,) samples or ``None``.
        video: (B, T, H, W) uint8 mouths or ``None``.
        video_lengths: (B,) frames or ``None``.
        targets: (B, L) token ids, ``-1`` padding (``None`` for a dataset without tokens).
    """

    ids: list[str]
    texts: list[str]
    audio: Tensor | None
    audio_lengths: Tensor | None
    video: Tensor | None
    video_lengths: Tensor | None
    targets: Tensor | None

    def to(self, device: torch.device | str) -> "Batch":
        """Move the tensors to ``device``."""
        def mv(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return Batch(self.ids, self.texts, mv(self.audio), mv(self.audio_lengths), mv(self.video),
                     mv(self.video_lengths), mv(self.targets))


def _absolute(padded: Tensor, relative: Tensor) -> Tensor:
    return torch.round(relative.float() * padded.size(1)).long()


def batch_tensors(batch: object) -> Batch:
    """Convert a SpeechBrain ``PaddedBatch`` of :func:`make_dataset` items.

    Args:
        batch: a ``PaddedBatch`` with ``audio`` and/or ``mouths`` (and ``tokens``, when the dataset has them).

    Returns:
        the :class:`Batch`.
    """
    keys = set(vars(batch))
    audio = a_len = video = v_len = None
    if "audio" in keys:
        audio, rel = batch.audio
        a_len = _absolute(audio, rel)
    if "mouths" in keys:
        video, rel = batch.mouths
        v_len = _absolute(video, rel)
    targets = None
    if "tokens" in keys:
        tokens, rel = batch.tokens
        t_len = _absolute(tokens, rel)
        positions = torch.arange(tokens.size(1), device=tokens.device).unsqueeze(0)
        targets = tokens.masked_fill(positions >= t_len.unsqueeze(1), -1)
    return Batch(list(batch.id), list(batch.text), audio, a_len, video, v_len, targets)
