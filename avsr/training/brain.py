"""What every recipe ``Brain`` of the toolkit shares (recognition, pretraining, enhancement).

:class:`RecipeBrain` is SpeechBrain's ``Brain`` with the habits of this
toolkit's recipes: a resumed run is the run that was interrupted (the
random generators and the augmenters' generators are checkpoint
recoverables, the data loaders have their own seeded generators, the
duration batches reshuffle every epoch), DDP also runs on CPU (gloo, no
``SyncBatchNorm``), the learning-rate schedule steps after every optimizer
step and follows the current number of epochs after a resume, and the end
of every validation logs the epoch (file and TensorBoard) and keeps the
checkpoints with the best :attr:`RecipeBrain.selection_key` (lowest, or
highest with :attr:`RecipeBrain.selection_max`), which
:meth:`RecipeBrain.average_best` averages into the model at the end.

Subclasses supply ``compute_forward``, ``compute_objectives`` and the
validation statistics (:class:`avsr.training.asr.AVSRBrain`,
:class:`avsr.training.pretrain.PretrainBrain`,
:class:`avsr.training.enhance.EnhanceBrain`).
"""

from __future__ import annotations

import functools
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import speechbrain as sb
import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from torch import nn

from avsr.data.augment import NoiseMixer, UtteranceJoiner, rank_file
from avsr.data.dataset import Batch, batch_tensors

__all__ = ["RandomStates", "RunningMean", "RecipeBrain", "unwrap", "trace_file", "modality_inputs"]


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside a DDP / DataParallel wrapper (or the module itself)."""
    return module.module if hasattr(module, "module") else module


@functools.partial(register_checkpoint_hooks, save_on_main_only=False)
class RandomStates:
    """Checkpoint recoverable for the global random generators (torch, CUDA, numpy, random).

    Every DDP rank saves its own generators (rank N to ``path.rank<N>``); a
    rank without a saved state (resumed with more ranks) takes rank 0's.
    """

    @mark_as_saver
    def _save(self, path: str | os.PathLike) -> None:
        _, keys, pos, has_gauss, cached = np.random.get_state()
        version, internal, gauss = random.getstate()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()
        torch.save(state, rank_file(path))

    @mark_as_loader
    def _load(self, path: str | os.PathLike, end_of_epoch: bool = False) -> None:
        del end_of_epoch
        mine = rank_file(path)
        state = torch.load(mine if mine.is_file() else path, weights_only=True)
        torch.set_rng_state(state["torch"])
        n, p = state["numpy"], state["python"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
        random.setstate((p["version"], tuple(p["internal"].tolist()), p["gauss"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])


@register_checkpoint_hooks
class RunningMean:
    """A mean over the batches of an epoch that an intra-epoch resume continues (a checkpoint recoverable).

    Example:
        >>> m = RunningMean()
        >>> m.add(1.0); m.add(0.0)
        >>> m.value
        0.5
    """

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def add(self, value: float) -> None:
        """Count one batch's value."""
        self.total += float(value)
        self.count += 1

    @property
    def value(self) -> float:
        """The mean so far (0 before the first value)."""
        return self.total / self.count if self.count else 0.0

    def reset(self) -> None:
        """Start a new epoch."""
        self.total, self.count = 0.0, 0

    @mark_as_saver
    def _save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps({"total": self.total, "count": self.count}), encoding="utf-8")

    @mark_as_loader
    def _load(self, path: str | os.PathLike, end_of_epoch: bool = False) -> None:
        del end_of_epoch
        state = json.loads(Path(path).read_text(encoding="utf-8"))
        self.total, self.count = float(state["total"]), int(state["count"])


def modality_inputs(b: Batch, modality: str) -> tuple[Any, Any, Any, Any]:
    """The model inputs of one modality of a batch.

    Args:
        b: the batch.
        modality: ``"av"``, ``"audio"`` or ``"video"``.

    Returns:
        ``(audio, audio_lengths, video, video_lengths)`` with ``None`` for what
        the modality leaves out (or the batch lacks).
    """
    audio = b.audio if modality in ("av", "audio") else None
    video = b.video if modality in ("av", "video") else None
    return (audio, b.audio_lengths if audio is not None else None,
            video, b.video_lengths if video is not None else None)


