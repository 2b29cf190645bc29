"""Audio features: log-mel filterbanks, normalisation, MFCC and SpecAugment.

Rates (see DESIGN.md): waveforms are mono 16 kHz; filterbank frames use a
25 ms window and a 10 ms hop (100 fps). Frame ``i`` is centred on the middle
of hop ``i``, i.e. on sample ``160 * i + 80``, and an utterance of ``N``
samples has exactly ``ceil(N / 160)`` frames. The audio frontend then
subsamples by 4, giving ``ceil(N / 640)`` steps at 25 fps: one step per
video frame.

All functions take padded batches with explicit lengths and are padding
invariant: the features of a valid frame never depend on how much padding
follows the utterance in its batch (samples past an utterance's length are
treated as zeros, and padded frames are set to zero).

Example:
    >>> import torch
    >>> fb = Fbank()
    >>> wave = torch.zeros(2, 16000)
    >>> feats, lengths = fb(wave, torch.tensor([16000, 8000]))
    >>> tuple(feats.shape), lengths.tolist()
    ((2, 100, 80), [100, 50])
"""

from __future__ import annotations

import math

import torch
import torchaudio
from torch import Tensor, nn

__all__ = [
    "SAMPLE_RATE",
    "HOP_SAMPLES",
    "STEP_SAMPLES",
    "num_frames",
    "num_steps",
    "lengths_to_mask",
    "zero_after",
    "Fbank",
    "FeatureNorm",
    "SpecAugment",
    "spec_augment",
    "fbank",
    "mfcc",
    "pool_frames",
]

SAMPLE_RATE = 16000
"""Audio sample rate everywhere inside the models (Hz)."""
HOP_SAMPLES = 160
"""Filterbank hop: 10 ms at 16 kHz (100 fps)."""
STEP_SAMPLES = 640
"""Samples per 25 fps step (one video frame): 4 filterbank hops."""


def num_frames(num_samples: Tensor | int, hop: int = HOP_SAMPLES) -> Tensor | int:
    """Number of filterbank frames for ``num_samples`` samples: ``ceil(N / hop)``.

    Args:
        num_samples: sample counts, an int or a tensor of any shape.
        hop: hop size in samples.

    Returns:
        Frame counts, same type and shape as the input.
    """
    if isinstance(num_samples, Tensor):
        return torch.div(num_samples + hop - 1, hop, rounding_mode="floor")
    return -(-int(num_samples) // hop)


def num_steps(num_samples: Tensor | int) -> Tensor | int:
    """Number of 25 fps encoder steps for ``num_samples`` 16 kHz samples: ``ceil(N / 640)``.

    This equals ``ceil(num_frames(N) / 4)``, the length produced by the ×4
    convolutional subsampling of the audio frontend.

    Args:
        num_samples: sample counts, an int or a tensor of any shape.

    Returns:
        Step counts, same type and shape as the input.
    """
    return num_frames(num_samples, STEP_SAMPLES)


def lengths_to_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """Boolean validity mask from lengths.

    Args:
        lengths: (B,) integer lengths.
        max_len: size of the time axis (default ``lengths.max()``).

    Returns:
        (B, max_len) bool, True on valid steps.
    """
    if max_len is None:
        max_len = int(lengths.max().item()) if lengths.numel() else 0
    steps = torch.arange(max_len, device=lengths.device)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)


def zero_after(x: Tensor, lengths: Tensor, time_dim: int = 1) -> Tensor:
    """Zero the steps of ``x`` at or after ``lengths`` along ``time_dim``.

    Args:
        x: (B, ...) tensor, batch first, with a time axis at ``time_dim``.
        lengths: (B,) valid steps.
        time_dim: the time axis of ``x``.

    Returns:
        ``x`` with padded steps set to zero (same shape and dtype).
    """
    mask = lengths_to_mask(lengths, x.size(time_dim))  # (B, T)
    shape = [1] * x.dim()
    shape[0], shape[time_dim] = x.size(0), x.size(time_dim)
    return x * mask.view(shape).to(x.dtype)


