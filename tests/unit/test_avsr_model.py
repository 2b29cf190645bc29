"""Tests of avsr.models.avsr: shapes, lengths, losses, config round trip, presets."""

from __future__ import annotations

import json
import math

import pytest
import torch

from avsr.errors import InputError
from avsr.models import AVSRConfig, avsr_base, avsr_tiny, build_model
from avsr.models.avsr import IGNORE_ID, count_parameters
from tiny_configs import SMALL_MODEL


SMALL = SMALL_MODEL


def batch(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Two utterances of different lengths: 1.37 s audio + 34 frames, 0.75 s + 19 frames."""
    g = torch.Generator().manual_seed(seed)
    samples = torch.tensor([int(16000 * 1.37), 12000])
    frames = torch.tensor([34, 19])
    audio = torch.randn(2, int(samples.max()), generator=g) * 0.1
    video = torch.randint(0, 256, (2, 34, 28, 28), dtype=torch.uint8, generator=g)
    targets = torch.tensor([[3, 4, 5, 6], [7, 8, IGNORE_ID, IGNORE_ID]])
    return audio, samples, video, frames, targets


def test_encode_shapes_and_lengths() -> None:
    model = build_model(SMALL).eval()
    audio, samples, video, frames, _ = batch()
    enc, lengths = model.encode(audio, samples, video, frames)
    # audio gives ceil(N / 640) steps (35 and 19), video one per frame (34, 19): the shorter wins
    assert [math.ceil(n / 640) for n in samples.tolist()] == [35, 19]
    assert lengths.tolist() == [34, 19]
    assert enc.shape == (2, 34, 32)
    assert torch.all(enc[1, 19:] == 0)
    log_probs = model.ctc_log_probs(enc)
    assert log_probs.shape == (2, 34, 12)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2, 34))


def test_encode_padding_invariance() -> None:
    torch.manual_seed(0)
    model = build_model(SMALL).eval()
    audio, samples, video, frames, _ = batch()
    enc, _ = model.encode(audio, samples, video, frames)
    alone, n = model.encode(audio[1:2, :12000], None, video[1:2, :19], None)
    assert n.tolist() == [19]
    torch.testing.assert_close(enc[1, :19], alone[0], atol=1e-5, rtol=0)
    # single-modality passes are padding invariant too
    enc_a, _ = model.encode(audio, samples, None, None)
    alone_a, _ = model.encode(audio[1:2, :12000], None, None, None)
    torch.testing.assert_close(enc_a[1, :19], alone_a[0], atol=1e-5, rtol=0)
    enc_v, _ = model.encode(None, None, video, frames)
    alone_v, _ = model.encode(None, None, video[1:2, :19], None)
    torch.testing.assert_close(enc_v[1, :19], alone_v[0], atol=1e-5, rtol=0)


def test_single_modality_encodes() -> None:
    model = build_model(SMALL).eval()
    audio, samples, video, frames, _ = batch()
    enc_a, len_a = model.encode(audio, samples, None, None)
    enc_v, len_v = model.encode(None, None, video, frames)
    assert enc_a.shape == (2, 35, 32) and len_a.tolist() == [35, 19]
    assert enc_v.shape == (2, 34, 32) and len_v.tolist() == [34, 19]
    assert torch.isfinite(enc_a).all() and torch.isfinite(enc_v).all()


def test_train_mode_modality_dropout_zeroes_one_modality() -> None:
    """With audio dropped for every utterance, a train-mode AV pass equals the video-only pass."""
    torch.manual_seed(0)
    cfg = {**SMALL, "audio_drop_prob": 1.0, "video_drop_prob": 0.0, "spec_augment": False, "video_augment": False}
    model = build_model(cfg).train()
    audio, samples, video, frames, _ = batch()
    # equal lengths so that the fused length does not depend on the audio
    samples = torch.tensor([34 * 640, 19 * 640])
    audio = audio[:, : 34 * 640]
    av, _ = model.encode(audio, samples, video, frames)
    vo, _ = model.encode(None, None, video, frames)
    torch.testing.assert_close(av, vo)
    model.encoder.fusion.modality_dropout.audio_drop_prob = 0.0
    model.encoder.fusion.modality_dropout.video_drop_prob = 1.0
    av, _ = model.encode(audio, samples, video, frames)
    ao, _ = model.encode(audio, samples, None, None)
    torch.testing.assert_close(av, ao)


def test_span_masking_applies_in_training_mode_only() -> None:
    """``encode(mask=True)`` masks while training, but never a validation or inference pass."""
    torch.manual_seed(0)
    quiet = dict(spec_augment=False, video_augment=False, audio_drop_prob=0.0, video_drop_prob=0.0)
    model = build_model({**SMALL, **quiet, "mask_prob": 0.5, "mask_span": 3})
    audio, samples, video, frames, _ = batch()
    with torch.no_grad():
        model.eval()
        plain, _ = model.encode(audio, samples, video, frames, mask=False)
        masked, _ = model.encode(audio, samples, video, frames, mask=True)
        assert torch.equal(masked, plain)
        model.train()
        torch.manual_seed(1)
        plain, _ = model.encode(audio, samples, video, frames, mask=False)
        torch.manual_seed(1)
        again, _ = model.encode(audio, samples, video, frames, mask=False)
        assert torch.equal(again, plain)  # training mode is deterministic here, so the masks make the gap
        masked, _ = model.encode(audio, samples, video, frames, mask=True)
        assert not torch.allclose(masked, plain)


def test_decoder_io() -> None:
    model = build_model(SMALL)
    ys_in, ys_out = model.decoder_io(torch.tensor([[3, 4, 5], [6, IGNORE_ID, IGNORE_ID]]))
    eos = model.eos_id
    assert model.sos_id == eos == 11 and model.blank_id == 0
    assert ys_in.tolist() == [[eos, 3, 4, 5], [eos, 6, eos, eos]]
    assert ys_out.tolist() == [[3, 4, 5, eos], [6, eos, IGNORE_ID, IGNORE_ID]]


def test_decoder_is_causal_and_respects_memory_padding() -> None:
    torch.manual_seed(0)
    model = build_model(SMALL).eval()
    memory = torch.randn(1, 9, 32).expand(2, 9, 32)
    tokens = torch.tensor([[11, 3, 4, 5], [11, 3, 4, 6]])
    logits = model.decoder(tokens, memory, torch.tensor([9, 9]))
    assert logits.shape == (2, 4, 12)
    torch.testing.assert_close(logits[0, :3], logits[1, :3])
    lengths = torch.tensor([5, 5])
    garbage = memory.clone()
    garbage[:, 5:] = 100.0
    torch.testing.assert_close(model.decoder(tokens, memory, lengths), model.decoder(tokens, garbage, lengths))


def test_forward_losses_and_backward() -> None:
    torch.manual_seed(0)
    model = build_model(SMALL).train()
    audio, samples, video, frames, targets = batch()
    out = model(audio, samples, video, frames, targets)
    assert set(out) == {"loss", "loss_ctc", "loss_att", "acc"}
    expected = 0.3 * out["loss_ctc"] + 0.7 * out["loss_att"]
    torch.testing.assert_close(out["loss"].detach(), expected)
    assert 0.0 <= float(out["acc"]) <= 1.0
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads if g is not None)
    assert model.decoder.out.weight.grad is not None and model.ctc_head.proj.weight.grad is not None


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_single_branch_losses(weight: float) -> None:
    model = build_model({**SMALL, "ctc_weight": weight}).eval()
    audio, samples, video, frames, targets = batch()
    out = model(audio, samples, None, None, targets)
    skipped = "loss_att" if weight == 1.0 else "loss_ctc"
    used = "loss_ctc" if weight == 1.0 else "loss_att"
    assert float(out[skipped]) == 0.0
    torch.testing.assert_close(out["loss"].detach(), out[used])


def test_config_round_trip_rebuilds_same_model() -> None:
    torch.manual_seed(0)
    model = build_model(SMALL).eval()
    text = json.dumps(model.config)
    rebuilt = build_model(json.loads(text)).eval()
    rebuilt.load_state_dict(model.state_dict())
    audio, samples, video, frames, _ = batch()
    a, _ = model.encode(audio, samples, video, frames)
    b, _ = rebuilt.encode(audio, samples, video, frames)
    torch.testing.assert_close(a, b)
    assert rebuilt.config == model.config
    assert AVSRConfig.from_dict(model.config).to_dict() == model.config
    with pytest.raises(ValueError):
        build_model({**SMALL, "no_such_key": 1})


def test_presets_sizes() -> None:
    tiny = avsr_tiny(40)
    base = avsr_base(500)
    n_tiny, n_base = count_parameters(tiny), count_parameters(base)
    assert 1_000_000 < n_tiny < 5_000_000
    assert 60_000_000 < n_base < 150_000_000
    assert tiny.config["d_model"] == 128 and base.config["d_model"] == 512
    assert base.config["video_layers"] == [2, 2, 2, 2] and base.config["video_width"] == 64
    assert build_model(tiny.config).config == tiny.config


def test_utterance_without_video_falls_back_to_audio() -> None:
    """A zero video length marks an utterance without a face: it is encoded from its audio alone."""
    torch.manual_seed(0)
    model = build_model(SMALL).eval()
    audio, samples, video, frames, _ = batch()
    enc, lengths = model.encode(audio, samples, video, torch.tensor([34, 0]))
    assert lengths.tolist() == [34, 19]
    audio_only, _ = model.encode(audio[1:2, :12000], None, None, None)
    torch.testing.assert_close(enc[1, :19], audio_only[0], atol=1e-5, rtol=0)


def test_bad_inputs_raise_input_error() -> None:
    model = build_model(SMALL).eval()
    audio, samples, video, frames, targets = batch()
    with pytest.raises(InputError):
        model.encode(audio, torch.tensor([99999, 10]), None, None)
    with pytest.raises(InputError):
        model.encode(audio[:1], None, video, frames)
    with pytest.raises(InputError):
        model.encode(audio, torch.tensor([0, 0]), None, None)
    with pytest.raises(InputError):
        model(audio, samples, None, None, targets + 20)
