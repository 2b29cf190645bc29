"""Masked multimodal encoder: conformer layers with rotary (or ESPnet relative-position) self-attention.

* :class:`MultiHeadAttention`: scaled dot-product attention with optional
  rotary position embeddings (RoPE, relative positions), key padding masks
  and causal masking; shared by the encoder and the decoder. With
  ``rel_pos=True`` it is ESPnet's ``RelPositionMultiHeadedAttention``
  (Transformer-XL style: sinusoidal relative positions through
  ``linear_pos`` and the learned biases ``pos_bias_u``/``pos_bias_v``), the
  attention of ESPnet's and Auto-AVSR's conformers.
* :class:`ConformerBlock` / :class:`Conformer`: macaron FFN, RoPE
  self-attention, convolution module (padded steps are zeroed before the
  depthwise convolution), FFN, LayerNorm. No absolute positions anywhere,
  so an utterance gives the same output alone or padded in a batch.
* :class:`SpanMasker`: AV-HuBERT/wav2vec 2.0 style span masking of the
  encoder input with a learned mask embedding.
* :class:`AVEncoder`: frontends -> fusion (with modality dropout) -> span
  masking (optional) -> conformer. Its ``forward`` is the one ``encode``
  used by ASR training, self-supervised pretraining and inference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from avsr.audio.features import lengths_to_mask
from avsr.errors import InputError
from avsr.models.frontends import AudioFrontend, VideoFrontend
from avsr.models.fusion import AVFusion

__all__ = [
    "rotary_tables",
    "apply_rotary",
    "relative_positions",
    "MultiHeadAttention",
    "FeedForward",
    "ConvModule",
    "ATTENTIONS",
    "ConformerBlock",
    "Conformer",
    "SpanMasker",
    "EncoderOutput",
    "AVEncoder",
]


def rotary_tables(
    steps: int, dim: int, device: torch.device, dtype: torch.dtype, base: float = 10000.0
) -> tuple[Tensor, Tensor]:
    """Cosine and sine tables of rotary position embeddings.

    Args:
        steps: number of positions T.
        dim: rotated dimension (the head dimension; even).
        device: device of the tables.
        dtype: dtype of the tables.
        base: frequency base.

    Returns:
        cos, sin: each (T, dim).
    """
    inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
    angles = torch.arange(steps, device=device, dtype=torch.float32).unsqueeze(1) * inv_freq
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs of features (rotate-half form) by position-dependent angles.

    Args:
        x: (..., T, dim) queries or keys.
        cos: (T, dim) table from :func:`rotary_tables`.
        sin: (T, dim) table from :func:`rotary_tables`.

    Returns:
        (..., T, dim) rotated tensor; dot products of rotated queries and keys
        depend only on the position difference.
    """
    half = x.size(-1) // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def relative_positions(steps: int, dim: int, device: torch.device | None = None,
                       dtype: torch.dtype = torch.float32) -> Tensor:
    """Sinusoidal table of the relative positions ``steps - 1, ..., 0, ..., -(steps - 1)``.

    ESPnet's "latest" ``RelPositionalEncoding``: row ``m`` encodes the relative
    position ``r = steps - 1 - m`` (query index minus key index) as
    ``sin(r w), cos(r w)`` interleaved, with the usual frequencies ``w``.

    Args:
        steps: sequence length T.
        dim: model dimension (even).
        device: device of the table.
        dtype: dtype of the table.

    Returns:
        (2 T - 1, dim) table.
    """
    rel = torch.arange(steps - 1, -steps, -1, device=device, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(2 * steps - 1, dim, device=device)
    table[:, 0::2] = torch.sin(rel * freq)
    table[:, 1::2] = torch.cos(rel * freq)
    return table.to(dtype)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with optional RoPE or relative positions, key padding and causal masks.

    Args:
        d_model: model dimension.
        n_heads: attention heads (must divide ``d_model``; head dim even with RoPE).
        dropout: attention-probability dropout.
        rotary: apply rotary position embeddings to queries and keys.
        rel_pos: ESPnet relative-position attention (self-attention only):
            scores ``((q + u) k + (q + v) W p_{i-j}) / sqrt(d)`` with the
            table of :func:`relative_positions` projected by ``linear_pos``.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, rotary: bool = False,
                 rel_pos: bool = False) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if rotary and rel_pos:
            raise ValueError("choose rotary or relative-position attention, not both")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        if rotary and self.head_dim % 2:
            raise ValueError("rotary attention needs an even head dimension")
        self.rotary = rotary
        self.rel_pos = rel_pos
        self.dropout = dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        if rel_pos:
            self.linear_pos = nn.Linear(d_model, d_model, bias=False)
            self.pos_bias_u = nn.Parameter(torch.empty(n_heads, self.head_dim))
            self.pos_bias_v = nn.Parameter(torch.empty(n_heads, self.head_dim))
            nn.init.xavier_uniform_(self.pos_bias_u)
            nn.init.xavier_uniform_(self.pos_bias_v)

    def _relative_scores(self, q: Tensor, pos_emb: Tensor) -> Tensor:
        """Position term ``(q + v) W p_{i-j} / sqrt(d)`` of relative-position attention.

        Args:
            q: (B, H, T, D / H) queries (without bias).
            pos_emb: (2 T - 1, D) table from :func:`relative_positions`.

        Returns:
            (B, H, T, T) additive scores.
        """
        t = q.size(2)
        p = self.linear_pos(pos_emb.to(q.dtype)).view(-1, self.n_heads, self.head_dim).transpose(0, 1)
        full = torch.matmul(q + self.pos_bias_v.view(1, self.n_heads, 1, -1), p.transpose(-2, -1))
        # key j of query i sits at row T - 1 - i + j of the table (relative position i - j)
        index = (t - 1 - torch.arange(t, device=q.device).view(t, 1) + torch.arange(t, device=q.device))
        scores = torch.gather(full, 3, index.view(1, 1, t, t).expand(q.size(0), self.n_heads, t, t))
        return scores / math.sqrt(self.head_dim)

    def split_heads(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, H, L, D / H)."""
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def key_values(self, key_value: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values, split into heads (before any rotary embedding).

        Args:
            key_value: (B, S, D).

        Returns:
            keys, values: (B, H, S, D / H) each.
        """
        k, v = self.kv(key_value).chunk(2, dim=-1)
        return self.split_heads(k), self.split_heads(v)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None = None) -> Tensor:
        """Scaled dot-product attention over heads, merged and projected.

        Args:
            q: (B, H, L, D / H) queries.
            k: (B, H, S, D / H) keys.
            v: (B, H, S, D / H) values.
            allowed: bool mask broadcastable to (B, H, L, S), True where
                attending is allowed, a float mask added to the scores, or ``None``.

        Returns:
            (B, L, D).
        """
        y = nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        b, h, length, head_dim = y.shape
        return self.out(y.transpose(1, 2).reshape(b, length, h * head_dim))

    def forward(
        self,
        query: Tensor,
        key_value: Tensor,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
        window: int = 0,
        pos_emb: Tensor | None = None,
    ) -> Tensor:
        """Attend.

        Args:
            query: (B, L, D).
            key_value: (B, S, D).
            key_padding_mask: (B, S) bool, True on padded keys (ignored).
            causal: forbid attending to later positions (needs L == S).
            window: if > 0, each query attends only to keys at most this many
                steps away (time-restricted self-attention; needs L == S).
            pos_emb: (2 L - 1, D) relative-position table (with ``rel_pos``;
                default: :func:`relative_positions` of L).

        Returns:
            (B, L, D).
        """
        b, length, _ = query.shape
        q = self.split_heads(self.q(query))
        k, v = self.key_values(key_value)
        if self.rotary:
            steps = max(length, k.size(2))
            cos, sin = rotary_tables(steps, self.head_dim, q.device, q.dtype)
            q = apply_rotary(q, cos[:length], sin[:length])
            k = apply_rotary(k, cos[: k.size(2)], sin[: k.size(2)])
        allowed: Tensor | None = None
        if key_padding_mask is not None:
            allowed = (~key_padding_mask).view(b, 1, 1, -1)
        if causal:
            tri = torch.ones(length, k.size(2), dtype=torch.bool, device=q.device).tril()
            allowed = tri.view(1, 1, length, -1) if allowed is None else allowed & tri
        if window > 0:
            pos = torch.arange(length, device=q.device)
            band = ((pos[:, None] - pos[None, :]).abs() <= window).view(1, 1, length, length)
            allowed = band if allowed is None else allowed & band
        if not self.rel_pos:
            return self.attend(q, k, v, allowed)
        if pos_emb is None:
            pos_emb = relative_positions(length, q.size(1) * self.head_dim, q.device, q.dtype)
        bias = self._relative_scores(q, pos_emb)
        if allowed is not None:
            bias = bias.masked_fill(~allowed, float("-inf"))
        return self.attend(q + self.pos_bias_u.view(1, self.n_heads, 1, -1), k, v, bias)


