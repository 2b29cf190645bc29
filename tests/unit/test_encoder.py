"""Tests of avsr.models.encoder and avsr.models.fusion: RoPE, masks, span masking, modality dropout."""

from __future__ import annotations


import pytest
import torch

from avsr.errors import InputError
from avsr.models.avsr import AVSRConfig, build_encoder
from avsr.models.encoder import (
    Conformer,
    MultiHeadAttention,
    SpanMasker,
    apply_rotary,
    rotary_tables,
)
from avsr.models.fusion import AVFusion, ModalityDropout, align_lengths, fused_lengths
from tiny_configs import SMALL_MODEL


SMALL = SMALL_MODEL


def test_rotary_scores_depend_on_offset_only() -> None:
    torch.manual_seed(0)
    cos, sin = rotary_tables(20, 8, torch.device("cpu"), torch.float32)
    q, k = torch.randn(8), torch.randn(8)
    qs = apply_rotary(q.expand(20, 8), cos, sin)
    ks = apply_rotary(k.expand(20, 8), cos, sin)
    s1 = qs[7] @ ks[3]
    s2 = qs[15] @ ks[11]
    torch.testing.assert_close(s1, s2, atol=1e-5, rtol=0)


def test_causal_attention_ignores_future() -> None:
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 2).eval()
    x = torch.randn(1, 6, 16)
    y = attn(x, x, causal=True)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(1, 2, 16)
    y2 = attn(x2, x2, causal=True)
    torch.testing.assert_close(y[:, :4], y2[:, :4])
    assert not torch.allclose(y[:, 4:], y2[:, 4:])


def test_windowed_attention_sees_only_nearby_steps() -> None:
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 2, rotary=True).eval()
    x = torch.randn(1, 12, 16)
    y = attn(x, x, window=2)
    x2 = x.clone()
    x2[:, 9:] = torch.randn(1, 3, 16)  # steps 9.. are more than 2 away from steps 0..6
    y2 = attn(x2, x2, window=2)
    torch.testing.assert_close(y[:, :7], y2[:, :7])
    assert not torch.allclose(y[:, 7:], y2[:, 7:])
    torch.testing.assert_close(attn(x, x, window=11), attn(x, x))  # a window as long as the input: no limit


def test_conformer_attention_window_limits_the_receptive_field() -> None:
    torch.manual_seed(0)
    enc = Conformer(d_model=16, n_layers=2, n_heads=2, d_ff=32, kernel_size=3, dropout=0.0,
                    attention_window=2).eval()
    x = torch.randn(1, 30, 16, requires_grad=True)
    y, _ = enc(x, torch.tensor([30]))
    # a random projection of the first output step: its plain sum is constant after the final
    # layer norm, so its gradient would be rounding noise (exactly zero on some CPUs)
    (y[0, 0] * torch.randn(16)).sum().backward()
    reach = int(x.grad[0].abs().sum(-1).nonzero().max())
    assert reach == 2 * (2 + 1)  # per block: attention 2 steps + convolution 1 step


@pytest.mark.parametrize("conv_norm", ["layer", "batch"])
def test_conformer_padding_invariance(conv_norm: str) -> None:
    torch.manual_seed(0)
    enc = Conformer(d_model=32, n_layers=2, n_heads=4, d_ff=64, kernel_size=7, dropout=0.0, conv_norm=conv_norm)
    enc.eval()
    x = torch.randn(3, 23, 32)
    lengths = torch.tensor([23, 11, 1])
    y, _ = enc(x, lengths)
    for b in (1, 2):
        n = int(lengths[b])
        alone, _ = enc(x[b : b + 1, :n], lengths[b : b + 1])
        torch.testing.assert_close(y[b, :n], alone[0], atol=1e-5, rtol=0)
        assert torch.all(y[b, n:] == 0)


def test_span_masker_replaces_exactly_the_masked_steps() -> None:
    torch.manual_seed(0)
    masker = SpanMasker(8, mask_prob=0.5, span=3)
    x = torch.randn(3, 20, 8)
    lengths = torch.tensor([20, 9, 2])
    out, mask = masker(x, lengths)
    assert mask.shape == (3, 20) and mask.dtype == torch.bool
    # masked steps hold the embedding, unmasked ones are untouched
    assert torch.equal(out[mask], masker.embedding.expand(int(mask.sum()), 8))
    assert torch.equal(out[~mask], x[~mask])
    # never in padding, at least one masked step per utterance
    for b, n in enumerate(lengths.tolist()):
        assert not mask[b, n:].any()
        assert mask[b, :n].any()
    # at most mask_prob of the steps (spans may overlap)
    assert int(mask[0].sum()) <= 12


def test_span_masker_given_mask_and_gradient() -> None:
    masker = SpanMasker(4, mask_prob=0.3, span=2)
    x = torch.zeros(1, 5, 4)
    mask = torch.tensor([[False, True, True, False, False]])
    out, used = masker(x, torch.tensor([5]), mask)
    assert torch.equal(used, mask)
    out.sum().backward()
    assert torch.equal(masker.embedding.grad, torch.full((4,), 2.0))


