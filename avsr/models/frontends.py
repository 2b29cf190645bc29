"""Modality frontends: waveform -> 25 fps audio features, mouth frames -> 25 fps visual features.

Both frontends return ``(features (B, T, D), lengths (B,))`` at 25 fps and are
padding invariant in evaluation mode: the output at a valid step of an
utterance does not depend on the padding that follows it in a batch.

* :class:`AudioFrontend`: log-mel fbank (100 fps) -> normalisation ->
  SpecAugment (training) -> two stride-2 3×3 convolutions (×4) -> linear.
  ``N`` samples give ``ceil(N / 640)`` steps.
* :class:`VideoFrontend`: crop / flip / time masking (training) ->
  normalisation -> Conv3d stem (5×7×7 over time×H×W) -> 2-D ResNet trunk
  run on every valid frame (time folded into the batch) -> global average
  pooling -> linear. ``T`` frames give ``T`` steps.
* :class:`RawAudioFrontend`: Auto-AVSR's raw-waveform audio frontend:
  per-utterance waveform normalisation -> Conv1d (kernel 80, stride 4) ->
  1-D ResNet-18 (×8 more) -> average pooling over 20 steps -> linear.
  ``N`` samples give ``floor(N / 640)`` steps (Auto-AVSR drops the last
  partial step).

The ResNets' activation is a switch (``"relu"``, ``"swish"``, ``"prelu"``):
ReLU for this toolkit's models, swish for Auto-AVSR's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from avsr.audio.features import Fbank, FeatureNorm, SpecAugment, lengths_to_mask, spec_augment, zero_after
from avsr.errors import InputError

__all__ = [
    "ACTIVATIONS",
    "Conv2dSubsampling",
    "AudioFrontend",
    "BasicBlock",
    "ResNetTrunk",
    "VideoFrontend",
    "RawAudioFrontend",
]

ACTIVATIONS = ("relu", "swish", "prelu")
"""Activations of the ResNet frontends."""


def _activation(kind: str, channels: int) -> nn.Module:
    """A ResNet activation: ReLU, swish (SiLU) or a per-channel PReLU."""
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "swish":
        return nn.SiLU(inplace=True)
    if kind == "prelu":
        return nn.PReLU(num_parameters=channels)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {kind!r}")


def _halve(lengths: Tensor) -> Tensor:
    """Length after a kernel-3, stride-2, padding-1 convolution: ``ceil(L / 2)``."""
    return torch.div(lengths + 1, 2, rounding_mode="floor")


class Conv2dSubsampling(nn.Module):
    """Two stride-2 3×3 convolutions over (time, frequency): 100 fps -> 25 fps.

    With padding 1, ``T`` frames give ``ceil(ceil(T / 2) / 2) = ceil(T / 4)``
    steps. Steps past each utterance's length are zeroed between the
    convolutions, so padding never leaks into valid steps.

    Args:
        n_features: input feature bins F.
        channels: convolution channels.
        d_out: output dimension.
    """

    def __init__(self, n_features: int, channels: int, d_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        f_out = (n_features + 1) // 2
        f_out = (f_out + 1) // 2
        self.out = nn.Linear(channels * f_out, d_out)
        self.act = nn.ReLU()

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Subsample.

        Args:
            feats: (B, T, F) features, zero past ``lengths``.
            lengths: (B,) valid frames.

        Returns:
            out: (B, ceil(T / 4), d_out), zero past ``out_lengths``.
            out_lengths: (B,) ``ceil(lengths / 4)``.
        """
        x = zero_after(feats, lengths, 1).unsqueeze(1)  # (B, 1, T, F)
        lengths = _halve(lengths)
        x = zero_after(self.act(self.conv1(x)), lengths, 2)
        lengths = _halve(lengths)
        x = zero_after(self.act(self.conv2(x)), lengths, 2)
        b, c, t, f = x.shape
        out = self.out(x.permute(0, 2, 1, 3).reshape(b, t, c * f))
        return zero_after(out, lengths, 1), lengths