class Fbank(nn.Module):
    """Log-mel filterbank (torchaudio ``MelSpectrogram`` + log), padding invariant.

    Args:
        sample_rate: input sample rate (Hz).
        n_mels: number of mel bins.
        win_length: window length in samples (25 ms at 16 kHz).
        hop_length: hop in samples (10 ms at 16 kHz).
        n_fft: FFT size (>= ``win_length``).
        f_min: lowest mel filter edge (Hz).
        f_max: highest mel filter edge (Hz), ``None`` for Nyquist.
        log_floor: added to the mel power before the log.
    """

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        n_mels: int = 80,
        win_length: int = 400,
        hop_length: int = HOP_SAMPLES,
        n_fft: int = 512,
        f_min: float = 20.0,
        f_max: float | None = None,
        log_floor: float = 1e-6,
    ) -> None:
        super().__init__()
        if n_fft < win_length:
            raise ValueError(f"n_fft ({n_fft}) must be >= win_length ({win_length})")
        self.n_mels = n_mels
        self.hop_length = hop_length
        self.n_fft = n_fft
        self.log_floor = log_floor
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            f_min=f_min,
            f_max=f_max,
            n_mels=n_mels,
            center=False,
            power=2.0,
        )

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Compute log-mel features.

        Args:
            waveform: (B, N) float waveform; samples past ``lengths`` are ignored.
            lengths: (B,) valid samples per utterance (default: all ``N``).

        Returns:
            feats: (B, T, n_mels) with ``T = ceil(N / hop)``; padded frames are 0.
            frame_lengths: (B,) valid frames, ``ceil(lengths / hop)``.
        """
        if waveform.dim() != 2:
            raise ValueError(f"waveform must be (B, N), got shape {tuple(waveform.shape)}")
        batch, n = waveform.shape
        if lengths is None:
            lengths = torch.full((batch,), n, dtype=torch.long, device=waveform.device)
        lengths = lengths.to(device=waveform.device, dtype=torch.long)
        wave = zero_after(waveform.float(), lengths)
        t = int(num_frames(n, self.hop_length))
        # Centre frame i on sample hop*i + hop/2 (the middle of its hop).
        left = self.n_fft // 2 - self.hop_length // 2
        right = (t - 1) * self.hop_length + self.n_fft - left - n
        wave = nn.functional.pad(wave, (left, max(right, 0)))
        with torch.autocast(device_type=wave.device.type, enabled=False):  # STFT in float32
            power = self.mel(wave)[..., :t]  # (B, n_mels, T)
            feats = torch.log(power + self.log_floor).transpose(1, 2)
        frame_lengths = num_frames(lengths, self.hop_length)
        return zero_after(feats, frame_lengths), frame_lengths


def _masked_mean_std(feats: Tensor, lengths: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Per-utterance mean and standard deviation over valid frames.

    Args:
        feats: (B, T, F).
        lengths: (B,) valid frames.
        eps: floor for the standard deviation.

    Returns:
        mean, std: each (B, 1, F).
    """
    mask = lengths_to_mask(lengths, feats.size(1)).unsqueeze(-1).to(feats.dtype)
    count = mask.sum(dim=1, keepdim=True).clamp(min=1.0)
    mean = (feats * mask).sum(dim=1, keepdim=True) / count
    var = (((feats - mean) * mask) ** 2).sum(dim=1, keepdim=True) / count
    return mean, var.sqrt().clamp(min=eps)