def test_fused_lengths_and_alignment() -> None:
    a = torch.tensor([35, 10, 0])
    v = torch.tensor([34, 12, 7])
    assert fused_lengths(a, v).tolist() == [34, 10, 7]
    assert fused_lengths(a, None).tolist() == a.tolist()
    x, n = align_lengths(torch.ones(2, 5, 3), torch.tensor([5, 2]), 7)
    assert x.shape == (2, 7, 3) and n.tolist() == [5, 2]
    assert torch.all(x[1, 2:] == 0) and torch.all(x[0, :5] == 1)
    x, n = align_lengths(torch.ones(1, 5, 3), torch.tensor([5]), 3)
    assert x.shape == (1, 3, 3) and n.tolist() == [3]


def test_modality_dropout_never_drops_both() -> None:
    torch.manual_seed(0)
    drop = ModalityDropout(audio_drop_prob=0.5, video_drop_prob=0.5).train()
    a, v = torch.ones(400, 3, 2), torch.ones(400, 3, 2)
    a2, v2, keep_a, keep_v = drop(a, v)
    assert torch.all(keep_a | keep_v)
    assert (~keep_a).any() and (~keep_v).any()
    assert torch.all(a2[~keep_a] == 0) and torch.all(a2[keep_a] == 1)
    assert torch.all(v2[~keep_v] == 0) and torch.all(v2[keep_v] == 1)
    # an utterance without video never loses its audio
    _, _, keep_a, _ = drop(a, v, None, torch.zeros(400, dtype=torch.bool))
    assert keep_a.all()
    # inactive in evaluation mode
    _, _, keep_a, keep_v = drop.eval()(a, v)
    assert keep_a.all() and keep_v.all()
    with pytest.raises(ValueError):
        ModalityDropout(0.7, 0.5)


def test_fusion_dropout_equals_missing_modality() -> None:
    torch.manual_seed(0)
    fusion = AVFusion(4, 4, 8, audio_drop_prob=1.0, video_drop_prob=0.0).train()
    audio = torch.randn(2, 6, 4)
    video = torch.randn(2, 6, 4)
    lengths = torch.tensor([6, 4])
    dropped, n = fusion(audio, lengths, video, lengths)
    missing, n2 = fusion(None, None, video, lengths)
    torch.testing.assert_close(dropped, missing)
    assert n.tolist() == n2.tolist() == [6, 4]


def test_av_encoder_modalities_and_padding_invariance() -> None:
    torch.manual_seed(0)
    enc = build_encoder(AVSRConfig(**SMALL)).eval()
    samples = torch.tensor([int(16000 * 1.37), 12001])
    frames = torch.tensor([34, 19])
    audio = torch.randn(2, int(samples.max())) * 0.1
    video = torch.randint(0, 256, (2, 34, 28, 28), dtype=torch.uint8)
    out = enc(audio, samples, video, frames)
    assert out.features.shape == (2, 34, 32) and out.lengths.tolist() == [34, 19]
    alone = enc(audio[1:2, :12001], None, video[1:2, :19], None)
    torch.testing.assert_close(out.features[1, :19], alone.features[0], atol=1e-5, rtol=0)
    audio_only = enc(audio, samples, None, None)
    assert audio_only.lengths.tolist() == [35, 19]
    video_only = enc(None, None, video, frames)
    assert video_only.lengths.tolist() == [34, 19]
    with pytest.raises(InputError):
        enc(None, None, None, None)


def test_av_encoder_hidden_layers_and_mask() -> None:
    torch.manual_seed(0)
    enc = build_encoder(AVSRConfig(**SMALL)).train()
    audio = torch.randn(2, 16000) * 0.1
    out = enc(audio, torch.tensor([16000, 9000]), None, None, mask=True, return_hidden=True)
    assert out.mask is not None and out.mask.shape == (2, 25)
    assert out.hidden is not None and len(out.hidden) == 2
    assert torch.equal(out.hidden[-1], out.features)
    first = enc(audio, None, None, None, n_layers=1)
    assert first.features.shape == (2, 25, 32)


def test_av_encoder_samples_masks_in_training_only_but_applies_a_given_mask_always() -> None:
    torch.manual_seed(0)
    enc = build_encoder(AVSRConfig(**{**SMALL, "spec_augment": False, "mask_prob": 0.5, "mask_span": 3})).eval()
    audio, lengths = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 9000])
    with torch.no_grad():
        plain = enc(audio, lengths, None, None)
        sampled = enc(audio, lengths, None, None, mask=True)
        assert sampled.mask is None and torch.equal(sampled.features, plain.features)
        given = torch.zeros(2, 25, dtype=torch.bool)
        given[0, 2:6] = True
        fixed = enc(audio, lengths, None, None, span_mask=given)
        assert fixed.mask is not None and torch.equal(fixed.mask, given)
        assert not torch.allclose(fixed.features, plain.features)
        forced = enc(audio, lengths, None, None, mask=True, mask_in_eval=True)
        assert forced.mask is not None and forced.mask.any()
