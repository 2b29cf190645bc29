"""Masked multimodal pretraining (AV-HuBERT style) on SpeechBrain's ``Brain``.

:class:`PretrainBrain` trains a :class:`avsr.models.pretrain.PretrainModel`
on cluster targets (:mod:`avsr.training.clusters`), no transcripts. The
model does the work in training mode: modality dropout drops the audio or
the video of an utterance in the fusion, span masking replaces spans of the
fused stream with the mask embedding, and the loss is the cross-entropy of
the cluster predictions on the masked steps only. Noise (``train_noise``)
is mixed into the input audio while the targets stay those of the clean
speech, so the encoder learns to predict what was said from noisy audio and
lips.

Validation computes the same loss on audio-visual, audio-only and
video-only input (``valid_modalities``) with masks drawn from a generator
re-seeded for every batch (``valid_mask_seed``): every validation masks
the same steps, and the global generators, whose states the checkpoints
keep, are left alone. Checkpoints are kept and averaged by the mean of the
modalities' losses. Everything else (resume, DDP, logging, schedule) is
:class:`avsr.training.brain.RecipeBrain`'s.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import speechbrain as sb
import torch

from avsr.data.dataset import Batch
from avsr.evaluation import MODALITIES
from avsr.training.brain import RecipeBrain, RunningMean, modality_inputs

__all__ = ["PretrainBrain"]


class PretrainBrain(RecipeBrain):
    """SpeechBrain ``Brain`` for :class:`avsr.models.pretrain.PretrainModel`.

    Modules: ``model``. Hparams used besides :class:`RecipeBrain`'s:
    ``valid_modalities`` (subset of :data:`MODALITIES`) and
    ``valid_mask_seed``. The batches' ``targets`` are the cluster ids at
    25 fps (``make_dataset(..., targets=...)``).

    Validation statistics: ``loss`` (mean over the modalities, the
    selection key), ``loss_<m>`` and ``acc_<m>`` (masked-step accuracy).
    Training statistics: ``loss`` and ``acc``.
    """

    selection_key = "loss"

    def on_fit_start(self) -> None:
        """Register the running training accuracy (so an intra-epoch resume logs the epoch's), then recover."""
        if not hasattr(self, "_train_acc"):
            self._train_acc = RunningMean()
        if self.checkpointer is not None and "train_acc" not in self.checkpointer.recoverables:
            self.checkpointer.add_recoverable("train_acc", self._train_acc, optional_load=True)
        super().on_fit_start()

    def compute_forward(self, batch: Any, stage: sb.Stage) -> tuple[dict[str, dict], Batch]:
        """Noise, then the masked-prediction loss (validation: once per modality, fixed masks)."""
        b = self._batch(batch, stage)
        if stage == sb.Stage.TRAIN:
            out = self.modules.model(b.audio, b.audio_lengths, b.video, b.video_lengths, b.targets)
            return {"train": out}, b
        outs: dict[str, dict] = {}
        seed = int(getattr(self.hparams, "valid_mask_seed", 4321)) + self._valid_batches
        self._valid_batches += 1
        for modality in getattr(self.hparams, "valid_modalities", MODALITIES):
            inputs = modality_inputs(b, modality)
            if inputs[0] is None and inputs[2] is None:
                continue
            # span masks are drawn on the CPU generator: fork it, so that validation masks the
            # same steps every time and leaves the (checkpointed) global state where it was
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                outs[modality] = self.modules.model(*inputs, b.targets)
        return outs, b

    def compute_objectives(self, predictions: tuple[dict[str, dict], Batch], batch: Any, stage: sb.Stage) -> torch.Tensor:
        """The masked-prediction loss (validation: the mean over modalities; statistics accumulated)."""
        outs, _ = predictions
        if stage == sb.Stage.TRAIN:
            out = outs["train"]
            self._train_acc.add(float(out["acc"]))
            return out["loss"]
        for modality, out in outs.items():
            self._valid[modality].append((float(out["loss"]), float(out["acc"]), int(out["masked"])))
        return torch.stack([out["loss"] for out in outs.values()]).mean()

    def trace_stats(self, outputs: tuple[dict[str, dict], Batch]) -> dict[str, float]:
        """The batch's masked-step accuracy and number of masked steps (for the ``trace_folder``)."""
        out = outputs[0]["train"]
        return {"acc": round(float(out["acc"]), 5), "masked": int(out["masked"])}

    def on_stage_start(self, stage: sb.Stage, epoch: int | None = None) -> None:
        """Reset the statistics; validation re-seeds its noise and its masks."""
        super().on_stage_start(stage, epoch)
        if stage != sb.Stage.TRAIN:
            self._valid: dict[str, list[tuple[float, float, int]]] = {m: [] for m in MODALITIES}
            self._valid_batches = 0

    def valid_stats(self) -> dict[str, float]:
        """``loss_<m>`` and ``acc_<m>`` (weighted by masked steps) of the last validation pass."""
        stats: dict[str, float] = {}
        for modality, rows in self._valid.items():
            if not rows:
                continue
            loss, acc, masked = (np.array(col, dtype=np.float64) for col in zip(*rows))
            weights = masked / max(1.0, masked.sum())
            stats[f"loss_{modality}"] = round(float((loss * weights).sum()), 4)
            stats[f"acc_{modality}"] = round(float((acc * weights).sum()), 4)
        return stats

    def on_stage_end(self, stage: sb.Stage, stage_loss: float, epoch: int | None = None) -> None:
        """Log, and at the end of validation keep the best checkpoints by the mean masked loss."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss, "acc": round(self._train_acc.value, 4)}
            self._train_acc.reset()  # at the end, as SpeechBrain resets its running loss (a resume continues it)
            return
        stats = {"loss": round(float(stage_loss), 4), **self.valid_stats()}
        if stage == sb.Stage.VALID:
            self.end_validation(epoch, stats)
        self.last_stats = stats
