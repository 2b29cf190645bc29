"""Self-supervised AV-HuBERT-style pretraining: masked prediction of cluster targets.

Iteration 1: cluster acoustic features (MFCC or log-mel) of unlabeled clips
with k-means (:func:`clustering_features`, :func:`fit_kmeans`), label every
25 fps step with its nearest centroid (:func:`assign_targets`, which
averages 4 frames of 100 fps features per step, so ``N`` samples give
``ceil(N / 640)`` targets, the audio frontend's length). Train
:class:`PretrainModel`: the encoder sees span-masked fused input and
predicts the target cluster of each *masked* step from the fused stream
(:func:`masked_prediction_loss`). Iteration 2 and later: cluster the
model's own layer features (:func:`extract_features`, ``pool=1``) and train
again. No transcripts are needed anywhere. The pretrained encoder's
weights load into :class:`~avsr.models.avsr.AVSRModel` as they are
(``asr.encoder.load_state_dict(pre.encoder.state_dict())``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from avsr.audio.features import fbank, lengths_to_mask, mfcc, pool_frames
from avsr.errors import InputError
from avsr.models.avsr import IGNORE_ID, AVSRConfig, build_encoder
from avsr.models.encoder import AVEncoder

__all__ = [
    "clustering_features",
    "fit_kmeans",
    "assign_targets",
    "masked_prediction_loss",
    "PretrainModel",
    "build_pretrain_model",
    "extract_features",
]


def clustering_features(waveform: Tensor | np.ndarray, kind: str = "mfcc") -> Tensor:
    """Acoustic features for first-iteration clustering, at 100 fps.

    Args:
        waveform: (N,) mono 16 kHz waveform.
        kind: ``"mfcc"`` (13 MFCC + deltas + delta-deltas, 39 dims) or
            ``"fbank"`` (80 log-mel bins); both per-utterance normalised.

    Returns:
        (ceil(N / 160), D) features.
    """
    wave = torch.as_tensor(np.asarray(waveform, dtype=np.float32))
    if kind == "mfcc":
        return mfcc(wave)
    if kind == "fbank":
        return fbank(wave)
    raise ValueError(f"kind must be 'mfcc' or 'fbank', got {kind!r}")


def _as_tensor(features: Tensor | np.ndarray) -> Tensor:
    """float32 tensor (on the same device) from a tensor or array."""
    if isinstance(features, Tensor):
        return features.float()
    return torch.as_tensor(np.asarray(features, dtype=np.float32))


def fit_kmeans(
    features: Sequence[Tensor | np.ndarray],
    n_clusters: int,
    *,
    pool: int = 4,
    batch_size: int = 4096,
    max_iter: int = 100,
    seed: int = 0,
) -> Tensor:
    """Fit k-means (scikit-learn ``MiniBatchKMeans``) on the steps of many utterances.

    Args:
        features: per-utterance (T_i, D) features.
        n_clusters: number of clusters K.
        pool: frames averaged per step before clustering (4 for 100 fps
            acoustic features, 1 for 25 fps model features); use the same
            value in :func:`assign_targets`.
        batch_size: mini-batch size.
        max_iter: maximum passes over the data.
        seed: random seed.

    Returns:
        (K, D) float32 centroids.
    """
    from sklearn.cluster import MiniBatchKMeans  # heavy import, only needed here

    steps = [pool_frames(_as_tensor(f), pool) if pool > 1 else _as_tensor(f) for f in features]
    if not steps:
        raise InputError(None, "no features to cluster")
    data = torch.cat(steps).cpu().numpy()
    if data.shape[0] < n_clusters:
        raise InputError(None, f"{data.shape[0]} feature steps are too few for {n_clusters} clusters")
    kmeans = MiniBatchKMeans(
        n_clusters=n_clusters,
        batch_size=batch_size,
        max_iter=max_iter,
        n_init=3,
        random_state=seed,
    )
    kmeans.fit(data)
    return torch.from_numpy(kmeans.cluster_centers_.astype(np.float32))


def assign_targets(features: Tensor | np.ndarray, centroids: Tensor, *, pool: int = 4) -> Tensor:
    """Nearest-centroid labels of one utterance at 25 fps.

    Args:
        features: (T, D) features (100 fps with ``pool=4``, 25 fps with ``pool=1``).
        centroids: (K, D) from :func:`fit_kmeans`.
        pool: frames averaged per step (as in :func:`fit_kmeans`).

    Returns:
        (ceil(T / pool),) long cluster ids.
    """
    feats = _as_tensor(features)
    steps = pool_frames(feats, pool) if pool > 1 else feats
    return torch.cdist(steps, centroids.to(steps)).argmin(dim=-1)


def masked_prediction_loss(logits: Tensor, targets: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy of cluster predictions on masked steps only.

    Args:
        logits: (B, T, K) cluster logits.
        targets: (B, T) cluster ids, -1 where unknown/padded.
        mask: (B, T) bool, True on masked steps.

    Returns:
        loss: mean cross-entropy over masked steps with a target (0 if none,
        still connected to the graph).
        acc: fraction of those steps predicted correctly (detached).
    """
    selected = mask & (targets != IGNORE_ID)
    if not bool(selected.any()):
        zero = logits.sum() * 0.0
        return zero, zero.detach()
    chosen = logits[selected]  # (M, K)
    labels = targets[selected]
    loss = nn.functional.cross_entropy(chosen.float(), labels)
    acc = (chosen.argmax(dim=-1) == labels).float().mean()
    return loss, acc.detach()


