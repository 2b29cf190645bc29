"""Tests of avsr.models.frontends: output rates, lengths, padding invariance, video preprocessing."""

from __future__ import annotations

import math

import pytest
import torch

from avsr.errors import InputError
from avsr.models.frontends import AudioFrontend, Conv2dSubsampling, ResNetTrunk, VideoFrontend



def small_audio() -> AudioFrontend:
    return AudioFrontend(d_out=16, channels=4)


def small_video(**kw: object) -> VideoFrontend:
    return VideoFrontend(d_out=16, width=4, layers=(1, 1), crop_size=24, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("frames", [1, 2, 3, 4, 5, 7, 8, 9, 137])
def test_conv_subsampling_lengths(frames: int) -> None:
    sub = Conv2dSubsampling(80, 4, 8)
    out, lengths = sub(torch.randn(1, frames, 80), torch.tensor([frames]))
    assert out.shape == (1, math.ceil(frames / 4), 8)
    assert lengths.item() == math.ceil(frames / 4)


def test_audio_frontend_lengths_match_video_rate() -> None:
    fe = small_audio().eval()
    samples = [int(16000 * 1.37), 16000, 641]
    wave = torch.randn(3, max(samples)) * 0.1
    out, lengths = fe(wave, torch.tensor(samples))
    # one 25 fps step per 640 samples (per video frame), rounded up
    assert lengths.tolist() == [math.ceil(n / 640) for n in samples] == [35, 25, 2]
    assert out.shape == (3, 35, 16)
    assert torch.all(out[1, 25:] == 0) and torch.all(out[2, 2:] == 0)


def test_audio_frontend_padding_invariance() -> None:
    torch.manual_seed(0)
    fe = small_audio().eval()
    wave = torch.randn(2, 30000) * 0.1
    out, lengths = fe(wave, torch.tensor([30000, 13001]))
    alone, n = fe(wave[1:2, :13001])
    assert n.item() == lengths[1].item() == 21
    torch.testing.assert_close(out[1, :21], alone[0], atol=1e-5, rtol=0)


def test_audio_frontend_spec_augment_only_in_training() -> None:
    fe = small_audio()
    wave = torch.randn(1, 16000)
    fe.eval()
    a, _ = fe(wave)
    b, _ = fe(wave)
    assert torch.equal(a, b)
    fe.train()
    torch.manual_seed(0)
    c, _ = fe(wave)
    assert not torch.allclose(a, c)


def test_audio_frontend_rejects_bad_shape() -> None:
    with pytest.raises(InputError):
        small_audio()(torch.zeros(16000))


def test_resnet18_trunk_width() -> None:
    trunk = ResNetTrunk(64, 64, (2, 2, 2, 2))
    assert trunk.out_channels == 512
    assert trunk(torch.zeros(2, 64, 22, 22)).shape == (2, 512)


def test_video_frontend_shapes_and_padding_invariance() -> None:
    torch.manual_seed(0)
    fe = small_video().eval()
    video = torch.randint(0, 256, (3, 34, 28, 28), dtype=torch.uint8)
    lengths = torch.tensor([34, 20, 1])
    out, out_lengths = fe(video, lengths)
    assert out.shape == (3, 34, 16)
    assert out_lengths.tolist() == [34, 20, 1]
    assert torch.all(out[1, 20:] == 0)
    alone, _ = fe(video[1:2, :20])
    torch.testing.assert_close(out[1, :20], alone[0], atol=1e-5, rtol=0)
    single, _ = fe(video[2:3, :1])
    torch.testing.assert_close(out[2, :1], single[0], atol=1e-5, rtol=0)


def test_video_frontend_uint8_and_float_agree() -> None:
    fe = small_video().eval()
    video = torch.randint(0, 256, (1, 6, 24, 24), dtype=torch.uint8)
    a, _ = fe(video)
    b, _ = fe(video.float() / 255.0)
    torch.testing.assert_close(a, b)


def test_video_preprocess_centre_crop_and_train_augmentation() -> None:
    fe = small_video(time_masks=0)
    video = torch.zeros(2, 5, 30, 30)
    video[:, :, 3:27, 3:27] = 1.0  # the centre 24x24 square
    fe.eval()
    centre = fe.preprocess(video, torch.tensor([5, 5]))
    assert centre.shape == (2, 5, 24, 24)
    assert torch.allclose(centre, torch.full_like(centre, (1.0 - fe.mean) / fe.std))
    fe.train()
    torch.manual_seed(0)
    crops = [fe.preprocess(video, torch.tensor([5, 5])) for _ in range(5)]
    assert all(c.shape == (2, 5, 24, 24) for c in crops)
    assert any(not torch.equal(c, centre) for c in crops)


def test_video_time_masking_in_training() -> None:
    fe = small_video(time_masks=2, time_mask_width=5)
    fe.train()
    torch.manual_seed(0)
    video = torch.ones(1, 30, 24, 24)
    x = fe.preprocess(video, torch.tensor([30]))
    zero_frames = (x.flatten(2) == 0).all(dim=-1)
    assert 0 < int(zero_frames.sum()) <= 10


def test_video_frontend_rejects_small_frames_and_bad_rank() -> None:
    fe = small_video()
    with pytest.raises(InputError):
        fe(torch.zeros(1, 4, 20, 20))
    with pytest.raises(InputError):
        fe(torch.zeros(4, 24, 24))


def test_video_frontend_backward() -> None:
    fe = small_video().train()
    video = torch.rand(2, 6, 26, 26)
    out, _ = fe(video, torch.tensor([6, 3]))
    out.sum().backward()
    assert fe.stem_conv.weight.grad is not None and torch.isfinite(fe.stem_conv.weight.grad).all()
