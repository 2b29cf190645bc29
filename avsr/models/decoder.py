"""Attention decoder (transformer) and CTC head.

The decoder is a pre-LayerNorm transformer: token embedding scaled by
``sqrt(d_model)`` plus sinusoidal positions (no length limit), then blocks
of causal self-attention, cross-attention to the encoder output (with its
key padding mask) and a feed-forward layer. This is ESPnet's transformer
decoder (``embed``, ``norm1``/``self_attn``, ``norm2``/``src_attn``,
``norm3``/``feed_forward``, ``after_norm``, ``output_layer``); with
``ff_activation="relu"`` it computes exactly what ESPnet's does.

Besides the full-prefix ``forward`` (training, rescoring), the decoder has an
incremental API for search: :meth:`TransformerDecoder.precompute_memory`
projects the encoder output to cross-attention keys/values once,
:meth:`TransformerDecoder.step` feeds one token per hypothesis and appends its
self-attention keys/values to a per-layer cache, and
:meth:`TransformerDecoder.select` reorders (or repeats) the cached rows when
the beam is pruned. A step costs ``O(L)`` instead of re-running the ``L``-token
prefix; its logits equal ``forward``'s last position up to float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from avsr.audio.features import lengths_to_mask
from avsr.models.encoder import FeedForward, MultiHeadAttention

__all__ = ["sinusoidal_positions", "DecoderCache", "DecoderLayer", "TransformerDecoder", "CTCHead"]


def sinusoidal_positions(steps: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Sinusoidal position table (Vaswani et al. 2017).

    Args:
        steps: number of positions L.
        dim: embedding dimension (even).
        device: device of the table.

    Returns:
        (L, dim) float table.
    """
    pos = torch.arange(steps, device=device, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(steps, dim, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table


@dataclass(frozen=True)
class DecoderCache:
    """State of incremental decoding for ``N`` hypotheses (rows).

    Built by :meth:`TransformerDecoder.precompute_memory`, advanced by
    :meth:`TransformerDecoder.step`, reordered by :meth:`TransformerDecoder.select`.
    Steps return new caches (no tensor is modified in place), so an old cache
    stays valid.

    Attributes:
        memory_keys: per layer, ``(N, H, T, D / H)`` cross-attention keys.
        memory_values: per layer, ``(N, H, T, D / H)`` cross-attention values.
        memory_allowed: ``(N, 1, 1, T)`` bool, True on valid encoder steps.
        self_keys: per layer, ``(N, H, L, D / H)`` self-attention keys of the
            ``L`` tokens fed so far.
        self_values: per layer, ``(N, H, L, D / H)`` self-attention values.
        length: ``L``, tokens fed so far (the next token's position).
    """

    memory_keys: tuple[Tensor, ...]
    memory_values: tuple[Tensor, ...]
    memory_allowed: Tensor
    self_keys: tuple[Tensor, ...]
    self_values: tuple[Tensor, ...]
    length: int

    @property
    def rows(self) -> int:
        """Number of hypotheses ``N``."""
        return self.memory_allowed.shape[0]


class DecoderLayer(nn.Module):
    """Pre-LN decoder block: causal self-attention, cross-attention, feed-forward.

    Args:
        d_model: model dimension.
        n_heads: attention heads.
        d_ff: feed-forward hidden dimension.
        dropout: dropout rate.
        ff_activation: ``"swish"`` or ``"relu"`` (ESPnet's decoder, as in Auto-AVSR).
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0,
                 ff_activation: str = "swish") -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.cross_norm = nn.LayerNorm(d_model)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout, ff_activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor, memory_padding: Tensor) -> Tensor:
        """Decode one block.

        Args:
            x: (B, L, D) token states.
            memory: (B, T, D) encoder output.
            memory_padding: (B, T) bool, True on padded encoder steps.

        Returns:
            (B, L, D).
        """
        h = self.self_norm(x)
        x = x + self.dropout(self.self_attn(h, h, causal=True))
        x = x + self.dropout(self.cross_attn(self.cross_norm(x), memory, key_padding_mask=memory_padding))
        return x + self.ffn(x)

    def memory_key_values(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys and values of the encoder output.

        Args:
            memory: (N, T, D) encoder output.

        Returns:
            keys, values: (N, H, T, D / H) each.
        """
        return self.cross_attn.key_values(memory)

    def step(
        self,
        x: Tensor,
        self_kv: tuple[Tensor, Tensor],
        memory_kv: tuple[Tensor, Tensor],
        memory_allowed: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Decode the newest token of every row, attending to the cached ones.

        Args:
            x: (N, 1, D) state of the newest token.
            self_kv: (N, H, L, D / H) keys and values of the earlier tokens.
            memory_kv: (N, H, T, D / H) cross-attention keys and values.
            memory_allowed: (N, 1, 1, T) bool, True on valid encoder steps.

        Returns:
            y: (N, 1, D) output state.
            keys, values: (N, H, L + 1, D / H), the self-attention cache with
            the newest token appended.
        """
        sa, ca = self.self_attn, self.cross_attn
        h = self.self_norm(x)
        k_new, v_new = sa.key_values(h)
        keys = torch.cat([self_kv[0], k_new], dim=2)
        values = torch.cat([self_kv[1], v_new], dim=2)
        x = x + self.dropout(sa.attend(sa.split_heads(sa.q(h)), keys, values))
        q = ca.split_heads(ca.q(self.cross_norm(x)))
        x = x + self.dropout(ca.attend(q, memory_kv[0], memory_kv[1], memory_allowed))
        return x + self.ffn(x), keys, values


class TransformerDecoder(nn.Module):
    """Causal transformer decoder over token ids, attending to the encoder output.

    Args:
        vocab_size: output vocabulary size V (includes blank and sos/eos).
        d_model: model dimension (equal to the encoder's).
        n_layers: decoder blocks.
        n_heads: attention heads.
        d_ff: feed-forward hidden dimension.
        dropout: dropout rate.
        ff_activation: ``"swish"`` or ``"relu"`` in the feed-forward blocks.

    Example:
        >>> dec = TransformerDecoder(vocab_size=10, d_model=16, n_layers=1, n_heads=2, d_ff=32)
        >>> logits = dec(torch.tensor([[9, 3, 4]]), torch.randn(1, 6, 16), torch.tensor([6]))
        >>> tuple(logits.shape)
        (1, 3, 10)
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 256,
        n_layers: int = 6,
        n_heads: int = 4,
        d_ff: int = 1024,
        dropout: float = 0.1,
        ff_activation: str = "swish",
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Embedding(vocab_size, d_model)
        # std d_model^-0.5: after the sqrt(d_model) scaling in _embed, token
        # embeddings have unit RMS per feature, the scale of the sinusoidal
        # positions (RMS 0.71), so word order stays visible at init.
        nn.init.normal_(self.embed.weight, std=d_model**-0.5)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, n_heads, d_ff, dropout, ff_activation) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)

    def _embed(self, tokens: Tensor, offset: int = 0) -> Tensor:
        """Scaled token embeddings plus sinusoidal positions (then dropout).

        Args:
            tokens: (N, L) long ids.
            offset: position of the first token.

        Returns:
            (N, L, D) decoder input.
        """
        positions = sinusoidal_positions(offset + tokens.size(1), self.d_model, tokens.device)[offset:]
        x = self.embed(tokens) * math.sqrt(self.d_model)
        return self.dropout(x + positions.to(x.dtype))

    def forward(self, tokens: Tensor, memory: Tensor, memory_lengths: Tensor) -> Tensor:
        """Next-token logits for every prefix.

        Args:
            tokens: (B, L) long ids starting with sos (no negative ids).
            memory: (B, T, D) encoder output.
            memory_lengths: (B,) valid encoder steps.

        Returns:
            (B, L, V) logits; position ``i`` predicts token ``i + 1``.
        """
        x = self._embed(tokens)
        padding = ~lengths_to_mask(memory_lengths.to(memory.device), memory.size(1))
        for layer in self.layers:
            x = layer(x, memory, padding)
        return self.out(self.norm(x))

    def precompute_memory(self, memory: Tensor, memory_lengths: Tensor) -> DecoderCache:
        """Start incremental decoding: cross-attention keys/values computed once.

        Args:
            memory: (N, T, D) encoder output, one row per hypothesis (rows may
                repeat an utterance; :meth:`select` can also repeat them later).
            memory_lengths: (N,) valid encoder steps.

        Returns:
            a cache with no tokens fed yet; feed sos first with :meth:`step`.
        """
        allowed = lengths_to_mask(memory_lengths.to(memory.device), memory.size(1))
        keys, values = zip(*(layer.memory_key_values(memory) for layer in self.layers))
        empty = memory.new_zeros(memory.size(0), 0, memory.size(2))
        no_tokens = tuple(layer.self_attn.split_heads(empty) for layer in self.layers)
        return DecoderCache(
            memory_keys=tuple(keys),
            memory_values=tuple(values),
            memory_allowed=allowed.view(memory.size(0), 1, 1, -1),
            self_keys=no_tokens,
            self_values=no_tokens,
            length=0,
        )

    def step(self, tokens: Tensor, cache: DecoderCache) -> tuple[Tensor, DecoderCache]:
        """Feed one token per row and get the next-token logits.

        ``step`` over ``sos, y1, ..., yL`` gives, at each call, the logits that
        :meth:`forward` gives at the matching position of ``[sos, y1, ..., yL]``.

        Args:
            tokens: (N,) long, the newest token of every row (sos first).
            cache: state from :meth:`precompute_memory` or an earlier step.

        Returns:
            logits: (N, V) for the token after ``tokens``.
            cache: the new state (``cache`` itself is left unchanged).
        """
        x = self._embed(tokens.view(-1, 1), cache.length)
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            x, k, v = layer.step(
                x,
                (cache.self_keys[i], cache.self_values[i]),
                (cache.memory_keys[i], cache.memory_values[i]),
                cache.memory_allowed,
            )
            keys.append(k)
            values.append(v)
        logits = self.out(self.norm(x))[:, 0]
        new = DecoderCache(
            cache.memory_keys, cache.memory_values, cache.memory_allowed, tuple(keys), tuple(values), cache.length + 1
        )
        return logits, new

    @staticmethod
    def select(cache: DecoderCache, index: Tensor) -> DecoderCache:
        """Keep (reorder, repeat) rows of a cache, e.g. the survivors of a beam.

        Args:
            cache: state of ``N`` rows.
            index: (M,) long row numbers in ``[0, N)``.

        Returns:
            the state of the ``M`` selected rows.
        """
        index = index.to(cache.memory_allowed.device)

        def pick(ts: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            return tuple(t.index_select(0, index) for t in ts)

        return DecoderCache(
            pick(cache.memory_keys),
            pick(cache.memory_values),
            cache.memory_allowed.index_select(0, index),
            pick(cache.self_keys),
            pick(cache.self_values),
            cache.length,
        )


class CTCHead(nn.Module):
    """Linear projection to the vocabulary followed by log-softmax.

    Args:
        d_model: encoder dimension.
        vocab_size: vocabulary size V (id 0 is the CTC blank).
        dropout: dropout before the projection.
    """

    def __init__(self, d_model: int, vocab_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(d_model, vocab_size)

    def forward(self, enc: Tensor) -> Tensor:
        """(B, T, D) encoder output -> (B, T, V) log-probabilities."""
        return self.proj(self.dropout(enc)).log_softmax(dim=-1)
