"""Attention decoder (transformer) and CTC head.

The decoder is a pre-LayerNorm transformer: token embedding scaled by
``sqrt(d_model)`` plus sinusoidal positions (no length limit), then blocks
of causal self-attention, cross-attention to the encoder output (with its
key padding mask) and a feed-forward layer.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from avsr.audio.features import lengths_to_mask
from avsr.models.encoder import FeedForward, MultiHeadAttention

__all__ = ["sinusoidal_positions", "DecoderLayer", "TransformerDecoder", "CTCHead"]


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


class DecoderLayer(nn.Module):
    """Pre-LN decoder block: causal self-attention, cross-attention, feed-forward.

    Args:
        d_model: model dimension.
        n_heads: attention heads.
        d_ff: feed-forward hidden dimension.
        dropout: dropout rate.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.cross_norm = nn.LayerNorm(d_model)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout)
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


class TransformerDecoder(nn.Module):
    """Causal transformer decoder over token ids, attending to the encoder output.

    Args:
        vocab_size: output vocabulary size V (includes blank and sos/eos).
        d_model: model dimension (equal to the encoder's).
        n_layers: decoder blocks.
        n_heads: attention heads.
        d_ff: feed-forward hidden dimension.
        dropout: dropout rate.

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
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Embedding(vocab_size, d_model)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(DecoderLayer(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)

    def forward(self, tokens: Tensor, memory: Tensor, memory_lengths: Tensor) -> Tensor:
        """Next-token logits for every prefix.

        Args:
            tokens: (B, L) long ids starting with sos (no negative ids).
            memory: (B, T, D) encoder output.
            memory_lengths: (B,) valid encoder steps.

        Returns:
            (B, L, V) logits; position ``i`` predicts token ``i + 1``.
        """
        length = tokens.size(1)
        x = self.embed(tokens) * math.sqrt(self.d_model)
        x = self.dropout(x + sinusoidal_positions(length, self.d_model, tokens.device).to(x.dtype))
        padding = ~lengths_to_mask(memory_lengths.to(memory.device), memory.size(1))
        for layer in self.layers:
            x = layer(x, memory, padding)
        return self.out(self.norm(x))


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