class AudioFrontend(nn.Module):
    """Waveform -> log-mel -> normalisation -> SpecAugment -> conv ×4 subsampling.

    Args:
        d_out: output feature dimension.
        n_mels: mel bins.
        channels: channels of the subsampling convolutions.
        norm: ``"utterance"``, ``"global"`` or ``"none"`` (see :class:`FeatureNorm`).
        spec_augment: apply SpecAugment in training mode.
        freq_masks: SpecAugment frequency masks per utterance.
        freq_width: maximum frequency mask width (bins).
        time_masks: SpecAugment time masks per utterance.
        time_width: maximum time mask width (frames at 100 fps).
        dropout: dropout on the output.

    Example:
        >>> fe = AudioFrontend(d_out=32, channels=8).eval()
        >>> y, n = fe(torch.zeros(2, 16000), torch.tensor([16000, 12345]))
        >>> tuple(y.shape), n.tolist()
        ((2, 25, 32), [25, 20])
    """

    def __init__(
        self,
        d_out: int = 256,
        n_mels: int = 80,
        channels: int = 64,
        norm: str = "utterance",
        spec_augment: bool = True,
        freq_masks: int = 2,
        freq_width: int = 27,
        time_masks: int = 2,
        time_width: int = 40,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.fbank = Fbank(n_mels=n_mels)
        self.norm = FeatureNorm(n_mels, mode=norm)
        self.spec_augment = (
            SpecAugment(freq_masks, freq_width, time_masks, time_width) if spec_augment else None
        )
        self.subsample = Conv2dSubsampling(n_mels, channels, d_out)
        self.dropout = nn.Dropout(dropout)
        self.d_out = d_out

    def features(self, waveform: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised (and, in training, SpecAugmented) log-mel features.

        Args:
            waveform: (B, N) 16 kHz waveform.
            lengths: (B,) valid samples.

        Returns:
            feats: (B, ceil(N / 160), n_mels), zero on padded frames.
            frame_lengths: (B,) valid frames.
        """
        feats, frames = self.fbank(waveform, lengths)
        feats = self.norm(feats, frames)
        if self.spec_augment is not None:
            feats = self.spec_augment(feats, frames)
        return feats, frames

    def forward_features(self, feats: Tensor, frame_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Subsample precomputed 100 fps features.

        Args:
            feats: (B, T, n_mels) features.
            frame_lengths: (B,) valid frames.

        Returns:
            (B, ceil(T / 4), d_out) features and (B,) lengths at 25 fps.
        """
        out, lengths = self.subsample(feats, frame_lengths)
        return self.dropout(out), lengths

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Encode waveforms.

        Args:
            waveform: (B, N) float 16 kHz waveform.
            lengths: (B,) valid samples (default: all ``N``).

        Returns:
            feats: (B, ceil(N / 640), d_out), zero past ``out_lengths``.
            out_lengths: (B,) ``ceil(lengths / 640)``.
        """
        if waveform.dim() != 2:
            raise InputError(None, f"audio must be (batch, samples), got {tuple(waveform.shape)}")
        if lengths is None:
            lengths = torch.full((waveform.size(0),), waveform.size(1), device=waveform.device)
        feats, frames = self.features(waveform, lengths)
        return self.forward_features(feats, frames)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3×3 convolutions with batch norm and a shortcut), 2-D or 1-D.

    Args:
        c_in: input channels.
        c_out: output channels.
        stride: stride of the first convolution (and of the shortcut projection).
        act: activation, one of :data:`ACTIVATIONS` (``"prelu"`` learns one
            slope per channel, separately after each convolution).
        dims: 2 (frames, ``(N, C, H, W)``) or 1 (waveforms, ``(N, C, T)``).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, act: str = "relu", dims: int = 2) -> None:
        super().__init__()
        if dims not in (1, 2):
            raise ValueError("dims must be 1 or 2")
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(c_out)
        self.conv2 = conv(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = norm(c_out)
        self.act1 = _activation(act, c_out)
        self.act2 = _activation(act, c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=False), norm(c_out))

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(N, c_in, H, W) or (N, c_in, T) -> output at ``1 / stride`` the resolution.

        With ``lengths`` (1-D only: valid output steps per row), steps past
        them are zeroed before the second convolution and in the output, so
        a padded row gives what it gives alone.
        """
        y = self.act1(self.bn1(self.conv1(x)))
        if lengths is not None:
            y = zero_after(y, lengths, 2)
        y = self.act2(self.bn2(self.conv2(y)) + self.shortcut(x))
        return zero_after(y, lengths, 2) if lengths is not None else y


def _stages(c_in: int, width: int, layers: Sequence[int], act: str, dims: int) -> tuple[nn.Sequential, int]:
    """ResNet stages: stage ``i`` has ``width * 2**i`` channels and stride 2 (1 for the first)."""
    blocks: list[nn.Module] = []
    c = c_in
    for i, n_blocks in enumerate(layers):
        c_out = width * 2**i
        for j in range(n_blocks):
            blocks.append(BasicBlock(c, c_out, stride=2 if (i > 0 and j == 0) else 1, act=act, dims=dims))
            c = c_out
    return nn.Sequential(*blocks), c


class ResNetTrunk(nn.Module):
    """2-D ResNet over single frames: stages of :class:`BasicBlock` then global average pooling.

    Stage ``i`` has ``width * 2**i`` channels and stride 2 (stride 1 for the
    first stage). ``width=64, layers=(2, 2, 2, 2)`` is ResNet-18's trunk.

    Args:
        c_in: input channels (the stem's width).
        width: channels of the first stage.
        layers: blocks per stage.
        act: activation of the blocks (:data:`ACTIVATIONS`).
    """

    def __init__(self, c_in: int, width: int, layers: Sequence[int], act: str = "relu") -> None:
        super().__init__()
        self.blocks, self.out_channels = _stages(c_in, width, layers, act, dims=2)

    def forward(self, x: Tensor) -> Tensor:
        """(N, c_in, H, W) -> (N, out_channels)."""
        return self.blocks(x).mean(dim=(2, 3))


class VideoFrontend(nn.Module):
    """Mouth frames -> Conv3d stem -> per-frame 2-D ResNet -> (B, T, d_out).

    Preprocessing (inside the module so that training and inference share it):
    ``uint8`` frames are scaled to [0, 1] (floating frames are taken as
    already in [0, 1]); a ``crop_size`` square is cut (random position and
    random horizontal flip per utterance in training, centre in evaluation);
    values are normalised with ``(x - mean) / std``; in training, random
    spans of frames are set to 0 (the mean). Padded frames are zero, the
    same value the stem's temporal zero padding uses, so the output at valid
    frames does not depend on padding. The trunk runs only on valid frames,
    so batch-norm statistics never see padding.

    Args:
        d_out: output feature dimension.
        width: stem channels and first ResNet stage width (64 = ResNet-18).
        layers: ResNet blocks per stage ((2, 2, 2, 2) = ResNet-18).
        crop_size: square crop side (88 for 96×96 mouths).
        stem_stride: spatial stride of the Conv3d stem (2 as in the usual
            lip-reading ResNet-18; 4 quarters the stem's cost, which
            dominates on a CPU, for the ``tiny`` preset).
        augment: random crop, flip and time masking in training mode.
        flip_prob: probability of a horizontal flip per utterance (training).
        time_masks: time masks per utterance (training).
        time_mask_width: maximum frames per time mask.
        mean: normalisation mean of [0, 1] pixel values.
        std: normalisation standard deviation.
        dropout: dropout on the output.
        act: activation of the stem and the trunk (:data:`ACTIVATIONS`).

    Example:
        >>> fe = VideoFrontend(d_out=16, width=4, layers=(1, 1), crop_size=24).eval()
        >>> y, n = fe(torch.zeros(2, 7, 32, 32, dtype=torch.uint8), torch.tensor([7, 5]))
        >>> tuple(y.shape), n.tolist()
        ((2, 7, 16), [7, 5])
    """

    def __init__(
        self,
        d_out: int = 256,
        width: int = 64,
        layers: Sequence[int] = (2, 2, 2, 2),
        crop_size: int = 88,
        stem_stride: int = 2,
        augment: bool = True,
        flip_prob: float = 0.5,
        time_masks: int = 1,
        time_mask_width: int = 10,
        mean: float = 0.421,
        std: float = 0.165,
        dropout: float = 0.0,
        act: str = "relu",
    ) -> None:
        super().__init__()
        self.crop_size = crop_size
        self.augment = augment
        self.flip_prob = flip_prob
        self.time_masks = time_masks
        self.time_mask_width = time_mask_width
        self.mean = mean
        self.std = std
        self.stem_conv = nn.Conv3d(
            1,
            width,
            kernel_size=(5, 7, 7),
            stride=(1, stem_stride, stem_stride),
            padding=(2, 3, 3),
            bias=False,
        )
        self.stem_bn = nn.BatchNorm2d(width)
        self.stem_pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.trunk = ResNetTrunk(width, width, tuple(layers), act)
        self.out = nn.Linear(self.trunk.out_channels, d_out)
        self.act = _activation(act, width)
        self.dropout = nn.Dropout(dropout)
        self.d_out = d_out

    def _crop(self, video: Tensor) -> Tensor:
        """Cut ``crop_size`` squares: random (+ flip) per utterance in training, centre otherwise."""
        b, _, h, w = video.shape
        size = self.crop_size
        if h < size or w < size:
            raise InputError(None, f"mouth frames of {h}x{w} are smaller than the {size}x{size} crop")
        if not (self.training and self.augment):
            top, left = (h - size) // 2, (w - size) // 2
            return video[:, :, top : top + size, left : left + size]
        crops = []
        for i in range(b):
            top = int(torch.randint(0, h - size + 1, (1,)))
            left = int(torch.randint(0, w - size + 1, (1,)))
            crop = video[i, :, top : top + size, left : left + size]
            if float(torch.rand(())) < self.flip_prob:
                crop = crop.flip(-1)
            crops.append(crop)
        return torch.stack(crops)

    def preprocess(self, video: Tensor, lengths: Tensor) -> Tensor:
        """Scale, crop/flip, normalise, time-mask and zero padding.

        Args:
            video: (B, T, H, W) uint8 or float frames.
            lengths: (B,) valid frames.

        Returns:
            (B, T, crop_size, crop_size) float, zero on padded frames.
        """
        if video.dim() != 4:
            raise InputError(None, f"video must be (batch, frames, H, W), got {tuple(video.shape)}")
        x = video.float() / 255.0 if video.dtype == torch.uint8 else video.float()
        x = (self._crop(x) - self.mean) / self.std
        b, t, h, w = x.shape
        if self.training and self.augment and self.time_masks > 0:
            x = spec_augment(
                x.reshape(b, t, h * w),
                lengths,
                n_freq_masks=0,
                n_time_masks=self.time_masks,
                time_width=self.time_mask_width,
                max_time_ratio=0.4,
            ).view(b, t, h, w)
        return zero_after(x, lengths, 1)

    def forward(self, video: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Encode mouth frames.

        Args:
            video: (B, T, H, W) grey mouth crops, uint8 (0-255) or float (0-1).
            lengths: (B,) valid frames (default: all ``T``).

        Returns:
            feats: (B, T, d_out), zero on padded frames.
            lengths: (B,) the input lengths (one step per frame).
        """
        if lengths is None:
            lengths = torch.full((video.size(0),), video.size(1), device=video.device)
        lengths = lengths.to(device=video.device, dtype=torch.long)
        x = self.preprocess(video, lengths)
        x = self.stem_conv(x.unsqueeze(1))  # (B, C, T, H', W')
        valid = lengths_to_mask(lengths, x.size(2))  # (B, T)
        out = x.new_zeros(x.size(0), x.size(2), self.d_out)
        if not bool(valid.any()):
            return out, lengths
        frames = x.permute(0, 2, 1, 3, 4)[valid]  # (sum T, C, H', W'): time folded into batch
        frames = self.stem_pool(self.act(self.stem_bn(frames)))
        pooled = self.out(self.trunk(frames))  # (sum T, d_out)
        out = out.masked_scatter(valid.unsqueeze(-1), pooled)
        return self.dropout(out), lengths


class RawAudioFrontend(nn.Module):
    """Raw waveform -> 1-D ResNet -> (B, T, d_out) at 25 fps (Auto-AVSR's ``Conv1dResNet``).

    Each utterance is normalised to zero mean and unit variance over its
    valid samples (Auto-AVSR's ``layer_norm`` of the waveform, epsilon
    1e-8) and cut to whole 640-sample steps; a Conv1d stem (kernel 80,
    stride 4) + batch norm + activation, ResNet stages of
    :class:`BasicBlock` (1-D; strides 1, 2, 2, 2) and an average pooling
    over 20 steps give one vector per 640 samples, projected to ``d_out``.
    Steps past each utterance are zeroed between the layers, so a padded
    utterance gives what it gives alone.

    Args:
        d_out: output feature dimension.
        width: stem channels and first stage width (64 as in Auto-AVSR).
        layers: blocks per stage ((2, 2, 2, 2) = ResNet-18).
        act: activation (:data:`ACTIVATIONS`; Auto-AVSR: ``"swish"``).
        dropout: dropout on the output.

    Example:
        >>> fe = RawAudioFrontend(d_out=16, width=4, layers=(1, 1, 1, 1)).eval()
        >>> y, n = fe(torch.randn(2, 16000), torch.tensor([16000, 7000]))
        >>> tuple(y.shape), n.tolist()
        ((2, 25, 16), [25, 10])
    """

    SAMPLES_PER_STEP = 640

    def __init__(
        self,
        d_out: int = 256,
        width: int = 64,
        layers: Sequence[int] = (2, 2, 2, 2),
        act: str = "swish",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError("the raw audio ResNet needs 4 stages (x4 stem, x8 stages, /20 pooling = 640 samples)")
        self.stem_conv = nn.Conv1d(1, width, kernel_size=80, stride=4, padding=38, bias=False)
        self.stem_bn = nn.BatchNorm1d(width)
        self.act = _activation(act, width)
        self.blocks, channels = _stages(width, width, tuple(layers), act, dims=1)
        self.pool = nn.AvgPool1d(20, 20)
        self.out = nn.Linear(channels, d_out)
        self.dropout = nn.Dropout(dropout)
        self.d_out = d_out

    @staticmethod
    def normalize(waveform: Tensor, lengths: Tensor) -> Tensor:
        """Zero mean, unit variance per utterance over its valid samples; padding stays 0.

        Args:
            waveform: (B, N) float.
            lengths: (B,) valid samples.

        Returns:
            (B, N) normalised waveform.
        """
        valid = lengths_to_mask(lengths, waveform.size(1)).to(waveform.dtype)
        count = lengths.clamp(min=1).to(waveform.dtype).unsqueeze(1)
        mean = (waveform * valid).sum(dim=1, keepdim=True) / count
        var = (((waveform - mean) * valid) ** 2).sum(dim=1, keepdim=True) / count
        return (waveform - mean) / torch.sqrt(var + 1e-8) * valid

    def forward(self, waveform: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Encode waveforms.

        Args:
            waveform: (B, N) float 16 kHz waveform.
            lengths: (B,) valid samples (default: all ``N``).

        Returns:
            feats: (B, floor(N / 640), d_out), zero past ``out_lengths``.
            out_lengths: (B,) ``floor(lengths / 640)``.
        """
        if waveform.dim() != 2:
            raise InputError(None, f"audio must be (batch, samples), got {tuple(waveform.shape)}")
        if lengths is None:
            lengths = torch.full((waveform.size(0),), waveform.size(1), device=waveform.device)
        lengths = lengths.to(device=waveform.device, dtype=torch.long)
        step = self.SAMPLES_PER_STEP
        out_lengths = torch.div(lengths, step, rounding_mode="floor")
        steps = waveform.size(1) // step
        x = self.normalize(waveform.float(), lengths)[:, : steps * step]
        x = zero_after(x, out_lengths * step, 1).unsqueeze(1)  # (B, 1, N'): whole steps only
        n = out_lengths * (step // 4)
        x = zero_after(self.act(self.stem_bn(self.stem_conv(x))), n, 2)
        for block in self.blocks:
            if block.conv1.stride[0] == 2:
                n = _halve(n)
            x = block(x, n)
        y = self.out(self.pool(x).transpose(1, 2))  # (B, steps, d_out)
        return self.dropout(zero_after(y, out_lengths, 1)), out_lengths
