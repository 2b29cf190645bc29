"""SpeechBrain's ``Checkpointer`` with kill-safe saving.

SpeechBrain writes a checkpoint in place: ``CKPT.yaml`` first, then one
file per recoverable. A run killed during a save (the usual way a job on a
shared machine ends) leaves a directory that looks like the newest
checkpoint but holds a truncated or missing file, and every rerun then
fails while recovering it. :class:`AtomicCheckpointer` writes each
checkpoint into a hidden temporary directory and renames it into place once
every file (and, in DDP, every rank) is done, so a checkpoint directory is
either complete or absent. Checkpoints that lack a recoverable's file (a
kill in the middle of deleting an old one) are ignored.

Example:
    >>> import tempfile, torch
    >>> ckpt = AtomicCheckpointer(tempfile.mkdtemp(), {"lin": torch.nn.Linear(2, 2)})
    >>> c = ckpt.save_checkpoint(meta={"loss": 1.0})
    >>> sorted(p.name for p in c.path.iterdir())
    ['CKPT.yaml', 'lin.ckpt']
    >>> ckpt.recover_if_possible().meta["loss"]
    1.0
"""

from __future__ import annotations

import logging
import os
import shutil

from speechbrain.utils.checkpoints import (
    DEFAULT_SAVE_HOOKS,
    METAFNAME,
    PARAMFILE_EXT,
    Checkpoint,
    Checkpointer,
    get_default_hook,
)
from speechbrain.utils.distributed import ddp_barrier, ddp_broadcast, if_main_process

__all__ = ["AtomicCheckpointer", "TMP_PREFIX"]

logger = logging.getLogger(__name__)

#: Prefix of in-progress checkpoint directories (SpeechBrain lists only ``CKPT*``).
TMP_PREFIX = ".tmp-"


class AtomicCheckpointer(Checkpointer):
    """A ``Checkpointer`` whose checkpoints appear only when complete (same arguments)."""

    def save_checkpoint(self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO):  # noqa: B006
        """Save a checkpoint into a temporary directory, then rename it into place.

        Same arguments and return value as SpeechBrain's ``save_checkpoint``.
        """
        tmp = final = None
        if if_main_process():
            final = self._new_checkpoint_dirpath() if name is None else self._custom_checkpoint_dirpath(name)
            for stale in self.checkpoints_dir.glob(TMP_PREFIX + "*"):  # left by a killed save
                shutil.rmtree(stale, ignore_errors=True)
            tmp = final.with_name(TMP_PREFIX + final.name)
            tmp.mkdir(parents=True)
        tmp = ddp_broadcast(tmp, src=0)
        names = []
        for key, obj in self.recoverables.items():
            path = tmp / f"{key}{PARAMFILE_EXT}"
            hook = self.custom_save_hooks.get(key) or get_default_hook(obj, DEFAULT_SAVE_HOOKS)
            if hook is None:
                raise RuntimeError(f"Don't know how to save {type(obj)}. Register a default hook or add a custom hook.")
            hook(obj, path)
            names.append(key)
        ddp_barrier()  # every rank's files are written
        result = None
        if if_main_process():
            saved_meta = self._save_checkpoint_metafile(tmp / METAFNAME, meta, end_of_epoch)
            if final.exists():  # a named checkpoint saved again
                shutil.rmtree(final)
            os.replace(tmp, final)
            kind = "end-of-epoch" if end_of_epoch else "intra-epoch"
            logger.log(verbosity, f"Saved an {kind} checkpoint in {final}")
            result = Checkpoint(final, saved_meta, {k: final / f"{k}{PARAMFILE_EXT}" for k in names})
        ddp_barrier()  # the checkpoint is in place before any rank lists checkpoints
        return result

    def list_checkpoints(self):
        """SpeechBrain's list, without checkpoints that miss a recoverable's file."""
        found = super().list_checkpoints()
        if self.allow_partial_load:
            return found
        needed = {k for k in self.recoverables if "dataloader" not in k and not self.optional_recoverables.get(k)}
        complete = []
        for ckpt in found:
            missing = needed - set(ckpt.paramfiles)
            if missing:
                logger.warning("ignoring incomplete checkpoint %s (no %s)", ckpt.path, ", ".join(sorted(missing)))
            else:
                complete.append(ckpt)
        return complete