class FeatureNorm(nn.Module):
    """Mean/variance normalisation of features, per utterance or with global statistics.

    Args:
        n_features: feature dimension F.
        mode: ``"utterance"`` (statistics of each utterance's valid frames),
            ``"global"`` (fixed statistics stored in buffers ``mean``/``std``,
            set with :meth:`set_stats` or :meth:`fit`; saved in the state dict)
            or ``"none"``.
        eps: floor for the standard deviation.
    """

    MODES = ("utterance", "global", "none")

    def __init__(self, n_features: int, mode: str = "utterance", eps: float = 1e-5) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.eps = eps
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))

    def set_stats(self, mean: Tensor, std: Tensor) -> None:
        """Set the global statistics.

        Args:
            mean: (F,) feature means.
            std: (F,) feature standard deviations.
        """
        self.mean.copy_(mean.to(self.mean))
        self.std.copy_(std.to(self.std).clamp(min=self.eps))

    @torch.no_grad()
    def fit(self, feats: Tensor, lengths: Tensor) -> None:
        """Estimate global statistics from a padded batch (all valid frames pooled).

        Args:
            feats: (B, T, F) features.
            lengths: (B,) valid frames.
        """
        mask = lengths_to_mask(lengths, feats.size(1))
        valid = feats[mask]  # (sum T, F)
        self.set_stats(valid.mean(dim=0), valid.std(dim=0, unbiased=False))

    def forward(self, feats: Tensor, lengths: Tensor) -> Tensor:
        """Normalise features; padded frames stay 0.

        Args:
            feats: (B, T, F).
            lengths: (B,) valid frames.

        Returns:
            (B, T, F) normalised features.
        """
        if self.mode == "none":
            return feats
        if self.mode == "utterance":
            mean, std = _masked_mean_std(feats, lengths, self.eps)
        else:
            mean, std = self.mean.view(1, 1, -1), self.std.view(1, 1, -1)
        out = (feats - mean) / std
        return zero_after(out, lengths)


