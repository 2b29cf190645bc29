"""Audio-visual speech enhancement training on SpeechBrain's ``Brain``.

:class:`EnhanceBrain` is :class:`avsr.training.brain.RecipeBrain` with the
task's own forward pass and statistics; everything else is shared with the
recognition and pretraining Brains: DDP (gloo on CPU), the reproducible
data loader, the random generators and the mixer's generator as checkpoint
recoverables (a resumed run is the run that was interrupted), intra-epoch
checkpoints, the learning-rate schedule per optimizer step, the opt-in
batch trace, logging, and keeping and averaging the best checkpoints by a
selection statistic (here the largest mean SI-SDR improvement).

``compute_forward`` makes the mixture of each clean utterance on the fly
(:class:`avsr.data.augment.InterferenceMixer`: noise of the training
sources or a competing talker of the same split, at a random SNR, or
nothing) and calls the model's own loss (negative SI-SDR); video dropout
happens inside the model. Validation mixes with a fixed draw (the mixer is
re-seeded each time; train noise sources and validation talkers, so model
selection never sees test noise) and enhances every mixture twice, with the
lips and without, and selects checkpoints by the mean SI-SDR improvement of
the two, so the selected model serves both modes.
"""

from __future__ import annotations

import math
from typing import Any

import speechbrain as sb
import torch

from avsr.data.augment import InterferenceMixer
from avsr.data.dataset import Batch, batch_tensors
from avsr.models.enhancer import si_sdr_loss
from avsr.training.brain import RecipeBrain

__all__ = ["EnhanceBrain"]


class EnhanceBrain(RecipeBrain):
    """SpeechBrain ``Brain`` for :class:`avsr.models.enhancer.EnhancerModel`.

    Modules: ``model``. Hparams used besides :class:`RecipeBrain`'s (whose
    ``train_noise`` and ``valid_noise`` are :class:`InterferenceMixer`
    here; no ``train_join``): ``speakers`` (utterance id -> speaker, so a
    competing talker is someone else). Validation statistics:
    ``SISDR_noisy`` (the mixtures), ``SISDRi_av``, ``SISDRi_audio``
    (improvements in dB) and their mean ``SISDRi``, which selects
    checkpoints (largest best).
    """

    selection_key = "SISDRi"
    selection_max = True

    def _mixture(self, batch: Any, stage: sb.Stage) -> tuple[Batch, torch.Tensor]:
        """The clean batch and its on-the-fly mixtures."""
        b = batch_tensors(batch).to(self.device)
        mixer: InterferenceMixer | None = getattr(
            self.hparams, "train_noise" if stage == sb.Stage.TRAIN else "valid_noise", None
        )
        if mixer is None:
            return b, b.audio
        speakers = [self.hparams.speakers.get(i, i) for i in b.ids]
        noisy, _ = mixer.mix_batch(b.audio, b.audio_lengths, speakers)
        return b, noisy

    def compute_forward(self, batch: Any, stage: sb.Stage) -> tuple[dict, Batch]:
        """Mix, then the model's loss (and, in validation, SI-SDR of the noisy and audio-only outputs)."""
        b, noisy = self._mixture(batch, stage)
        out = self.modules.model(noisy, b.audio_lengths, b.video, b.video_lengths, clean=b.audio)
        if stage != sb.Stage.TRAIN:
            _, out["si_sdr_noisy"] = si_sdr_loss(noisy, b.audio, b.audio_lengths)
            audio_only = self.model.enhance(noisy, b.audio_lengths, None, None)
            _, out["si_sdr_audio"] = si_sdr_loss(audio_only, b.audio, b.audio_lengths)
        out.pop("enhanced")
        return out, b

    def compute_objectives(self, predictions: tuple[dict, Batch], batch: Any, stage: sb.Stage) -> torch.Tensor:
        """The model's loss; validation also sums SI-SDR per system."""
        out, _ = predictions
        if stage != sb.Stage.TRAIN:
            for name, key in (("noisy", "si_sdr_noisy"), ("av", "si_sdr"), ("audio", "si_sdr_audio")):
                self._sums[name] = self._sums.get(name, 0.0) + float(out[key].sum())
            self._count += int(out["si_sdr"].numel())
        return out["loss"]

    def on_stage_start(self, stage: sb.Stage, epoch: int | None = None) -> None:
        """Reset the validation sums and re-seed the validation mixer."""
        super().on_stage_start(stage, epoch)
        if stage != sb.Stage.TRAIN:
            self._sums: dict[str, float] = {}
            self._count = 0

    def on_stage_end(self, stage: sb.Stage, stage_loss: float, epoch: int | None = None) -> None:
        """Log, and at the end of validation keep the best checkpoints by mean SI-SDR improvement."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss}
            return
        n = max(1, self._count)
        mean = {k: v / n for k, v in self._sums.items()}
        stats: dict[str, float] = {"loss": stage_loss}
        if mean:
            stats["SISDR_noisy"] = round(mean["noisy"], 2)
            stats["SISDRi_av"] = round(mean["av"] - mean["noisy"], 2)
            stats["SISDRi_audio"] = round(mean["audio"] - mean["noisy"], 2)
            stats["SISDRi"] = round((stats["SISDRi_av"] + stats["SISDRi_audio"]) / 2, 3)
        else:
            stats["SISDRi"] = math.nan
        if stage == sb.Stage.VALID:
            self.end_validation(epoch, stats)
        self.last_stats = stats
