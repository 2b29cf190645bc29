"""Transcriber options for imported models: int8 quantisation, single-modality models, bundle defaults."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avsr.errors import InputError
from avsr.inference import Transcriber, bundle_decoding, quantize_linear
from avsr.io import AVClip
from avsr.models.avsr import auto_avsr_config, avsr_tiny, build_model
from avsr.tokenizer import CharTokenizer

TOK = CharTokenizer(list("ab "))


def test_quantize_linear_replaces_linears_and_stays_close():
    torch.manual_seed(0)
    model = avsr_tiny(TOK.vocab_size, encoder_layers=1, decoder_layers=1).eval()
    wave = 0.1 * torch.randn(1, 16000)
    with torch.no_grad():
        ref = model.ctc_log_probs(model.encode(wave, None, None, None)[0])
        quantize_linear(model)
        out = model.ctc_log_probs(model.encode(wave, None, None, None)[0])
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    assert (out - ref).abs().max() < 0.5 and (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.8


def test_quantized_transcriber_runs_and_refuses_cuda():
    torch.manual_seed(0)
    tr = Transcriber(avsr_tiny(TOK.vocab_size, encoder_layers=1, decoder_layers=1), TOK, beam_size=2,
                     device="cpu", quantize=True)
    clip = AVClip("tone", None, None, None, 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32),
                  16000)
    assert set(tr.transcribe(clip)) == {"duration", "input", "segments", "text", "words"}
    with pytest.raises(InputError, match="jobs"):
        next(tr.transcribe_many(["a.mp4", "b.mp4"], jobs=2))


def test_single_modality_model_restricts_the_modality():
    config = auto_avsr_config(TOK.vocab_size, "video", d_model=32, encoder_heads=2, decoder_heads=2, encoder_ff=32,
                              decoder_ff=32, encoder_layers=1, decoder_layers=1, video_width=4,
                              video_layers=[1, 1, 1, 1], conv_kernel=3)
    model = build_model(config)
    assert model.modalities == ("video",)
    tr = Transcriber(model, TOK, device="cpu", beam_size=1)
    assert tr._model_modality("auto") == "video"
    with pytest.raises(InputError, match="reads video only"):
        tr._model_modality("av")
    with pytest.raises(InputError, match="reads video only"):
        model.encode(torch.zeros(1, 640), None, None, None)


def test_bundle_decoding_reads_only_valid_settings():
    assert bundle_decoding({"decoding": {"beam_size": 40, "ctc_weight": 0.1, "length_bonus": 0.0}}) == {
        "beam_size": 40, "ctc_weight": 0.1}
    assert bundle_decoding({}) == {} and bundle_decoding({"decoding": "x"}) == {}