_FF_ACTIVATIONS = {"swish": nn.SiLU, "relu": nn.ReLU}


class FeedForward(nn.Module):
    """Pre-LayerNorm position-wise feed-forward block (without the residual).

    Args:
        d_model: model dimension.
        d_ff: hidden dimension.
        dropout: dropout after the activation and after the output projection.
        activation: ``"swish"`` (SiLU, default) or ``"relu"`` (ESPnet's
            ``PositionwiseFeedForward``, as in Auto-AVSR).
    """

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "swish") -> None:
        super().__init__()
        if activation not in _FF_ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_FF_ACTIVATIONS)}, got {activation!r}")
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, d_ff),
            _FF_ACTIVATIONS[activation](),
            nn.Dropout(dropout),
            nn.Linear(d_ff, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, D)."""
        return self.net(x)


class ConvModule(nn.Module):
    """Conformer convolution module (without the residual).

    LayerNorm -> pointwise conv + GLU -> zero padded steps -> depthwise conv ->
    norm -> SiLU -> pointwise conv -> dropout.

    Args:
        d_model: model dimension.
        kernel_size: depthwise kernel size (odd).
        dropout: output dropout.
        norm: ``"layer"`` (default: statistics per step, so training never
            mixes padding into them and batch size 1 is fine) or ``"batch"``
            (the original conformer; in training mode its statistics include
            padded steps, in evaluation mode it is padding invariant).
    """

    def __init__(self, d_model: int, kernel_size: int = 15, dropout: float = 0.0, norm: str = "layer") -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd")
        if norm not in ("layer", "batch"):
            raise ValueError(f"norm must be 'layer' or 'batch', got {norm!r}")
        self.norm_in = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Linear(d_model, 2 * d_model)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        self.norm_kind = norm
        self.norm_mid = nn.LayerNorm(d_model) if norm == "layer" else nn.BatchNorm1d(d_model)
        self.act = nn.SiLU()
        self.pointwise_out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """Convolve.

        Args:
            x: (B, T, D).
            valid: (B, T) bool, True on valid steps.

        Returns:
            (B, T, D).
        """
        y = nn.functional.glu(self.pointwise_in(self.norm_in(x)), dim=-1)
        y = y * valid.unsqueeze(-1).to(y.dtype)
        y = self.depthwise(y.transpose(1, 2))  # (B, D, T)
        if self.norm_kind == "batch":
            y = self.norm_mid(y).transpose(1, 2)
        else:
            y = self.norm_mid(y.transpose(1, 2))
        return self.dropout(self.pointwise_out(self.act(y)))


ATTENTIONS = ("rotary", "rel_pos")
"""Self-attention kinds of the conformer: RoPE (default) or ESPnet relative positions."""


class ConformerBlock(nn.Module):
    """Conformer block: ½FFN, self-attention, convolution, ½FFN, LayerNorm.

    Args:
        d_model: model dimension.
        n_heads: attention heads.
        d_ff: feed-forward hidden dimension.
        kernel_size: depthwise convolution kernel.
        dropout: dropout rate.
        conv_norm: normalisation in the convolution module (``"layer"``/``"batch"``).
        attention_window: if > 0, self-attention reaches only this many steps
            to either side (keeps what a step encodes near its own time, so
            CTC spikes stay where the words are).
        attention: ``"rotary"`` (RoPE) or ``"rel_pos"`` (ESPnet relative positions).
        ff_activation: ``"swish"`` or ``"relu"`` in the feed-forward blocks.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        kernel_size: int = 15,
        dropout: float = 0.0,
        conv_norm: str = "layer",
        attention_window: int = 0,
        attention: str = "rotary",
        ff_activation: str = "swish",
    ) -> None:
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
        self.attention_window = int(attention_window)
        self.ffn1 = FeedForward(d_model, d_ff, dropout, ff_activation)
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(
            d_model, n_heads, dropout, rotary=attention == "rotary", rel_pos=attention == "rel_pos"
        )
        self.attn_dropout = nn.Dropout(dropout)
        self.conv = ConvModule(d_model, kernel_size, dropout, conv_norm)
        self.ffn2 = FeedForward(d_model, d_ff, dropout, ff_activation)
        self.norm_out = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, valid: Tensor, pos_emb: Tensor | None = None) -> Tensor:
        """(B, T, D), valid (B, T) bool, optional (2T - 1, D) relative positions -> (B, T, D)."""
        x = x + 0.5 * self.ffn1(x)
        h = self.attn_norm(x)
        x = x + self.attn_dropout(
            self.attn(h, h, key_padding_mask=~valid, window=self.attention_window, pos_emb=pos_emb)
        )
        x = x + self.conv(x, valid)
        x = x + 0.5 * self.ffn2(x)
        return self.norm_out(x)


