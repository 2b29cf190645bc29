"""EnhancerModel: shapes, the identity start, the audio-only mode, gain invariance, bundles, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avsr.checkpoints import ENHANCER_KIND, load_enhancer, load_model, save_model
from avsr.errors import InputError
from avsr.metrics import si_sdr
from avsr.models.enhancer import (
    ENHANCER_KIND as MODEL_KIND, EnhancerConfig, build_enhancer, enhancer_base, enhancer_tiny, si_sdr_loss,
)
from transcribe_fixtures import make_bundle

#: A small enhancer with every part (a two-stage video trunk on 24x24 crops).
SMALL = dict(d_model=16, encoder_layers=1, encoder_heads=2, encoder_ff=32, conv_kernel=5, video_dim=8, video_width=4, video_layers=[1, 1], crop_size=24, dropout=0.0)


def speech_like(n: int = 16000, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    x = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) / k for k, f in enumerate((180, 360, 540, 1500), 1))
    return torch.from_numpy((0.1 * x * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32))


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    """The model with a mask head far from the identity, so the inputs visibly matter."""
    torch.manual_seed(0)
    with torch.no_grad():
        model.mask.weight.normal_(0, 0.1)
    return model.eval()


def test_shapes_and_padding_of_a_batch() -> None:
    model = build_enhancer(SMALL).eval()
    audio = torch.randn(2, 8000) * 0.1
    video = torch.randint(0, 256, (2, 13, 32, 32), dtype=torch.uint8)
    y = model.enhance(audio, torch.tensor([8000, 5000]), video, torch.tensor([13, 8]))
    assert y.shape == (2, 8000) and y.dtype == torch.float32
    assert y[1, 5000:].abs().max() == 0
    out = model(audio, None, video, None, clean=audio)
    assert out["loss"].shape == () and out["si_sdr"].shape == (2,) and out["enhanced"].shape == (2, 8000)


def test_an_untrained_model_returns_its_input() -> None:
    """The mask head starts at M = 1: clean speech passes through (SI-SDR far above 20 dB)."""
    x = speech_like()
    for model in (build_enhancer(SMALL).eval(), enhancer_tiny().eval()):
        y = model.enhance(x.unsqueeze(0))[0]
        assert si_sdr(y.detach().numpy(), x.numpy()) > 30


def test_identity_mask_reconstructs_exactly() -> None:
    model = build_enhancer(SMALL)
    x = speech_like(12345).unsqueeze(0)
    spec = model.stft(x)
    assert spec.shape == (1, 12345 // 160 + 1, 257)
    torch.testing.assert_close(model.istft(spec, 12345), x, atol=1e-5, rtol=0)
    z = torch.zeros(1, spec.size(1), 2 * 257)
    z[..., :257] = model.cfg.max_mask * np.arctanh(1 / model.cfg.max_mask)  # the head's bias at init
    torch.testing.assert_close(model.istft(model.apply_mask(spec, z), 12345), x, atol=1e-5, rtol=0)


def test_mask_magnitude_is_bounded() -> None:
    model = build_enhancer(SMALL)
    spec = torch.ones(1, 3, 257, dtype=torch.complex64)
    masked = model.apply_mask(spec, torch.randn(1, 3, 514) * 100)
    assert masked.abs().max() <= model.cfg.max_mask + 1e-5


def test_audio_only_is_no_video_or_no_face() -> None:
    model = randomised(build_enhancer(SMALL))
    x = speech_like(8000).unsqueeze(0)
    video = torch.randint(0, 256, (1, 13, 32, 32), dtype=torch.uint8)
    audio_only = model.enhance(x)
    no_face = model.enhance(x, None, video, None, torch.zeros(1, 13, dtype=torch.bool))
    with_lips = model.enhance(x, None, video)
    torch.testing.assert_close(no_face, audio_only)
    assert (with_lips - audio_only).abs().max() > 1e-4
    # frames with a face change only the stretch they cover (through the encoder), frames without match audio-only
    half = torch.zeros(1, 13, dtype=torch.bool)
    half[0, :6] = True
    assert not torch.allclose(model.enhance(x, None, video, None, half), audio_only)


def test_gain_invariance() -> None:
    model = randomised(build_enhancer(SMALL))
    x = speech_like(8000).unsqueeze(0)
    torch.testing.assert_close(model.enhance(3.0 * x), 3.0 * model.enhance(x), atol=1e-4, rtol=1e-3)


def test_video_dropout_only_in_training() -> None:
    model = randomised(build_enhancer({**SMALL, "video_drop_prob": 1.0}))
    x = speech_like(8000).unsqueeze(0)
    video = torch.randint(0, 256, (1, 13, 32, 32), dtype=torch.uint8)
    model.train()
    model.video.augment = False
    torch.testing.assert_close(model.enhance(x, None, video), model.enhance(x))  # always dropped in training
    model.eval()
    assert not torch.allclose(model.enhance(x, None, video), model.enhance(x))


def test_frozen_video_frontend_stays_in_eval_mode() -> None:
    model = build_enhancer({**SMALL, "freeze_video": True}).train()
    assert model.training and not model.video.training
    assert not any(p.requires_grad for p in model.video.parameters())
    assert all(p.requires_grad for p in model.encoder.parameters())


def test_si_sdr_loss_matches_the_metric() -> None:
    clean = speech_like(8000)
    noisy = clean + 0.05 * torch.randn(8000, generator=torch.Generator().manual_seed(1))
    loss, ratio = si_sdr_loss(torch.stack([noisy, noisy]), torch.stack([clean, clean]), torch.tensor([8000, 4000]),
                              max_db=None)
    assert ratio[0].item() == pytest.approx(si_sdr(noisy.numpy(), clean.numpy()), abs=1e-3)
    assert ratio[1].item() == pytest.approx(si_sdr(noisy[:4000].numpy(), clean[:4000].numpy()), abs=1e-3)
    assert loss.item() == pytest.approx(-ratio.mean().item())


def test_config_round_trip_and_presets() -> None:
    model = enhancer_tiny()
    assert model.config["kind"] == ENHANCER_KIND == MODEL_KIND
    rebuilt = build_enhancer(model.config)
    assert rebuilt.config == model.config
    assert sum(p.numel() for p in model.parameters()) < 2e6
    assert enhancer_base().config["d_model"] == 256
    with pytest.raises(ValueError, match="unknown enhancer config keys: nope"):
        EnhancerConfig.from_dict({"nope": 1})
    with pytest.raises(ValueError, match="hop must divide 640"):
        build_enhancer({"hop": 300})


def test_bad_input_shapes() -> None:
    model = build_enhancer(SMALL)
    with pytest.raises(InputError, match="audio must be"):
        model.enhance(torch.zeros(8000))
    with pytest.raises(InputError, match="video must be"):
        model.enhance(torch.zeros(1, 8000), None, torch.zeros(2, 13, 32, 32, dtype=torch.uint8))
    with pytest.raises(InputError, match="differ in shape"):
        model(torch.zeros(1, 8000), None, None, None, clean=torch.zeros(1, 7000))


def test_bundles(tmp_path) -> None:
    model = randomised(build_enhancer(SMALL))
    path = tmp_path / "enh.safetensors"
    save_model(path, model, None)
    loaded = load_enhancer(path)
    assert not loaded.training and loaded.config == model.config
    x = speech_like(8000).unsqueeze(0)
    torch.testing.assert_close(loaded.enhance(x), model.enhance(x))
    with pytest.raises(InputError, match="speech enhancement bundle, not a recognition model"):
        load_model(path)
    make_bundle(tmp_path / "asr.safetensors")
    with pytest.raises(InputError, match="not a speech enhancement bundle"):
        load_enhancer(tmp_path / "asr.safetensors")
    with pytest.raises(InputError, match="no such file"):
        load_enhancer(tmp_path / "missing.safetensors")


def test_the_loss_is_softly_capped() -> None:
    clean = speech_like(8000)
    lengths = torch.tensor([8000])
    loss, ratio = si_sdr_loss(clean.unsqueeze(0), clean.unsqueeze(0), lengths)
    assert ratio.item() > 60 and loss.item() == pytest.approx(-30.0, abs=0.01)
    noisy = (clean + 0.3 * torch.randn(8000, generator=torch.Generator().manual_seed(2))).unsqueeze(0)
    capped, plain = si_sdr_loss(noisy, clean.unsqueeze(0), lengths)
    assert capped.item() == pytest.approx(-plain.item(), abs=0.01)  # far below the cap, it is plain SI-SDR
