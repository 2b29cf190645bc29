"""Hybrid CTC/attention AVSR training on SpeechBrain's ``Brain``.

:class:`AVSRBrain` adds no model logic: ``compute_forward`` mixes noise into
the batch (training: the train noise sources at random SNRs; validation: a
fixed draw of the same sources, so model selection never sees test noise)
and calls the model's own loss; modality dropout, SpecAugment and video
augmentation happen inside the model in training mode. Validation decodes
with greedy CTC three times, audio-visual, audio-only and video-only, and
selects checkpoints by the mean of the three WERs, so the selected model
serves every modality.

SpeechBrain provides the loop: gradient accumulation and clipping, AMP
(``--precision fp16|bf16``), DDP (``torchrun``), progress bars, and the
``Checkpointer`` with intra-epoch checkpoints. What SpeechBrain leaves out
is added as recoverables: the random generators (:class:`RandomStates`)
and the noise mixer's generator, so a resumed run is the run that was
interrupted.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import speechbrain as sb
import torch

from avsr.data.dataset import Batch
from avsr.decoding.ctc import greedy_ctc
from avsr.evaluation import MODALITIES
from avsr.metrics import error_counts
from avsr.tokenizer import Tokenizer
from avsr.training.brain import RandomStates, RecipeBrain, modality_inputs, trace_file, unwrap

__all__ = ["RandomStates", "AVSRBrain", "MODALITIES", "unwrap", "trace_file"]

logger = logging.getLogger(__name__)


class AVSRBrain(RecipeBrain):
    """SpeechBrain ``Brain`` for :class:`avsr.models.AVSRModel`.

    Modules: ``model``. Hparams used besides :class:`RecipeBrain`'s:
    ``tokenizer`` (:class:`avsr.tokenizer.Tokenizer`), ``span_mask``
    (span-mask the encoder input in training), ``valid_modalities`` (subset
    of :data:`MODALITIES`), ``freeze_encoder_steps`` (the encoder's weights
    stay as they are for the first that many optimizer steps while the CTC
    head and the decoder learn on its features: fine-tuning a pretrained
    encoder, as AV-HuBERT does; 0 by default). Checkpoints are kept and
    averaged by the mean validation WER of the modalities; the recipe
    runner also writes each rank's final weights to the ``trace_folder``.
    """

    selection_key = "WER"

    @property
    def tokenizer(self) -> Tokenizer:
        return self.hparams.tokenizer

    # ----------------------------------------------------------- SpeechBrain API

    def compute_forward(self, batch: Any, stage: sb.Stage) -> tuple[dict, Batch]:
        """Noise, then the model's loss (and, in validation, its encodings per modality)."""
        b = self._batch(batch, stage)
        mask = bool(getattr(self.hparams, "span_mask", False)) and stage == sb.Stage.TRAIN
        out = self.modules.model(b.audio, b.audio_lengths, b.video, b.video_lengths, b.targets, mask=mask)
        if stage != sb.Stage.TRAIN:
            out["hyps"] = self._greedy(b)
        return out, b

    def optimizers_step(self) -> None:
        """SpeechBrain's step; while the encoder is frozen its gradients are dropped first.

        Dropped (``None``) gradients leave AdamW's weights, moments and weight
        decay of those parameters untouched, and every DDP rank drops the same
        ones, so the ranks stay identical.
        """
        if self.optimizer_step < int(getattr(self.hparams, "freeze_encoder_steps", 0) or 0):
            for param in self.model.encoder.parameters():
                param.grad = None
        super().optimizers_step()

    def _greedy(self, b: Batch) -> dict[str, list[str]]:
        model = self.model
        hyps: dict[str, list[str]] = {}
        for modality in getattr(self.hparams, "valid_modalities", MODALITIES):
            inputs = modality_inputs(b, modality)
            if inputs[0] is None and inputs[2] is None:
                continue
            enc, lengths = model.encode(*inputs)
            ids = greedy_ctc(model.ctc_log_probs(enc), lengths, blank=model.blank_id)
            hyps[modality] = [self.tokenizer.decode(seq) for seq in ids]
        return hyps

    def compute_objectives(self, predictions: tuple[dict, Batch], batch: Any, stage: sb.Stage) -> torch.Tensor:
        """The model's hybrid loss; validation also accumulates error counts per modality."""
        out, b = predictions
        if stage != sb.Stage.TRAIN:
            for modality, hyps in out["hyps"].items():
                counts = error_counts(b.texts, hyps)
                total = self._errors.setdefault(modality, [0, 0])
                total[0] += counts.errors
                total[1] += counts.reference_length
            self._acc.append(float(out["acc"]))
        return out["loss"]

    def on_stage_start(self, stage: sb.Stage, epoch: int | None = None) -> None:
        """Reset validation counters and re-seed the validation noise."""
        super().on_stage_start(stage, epoch)
        if stage != sb.Stage.TRAIN:
            self._errors: dict[str, list[int]] = {}
            self._acc: list[float] = []

    def wers(self) -> dict[str, float]:
        """WER (%) per modality of the last validation or test pass."""
        return {m: 100.0 * e / max(1, n) for m, (e, n) in self._errors.items()}

    def on_stage_end(self, stage: sb.Stage, stage_loss: float, epoch: int | None = None) -> None:
        """Log, and at the end of validation keep the best checkpoints by mean WER."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss}
            return
        wers = self.wers()
        stats = {"loss": stage_loss, "acc": float(np.mean(self._acc)) if self._acc else 0.0}
        stats.update({f"WER_{m}": round(w, 2) for m, w in wers.items()})
        stats["WER"] = round(float(np.mean(list(wers.values()))), 3) if wers else math.nan
        if stage == sb.Stage.VALID:
            self.end_validation(epoch, stats)
        self.last_stats = stats
