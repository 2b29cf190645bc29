"""Hybrid CTC/attention audio-visual speech recognition model.

:class:`AVSRModel` receives its parts (ESPnet style): an :class:`AVEncoder`
(frontends, fusion, masked conformer), a :class:`TransformerDecoder` and a
:class:`CTCHead`. :class:`AVSRConfig` holds every architecture setting as
plain JSON-able values; :func:`build_model` turns one (or its dict) into a
model, and ``model.config`` gives it back, so ``build_model(model.config)``
rebuilds the same architecture. Presets: :func:`avsr_tiny` (CPU) and
:func:`avsr_base` (GPU).

Switches also build other published architectures from the same parts:
:func:`auto_avsr_config` gives Auto-AVSR's (Ma et al. 2023) audio, video and
audio-visual models (raw-waveform ResNet audio frontend, swish ResNet-18
video frontend, ESPnet relative-position conformer, ReLU feed-forward,
batch-norm convolution module, late MLP fusion), which
:mod:`avsr.models.compat.auto_avsr` fills with their published weights.

Token conventions (see ``avsr.tokenizer``): id 0 is the CTC blank, the last
id ``vocab_size - 1`` is the shared sos/eos, target padding is -1.

Example:
    >>> model = avsr_tiny(vocab_size=12).eval()
    >>> enc, lengths = model.encode(torch.zeros(1, 16000), None, None, None)
    >>> tuple(enc.shape), lengths.tolist()
    ((1, 25, 128), [25])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import Tensor, nn

from avsr.errors import InputError
from avsr.models.decoder import CTCHead, TransformerDecoder
from avsr.models.encoder import AVEncoder, Conformer, SpanMasker
from avsr.models.frontends import AudioFrontend, RawAudioFrontend, VideoFrontend
from avsr.models.fusion import AVFusion

__all__ = [
    "IGNORE_ID",
    "AVSRConfig",
    "AVSRModel",
    "build_encoder",
    "build_model",
    "avsr_tiny",
    "avsr_base",
    "auto_avsr_config",
    "count_parameters",
]

MODALITIES = ("audio", "video")
AUDIO_FRONTENDS = ("mel", "resnet1d")

IGNORE_ID = -1
"""Padding value of target token sequences."""


@dataclass
class AVSRConfig:
    """Architecture and loss settings of :class:`AVSRModel` (all JSON-able).

    Attributes:
        vocab_size: number of tokens V, including blank (0) and sos/eos (V - 1).
        d_model: encoder/decoder width; both frontends output this width.
        n_mels: mel bins of the audio frontend.
        audio_channels: channels of the audio subsampling convolutions.
        audio_norm: feature normalisation, ``"utterance"``, ``"global"`` or ``"none"``.
        spec_augment: SpecAugment in training.
        freq_masks: SpecAugment frequency masks.
        freq_width: SpecAugment maximum frequency mask width.
        time_masks: SpecAugment time masks.
        time_width: SpecAugment maximum time mask width (100 fps frames).
        video_width: stem/first-stage width of the video ResNet (64 = ResNet-18).
        video_layers: ResNet blocks per stage.
        crop_size: mouth crop side (88 for 96×96 mouths).
        video_stem_stride: spatial stride of the video Conv3d stem (2 standard, 4 cheap).
        video_augment: random crop, flip and time masking of frames in training.
        video_time_masks: video time masks per utterance.
        video_time_mask_width: maximum frames per video time mask.
        audio_drop_prob: modality dropout, probability of dropping audio.
        video_drop_prob: modality dropout, probability of dropping video.
        encoder_layers: conformer blocks.
        encoder_heads: encoder attention heads.
        encoder_ff: encoder feed-forward dimension.
        conv_kernel: conformer depthwise kernel size.
        conv_norm: conformer convolution norm, ``"layer"`` or ``"batch"``.
        attention_window: encoder self-attention reach in 25 fps steps to
            either side (0: the whole utterance).
        mask_prob: span masking probability (used when encoding with ``mask=True``).
        mask_span: span length in 25 fps steps.
        decoder_layers: transformer decoder blocks.
        decoder_heads: decoder attention heads.
        decoder_ff: decoder feed-forward dimension.
        dropout: dropout rate everywhere.
        ctc_weight: ``w`` in ``w * ctc + (1 - w) * attention``.
        label_smoothing: label smoothing of the attention cross-entropy.
        modalities: inputs the model reads: ``["audio", "video"]`` (default)
            or one of them (a single-modality model has no other frontend).
        audio_frontend: ``"mel"`` (log-mel + conv subsampling) or
            ``"resnet1d"`` (raw waveform, Auto-AVSR's 1-D ResNet-18).
        resnet_act: activation of the ResNet frontends, ``"relu"``,
            ``"swish"`` or ``"prelu"``.
        frontend_width: stem width of the ``resnet1d`` audio frontend.
        video_mean: video normalisation mean of [0, 1] pixels (on the centre crop).
        video_std: video normalisation standard deviation.
        attention: conformer self-attention, ``"rotary"`` or ``"rel_pos"``
            (ESPnet relative positions; scales the conformer input by
            ``sqrt(d_model)`` as ESPnet's positional encoding does).
        ff_activation: feed-forward activation of encoder and decoder,
            ``"swish"`` or ``"relu"``.
        encoder_final_norm: LayerNorm after the conformer stack(s) (ESPnet's ``after_norm``).
        stream_layers: conformer blocks per stream before the fusion (0: early
            fusion only; Auto-AVSR's audio-visual model: 12, with no blocks after).
        fusion: ``"concat"``, ``"mlp"`` or ``"none"`` (see :class:`avsr.models.fusion.AVFusion`).
        fusion_hidden: hidden width of the ``"mlp"`` fusion.
        span_masking: build the span masker (masked pretraining / fine-tuning).
    """

    vocab_size: int
    d_model: int = 256
    n_mels: int = 80
    audio_channels: int = 64
    audio_norm: str = "utterance"
    spec_augment: bool = True
    freq_masks: int = 2
    freq_width: int = 27
    time_masks: int = 2
    time_width: int = 40
    video_width: int = 64
    video_layers: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    crop_size: int = 88
    video_stem_stride: int = 2
    video_augment: bool = True
    video_time_masks: int = 1
    video_time_mask_width: int = 10
    audio_drop_prob: float = 0.25
    video_drop_prob: float = 0.25
    encoder_layers: int = 12
    encoder_heads: int = 4
    encoder_ff: int = 1024
    conv_kernel: int = 15
    conv_norm: str = "layer"
    attention_window: int = 0
    mask_prob: float = 0.5
    mask_span: int = 10
    decoder_layers: int = 6
    decoder_heads: int = 4
    decoder_ff: int = 1024
    dropout: float = 0.1
    ctc_weight: float = 0.3
    label_smoothing: float = 0.1
    modalities: list[str] = field(default_factory=lambda: ["audio", "video"])
    audio_frontend: str = "mel"
    resnet_act: str = "relu"
    frontend_width: int = 64
    video_mean: float = 0.421
    video_std: float = 0.165
    attention: str = "rotary"
    ff_activation: str = "swish"
    encoder_final_norm: bool = False
    stream_layers: int = 0
    fusion: str = "concat"
    fusion_hidden: int = 8192
    span_masking: bool = True

    def __post_init__(self) -> None:
        mods = list(self.modalities)
        if not mods or len(set(mods)) != len(mods) or any(m not in MODALITIES for m in mods):
            raise ValueError(f"modalities must be a non-empty subset of {list(MODALITIES)}, got {mods}")
        if self.audio_frontend not in AUDIO_FRONTENDS:
            raise ValueError(f"audio_frontend must be one of {AUDIO_FRONTENDS}, got {self.audio_frontend!r}")
        if len(mods) == 1 and self.fusion != "none":
            raise ValueError("a single-modality model needs fusion 'none'")

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> AVSRConfig:
        """Build from a dict, rejecting unknown keys.

        Args:
            config: keys are field names of this class.

        Returns:
            the config.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        values = dict(config)
        if "video_layers" in values:
            values["video_layers"] = [int(n) for n in values["video_layers"]]
        if "modalities" in values:
            values["modalities"] = [str(m) for m in values["modalities"]]
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of all fields."""
        out = asdict(self)
        out["video_layers"] = list(out["video_layers"])
        out["modalities"] = list(out["modalities"])
        return out


def _conformer(c: AVSRConfig, n_layers: int) -> Conformer:
    """A conformer stack with the settings of ``c``."""
    return Conformer(
        d_model=c.d_model,
        n_layers=n_layers,
        n_heads=c.encoder_heads,
        d_ff=c.encoder_ff,
        kernel_size=c.conv_kernel,
        dropout=c.dropout,
        conv_norm=c.conv_norm,
        attention_window=c.attention_window,
        attention=c.attention,
        ff_activation=c.ff_activation,
        final_norm=c.encoder_final_norm and n_layers > 0,
    )


def build_encoder(config: AVSRConfig) -> AVEncoder:
    """Build the masked multimodal encoder described by ``config``.

    Args:
        config: architecture settings.

    Returns:
        the :class:`AVEncoder`.
    """
    c = config
    audio: nn.Module | None = None
    if "audio" in c.modalities and c.audio_frontend == "mel":
        audio = AudioFrontend(
            d_out=c.d_model,
            n_mels=c.n_mels,
            channels=c.audio_channels,
            norm=c.audio_norm,
            spec_augment=c.spec_augment,
            freq_masks=c.freq_masks,
            freq_width=c.freq_width,
            time_masks=c.time_masks,
            time_width=c.time_width,
            dropout=c.dropout,
        )
    elif "audio" in c.modalities:
        audio = RawAudioFrontend(d_out=c.d_model, width=c.frontend_width, act=c.resnet_act, dropout=c.dropout)
    video: VideoFrontend | None = None
    if "video" in c.modalities:
        video = VideoFrontend(
            d_out=c.d_model,
            width=c.video_width,
            layers=tuple(c.video_layers),
            crop_size=c.crop_size,
            stem_stride=c.video_stem_stride,
            augment=c.video_augment,
            time_masks=c.video_time_masks,
            time_mask_width=c.video_time_mask_width,
            mean=c.video_mean,
            std=c.video_std,
            dropout=c.dropout,
            act=c.resnet_act,
        )
    fusion = AVFusion(c.d_model, c.d_model, c.d_model, c.audio_drop_prob, c.video_drop_prob, c.dropout,
                      mode=c.fusion, hidden=c.fusion_hidden)
    masker = SpanMasker(c.d_model, c.mask_prob, c.mask_span) if c.span_masking else None
    streams = c.stream_layers > 0
    return AVEncoder(
        audio, video, fusion, _conformer(c, c.encoder_layers), masker,
        audio_encoder=_conformer(c, c.stream_layers) if streams and audio is not None else None,
        video_encoder=_conformer(c, c.stream_layers) if streams and video is not None else None,
    )


class AVSRModel(nn.Module):
    """Encoder + CTC head + attention decoder, trained with ``w·CTC + (1−w)·CE``.

    Args:
        encoder: the :class:`AVEncoder`.
        decoder: the :class:`TransformerDecoder` (same width as the encoder).
        ctc_head: the :class:`CTCHead`.
        vocab_size: V; ``blank_id = 0``, ``sos_id = eos_id = V - 1``.
        ctc_weight: CTC weight ``w`` in [0, 1].
        label_smoothing: label smoothing of the decoder cross-entropy.
        config: the dict that rebuilds this model with :func:`build_model`
            (filled in by :func:`build_model`; ``{}`` for hand-assembled parts).
    """

    blank_id: int = 0

    def __init__(
        self,
        encoder: AVEncoder,
        decoder: TransformerDecoder,
        ctc_head: CTCHead,
        vocab_size: int,
        ctc_weight: float = 0.3,
        label_smoothing: float = 0.1,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= ctc_weight <= 1.0:
            raise ValueError("ctc_weight must be in [0, 1]")
        if vocab_size < 3:
            raise ValueError("vocab_size must be at least 3 (blank, one token, sos/eos)")
        self.encoder = encoder
        self.decoder = decoder
        self.ctc_head = ctc_head
        self.vocab_size = vocab_size
        self.sos_id = vocab_size - 1
        self.eos_id = vocab_size - 1
        self.ctc_weight = ctc_weight
        self.label_smoothing = label_smoothing
        self._config = dict(config or {})

    @property
    def modalities(self) -> tuple[str, ...]:
        """The inputs the model reads (see :attr:`AVEncoder.modalities`)."""
        return self.encoder.modalities

    @property
    def config(self) -> dict[str, Any]:
        """JSON-able dict; ``build_model(model.config)`` rebuilds the architecture."""
        return dict(self._config)

    def encode(
        self,
        audio: Tensor | None,
        audio_lengths: Tensor | None,
        video: Tensor | None,
        video_lengths: Tensor | None,
        *,
        mask: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Encode either or both modalities to 25 fps (shared by training and inference).

        Args:
            audio: (B, N) 16 kHz waveform or ``None``.
            audio_lengths: (B,) valid samples or ``None`` (all valid).
            video: (B, T, H, W) mouths (uint8, or float in [0, 1]) or ``None``.
            video_lengths: (B,) valid frames or ``None`` (all valid).
            mask: span-mask the encoder input, in training mode only: in
                evaluation mode ``mask=True`` encodes exactly as ``mask=False``,
                so validation of a loop that masks sees unmasked input.

        Returns:
            enc: (B, T', D), zero on padded steps.
            enc_lengths: (B,) per utterance ``ceil(N / 640)`` (audio),
            ``T`` (video) or the smaller of the two (both).
        """
        out = self.encoder(audio, audio_lengths, video, video_lengths, mask=mask)
        return out.features, out.lengths

    def ctc_log_probs(self, enc: Tensor) -> Tensor:
        """(B, T', D) encoder output -> (B, T', V) CTC log-probabilities."""
        return self.ctc_head(enc)

    def decoder_io(self, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Decoder input ``[sos] + y`` and output ``y + [eos]`` from padded targets.

        Args:
            targets: (B, L) token ids padded with -1.

        Returns:
            ys_in: (B, L + 1) ids (padding replaced by eos).
            ys_out: (B, L + 1) ids, eos after each sequence, -1 padding.
        """
        b = targets.size(0)
        lengths = (targets != IGNORE_ID).sum(dim=1)
        sos = targets.new_full((b, 1), self.sos_id)
        ys_in = torch.cat([sos, targets.masked_fill(targets == IGNORE_ID, self.eos_id)], dim=1)
        ys_out = torch.cat([targets, targets.new_full((b, 1), IGNORE_ID)], dim=1)
        ys_out[torch.arange(b, device=targets.device), lengths] = self.eos_id
        return ys_in, ys_out

    def ctc_loss(self, enc: Tensor, enc_lengths: Tensor, targets: Tensor) -> Tensor:
        """CTC loss summed over tokens, averaged over utterances.

        Args:
            enc: (B, T', D) encoder output.
            enc_lengths: (B,) valid steps.
            targets: (B, L) ids padded with -1.

        Returns:
            scalar loss.
        """
        log_probs = self.ctc_log_probs(enc).float()
        target_lengths = (targets != IGNORE_ID).sum(dim=1)
        loss = nn.functional.ctc_loss(
            log_probs.transpose(0, 1),
            targets.clamp(min=0),
            enc_lengths,
            target_lengths,
            blank=self.blank_id,
            reduction="sum",
            zero_infinity=True,
        )
        return loss / targets.size(0)

    def attention_loss(self, enc: Tensor, enc_lengths: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Label-smoothed decoder cross-entropy (summed over tokens, averaged over utterances).

        Args:
            enc: (B, T', D) encoder output.
            enc_lengths: (B,) valid steps.
            targets: (B, L) ids padded with -1.

        Returns:
            loss and token accuracy (teacher forcing, eos included), scalars.
        """
        ys_in, ys_out = self.decoder_io(targets)
        logits = self.decoder(ys_in, enc, enc_lengths)
        loss = nn.functional.cross_entropy(
            logits.float().transpose(1, 2),
            ys_out,
            ignore_index=IGNORE_ID,
            label_smoothing=self.label_smoothing,
            reduction="sum",
        )
        valid = ys_out != IGNORE_ID
        acc = (logits.argmax(dim=-1) == ys_out)[valid].float().mean()
        return loss / targets.size(0), acc.detach()

    def forward(
        self,
        audio: Tensor | None,
        audio_lengths: Tensor | None,
        video: Tensor | None,
        video_lengths: Tensor | None,
        targets: Tensor,
        *,
        mask: bool = False,
    ) -> dict[str, Tensor]:
        """Training loss.

        Args:
            audio: (B, N) waveform or ``None``.
            audio_lengths: (B,) valid samples or ``None``.
            video: (B, T, H, W) mouths or ``None``.
            video_lengths: (B,) valid frames or ``None``.
            targets: (B, L) token ids (no blank, no sos/eos) padded with -1.
            mask: span-mask the encoder input (as in AV-HuBERT fine-tuning);
                in training mode only, see :meth:`encode`.

        Returns:
            dict with ``loss``, ``loss_ctc``, ``loss_att`` and ``acc`` (scalars);
            a branch with weight 0 is skipped and reported as 0.
        """
        if targets.dim() != 2 or (targets.numel() and (targets.min() < IGNORE_ID or targets.max() >= self.vocab_size)):
            raise InputError(None, f"targets must be (B, L) ids in [0, {self.vocab_size}) padded with {IGNORE_ID}")
        enc, enc_lengths = self.encode(audio, audio_lengths, video, video_lengths, mask=mask)
        targets = targets.to(enc.device).long()
        zero = enc.new_zeros(())
        loss_ctc = self.ctc_loss(enc, enc_lengths, targets) if self.ctc_weight > 0 else zero
        loss_att, acc = (
            self.attention_loss(enc, enc_lengths, targets) if self.ctc_weight < 1 else (zero, zero)
        )
        loss = self.ctc_weight * loss_ctc + (1.0 - self.ctc_weight) * loss_att
        return {"loss": loss, "loss_ctc": loss_ctc.detach(), "loss_att": loss_att.detach(), "acc": acc}


def build_model(config: dict[str, Any] | AVSRConfig) -> AVSRModel:
    """Build an :class:`AVSRModel` from a config dict (or :class:`AVSRConfig`).

    Args:
        config: ``AVSRConfig`` fields; missing ones take their defaults.

    Returns:
        a freshly initialised model whose ``.config`` is the full dict.
    """
    cfg = config if isinstance(config, AVSRConfig) else AVSRConfig.from_dict(config)
    decoder = TransformerDecoder(
        cfg.vocab_size, cfg.d_model, cfg.decoder_layers, cfg.decoder_heads, cfg.decoder_ff, cfg.dropout,
        cfg.ff_activation,
    )
    return AVSRModel(
        build_encoder(cfg),
        decoder,
        CTCHead(cfg.d_model, cfg.vocab_size, cfg.dropout),
        cfg.vocab_size,
        cfg.ctc_weight,
        cfg.label_smoothing,
        config=cfg.to_dict(),
    )


TINY: dict[str, Any] = {
    "d_model": 128,
    "audio_channels": 32,
    "video_width": 16,
    "video_layers": [1, 1, 1, 1],
    "video_stem_stride": 4,
    "encoder_layers": 4,
    "encoder_heads": 4,
    "encoder_ff": 512,
    "conv_kernel": 15,
    "decoder_layers": 2,
    "decoder_heads": 4,
    "decoder_ff": 512,
}
"""Overrides of the ``tiny`` preset (CPU training)."""

BASE: dict[str, Any] = {
    "d_model": 512,
    "audio_channels": 128,
    "video_width": 64,
    "video_layers": [2, 2, 2, 2],
    "encoder_layers": 12,
    "encoder_heads": 8,
    "encoder_ff": 2048,
    "conv_kernel": 31,
    "decoder_layers": 6,
    "decoder_heads": 8,
    "decoder_ff": 2048,
}
"""Overrides of the ``base`` preset (GPU training; ResNet-18 video trunk)."""


def avsr_tiny(vocab_size: int, **overrides: Any) -> AVSRModel:
    """CPU-sized model: width 128, 4 conformer + 2 decoder layers, narrow video ResNet.

    Args:
        vocab_size: number of tokens.
        **overrides: any other :class:`AVSRConfig` field.

    Returns:
        the model.
    """
    return build_model({**TINY, **overrides, "vocab_size": vocab_size})


def avsr_base(vocab_size: int, **overrides: Any) -> AVSRModel:
    """GPU-sized model: width 512, 12 conformer + 6 decoder layers, ResNet-18 video trunk.

    Args:
        vocab_size: number of tokens.
        **overrides: any other :class:`AVSRConfig` field.

    Returns:
        the model.
    """
    return build_model({**BASE, **overrides, "vocab_size": vocab_size})


def auto_avsr_config(vocab_size: int, modality: str = "video", **overrides: Any) -> dict[str, Any]:
    """Config of Auto-AVSR's LRS3 models (Ma et al., ICASSP 2023), as published.

    Width 768, 12 heads, feed-forward 3072, 12 relative-position conformer
    blocks (macaron, kernel 31, batch norm, swish convolution module, ReLU
    feed-forward) with ``after_norm``, a 6-block decoder; swish ResNet-18
    frontends (video: 3-D stem; audio: raw waveform 1-D). The audio-visual
    model encodes each stream with its own 12 blocks and fuses them with an
    MLP (hidden 8192). Dropout as in their training (0.1); their crop
    normalisation (mean 0.421, std 0.165 on the 88×88 centre crop).

    Args:
        vocab_size: output size (their ``odim``: units + blank + eos).
        modality: ``"video"``, ``"audio"`` or ``"av"``.
        **overrides: other :class:`AVSRConfig` fields (e.g. small widths for tests).

    Returns:
        the config dict for :func:`build_model`.
    """
    if modality not in ("video", "audio", "av"):
        raise ValueError(f"modality must be video, audio or av, got {modality!r}")
    config: dict[str, Any] = {
        "vocab_size": vocab_size,
        "d_model": 768,
        "modalities": ["audio", "video"] if modality == "av" else [modality],
        "audio_frontend": "resnet1d",
        "resnet_act": "swish",
        "frontend_width": 64,
        "video_width": 64,
        "video_layers": [2, 2, 2, 2],
        "crop_size": 88,
        "video_stem_stride": 2,
        "video_mean": 0.421,
        "video_std": 0.165,
        "attention": "rel_pos",
        "ff_activation": "relu",
        "encoder_final_norm": True,
        "encoder_heads": 12,
        "encoder_ff": 3072,
        "conv_kernel": 31,
        "conv_norm": "batch",
        "encoder_layers": 0 if modality == "av" else 12,
        "stream_layers": 12 if modality == "av" else 0,
        "fusion": "mlp" if modality == "av" else "none",
        "fusion_hidden": 8192,
        "decoder_layers": 6,
        "decoder_heads": 12,
        "decoder_ff": 3072,
        "dropout": 0.1,
        "ctc_weight": 0.1,
        "label_smoothing": 0.1,
        "spec_augment": False,
        "video_augment": True,
        "audio_drop_prob": 0.0,
        "video_drop_prob": 0.0,
        "span_masking": False,
    }
    config.update(overrides)
    return config


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