def trace_file(folder: str | os.PathLike, name: str, suffix: str) -> Path:
    """``<folder>/<name>.rank<N><suffix>``: a file of the opt-in ``trace_folder`` hparam."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(folder) / f"{name}.rank{int(os.environ.get('RANK', 0))}{suffix}"


class RecipeBrain(sb.Brain):
    """The shared part of the recipes' Brains (modules: ``model``).

    Hparams used (besides SpeechBrain's run options): ``seed``,
    ``train_noise`` / ``valid_noise`` (:class:`NoiseMixer` or ``None``; the
    validation mixer is re-seeded with ``valid_noise_seed`` at every
    validation), ``train_join`` (:class:`UtteranceJoiner` or ``None``,
    applied before the noise), ``lr_annealing`` (a SpeechBrain scheduler
    called per optimizer step), ``lr_total_steps``, ``epoch_counter``,
    ``train_logger`` / ``tensorboard_logger`` (optional), ``keep_best``
    (checkpoints kept for averaging), ``trace_folder`` (optional, for tests
    and debugging: each rank appends one JSON line per training batch,
    ``{"epoch", "step", "optimizer_step", "ids", "loss"}`` and
    :meth:`trace_stats`, to
    ``<trace_folder>/batches.rank<N>.jsonl``).
    """

    #: Validation statistic that selects the checkpoints to keep and average.
    selection_key = "loss"
    #: Whether a larger :attr:`selection_key` is better (e.g. an SI-SDR improvement); lower by default.
    selection_max = False

    def on_fit_start(self) -> None:
        """Register the generators in the checkpointer, then let SpeechBrain recover."""
        if self.checkpointer is not None:
            if "random_states" not in self.checkpointer.recoverables:
                self.checkpointer.add_recoverable("random_states", RandomStates())
            noise = getattr(self.hparams, "train_noise", None)
            if noise is not None and "train_noise" not in self.checkpointer.recoverables:
                self.checkpointer.add_recoverable("train_noise", noise)
            joiner = getattr(self.hparams, "train_join", None)
            if joiner is not None and "train_join" not in self.checkpointer.recoverables:
                # optional: a run that switches joining on resumes from its earlier checkpoints
                self.checkpointer.add_recoverable("train_join", joiner, optional_load=True)
        super().on_fit_start()
        # The schedule's length follows the current config, also after a resume
        # with a different number of epochs (the checkpoint holds the old one).
        annealing = getattr(self.hparams, "lr_annealing", None)
        total = getattr(self.hparams, "lr_total_steps", None)
        if total and annealing is not None and hasattr(annealing, "num_training_steps"):
            annealing.num_training_steps = int(total)

    def _wrap_distributed(self) -> None:
        """SpeechBrain's DDP wrapping, but on CPU without ``SyncBatchNorm`` (which needs GPUs).

        On CPU the batch-norm buffers are broadcast from rank 0 at every
        forward (DDP's default), so the ranks still hold the same model.
        """
        if self.distributed_launch and not str(self.device).startswith("cuda"):
            from torch.nn.parallel import DistributedDataParallel

            for name, module in self.modules.items():
                if any(p.requires_grad for p in module.parameters()):
                    self.modules[name] = DistributedDataParallel(
                        module, find_unused_parameters=self.find_unused_parameters
                    )
            return
        super()._wrap_distributed()

    def make_dataloader(self, dataset: Any, stage: sb.Stage, ckpt_prefix: str | None = "dataloader-", **loader_kwargs: Any):
        """SpeechBrain's loader, made reproducible across a kill and a resume.

        * The loader gets its own ``torch.Generator`` (seeded by ``seed``):
          otherwise each new iterator draws its base seed from the global
          generator, and a resumed run, which makes one more iterator than
          the interrupted one, would continue from a shifted random state.
        * A ``batch_sampler`` (the duration batches) becomes the Brain's
          ``train_sampler`` outside DDP too, so ``set_epoch`` reshuffles it
          every epoch (SpeechBrain calls it only on a DDP wrapper or its own
          shuffling sampler; without this every epoch had the same order).
        """
        if loader_kwargs.get("generator") is None:
            seed = int(getattr(self.hparams, "seed", 0))
            loader_kwargs["generator"] = torch.Generator().manual_seed(seed + list(sb.Stage).index(stage))
        loader = super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)
        sampler = loader_kwargs.get("batch_sampler")
        if stage == sb.Stage.TRAIN and self.train_sampler is None and hasattr(sampler, "set_epoch"):
            self.train_sampler = sampler
        return loader

    @property
    def model(self) -> nn.Module:
        """The bare model (unwrapped from DDP)."""
        return unwrap(self.modules.model)

    def _batch(self, batch: Any, stage: sb.Stage) -> Batch:
        """The model inputs of a padded batch on the device: joined (training) and noisy."""
        b = batch_tensors(batch).to(self.device)
        joiner: UtteranceJoiner | None = getattr(self.hparams, "train_join", None)
        if joiner is not None and stage == sb.Stage.TRAIN:
            b = joiner(b)
        mixer: NoiseMixer | None = getattr(
            self.hparams, "train_noise" if stage == sb.Stage.TRAIN else "valid_noise", None
        )
        if mixer is not None and b.audio is not None:
            b.audio = mixer.mix_batch(b.audio, b.audio_lengths)
        return b

    def on_fit_batch_end(self, batch: Any, outputs: Any, loss: torch.Tensor, should_step: bool) -> None:
        """Advance the learning-rate schedule after every optimizer step; trace the batch."""
        if should_step and getattr(self.hparams, "lr_annealing", None) is not None:
            self.hparams.lr_annealing(self.optimizer)
        trace = getattr(self.hparams, "trace_folder", None)
        if trace:
            record = {"epoch": int(self.hparams.epoch_counter.current), "step": self.step,
                      "optimizer_step": self.optimizer_step, "ids": list(batch.id),
                      "loss": round(float(loss.detach()), 5), **self.trace_stats(outputs)}
            with open(trace_file(trace, "batches", ".jsonl"), "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def trace_stats(self, outputs: Any) -> dict[str, float]:
        """More numbers of a training batch for its ``trace_folder`` line (none here).

        Args:
            outputs: what ``compute_forward`` returned for the batch.
        """
        return {}

    def on_stage_start(self, stage: sb.Stage, epoch: int | None = None) -> None:
        """Re-seed the validation noise, so every validation hears the same noise."""
        if stage != sb.Stage.TRAIN:
            mixer = getattr(self.hparams, "valid_noise", None)
            if mixer is not None:
                mixer.rng = np.random.default_rng(int(getattr(self.hparams, "valid_noise_seed", 1234)))

    def end_validation(self, epoch: int | None, stats: dict[str, float]) -> None:
        """Log the epoch and save a checkpoint, keeping the ``keep_best`` best by :attr:`selection_key`.

        The best are the lowest, or the highest with :attr:`selection_max`.

        Args:
            epoch: the epoch just validated.
            stats: validation statistics; must hold :attr:`selection_key`.
        """
        lr = self.optimizer.param_groups[0]["lr"]
        epoch_stats = {"epoch": epoch, "lr": lr, "steps": self.optimizer_step}
        for name in ("train_logger", "tensorboard_logger"):
            log = getattr(self.hparams, name, None)
            if log is not None:
                log.log_stats(stats_meta=epoch_stats, train_stats=getattr(self, "train_stats", None), valid_stats=stats)
        if self.checkpointer is not None:
            key = self.selection_key
            self.checkpointer.save_and_keep_only(
                meta={key: stats[key], "epoch": epoch},
                **{"max_keys" if self.selection_max else "min_keys": [key]},
                num_to_keep=int(getattr(self.hparams, "keep_best", 5)),
            )

    def average_best(self, n_best: int | None = None) -> list[str]:
        """Load the average of the ``n_best`` best checkpoints by :attr:`selection_key` into the model.

        The best are the lowest, or the highest with :attr:`selection_max`.

        Returns:
            the names of the averaged checkpoints (empty when there are none).
        """
        if self.checkpointer is None:
            return []
        key = self.selection_key
        n_best = int(n_best or getattr(self.hparams, "keep_best", 5))
        ckpts = self.checkpointer.find_checkpoints(
            **{"max_key" if self.selection_max else "min_key": key}, max_num_checkpoints=n_best,
            ckpt_predicate=lambda c: key in c.meta,
        )
        if not ckpts:
            return []
        state = sb.utils.checkpoints.average_checkpoints(
            ckpts, "model", parameter_loader=lambda p, map_location=None: torch.load(p, map_location="cpu", weights_only=True)
        )
        self.model.load_state_dict(state)
        return [Path(c.path).name for c in ckpts]