class Conformer(nn.Module):
    """A stack of :class:`ConformerBlock`.

    With ``attention="rel_pos"`` the stack is ESPnet's conformer encoder
    (as used by Auto-AVSR): the input is scaled by ``sqrt(d_model)`` (ESPnet's
    ``RelPositionalEncoding``) and every block shares one relative-position
    table. ``final_norm`` adds ESPnet's ``after_norm`` LayerNorm on the output.

    Args:
        d_model: model dimension.
        n_layers: number of blocks.
        n_heads: attention heads.
        d_ff: feed-forward hidden dimension.
        kernel_size: depthwise convolution kernel.
        dropout: dropout rate.
        conv_norm: ``"layer"`` or ``"batch"`` (see :class:`ConvModule`).
        attention_window: self-attention reach in steps to either side (0: unlimited).
        attention: ``"rotary"`` or ``"rel_pos"``.
        ff_activation: ``"swish"`` or ``"relu"``.
        final_norm: LayerNorm after the last block.

    Example:
        >>> enc = Conformer(d_model=16, n_layers=2, n_heads=2, d_ff=32).eval()
        >>> y, n = enc(torch.randn(2, 9, 16), torch.tensor([9, 4]))
        >>> tuple(y.shape), n.tolist()
        ((2, 9, 16), [9, 4])
    """

    def __init__(
        self,
        d_model: int = 256,
        n_layers: int = 12,
        n_heads: int = 4,
        d_ff: int = 1024,
        kernel_size: int = 15,
        dropout: float = 0.1,
        conv_norm: str = "layer",
        attention_window: int = 0,
        attention: str = "rotary",
        ff_activation: str = "swish",
        final_norm: bool = False,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.attention = attention
        self.layers = nn.ModuleList(
            ConformerBlock(d_model, n_heads, d_ff, kernel_size, dropout, conv_norm, attention_window,
                           attention, ff_activation)
            for _ in range(n_layers)
        )
        self.after_norm = nn.LayerNorm(d_model) if final_norm else None

    def forward_layers(self, x: Tensor, lengths: Tensor, n_layers: int | None = None) -> list[Tensor]:
        """Outputs of the first ``n_layers`` blocks (all by default).

        Args:
            x: (B, T, D) input.
            lengths: (B,) valid steps.
            n_layers: number of blocks to run.

        Returns:
            list of (B, T, D) block outputs, zero on padded steps; the last
            one passes through ``after_norm`` when the stack has one and all
            blocks ran.
        """
        valid = lengths_to_mask(lengths, x.size(1))
        keep = valid.unsqueeze(-1).to(x.dtype)
        layers = self.layers[: n_layers if n_layers is not None else len(self.layers)]
        pos_emb = None
        if self.attention == "rel_pos" and len(layers):
            x = x * math.sqrt(self.d_model)
            pos_emb = relative_positions(x.size(1), self.d_model, x.device, x.dtype)
        outputs = []
        for layer in layers:
            x = layer(x, valid, pos_emb) * keep
            outputs.append(x)
        if self.after_norm is not None and outputs and len(layers) == len(self.layers):
            outputs[-1] = self.after_norm(outputs[-1]) * keep
        return outputs

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Encode.

        Args:
            x: (B, T, D) input.
            lengths: (B,) valid steps.

        Returns:
            (B, T, D) output (zero on padded steps) and the (B,) lengths.
        """
        outputs = self.forward_layers(x, lengths)
        return (outputs[-1] if outputs else x), lengths


class SpanMasker(nn.Module):
    """Span masking with a learned mask embedding (AV-HuBERT / wav2vec 2.0 style).

    For an utterance of ``L`` valid steps, ``max(1, round(mask_prob * L /
    span))`` span starts are drawn uniformly from ``[0, L - span]`` and the
    ``span`` steps after each start are masked (spans may overlap, so the
    masked fraction is at most ``mask_prob``). Masked steps are replaced by
    the mask embedding; padded steps are never masked.

    Args:
        d_model: feature dimension.
        mask_prob: fraction of steps used as span starts × span.
        span: span length in steps (10 steps = 0.4 s at 25 fps).
    """

    def __init__(self, d_model: int, mask_prob: float = 0.5, span: int = 10) -> None:
        super().__init__()
        if not 0.0 <= mask_prob <= 1.0 or span < 1:
            raise ValueError("need 0 <= mask_prob <= 1 and span >= 1")
        self.mask_prob = mask_prob
        self.span = span
        self.embedding = nn.Parameter(torch.empty(d_model).uniform_(-0.1, 0.1))

    def sample(self, lengths: Tensor, steps: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw span masks.

        Args:
            lengths: (B,) valid steps.
            steps: size T of the time axis.
            generator: optional random generator.

        Returns:
            (B, T) bool, True on masked steps (only valid steps).
        """
        mask = torch.zeros(lengths.numel(), steps, dtype=torch.bool)
        if self.mask_prob <= 0:
            return mask.to(lengths.device)
        for b, length in enumerate(lengths.tolist()):
            if length <= 0:
                continue
            span = min(self.span, length)
            n_spans = max(1, round(self.mask_prob * length / span))
            starts = torch.randint(0, length - span + 1, (n_spans,), generator=generator)
            for start in starts.tolist():
                mask[b, start : start + span] = True
        return mask.to(lengths.device)

    def forward(self, x: Tensor, lengths: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mask.

        Args:
            x: (B, T, D) features.
            lengths: (B,) valid steps.
            mask: (B, T) bool to use instead of drawing one.

        Returns:
            masked features (B, T, D) and the (B, T) bool mask.
        """
        if mask is None:
            mask = self.sample(lengths, x.size(1))
        filled = torch.where(mask.unsqueeze(-1), self.embedding.to(x.dtype).expand_as(x), x)
        return filled, mask


@dataclass
class EncoderOutput:
    """What :class:`AVEncoder` returns.

    Attributes:
        features: (B, T, D) encoder output at 25 fps, zero on padded steps.
        lengths: (B,) valid steps.
        mask: (B, T) bool span mask applied to the input, or ``None``.
        hidden: per-block outputs (B, T, D) when requested, else ``None``.
    """

    features: Tensor
    lengths: Tensor
    mask: Tensor | None = None
    hidden: list[Tensor] | None = None


class AVEncoder(nn.Module):
    """Frontends -> (per-stream conformers) -> fusion (modality dropout) -> optional span masking -> conformer.

    The default is early fusion: both frontends feed one shared conformer.
    A model may also read one modality only (the other frontend is ``None``:
    Auto-AVSR's audio and video models), or encode each stream with its own
    conformer before a late fusion (``audio_encoder``/``video_encoder``:
    Auto-AVSR's audio-visual model, whose shared conformer has no blocks).

    Args:
        audio_frontend: waveform -> (B, T, Da) at 25 fps, or ``None`` (no audio input).
        video_frontend: mouth frames -> (B, T, Dv) at 25 fps, or ``None`` (no video input).
        fusion: aligns and fuses the streams to (B, T, D).
        conformer: the encoder layers after the fusion.
        masker: span masker used when ``mask=True`` (in training) or with a
            given ``span_mask``, or ``None`` (no span masking).
        audio_encoder: conformer of the audio stream before the fusion, or ``None``.
        video_encoder: conformer of the video stream before the fusion, or ``None``.
    """

    def __init__(
        self,
        audio_frontend: nn.Module | None,
        video_frontend: VideoFrontend | None,
        fusion: AVFusion,
        conformer: Conformer,
        masker: SpanMasker | None,
        audio_encoder: Conformer | None = None,
        video_encoder: Conformer | None = None,
    ) -> None:
        super().__init__()
        if audio_frontend is None and video_frontend is None:
            raise ValueError("an encoder needs at least one frontend")
        self.audio_frontend = audio_frontend
        self.video_frontend = video_frontend
        self.fusion = fusion
        self.conformer = conformer
        self.masker = masker
        self.audio_encoder = audio_encoder
        self.video_encoder = video_encoder

    @property
    def modalities(self) -> tuple[str, ...]:
        """The inputs this encoder reads: ``("audio", "video")``, ``("audio",)`` or ``("video",)``."""
        return tuple(m for m, fe in (("audio", self.audio_frontend), ("video", self.video_frontend))
                     if fe is not None)

    @staticmethod
    def _lengths(x: Tensor, lengths: Tensor | None) -> Tensor:
        if lengths is None:
            return torch.full((x.size(0),), x.size(1), dtype=torch.long, device=x.device)
        if lengths.shape != (x.size(0),):
            raise InputError(None, f"lengths must have shape ({x.size(0)},), got {tuple(lengths.shape)}")
        if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > x.size(1)):
            raise InputError(None, f"lengths must lie in [0, {x.size(1)}], got {lengths.tolist()}")
        return lengths.to(device=x.device, dtype=torch.long)

    def forward(
        self,
        audio: Tensor | None = None,
        audio_lengths: Tensor | None = None,
        video: Tensor | None = None,
        video_lengths: Tensor | None = None,
        *,
        mask: bool = False,
        span_mask: Tensor | None = None,
        mask_in_eval: bool = False,
        return_hidden: bool = False,
        n_layers: int | None = None,
    ) -> EncoderOutput:
        """Encode either or both modalities.

        Args:
            audio: (B, N) 16 kHz waveform, or ``None`` (video-only pass).
            audio_lengths: (B,) valid samples (default all ``N``).
            video: (B, T, H, W) mouth frames (uint8 or float in [0, 1]), or ``None``.
            video_lengths: (B,) valid frames (default all ``T``).
            mask: sample span masks and apply them to the fused input, in
                training mode only (like dropout): a loop that masks while
                training does not mask its validation or inference passes.
            span_mask: (B, T') bool mask to apply instead of sampling one;
                applied in any mode.
            mask_in_eval: with ``mask``, sample in evaluation mode too (the
                masked-prediction loss of pretraining needs masked steps in
                validation as well).
            return_hidden: also return every block's output.
            n_layers: run only the first ``n_layers`` blocks (feature extraction).

        Returns:
            :class:`EncoderOutput`; ``T' = max(lengths)`` with, per utterance,
            ``ceil(samples / 640)`` audio steps and ``frames`` video steps
            reduced to the shorter one when both are given.
        """
        if audio is None and video is None:
            raise InputError(None, "need audio, video or both")
        if audio is not None and self.audio_frontend is None:
            raise InputError(None, "this model reads video only: it was given audio")
        if video is not None and self.video_frontend is None:
            raise InputError(None, "this model reads audio only: it was given video")
        if audio is not None and video is not None and audio.size(0) != video.size(0):
            raise InputError(None, f"audio batch ({audio.size(0)}) and video batch ({video.size(0)}) differ")
        a = a_len = v = v_len = None
        if audio is not None:
            a, a_len = self.audio_frontend(audio, self._lengths(audio, audio_lengths))
            if self.audio_encoder is not None:
                a, a_len = self.audio_encoder(a, a_len)
        if video is not None:
            v, v_len = self.video_frontend(video, self._lengths(video, video_lengths))
            if self.video_encoder is not None:
                v, v_len = self.video_encoder(v, v_len)
        x, lengths = self.fusion(a, a_len, v, v_len)
        if int(lengths.min()) < 1:
            raise InputError(None, "every utterance needs at least one audio sample or video frame")
        applied: Tensor | None = None
        if span_mask is not None or (mask and (self.training or mask_in_eval)):
            if self.masker is None:
                raise InputError(None, "this encoder has no span masker (built with span_masking=False)")
            x, applied = self.masker(x, lengths, span_mask)
        hidden = self.conformer.forward_layers(x, lengths, n_layers)
        features = hidden[-1] if hidden else x
        return EncoderOutput(features, lengths, applied, hidden if return_hidden else None)
