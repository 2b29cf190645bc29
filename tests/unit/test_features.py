"""Tests of avsr.audio.features: fbank rates and padding, normalisation, SpecAugment, MFCC, pooling."""

from __future__ import annotations

import math

import pytest
import torch

from avsr.audio.features import (
    Fbank,
    FeatureNorm,
    SpecAugment,
    fbank,
    lengths_to_mask,
    mfcc,
    num_frames,
    num_steps,
    pool_frames,
    spec_augment,
)



@pytest.mark.parametrize("n", [1, 159, 160, 161, 640, 641, 21920, 16000])
def test_frame_and_step_counts(n: int) -> None:
    assert num_frames(n) == math.ceil(n / 160)
    assert num_steps(n) == math.ceil(n / 640)
    # ×4 subsampling of the frames lands on the same 25 fps step count.
    assert math.ceil(num_frames(n) / 4) == num_steps(n)
    assert num_steps(torch.tensor([n])).item() == num_steps(n)


def test_fbank_shapes_odd_lengths() -> None:
    fb = Fbank()
    lengths = torch.tensor([int(16000 * 1.37), 12345, 1])
    wave = torch.randn(3, int(lengths.max()))
    feats, frames = fb(wave, lengths)
    assert feats.shape == (3, math.ceil(21920 / 160), 80)
    assert frames.tolist() == [137, 78, 1]
    # padded frames are exactly zero
    assert torch.all(feats[1, 78:] == 0) and torch.all(feats[2, 1:] == 0)
    assert torch.isfinite(feats).all()


def test_fbank_padding_invariance() -> None:
    fb = Fbank()
    torch.manual_seed(0)
    wave = torch.randn(2, 20000)
    lengths = torch.tensor([20000, 9999])
    wave[1, 9999:] = 5.0  # garbage in the padding must be ignored
    feats, _ = fb(wave, lengths)
    alone, n = fb(wave[1:2, :9999])
    assert n.item() == 63
    torch.testing.assert_close(feats[1, :63], alone[0], atol=1e-5, rtol=0)


def test_fbank_frame_centres() -> None:
    """An impulse at sample 160*i + 80 lands in frame i (frames are centred on their hop)."""
    fb = Fbank()
    for frame in (0, 5, 17):
        wave = torch.zeros(1, 4000)
        wave[0, 160 * frame + 80] = 1.0
        feats, _ = fb(wave)
        energy = feats[0].exp().sum(dim=-1)
        assert int(energy.argmax()) == frame


def test_utterance_norm_uses_valid_frames_only() -> None:
    norm = FeatureNorm(4, mode="utterance")
    feats = torch.randn(2, 10, 4) * 3 + 2
    lengths = torch.tensor([10, 6])
    feats = feats * lengths_to_mask(lengths, 10).unsqueeze(-1)
    out = norm(feats, lengths)
    valid = out[1, :6]
    torch.testing.assert_close(valid.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(valid.std(0, unbiased=False), torch.ones(4), atol=1e-4, rtol=0)
    assert torch.all(out[1, 6:] == 0)
    alone = norm(feats[1:2, :6], lengths[1:2])
    torch.testing.assert_close(alone[0], valid)


def test_global_norm_fit_and_state() -> None:
    norm = FeatureNorm(3, mode="global")
    feats = torch.randn(4, 50, 3) * torch.tensor([1.0, 2.0, 3.0]) + torch.tensor([5.0, -1.0, 0.5])
    lengths = torch.full((4,), 50)
    norm.fit(feats, lengths)
    out = norm(feats, lengths)
    torch.testing.assert_close(out.reshape(-1, 3).mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    assert set(norm.state_dict()) == {"mean", "std"}
    with pytest.raises(ValueError):
        FeatureNorm(3, mode="bogus")


def test_spec_augment_masks_inside_lengths() -> None:
    torch.manual_seed(1)
    feats = torch.ones(3, 200, 80)
    lengths = torch.tensor([200, 120, 50])
    gen = torch.Generator().manual_seed(3)
    out = spec_augment(feats, lengths, n_freq_masks=2, freq_width=10, n_time_masks=2, time_width=40, generator=gen)
    assert out.shape == feats.shape
    masked = out == 0
    # whole time columns masked must lie inside each utterance's valid frames
    for b, n in enumerate(lengths.tolist()):
        full_time_cols = masked[b].all(dim=1).nonzero().flatten()
        assert full_time_cols.numel() == 0 or int(full_time_cols.max()) < n
        full_freq_rows = masked[b].all(dim=0).sum().item()
        assert full_freq_rows <= 20
    assert masked.any()


def test_spec_augment_module_is_identity_in_eval() -> None:
    aug = SpecAugment()
    feats = torch.randn(2, 100, 80)
    lengths = torch.tensor([100, 70])
    assert torch.equal(aug.eval()(feats, lengths), feats)
    torch.manual_seed(0)
    assert not torch.equal(aug.train()(feats, lengths), feats)


def test_mfcc_and_fbank_helpers() -> None:
    wave = torch.randn(16000 + 7)
    m = mfcc(wave)
    f = fbank(wave)
    assert m.shape == (101, 39) and f.shape == (101, 80)
    torch.testing.assert_close(f.mean(0), torch.zeros(80), atol=1e-4, rtol=0)


def test_pool_frames_partial_last_group() -> None:
    feats = torch.arange(10, dtype=torch.float32).unsqueeze(1)
    pooled = pool_frames(feats, 4)
    assert pooled.squeeze(1).tolist() == [1.5, 5.5, 8.5]
