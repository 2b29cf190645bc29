"""Cluster targets for masked pretraining: the recipe step that labels speech without transcripts.

* **Iteration 1**: MFCC (or log-mel) features of every utterance's audio at
  100 fps, averaged to 25 fps (four frames a step, the encoder's rate),
  k-means fit on the steps of the first manifest (or a seeded subset of its
  utterances), every step of every manifest labelled with its nearest
  centroid.
* **Iteration 2** and later: the same on a pretrained model's own features,
  the output of one conformer layer at 25 fps, computed on the audio-visual
  input without masking (:func:`avsr.models.pretrain.extract_features`).

The result is one ``.safetensors`` file (nothing executed on loading):
tensors ``targets/<utterance id>`` (T,) int16 cluster ids and
``centroids`` (K, D), and metadata naming what was clustered.
:func:`load_targets` reads it for the pretraining recipe, whose model gets
``K`` outputs from it.

    python -m avsr.training.clusters --manifests exp/synthgrid/train.csv exp/synthgrid/valid150.csv \\
        --out exp/synthgrid/targets-iter1.safetensors --clusters 100 --features mfcc
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from avsr.data.dataset import load_audio, load_mouths
from avsr.data.manifest import Utterance, read_manifest
from avsr.errors import AVSRError, InputError
from avsr.models.pretrain import assign_targets, clustering_features, extract_features, fit_kmeans
from avsr.utils import atomic_path

__all__ = ["TARGETS_FORMAT", "ClusterTargets", "acoustic_features", "model_features", "make_targets",
           "save_targets", "load_targets", "main"]

TARGETS_FORMAT = "avsr-cluster-targets"
_PREFIX = "targets/"

#: ``(utterance, features (T, D))`` pairs, in the order of the utterances given.
Features = Iterator[tuple[Utterance, Tensor]]


@dataclass
class ClusterTargets:
    """Per-utterance cluster ids at 25 fps and the centroids that made them.

    Attributes:
        targets: utterance id -> (T,) long cluster ids.
        centroids: (K, D) float32 k-means centroids.
        source: what was clustered (``"mfcc"``, ``"fbank"`` or ``"model:<bundle>:layer<L>"``).
        info: other notes (manifests, seed, utterances fit).
    """

    targets: dict[str, Tensor]
    centroids: Tensor
    source: str
    info: dict = field(default_factory=dict)

    @property
    def n_clusters(self) -> int:
        """Number of clusters K."""
        return int(self.centroids.size(0))


def acoustic_features(utterances: Iterable[Utterance], kind: str = "mfcc") -> Features:
    """Iteration 1: 100 fps acoustic features of each utterance's audio.

    Args:
        utterances: manifest rows with audio.
        kind: ``"mfcc"`` (39 dims) or ``"fbank"`` (80 dims).

    Yields:
        ``(utterance, (ceil(N / 160), D) features)``.
    """
    for u in utterances:
        if u.audio is None:
            raise InputError(None, f"utterance {u.id!r} has no audio file to cluster")
        yield u, clustering_features(load_audio(u.audio), kind)


def _pad(seqs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    lengths = torch.tensor([len(s) for s in seqs])
    return torch.nn.utils.rnn.pad_sequence(list(seqs), batch_first=True), lengths


def model_features(
    utterances: Sequence[Utterance],
    model: torch.nn.Module,
    layer: int,
    *,
    batch_seconds: float = 60.0,
    device: str | torch.device = "cpu",
) -> Features:
    """Iteration 2+: one layer's 25 fps features of a (pretrained) model, audio-visual, unmasked.

    Args:
        utterances: manifest rows (audio and mouths are used where every row has them).
        model: an :class:`~avsr.models.encoder.AVEncoder` or a model with one as ``.encoder``.
        layer: conformer block (1-based) whose output is clustered.
        batch_seconds: speech per forward pass.
        device: where the model runs.

    Yields:
        ``(utterance, (T, D) features)`` in the order of ``utterances``.
    """
    use_audio = all(u.audio for u in utterances)
    use_video = all(u.mouths for u in utterances)
    if not (use_audio or use_video):
        raise InputError(None, "the utterances to cluster need audio files or mouth files throughout")
    model = model.to(device)
    batch: list[Utterance] = []

    def run(group: list[Utterance]) -> list[Tensor]:
        audio = a_len = video = v_len = None
        if use_audio:
            audio, a_len = _pad([load_audio(u.audio) for u in group])
        if use_video:
            video, v_len = _pad([load_mouths(u.mouths) for u in group])
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return extract_features(model, mv(audio), mv(a_len), mv(video), mv(v_len), layer)

    for u in utterances:
        batch.append(u)
        if sum(x.duration for x in batch) >= batch_seconds:
            yield from zip(batch, run(batch))
            batch = []
    if batch:
        yield from zip(batch, run(batch))


def make_targets(
    manifests: Sequence[Sequence[Utterance]],
    features: Callable[[Sequence[Utterance]], Features],
    n_clusters: int,
    *,
    pool: int,
    source: str,
    fit_utterances: int = 0,
    seed: int = 0,
    progress: Callable[[Iterable], Iterable] = lambda it: it,
) -> ClusterTargets:
    """Fit k-means on the first manifest's features and label every manifest's utterances.

    Args:
        manifests: utterance lists; k-means is fit on the first (the training set).
        features: gives the features of a list of utterances (:func:`acoustic_features`
            or :func:`model_features` with its settings bound).
        n_clusters: K.
        pool: frames averaged per 25 fps step (4 for 100 fps acoustic features, 1 for model features).
        source: what the features are (stored with the targets).
        fit_utterances: fit on this many utterances of the first manifest, drawn
            with ``seed`` (0: all of them).
        seed: k-means and subset seed.
        progress: wraps the feature iterators (e.g. a progress bar).

    Returns:
        the targets of every utterance of every manifest.
    """
    train = list(manifests[0])
    fit_set = train
    if 0 < fit_utterances < len(train):
        picked = np.random.default_rng(seed).choice(len(train), size=fit_utterances, replace=False)
        fit_set = [train[i] for i in sorted(picked)]
    cached = {u.id: f for u, f in progress(features(fit_set))}
    centroids = fit_kmeans(list(cached.values()), n_clusters, pool=pool, seed=seed)
    targets: dict[str, Tensor] = {u: assign_targets(f, centroids, pool=pool) for u, f in cached.items()}
    rest: list[Utterance] = []
    seen = set(targets)
    for utts in manifests:
        for u in utts:
            if u.id not in seen:
                seen.add(u.id)
                rest.append(u)
    for u, f in progress(features(rest)):
        targets[u.id] = assign_targets(f, centroids, pool=pool)
    info = {"fit_utterances": len(fit_set), "seed": seed, "utterances": len(targets)}
    return ClusterTargets(targets, centroids, source, info)


def save_targets(path: str | os.PathLike, targets: ClusterTargets) -> None:
    """Write cluster targets atomically (``.safetensors``).

    Args:
        path: output file.
        targets: what :func:`make_targets` returned.
    """
    from safetensors.torch import save_file

    if targets.n_clusters > np.iinfo(np.int16).max:
        raise InputError(None, f"at most {np.iinfo(np.int16).max} clusters, got {targets.n_clusters}")
    tensors = {_PREFIX + uid: t.to(torch.int16).contiguous() for uid, t in targets.targets.items()}
    tensors["centroids"] = targets.centroids.float().contiguous()
    metadata = {"format": TARGETS_FORMAT, "source": targets.source, "n_clusters": str(targets.n_clusters),
                "info": json.dumps(targets.info, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file(tensors, os.fspath(tmp), metadata=metadata)


def load_targets(path: str | os.PathLike) -> ClusterTargets:
    """Read cluster targets written by :func:`save_targets`.

    Raises:
        InputError: a missing file or not a cluster-targets file.
    """
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such cluster-targets file (make it with the pretraining recipe's make_targets.py)")
    try:
        with safe_open(os.fspath(p), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != TARGETS_FORMAT:
                raise InputError(p, "not a cluster-targets file")
            targets = {k[len(_PREFIX):]: f.get_tensor(k).long() for k in f.keys() if k.startswith(_PREFIX)}
            centroids = f.get_tensor("centroids")
    except InputError:
        raise
    except Exception as e:  # any parse failure: not a targets file; nothing is executed
        raise InputError(p, f"not a readable cluster-targets file ({type(e).__name__})") from None
    return ClusterTargets(targets, centroids, meta.get("source", ""), json.loads(meta.get("info", "{}")))


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Command line of the cluster-target step (``recipes/*/pretrain/make_targets.py``)."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--manifests", nargs="+", required=True,
                   help="manifests to label; k-means is fit on the first (the training set)")
    p.add_argument("--out", required=True, help="output targets file (.safetensors)")
    p.add_argument("--clusters", type=int, default=100, help="number of k-means clusters K")
    p.add_argument("--features", choices=("mfcc", "fbank"), default="mfcc",
                   help="iteration 1: acoustic features to cluster (ignored with --model)")
    p.add_argument("--model", help="iteration 2+: a pretrained encoder bundle whose layer features are clustered")
    p.add_argument("--layer", type=int, default=0, help="with --model: conformer layer, 1-based (0: two thirds deep)")
    p.add_argument("--fit-utterances", type=int, default=0, help="fit k-means on this many training utterances (0: all)")
    p.add_argument("--batch-seconds", type=float, default=60.0, help="with --model: speech per forward pass")
    p.add_argument("--device", default="cpu", help="with --model: torch device")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    name = p.prog
    try:
        if args.clusters < 2:
            raise InputError(None, f"--clusters must be at least 2, got {args.clusters}")
        manifests = [read_manifest(m, need_text=False) for m in args.manifests]
        if args.model:
            from avsr.checkpoints import load_pretrain_model

            model = load_pretrain_model(args.model, args.device)
            layers = len(model.encoder.conformer.layers)
            layer = args.layer or max(1, round(2 * layers / 3))
            if not 1 <= layer <= layers:
                raise InputError(None, f"--layer must be in 1..{layers} for this model, got {layer}")
            source, pool = f"model:{Path(args.model).name}:layer{layer}", 1

            def features(utts: Sequence[Utterance]) -> Features:
                return model_features(utts, model, layer, batch_seconds=args.batch_seconds, device=args.device)
        else:
            source, pool = args.features, 4

            def features(utts: Sequence[Utterance]) -> Features:
                return acoustic_features(utts, args.features)

        def progress(it: Iterable) -> Iterable:
            if args.quiet:
                return it
            from tqdm import tqdm

            return tqdm(it, desc="features", unit="utt", file=sys.stderr)

        targets = make_targets(manifests, features, args.clusters, pool=pool, source=source,
                               fit_utterances=args.fit_utterances, seed=args.seed, progress=progress)
        targets.info["manifests"] = [os.fspath(m) for m in args.manifests]
        save_targets(args.out, targets)
    except AVSRError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 1
    counts = np.bincount(torch.cat(list(targets.targets.values())).numpy(), minlength=targets.n_clusters)
    print(f"{args.out}: {len(targets.targets)} utterances, {int(counts.sum())} steps, {targets.n_clusters} clusters "
          f"of {source} ({int((counts > 0).sum())} used; largest {100 * counts.max() / counts.sum():.1f}% of steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
