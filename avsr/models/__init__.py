"""Models: frontends, fusion, masked multimodal encoder, decoders, AVSR and pretraining models.

The main entry points are re-exported here::

    from avsr.models import avsr_tiny, build_model
    model = avsr_tiny(vocab_size=40)
    rebuilt = build_model(model.config)
"""

from avsr.models.avsr import AVSRConfig, AVSRModel, avsr_base, avsr_tiny, build_model

__all__ = ["AVSRConfig", "AVSRModel", "avsr_base", "avsr_tiny", "build_model"]
