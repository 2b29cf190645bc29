"""Audio-visual speech enhancement: a complex ratio mask on the STFT, steered by the lips.

:class:`EnhancerModel` turns a noisy 16 kHz waveform (and, optionally, the
speaker's 25 fps mouth crops) into an estimate of the clean speech:

1. the waveform is scaled to unit RMS (the model is gain invariant; the
   output gets the input's gain back) and analysed with a 512-point STFT,
   hop 160 (100 frames a second, 257 bins);
2. audio features: power-law compressed magnitudes (``max(|X|, 1e-4) ** compress``)
   -> linear -> ``d_model``;
3. video features: the recogniser's :class:`VideoFrontend` (same
   architecture, so its lip features can be copied from a recognition
   bundle) -> linear -> ``d_model`` at 25 fps, repeated ×4 to the STFT rate
   (STFT frame ``i``, centred on sample ``160 i``, lies in video frame
   ``i // 4``). Frames without a face (``video_valid`` false), frames past
   the end of the video, and the whole video when it is ``None`` get a
   learned *no-video* embedding instead: that is the audio-only mode, and
   training drops the video of ``video_drop_prob`` of the utterances so one
   network serves both;
4. fusion by addition, LayerNorm, a conformer at the STFT rate (the
   recogniser's :class:`avsr.models.encoder.Conformer`: rotary
   self-attention, so no absolute positions, and batched operations that
   train fast on a CPU, where a recurrent layer runs step by step);
5. a bounded complex ratio mask ``M = z · max_mask·tanh(|z|/max_mask)/|z|``
   (``|M| < max_mask``), applied to the noisy STFT, inverse STFT.

The mask head starts at the identity (``M = 1``): an untrained model returns
its input, and training starts from the noisy signal's SI-SDR.

:class:`EnhancerConfig` holds every setting as JSON-able values;
:func:`build_enhancer` builds a model from one and ``model.config`` gives it
back (with ``kind: "enhancer"``, which tells bundles of this model from
recognisers). Presets: :func:`enhancer_tiny` (CPU) and :func:`enhancer_base` (GPU).

Example:
    >>> model = enhancer_tiny().eval()
    >>> x = torch.randn(2, 16000) * 0.1
    >>> y = model.enhance(x, torch.tensor([16000, 12000]))
    >>> tuple(y.shape), bool(y[1, 12000:].abs().max() == 0)
    ((2, 16000), True)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import Tensor, nn

from avsr.errors import InputError
from avsr.models.encoder import Conformer
from avsr.models.frontends import VideoFrontend

__all__ = [
    "ENHANCER_KIND", "EnhancerConfig", "EnhancerModel", "build_enhancer", "enhancer_tiny", "enhancer_base",
    "si_sdr_loss", "TINY_ENHANCER", "BASE_ENHANCER", "VIDEO_STEPS",
]

#: ``config["kind"]`` of an enhancement model (bundles of recognisers have none).
ENHANCER_KIND = "enhancer"
#: STFT frames per video frame at the default rates (16 kHz, hop 160, 25 fps).
VIDEO_STEPS = 4
#: Floor of the input magnitudes (the waveform has unit RMS): bins 80 dB down all look alike,
#: so the features do not hang on rounding in near-empty bins.
FLOOR = 1e-4


@dataclass
class EnhancerConfig:
    """Architecture settings of :class:`EnhancerModel` (all JSON-able).

    Attributes:
        n_fft: STFT size (``n_fft // 2 + 1`` bins).
        hop: STFT hop in samples (160: 100 fps; must divide 640, a video frame).
        win_length: analysis window (Hann) length.
        compress: exponent of the magnitude compression of the input features.
        d_model: width of the fused features and of the conformer.
        encoder_layers: conformer blocks.
        encoder_heads: attention heads.
        encoder_ff: feed-forward dimension.
        conv_kernel: depthwise convolution kernel (STFT frames).
        attention_window: self-attention reach in STFT frames to either side (0: the whole input).
        video_dim: output width of the video frontend (128: the ``tiny`` recogniser's).
        video_width: stem/first-stage width of the video ResNet.
        video_layers: ResNet blocks per stage.
        crop_size: mouth crop side.
        video_stem_stride: spatial stride of the video Conv3d stem.
        video_augment: random crop, flip and time masking of frames in training.
        video_drop_prob: probability that training drops an utterance's video.
        freeze_video: keep the video frontend fixed (eval mode, no gradients),
            e.g. when it was copied from a trained recogniser.
        max_mask: bound of the mask magnitude.
        dropout: dropout in the conformer and on the fused features.
    """

    n_fft: int = 512
    hop: int = 160
    win_length: int = 512
    compress: float = 0.3
    d_model: int = 256
    encoder_layers: int = 4
    encoder_heads: int = 4
    encoder_ff: int = 1024
    conv_kernel: int = 15
    attention_window: int = 0
    video_dim: int = 128
    video_width: int = 16
    video_layers: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    crop_size: int = 88
    video_stem_stride: int = 4
    video_augment: bool = True
    video_drop_prob: float = 0.3
    freeze_video: bool = False
    max_mask: float = 2.0
    dropout: float = 0.1

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "EnhancerConfig":
        """Build from a dict (``kind`` ignored), rejecting unknown keys.

        Args:
            config: keys are field names of this class.

        Returns:
            the config.

        Raises:
            ValueError: unknown keys.
        """
        values = {k: v for k, v in dict(config).items() if k != "kind"}
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown enhancer config keys: {', '.join(unknown)}")
        if "video_layers" in values:
            values["video_layers"] = [int(n) for n in values["video_layers"]]
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of all fields plus ``kind: "enhancer"``."""
        out = asdict(self)
        out["video_layers"] = list(out["video_layers"])
        out["kind"] = ENHANCER_KIND
        return out


def _valid(lengths: Tensor, steps: int) -> Tensor:
    """(B, steps) bool: position < length."""
    return torch.arange(steps, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def si_sdr_loss(
    estimate: Tensor, reference: Tensor, lengths: Tensor, max_db: float | None = 30.0, eps: float = 1e-8
) -> tuple[Tensor, Tensor]:
    """Negative scale-invariant SDR, over each utterance's valid samples, softly capped at ``max_db``.

    The loss uses the thresholded ratio ``|s|² / (|e - s|² + τ |s|²)`` with
    ``τ = 10^(-max_db / 10)`` (Wisdom et al., 2020), which tends to
    ``max_db`` for a near-perfect estimate: a clean input, whose plain SI-SDR
    can reach 80 dB, then does not outweigh the noisy ones in the batch.

    Args:
        estimate: (B, N) enhanced waveforms.
        reference: (B, N) clean waveforms.
        lengths: (B,) valid samples.
        max_db: the soft cap of the loss (``None``: plain SI-SDR).
        eps: stabiliser.

    Returns:
        ``(loss, si_sdr)``: the mean of the negative capped SI-SDR (scalar)
        and the plain per-utterance SI-SDR in dB (B,), detached.
    """
    valid = _valid(lengths, estimate.size(1)).to(estimate.dtype)
    n = lengths.clamp(min=1).to(estimate.dtype).unsqueeze(1)
    est = (estimate - (estimate * valid).sum(1, keepdim=True) / n) * valid
    ref = (reference - (reference * valid).sum(1, keepdim=True) / n) * valid
    alpha = (est * ref).sum(1, keepdim=True) / (ref.pow(2).sum(1, keepdim=True) + eps)
    target = alpha * ref
    noise = est - target
    t_pow, n_pow = target.pow(2).sum(1), noise.pow(2).sum(1)
    ratio = 10 * torch.log10((t_pow + eps) / (n_pow + eps))
    if max_db is None:
        return -ratio.mean(), ratio.detach()
    capped = 10 * torch.log10((t_pow + eps) / (n_pow + 10 ** (-max_db / 10) * t_pow + eps))
    return -capped.mean(), ratio.detach()


class EnhancerModel(nn.Module):
    """STFT-domain audio-visual speech enhancer (see the module notes).

    Args:
        config: an :class:`EnhancerConfig`.

    Raises:
        ValueError: a hop that does not divide a 25 fps video frame (640 samples).
    """

    def __init__(self, config: EnhancerConfig) -> None:
        super().__init__()
        c = config
        if c.hop <= 0 or 640 % c.hop:
            raise ValueError(f"hop must divide 640 samples (one 25 fps video frame), got {c.hop}")
        if c.win_length > c.n_fft:
            raise ValueError("win_length must not exceed n_fft")
        if not 0.0 <= c.video_drop_prob <= 1.0:
            raise ValueError("video_drop_prob must be in [0, 1]")
        if c.max_mask <= 1.0:
            raise ValueError("max_mask must be above 1")
        self.cfg = c
        self.steps_per_frame = 640 // c.hop
        self.bins = c.n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(c.win_length), persistent=False)
        self.audio_in = nn.Sequential(nn.Linear(self.bins, c.d_model), nn.LayerNorm(c.d_model))
        self.video = VideoFrontend(
            d_out=c.video_dim, width=c.video_width, layers=tuple(c.video_layers), crop_size=c.crop_size,
            stem_stride=c.video_stem_stride, augment=c.video_augment,
        )
        self.video_in = nn.Linear(c.video_dim, c.d_model)
        self.no_video = nn.Parameter(torch.zeros(c.d_model))
        self.norm = nn.LayerNorm(c.d_model)
        self.dropout = nn.Dropout(c.dropout)
        self.encoder = Conformer(c.d_model, c.encoder_layers, c.encoder_heads, c.encoder_ff, c.conv_kernel,
                                 c.dropout, attention_window=c.attention_window)
        self.mask = nn.Linear(c.d_model, 2 * self.bins)
        with torch.no_grad():  # start at the identity mask M = 1
            self.mask.weight.mul_(0.01)
            self.mask.bias.zero_()
            self.mask.bias[: self.bins] = c.max_mask * math.atanh(1.0 / c.max_mask)
        if c.freeze_video:
            self.video.requires_grad_(False)

    @property
    def config(self) -> dict[str, Any]:
        """JSON-able dict; ``build_enhancer(model.config)`` rebuilds the architecture."""
        return self.cfg.to_dict()

    def train(self, mode: bool = True) -> "EnhancerModel":
        """As ``nn.Module.train``, but a frozen video frontend stays in eval mode."""
        super().train(mode)
        if self.cfg.freeze_video:
            self.video.eval()
        return self

    # ------------------------------------------------------------------ parts

    def stft(self, audio: Tensor) -> Tensor:
        """(B, N) waveform -> (B, T, F) complex spectrum, ``T = N // hop + 1``."""
        c = self.cfg
        spec = torch.stft(audio.float(), c.n_fft, c.hop, c.win_length, self.window, center=True,
                          return_complex=True)
        return spec.transpose(1, 2)

    def istft(self, spec: Tensor, num_samples: int) -> Tensor:
        """(B, T, F) complex spectrum -> (B, num_samples) waveform."""
        c = self.cfg
        return torch.istft(spec.transpose(1, 2), c.n_fft, c.hop, c.win_length, self.window, center=True,
                           length=num_samples)

    def apply_mask(self, spec: Tensor, z: Tensor) -> Tensor:
        """Bounded complex ratio mask from head outputs ``z`` (B, T, 2F), applied to ``spec`` (B, T, F)."""
        zc = torch.complex(z[..., : self.bins], z[..., self.bins :])
        r = zc.abs().clamp(min=1e-8)
        gain = self.cfg.max_mask * torch.tanh(r / self.cfg.max_mask) / r
        return spec * (zc * gain)

    def video_features(
        self, video: Tensor, video_lengths: Tensor | None, video_valid: Tensor | None, steps: int
    ) -> tuple[Tensor, Tensor]:
        """Lip features at the STFT rate and where they hold.

        Args:
            video: (B, Tv, H, W) mouths (uint8, or float in [0, 1]).
            video_lengths: (B,) valid frames (``None``: all).
            video_valid: (B, Tv) bool, frames with a face (``None``: all).
            steps: STFT frames ``T``.

        Returns:
            ``(features (B, T, d_model), present (B, T) bool)``.
        """
        b, tv = video.shape[:2]
        if video_lengths is None:
            video_lengths = torch.full((b,), tv, device=video.device, dtype=torch.long)
        feats, v_len = self.video(video, video_lengths)
        present = _valid(v_len, tv)
        if video_valid is not None:
            present = present & video_valid.to(present.device).bool()
        if self.training and self.cfg.video_drop_prob > 0:
            keep = torch.rand(b, device=video.device) >= self.cfg.video_drop_prob
            present = present & keep.unsqueeze(1)
        idx = torch.arange(steps, device=video.device) // self.steps_per_frame
        inside = idx < tv
        idx = idx.clamp(max=tv - 1)
        feats = self.video_in(feats)[:, idx]
        present = present[:, idx] & inside.unsqueeze(0)
        return feats, present

    # ------------------------------------------------------------------ forward

    def enhance(
        self,
        audio: Tensor,
        audio_lengths: Tensor | None = None,
        video: Tensor | None = None,
        video_lengths: Tensor | None = None,
        video_valid: Tensor | None = None,
    ) -> Tensor:
        """Enhance a batch (shared by training and inference).

        Args:
            audio: (B, N) noisy 16 kHz waveforms.
            audio_lengths: (B,) valid samples (``None``: all).
            video: (B, Tv, H, W) mouths at 25 fps, frame ``k`` with samples
                ``640 k ... 640 (k + 1)``; ``None``: audio-only enhancement.
            video_lengths: (B,) valid frames (``None``: all).
            video_valid: (B, Tv) bool, frames where a face was found (others
                are enhanced from the audio alone); ``None``: all.

        Returns:
            (B, N) enhanced waveforms, zero past ``audio_lengths``.

        Raises:
            InputError: inputs of the wrong shape.
        """
        if audio.dim() != 2 or audio.size(1) == 0:
            raise InputError(None, f"audio must be (batch, samples) with samples > 0, got {tuple(audio.shape)}")
        b, n = audio.shape
        if audio_lengths is None:
            audio_lengths = torch.full((b,), n, device=audio.device, dtype=torch.long)
        valid = _valid(audio_lengths, n)
        x = audio.float() * valid
        scale = (x.pow(2).sum(1) / audio_lengths.clamp(min=1)).sqrt().clamp(min=1e-5).unsqueeze(1)
        spec = self.stft(x / scale)
        steps = spec.size(1)
        frames = (audio_lengths // self.cfg.hop + 1).clamp(max=steps)
        h = self.audio_in(spec.abs().clamp(min=FLOOR).pow(self.cfg.compress))
        if video is not None:
            if video.dim() != 4 or video.size(0) != b:
                raise InputError(None, f"video must be (batch, frames, H, W) with batch {b}, got {tuple(video.shape)}")
            vfeat, present = self.video_features(video, video_lengths, video_valid, steps)
            h = h + torch.where(present.unsqueeze(-1), vfeat, self.no_video.to(h.dtype))
        else:
            h = h + self.no_video.to(h.dtype)
        h = self.dropout(self.norm(h))
        out, _ = self.encoder(h, frames)
        enhanced = self.istft(self.apply_mask(spec, self.mask(self.dropout(out))), n) * scale
        return enhanced * valid

    def forward(
        self,
        audio: Tensor,
        audio_lengths: Tensor | None,
        video: Tensor | None,
        video_lengths: Tensor | None,
        clean: Tensor,
        video_valid: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Training loss: negative SI-SDR of the enhanced speech against ``clean``.

        Args:
            audio, audio_lengths, video, video_lengths, video_valid: as in :meth:`enhance`.
            clean: (B, N) the clean target speech.

        Returns:
            dict with ``loss`` (scalar), ``si_sdr`` (B,) dB and ``enhanced`` (B, N).
        """
        if clean.shape != audio.shape:
            raise InputError(None, f"clean {tuple(clean.shape)} and noisy {tuple(audio.shape)} differ in shape")
        if audio_lengths is None:
            audio_lengths = torch.full((audio.size(0),), audio.size(1), device=audio.device, dtype=torch.long)
        enhanced = self.enhance(audio, audio_lengths, video, video_lengths, video_valid)
        loss, ratio = si_sdr_loss(enhanced, clean.float(), audio_lengths)
        return {"loss": loss, "si_sdr": ratio, "enhanced": enhanced}


def build_enhancer(config: dict[str, Any] | EnhancerConfig) -> EnhancerModel:
    """Build an :class:`EnhancerModel` from a config dict (or :class:`EnhancerConfig`).

    Args:
        config: ``EnhancerConfig`` fields (and optionally ``kind``); missing ones take their defaults.

    Returns:
        a freshly initialised model whose ``.config`` is the full dict.
    """
    cfg = config if isinstance(config, EnhancerConfig) else EnhancerConfig.from_dict(config)
    return EnhancerModel(cfg)


TINY_ENHANCER: dict[str, Any] = {
    "d_model": 128,
    "encoder_layers": 3,
    "encoder_heads": 4,
    "encoder_ff": 256,
    "conv_kernel": 15,
    "video_dim": 128,
    "video_width": 16,
    "video_layers": [1, 1, 1, 1],
    "video_stem_stride": 4,
}
"""Overrides of the ``tiny`` preset (CPU): the video frontend is the ``tiny`` recogniser's."""

BASE_ENHANCER: dict[str, Any] = {
    "d_model": 256,
    "encoder_layers": 8,
    "encoder_heads": 4,
    "encoder_ff": 1024,
    "conv_kernel": 31,
    "video_dim": 512,
    "video_width": 64,
    "video_layers": [2, 2, 2, 2],
    "video_stem_stride": 2,
}
"""Overrides of the ``base`` preset (GPU): a ResNet-18 video trunk, as the ``base`` recogniser's."""


def enhancer_tiny(**overrides: Any) -> EnhancerModel:
    """CPU-sized enhancer: width 128, three conformer blocks, the tiny recogniser's video frontend."""
    return build_enhancer({**TINY_ENHANCER, **overrides})


def enhancer_base(**overrides: Any) -> EnhancerModel:
    """GPU-sized enhancer: width 256, eight conformer blocks, ResNet-18 video frontend."""
    return build_enhancer({**BASE_ENHANCER, **overrides})
