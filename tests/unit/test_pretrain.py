"""Tests of avsr.models.pretrain: k-means targets, masked prediction loss, feature extraction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avsr.audio.features import num_steps
from avsr.errors import InputError
from avsr.models.avsr import build_model
from avsr.models.pretrain import (
    assign_targets,
    build_pretrain_model,
    clustering_features,
    extract_features,
    fit_kmeans,
    masked_prediction_loss,
)
from tiny_configs import SMALL_MODEL


SMALL = {**SMALL_MODEL, "mask_prob": 0.4, "mask_span": 3}


def test_kmeans_recovers_separated_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=np.float32)
    utterances = []
    for _ in range(6):
        ids = rng.integers(0, 3, size=40)
        utterances.append(centres[ids] + rng.normal(0, 0.1, size=(40, 2)).astype(np.float32))
    centroids = fit_kmeans(utterances, 3, pool=1, seed=0)
    assert centroids.shape == (3, 2)
    found = sorted(tuple(np.round(c).astype(int)) for c in centroids.numpy())
    assert found == [(0, 0), (0, 10), (10, 0)]
    labels = assign_targets(torch.tensor(centres), centroids, pool=1)
    assert sorted(labels.tolist()) == [0, 1, 2]
    with pytest.raises(InputError):
        fit_kmeans([centres[:2]], 3, pool=1)


def test_targets_follow_the_25fps_audio_steps() -> None:
    g = torch.Generator().manual_seed(0)
    waves = [torch.randn(n, generator=g) * 0.1 for n in (int(16000 * 1.37), 8000, 16001)]
    feats = [clustering_features(w) for w in waves]
    assert feats[0].shape == (137, 39)
    assert clustering_features(waves[1], kind="fbank").shape == (50, 80)
    centroids = fit_kmeans(feats, 4, pool=4)
    for wave, f in zip(waves, feats):
        targets = assign_targets(f, centroids)
        assert targets.shape == (num_steps(wave.numel()),)
        assert targets.min() >= 0 and targets.max() < 4


def test_masked_loss_ignores_unmasked_logits() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 5)
    targets = torch.randint(0, 5, (2, 7))
    targets[1, 5:] = -1
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[0, 1:4] = True
    mask[1, 4:7] = True  # two of these have no target (padding)
    loss, acc = masked_prediction_loss(logits, targets, mask)
    perturbed = logits.clone()
    perturbed[~mask] = torch.randn(int((~mask).sum()), 5) * 10
    loss2, _ = masked_prediction_loss(perturbed, targets, mask)
    torch.testing.assert_close(loss, loss2)
    changed = logits.clone()
    changed[0, 2] += torch.randn(5) * 5
    loss3, _ = masked_prediction_loss(changed, targets, mask)
    assert not torch.allclose(loss, loss3)
    # the loss is the mean cross-entropy over exactly the masked steps with targets
    sel = mask & (targets >= 0)
    expected = torch.nn.functional.cross_entropy(logits[sel], targets[sel])
    torch.testing.assert_close(loss, expected)
    assert 0.0 <= float(acc) <= 1.0
    empty, _ = masked_prediction_loss(logits.requires_grad_(), targets, torch.zeros_like(mask))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_pretrain_model_gradients_come_from_masked_steps_only() -> None:
    torch.manual_seed(0)
    model = build_pretrain_model({"encoder": SMALL, "n_clusters": 6, "proj_dim": 16}).train()
    audio = torch.randn(2, 16000) * 0.1
    video = torch.randint(0, 256, (2, 25, 26, 26), dtype=torch.uint8)
    lengths_a, lengths_v = torch.tensor([16000, 9000]), torch.tensor([25, 15])
    targets = torch.randint(0, 6, (2, 26))  # one step too long: trimmed to the encoder's 25
    out = model(audio, lengths_a, video, lengths_v, targets)
    assert out["logits"].shape == (2, 25, 6)
    mask = out["mask"]
    assert mask.any() and not mask[1, 15:].any()
    logits = out["logits"]
    logits.retain_grad()
    out["loss"].backward()
    assert logits.grad is not None
    assert torch.all(logits.grad[~mask] == 0)
    assert logits.grad[mask].abs().sum() > 0
    assert model.encoder.masker.embedding.grad is not None
    assert int(out["masked"]) == int(mask.sum())


def test_pretrain_model_with_fixed_mask_and_config() -> None:
    model = build_pretrain_model({"encoder": SMALL, "n_clusters": 6})
    assert json.loads(json.dumps(model.config)) == model.config
    mask = torch.zeros(1, 25, dtype=torch.bool)
    mask[0, 3:8] = True
    out = model(torch.randn(1, 16000) * 0.1, None, None, None, torch.zeros(1, 25, dtype=torch.long), span_mask=mask)
    assert torch.equal(out["mask"], mask)
    assert torch.isfinite(out["loss"])


def test_pretrain_model_masks_in_eval_mode_too() -> None:
    """Validation of the masked-prediction loss needs masked steps: eval mode still samples them."""
    torch.manual_seed(0)
    model = build_pretrain_model({"encoder": SMALL, "n_clusters": 6}).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 16000) * 0.1, torch.tensor([16000, 9000]), None, None,
                    torch.zeros(2, 25, dtype=torch.long))
    assert out["mask"].any() and not out["mask"][1, 15:].any()
    assert int(out["masked"]) > 0 and torch.isfinite(out["loss"])


def test_extract_features_and_encoder_transfer() -> None:
    torch.manual_seed(0)
    pre = build_pretrain_model({"encoder": SMALL, "n_clusters": 6}).train()
    audio = torch.randn(2, 16000) * 0.1
    lengths = torch.tensor([16000, 7000])
    feats = extract_features(pre, audio, lengths, None, None, layer=1)
    assert [f.shape for f in feats] == [(25, 32), (11, 32)]
    assert pre.training  # mode restored
    fused = extract_features(pre.encoder, audio, lengths, None, None, layer=0)
    assert [f.shape for f in fused] == [(25, 32), (11, 32)]
    with pytest.raises(ValueError):
        extract_features(pre, audio, lengths, None, None, layer=3)
    # second iteration: cluster the model's own 25 fps features
    centroids = fit_kmeans(feats, 3, pool=1)
    assert assign_targets(feats[1], centroids, pool=1).shape == (11,)
    # the pretrained encoder loads into the ASR model built from the same config
    asr = build_model(SMALL)
    asr.encoder.load_state_dict(pre.encoder.state_dict())
    asr.eval()
    enc, _ = asr.encode(audio, lengths, None, None)
    last = extract_features(pre, audio, lengths, None, None, layer=2)
    torch.testing.assert_close(enc[0], last[0])
