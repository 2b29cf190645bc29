"""Small demo models shipped inside the package (nothing is ever downloaded).

Each ``<name>.safetensors`` file in this folder is a model bundle
(:mod:`avsr.checkpoints`); its name without the extension is the model name
used by ``avsr evaluate --model NAME`` and :func:`load_pretrained`.

Example:
    >>> isinstance(available(), list)
    True
    >>> load_pretrained("no-such-model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    avsr.errors.InputError: unknown pretrained model 'no-such-model' ...
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from avsr.errors import InputError

if TYPE_CHECKING:  # torch is imported only when a model is loaded
    import torch
    from torch import nn

    from avsr.tokenizer import Tokenizer

__all__ = ["PRETRAINED_DIR", "BUNDLE_SUFFIX", "DEFAULT_MODEL", "available", "pretrained_path", "load_pretrained"]

#: Folder holding the bundled models (tests point it elsewhere).
PRETRAINED_DIR: Path = Path(__file__).resolve().parent
#: File extension of a bundle.
BUNDLE_SUFFIX = ".safetensors"
#: The demo model trained on SynthGRID (``recipes/SynthGRID``).
DEFAULT_MODEL = "synthgrid-avsr-tiny"


def available() -> list[str]:
    """Names of the bundled models, sorted.

    Returns:
        the ``*.safetensors`` file names in :data:`PRETRAINED_DIR`, without extension.
    """
    folder = Path(PRETRAINED_DIR)
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(BUNDLE_SUFFIX)] for p in folder.glob(f"*{BUNDLE_SUFFIX}") if p.is_file())


def pretrained_path(name: str) -> Path:
    """The bundle file of a bundled model.

    Args:
        name: a name from :func:`available`.

    Returns:
        the path of ``<name>.safetensors``.

    Raises:
        InputError: no bundled model of that name (the message lists those there are).
    """
    names = available()
    if name not in names:
        have = f"available: {', '.join(names)}" if names else "no pretrained models are installed"
        raise InputError(None, f"unknown pretrained model {name!r} ({have})")
    return Path(PRETRAINED_DIR) / f"{name}{BUNDLE_SUFFIX}"


def load_pretrained(name: str, device: str | torch.device = "cpu") -> tuple["nn.Module", "Tokenizer"]:
    """Load a bundled model and its tokenizer.

    Args:
        name: a name from :func:`available`.
        device: where to put the model.

    Returns:
        ``(model, tokenizer)``; the model is in eval mode.

    Raises:
        InputError: unknown name, or a damaged bundle.
    """
    from avsr.checkpoints import load_model

    return load_model(pretrained_path(name), device=device)
