"""A reference Auto-AVSR model for the conversion tests, assembled from ESPnet's published modules.

The conformer encoder and the transformer decoder are ESPnet's own
(``espnet.nets.pytorch_backend.conformer.encoder.Encoder`` and
``espnet.nets.pytorch_backend.transformer.decoder.Decoder`` from the
``espnet`` package, test-only extra ``compat``), configured as Auto-AVSR
configures its copy of them: relative positions ("latest"), macaron
feed-forward, convolution kernel 31 with batch norm and swish, and ReLU
feed-forward layers (ESPnet's conformer uses its ``activation_type`` for
both; Auto-AVSR's ``PositionwiseFeedForward`` is ReLU, so the reference
swaps the activation of the feed-forward modules after building them).

ESPnet has no ResNet frontends: ``RefConv3dResNet`` and ``RefConv1dResNet``
are written here from Auto-AVSR's published design (their
``conv3d_extractor``/``resnet`` and ``conv1d_extractor``/``resnet1d``), in
plain torch, with their module names, so that ``state_dict()`` gives the
published key names. Their convolution module's pointwise convolutions are
called ``pointwise_cov1``/``pointwise_cov2`` in their checkpoints (ESPnet's
are ``pointwise_conv1``/``pointwise_conv2``): :func:`published_state_dict`
renames them.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class RefBlock(nn.Module):
    """Auto-AVSR's ResNet basic block (``conv1 bn1 relu1 conv2 bn2 [+ downsample] relu2``)."""

    def __init__(self, c_in: int, c_out: int, stride: int, dims: int) -> None:
        super().__init__()
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv1d, nn.BatchNorm1d)
        self.conv1 = conv(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = norm(c_out)
        self.relu1 = nn.SiLU()
        self.conv2 = conv(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = norm(c_out)
        self.relu2 = nn.SiLU()
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(conv(c_in, c_out, 1, stride, bias=False), norm(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + (x if self.downsample is None else self.downsample(x)))


def _layers(width: int, blocks: list[int], dims: int) -> nn.ModuleDict:
    out = nn.ModuleDict()
    c = width
    for i, n in enumerate(blocks):
        c_out = width * 2**i
        out[f"layer{i + 1}"] = nn.Sequential(*[RefBlock(c if j == 0 else c_out, c_out, 2 if i and not j else 1, dims)
                                               for j in range(n)])
        c = c_out
    return out


class RefTrunk2d(nn.Module):
    def __init__(self, width: int, blocks: list[int]) -> None:
        super().__init__()
        for name, layer in _layers(width, blocks, 2).items():
            self.add_module(name, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)


class RefConv3dResNet(nn.Module):
    """Video frontend: Conv3d stem (5×7×7, stride 1×2×2) + BN3d + swish + max pool, ResNet-18 per frame."""

    def __init__(self, width: int = 64, blocks: list[int] | None = None) -> None:
        super().__init__()
        self.frontend3D = nn.Sequential(
            nn.Conv3d(1, width, (5, 7, 7), (1, 2, 2), (2, 3, 3), bias=False),
            nn.BatchNorm3d(width),
            nn.SiLU(),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
        )
        self.trunk = RefTrunk2d(width, blocks or [2, 2, 2, 2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W) normalised crops -> (B, T, C)."""
        y = self.frontend3D(x.unsqueeze(1))
        b, c, t, h, w = y.shape
        return self.trunk(y.transpose(1, 2).reshape(b * t, c, h, w)).view(b, t, -1)


class RefTrunk1d(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, width, 80, 4, 38, bias=False)
        self.bn1 = nn.BatchNorm1d(width)
        self.relu = nn.SiLU()
        for name, layer in _layers(width, [2, 2, 2, 2], 1).items():
            self.add_module(name, layer)
        self.avgpool = nn.AvgPool1d(20, 20)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.avgpool(x)


class RefConv1dResNet(nn.Module):
    """Audio frontend on the normalised waveform: whole 640-sample steps, 1-D ResNet-18, /20 pooling."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.trunk = RefTrunk1d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N) -> (B, N // 640, C)."""
        x = x[:, : x.size(1) // 640 * 640].unsqueeze(1)
        return self.trunk(x).transpose(1, 2)


def espnet_encoder(d: int, heads: int, ff: int, layers: int, kernel: int, d_in: int) -> nn.Module:
    """ESPnet's conformer encoder as Auto-AVSR configures it (input: a Linear d_in -> d)."""
    from espnet.nets.pytorch_backend.conformer.encoder import Encoder

    enc = Encoder(
        idim=d_in, attention_dim=d, attention_heads=heads, linear_units=ff, num_blocks=layers,
        input_layer=nn.Linear(d_in, d), macaron_style=True, pos_enc_layer_type="rel_pos",
        selfattention_layer_type="rel_selfattn", activation_type="swish", use_cnn_module=True,
        cnn_module_kernel=kernel, dropout_rate=0.1, positional_dropout_rate=0.1, attention_dropout_rate=0.1,
    )
    for layer in enc.encoders:
        layer.feed_forward.activation = nn.ReLU()
        layer.feed_forward_macaron.activation = nn.ReLU()
    return enc


class RefMLPHead(nn.Module):
    def __init__(self, idim: int, hdim: int, odim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(idim, hdim)
        self.bn1 = nn.BatchNorm1d(hdim)
        self.fc2 = nn.Linear(hdim, odim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn1(self.fc1(x).transpose(1, 2)).transpose(1, 2)
        return self.fc2(torch.relu(h))


class RefCTC(nn.Module):
    def __init__(self, odim: int, d: int) -> None:
        super().__init__()
        self.ctc_lo = nn.Linear(d, odim)


class RefAutoAVSR(nn.Module):
    """Auto-AVSR's ``E2E`` (release layout): ``encoder`` (+ ``aux_encoder``, ``fusion``), ``decoder``, ``ctc``.

    Args:
        odim: output classes.
        modality: ``"video"``, ``"audio"`` or ``"av"``.
        d, heads, ff, layers, kernel, dec_layers: transformer sizes (published: 768, 12, 3072, 12, 31, 6).
        width: ResNet stem width (published 64; its trunk ends at 8 × width channels).
        video_blocks: blocks per video ResNet stage (published [2, 2, 2, 2]).
        fusion_hidden: MLP width of the AV fusion (published 8192).
    """

    def __init__(self, odim: int, modality: str, d: int = 768, heads: int = 12, ff: int = 3072, layers: int = 12,
                 kernel: int = 31, dec_layers: int = 6, width: int = 64, video_blocks: list[int] | None = None,
                 fusion_hidden: int = 8192) -> None:
        super().__init__()
        from espnet.nets.pytorch_backend.transformer.decoder import Decoder

        self.modality = modality
        self.encoder = espnet_encoder(d, heads, ff, layers, kernel, 8 * width)
        if modality == "audio":
            self.encoder.frontend = RefConv1dResNet(width)
        else:
            self.encoder.frontend = RefConv3dResNet(width, video_blocks)
        if modality == "av":
            self.aux_encoder = espnet_encoder(d, heads, ff, layers, kernel, 8 * width)
            self.aux_encoder.frontend = RefConv1dResNet(width)
            self.fusion = RefMLPHead(2 * d, fusion_hidden, d)
        self.decoder = Decoder(odim=odim, attention_dim=d, attention_heads=heads, linear_units=ff,
                               num_blocks=dec_layers)
        self.ctc = RefCTC(odim, d)

    @staticmethod
    def run_encoder(enc: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Frontend then ESPnet's encoder (one unpadded utterance per row)."""
        out, _ = enc(enc.frontend(x), None)
        return out

    def encode(self, video: torch.Tensor | None, audio: torch.Tensor | None) -> torch.Tensor:
        """Their inference path: video (B, T, 88, 88) normalised crops, audio (B, N) normalised waveform."""
        if self.modality == "audio":
            return self.run_encoder(self.encoder, audio)
        v = self.run_encoder(self.encoder, video)
        if self.modality == "video":
            return v
        a = self.run_encoder(self.aux_encoder, audio)
        return self.fusion(torch.cat([v, a], dim=-1))


def their_video_input(mouths: torch.Tensor) -> torch.Tensor:
    """Their test transform: /255, centre crop 88, Normalize(0.421, 0.165)."""
    h, w = mouths.shape[-2:]
    top, left = (h - 88) // 2, (w - 88) // 2
    x = mouths[..., top : top + 88, left : left + 88].float() / 255.0
    return (x - 0.421) / 0.165


def their_audio_input(wave: torch.Tensor) -> torch.Tensor:
    """Their transform: ``layer_norm`` of each whole waveform (epsilon 1e-8)."""
    return torch.stack([nn.functional.layer_norm(w, w.shape, eps=1e-8) for w in wave])


def published_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``state_dict()`` with the convolution module named as in their checkpoints."""
    return {k.replace(".pointwise_conv1.", ".pointwise_cov1.").replace(".pointwise_conv2.", ".pointwise_cov2."): v
            for k, v in model.state_dict().items()}


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere, batch-norm statistics included (so eval-mode BN is not the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(".weight") and t.dim() == 1:  # norm scales around 1
                t.copy_(1.0 + 0.1 * torch.randn(t.shape, generator=g))
            else:
                fan_in = t[0].numel() if t.dim() > 1 else 1
                t.copy_(torch.randn(t.shape, generator=g) / math.sqrt(max(fan_in, 1)))
    return model.eval()