class PretrainModel(nn.Module):
    """AV-HuBERT-style masked prediction on top of an :class:`AVEncoder`.

    Logits are cosine similarities between a projection of each encoder
    step and learned cluster embeddings, divided by a temperature.

    Args:
        encoder: the encoder to pretrain (built e.g. by
            :func:`~avsr.models.avsr.build_encoder`).
        d_model: encoder width.
        n_clusters: number of k-means clusters K.
        proj_dim: dimension of the projection and cluster embeddings.
        logit_temp: temperature of the cosine logits.
        config: dict that rebuilds this model with :func:`build_pretrain_model`.
    """

    def __init__(
        self,
        encoder: AVEncoder,
        d_model: int,
        n_clusters: int,
        proj_dim: int = 256,
        logit_temp: float = 0.1,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.proj = nn.Linear(d_model, proj_dim)
        self.cluster_embeddings = nn.Parameter(torch.randn(n_clusters, proj_dim) * 0.1)
        self.logit_temp = logit_temp
        self.n_clusters = n_clusters
        self._config = dict(config or {})

    @property
    def config(self) -> dict[str, Any]:
        """JSON-able dict; ``build_pretrain_model(model.config)`` rebuilds the architecture."""
        return dict(self._config)

    def logits(self, features: Tensor) -> Tensor:
        """(B, T, D) encoder output -> (B, T, K) cosine-similarity logits."""
        proj = nn.functional.normalize(self.proj(features), dim=-1)
        emb = nn.functional.normalize(self.cluster_embeddings, dim=-1)
        return proj @ emb.T / self.logit_temp

    def forward(
        self,
        audio: Tensor | None,
        audio_lengths: Tensor | None,
        video: Tensor | None,
        video_lengths: Tensor | None,
        targets: Tensor,
        *,
        span_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Masked-prediction loss.

        Span masks are drawn in evaluation mode too (validation of the
        masked-prediction objective needs masked steps).

        Args:
            audio: (B, N) waveform or ``None``.
            audio_lengths: (B,) valid samples or ``None``.
            video: (B, T, H, W) mouths or ``None``.
            video_lengths: (B,) valid frames or ``None``.
            targets: (B, S) cluster ids at 25 fps, padded with -1; trimmed or
                padded to the encoder's length (steps past an utterance's
                encoder length are ignored).
            span_mask: (B, T') bool mask to use instead of sampling one.

        Returns:
            dict with ``loss``, ``acc`` (masked-step accuracy), ``masked``
            (number of masked steps), ``logits`` (B, T', K) and ``mask`` (B, T').
        """
        out = self.encoder(
            audio, audio_lengths, video, video_lengths, mask=True, span_mask=span_mask, mask_in_eval=True
        )
        assert out.mask is not None
        steps = out.features.size(1)
        targets = targets.to(out.features.device).long()[:, :steps]
        if targets.size(1) < steps:
            targets = nn.functional.pad(targets, (0, steps - targets.size(1)), value=IGNORE_ID)
        targets = targets.masked_fill(~lengths_to_mask(out.lengths, steps), IGNORE_ID)
        logits = self.logits(out.features)
        loss, acc = masked_prediction_loss(logits, targets, out.mask)
        return {"loss": loss, "acc": acc, "masked": out.mask.sum().detach(), "logits": logits, "mask": out.mask}


def build_pretrain_model(config: dict[str, Any]) -> PretrainModel:
    """Build a :class:`PretrainModel`.

    Args:
        config: ``{"encoder": <AVSRConfig dict>, "n_clusters": K,
            "proj_dim": ..., "logit_temp": ...}``; the encoder part is the
            same dict :func:`~avsr.models.avsr.build_model` takes, so the
            pretrained encoder fits the ASR model built from it.

    Returns:
        the model; its ``.config`` is the completed dict.
    """
    enc_cfg = AVSRConfig.from_dict(config["encoder"])
    full = {
        "encoder": enc_cfg.to_dict(),
        "n_clusters": int(config["n_clusters"]),
        "proj_dim": int(config.get("proj_dim", 256)),
        "logit_temp": float(config.get("logit_temp", 0.1)),
    }
    return PretrainModel(
        build_encoder(enc_cfg),
        enc_cfg.d_model,
        full["n_clusters"],
        full["proj_dim"],
        full["logit_temp"],
        config=full,
    )


@torch.no_grad()
def extract_features(
    model: nn.Module,
    audio: Tensor | None,
    audio_lengths: Tensor | None,
    video: Tensor | None,
    video_lengths: Tensor | None,
    layer: int,
) -> list[Tensor]:
    """Per-utterance encoder features of one layer (for the next clustering iteration).

    Runs in evaluation mode without masking (the model's mode is restored).

    Args:
        model: an :class:`AVEncoder`, or a model with an ``.encoder`` one
            (:class:`PretrainModel`, :class:`~avsr.models.avsr.AVSRModel`).
        audio: (B, N) waveform or ``None``.
        audio_lengths: (B,) valid samples or ``None``.
        video: (B, T, H, W) mouths or ``None``.
        video_lengths: (B,) valid frames or ``None``.
        layer: conformer block whose output to return, 1-based; 0 gives the
            fused encoder input.

    Returns:
        list of B tensors (T_i, D) at 25 fps (valid steps only), on the CPU.
    """
    encoder = model if isinstance(model, AVEncoder) else getattr(model, "encoder", None)
    if not isinstance(encoder, AVEncoder):
        raise TypeError("model must be an AVEncoder or have an AVEncoder as .encoder")
    n_blocks = len(encoder.conformer.layers)
    if not 0 <= layer <= n_blocks:
        raise ValueError(f"layer must be in [0, {n_blocks}], got {layer}")
    was_training = encoder.training
    encoder.eval()
    try:
        out = encoder(audio, audio_lengths, video, video_lengths, n_layers=layer, return_hidden=True)
    finally:
        encoder.train(was_training)
    return [out.features[i, : int(n)].cpu() for i, n in enumerate(out.lengths)]
