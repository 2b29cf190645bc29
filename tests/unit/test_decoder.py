"""Tests of avsr.models.decoder initialisation: token embeddings on the scale of the positions."""

from __future__ import annotations

import math

import pytest
import torch

from avsr.models.avsr import BASE, TINY
from avsr.models.decoder import TransformerDecoder, sinusoidal_positions


def rms(x: torch.Tensor) -> float:
    """Root mean square over all elements."""
    return float(x.float().pow(2).mean().sqrt())


@pytest.mark.parametrize("preset", [TINY, BASE], ids=["tiny", "base"])
def test_scaled_token_embeddings_match_the_position_scale(preset: dict) -> None:
    """At init, ``embed * sqrt(d)`` must not drown the sinusoidal positions (RMS 0.71).

    With nn.Embedding's N(0, 1) init the scaled embeddings had RMS ``sqrt(d)``
    (11.3 tiny, 22.6 base), so the decoder hardly saw word order.
    """
    torch.manual_seed(0)
    d = preset["d_model"]
    dec = TransformerDecoder(
        vocab_size=64, d_model=d, n_layers=1, n_heads=preset["decoder_heads"], d_ff=2 * d, dropout=0.0
    )
    token_rms = rms(dec.embed.weight.detach() * math.sqrt(d))
    position_rms = rms(sinusoidal_positions(200, d))
    assert position_rms == pytest.approx(math.sqrt(0.5), rel=0.02)
    assert 0.5 <= token_rms / position_rms <= 2.0, (token_rms, position_rms)