def spec_augment(
    feats: Tensor,
    lengths: Tensor,
    *,
    n_freq_masks: int = 2,
    freq_width: int = 27,
    n_time_masks: int = 2,
    time_width: int = 40,
    max_time_ratio: float = 0.2,
    value: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """SpecAugment masking (Park et al. 2019) without time warping.

    Each utterance gets its own masks; time masks fall inside its valid
    frames and are at most ``min(time_width, max_time_ratio * length)`` wide.

    Args:
        feats: (B, T, F) features (normalised, so ``value=0`` is the mean).
        lengths: (B,) valid frames.
        n_freq_masks: frequency masks per utterance.
        freq_width: maximum frequency mask width (bins).
        n_time_masks: time masks per utterance.
        time_width: maximum time mask width (frames).
        max_time_ratio: cap of a time mask's width relative to the utterance length.
        value: fill value of masked cells.
        generator: optional random generator.

    Returns:
        (B, T, F) masked copy of ``feats``.
    """
    batch, t, f = feats.shape
    keep = torch.ones(batch, t, f, dtype=torch.bool, device=feats.device)
    for b in range(batch):
        length = int(lengths[b])
        for _ in range(n_freq_masks):
            width = int(torch.randint(0, freq_width + 1, (1,), generator=generator))
            width = min(width, f)
            start = int(torch.randint(0, f - width + 1, (1,), generator=generator))
            keep[b, :, start : start + width] = False
        cap = min(time_width, int(max_time_ratio * length))
        for _ in range(n_time_masks):
            if cap <= 0:
                break
            width = int(torch.randint(0, cap + 1, (1,), generator=generator))
            start = int(torch.randint(0, length - width + 1, (1,), generator=generator))
            keep[b, start : start + width, :] = False
    return torch.where(keep, feats, torch.full_like(feats, value))


class SpecAugment(nn.Module):
    """Module wrapper of :func:`spec_augment`; active only in training mode.

    Args:
        n_freq_masks: frequency masks per utterance.
        freq_width: maximum frequency mask width (bins).
        n_time_masks: time masks per utterance.
        time_width: maximum time mask width (frames).
        max_time_ratio: cap of a time mask's width relative to the utterance length.
    """

    def __init__(
        self,
        n_freq_masks: int = 2,
        freq_width: int = 27,
        n_time_masks: int = 2,
        time_width: int = 40,
        max_time_ratio: float = 0.2,
    ) -> None:
        super().__init__()
        self.n_freq_masks = n_freq_masks
        self.freq_width = freq_width
        self.n_time_masks = n_time_masks
        self.time_width = time_width
        self.max_time_ratio = max_time_ratio

    def forward(self, feats: Tensor, lengths: Tensor) -> Tensor:
        """Mask ``feats`` (B, T, F) in training mode; identity in evaluation mode."""
        if not self.training:
            return feats
        return spec_augment(
            feats,
            lengths,
            n_freq_masks=self.n_freq_masks,
            freq_width=self.freq_width,
            n_time_masks=self.n_time_masks,
            time_width=self.time_width,
            max_time_ratio=self.max_time_ratio,
        )


_FBANK_CACHE: dict[int, Fbank] = {}


def _default_fbank(n_mels: int) -> Fbank:
    if n_mels not in _FBANK_CACHE:
        _FBANK_CACHE[n_mels] = Fbank(n_mels=n_mels)
    return _FBANK_CACHE[n_mels]


@torch.no_grad()
def fbank(waveform: Tensor, *, n_mels: int = 80, normalize: bool = True) -> Tensor:
    """Log-mel features of one utterance (convenience for clustering and tools).

    Args:
        waveform: (N,) mono 16 kHz waveform.
        n_mels: mel bins.
        normalize: apply per-utterance mean/variance normalisation.

    Returns:
        (ceil(N / 160), n_mels) features at 100 fps.
    """
    wave = torch.as_tensor(waveform, dtype=torch.float32).reshape(1, -1).cpu()
    lengths = torch.tensor([wave.size(1)])
    feats, frames = _default_fbank(n_mels)(wave, lengths)
    if normalize:
        mean, std = _masked_mean_std(feats, frames, 1e-5)
        feats = (feats - mean) / std
    return feats[0]


@torch.no_grad()
def mfcc(waveform: Tensor, *, n_mfcc: int = 13, n_mels: int = 40, deltas: bool = True) -> Tensor:
    """MFCCs (DCT of log-mel) with optional deltas, per-utterance normalised.

    The classic HuBERT first-iteration clustering features (39 dims with deltas).

    Args:
        waveform: (N,) mono 16 kHz waveform.
        n_mfcc: cepstral coefficients.
        n_mels: mel bins before the DCT.
        deltas: append first and second order deltas.

    Returns:
        (ceil(N / 160), n_mfcc * (3 if deltas else 1)) features at 100 fps.
    """
    logmel = fbank(waveform, n_mels=n_mels, normalize=False)  # (T, n_mels)
    dct = torchaudio.functional.create_dct(n_mfcc, n_mels, norm="ortho")
    ceps = logmel @ dct  # (T, n_mfcc)
    if deltas:
        d1 = torchaudio.functional.compute_deltas(ceps.T).T
        d2 = torchaudio.functional.compute_deltas(d1.T).T
        ceps = torch.cat([ceps, d1, d2], dim=-1)
    frames = torch.tensor([ceps.size(0)])
    mean, std = _masked_mean_std(ceps.unsqueeze(0), frames, 1e-5)
    return ((ceps.unsqueeze(0) - mean) / std)[0]


def pool_frames(feats: Tensor, factor: int = 4) -> Tensor:
    """Average groups of ``factor`` consecutive frames (100 fps -> 25 fps for 4).

    The last group may be partial and is averaged over the frames it has, so
    ``T`` frames give ``ceil(T / factor)`` steps, matching the audio frontend.

    Args:
        feats: (T, D) features.
        factor: frames per output step.

    Returns:
        (ceil(T / factor), D) pooled features.
    """
    t, d = feats.shape
    steps = math.ceil(t / factor)
    padded = nn.functional.pad(feats, (0, 0, 0, steps * factor - t))
    counts = torch.full((steps,), float(factor), dtype=feats.dtype, device=feats.device)
    if steps:
        counts[-1] = t - (steps - 1) * factor
    return padded.view(steps, factor, d).sum(dim=1) / counts.unsqueeze(-1)
