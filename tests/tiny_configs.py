"""Model configurations small enough for unit tests on a 2-core CPU."""

from __future__ import annotations

#: The smallest AVSRModel that still has every part (two conformer layers, a
#: decoder layer, a two-stage video trunk on 24x24 crops).
SMALL_MODEL: dict = dict(
    vocab_size=12,
    d_model=32,
    audio_channels=4,
    video_width=4,
    video_layers=[1, 1],
    encoder_layers=2,
    encoder_heads=2,
    encoder_ff=64,
    conv_kernel=5,
    decoder_layers=1,
    decoder_heads=2,
    decoder_ff=64,
    crop_size=24,
    dropout=0.0,
)
