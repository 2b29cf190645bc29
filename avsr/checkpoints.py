"""Model bundles and resumable training checkpoints, written atomically.

A **model bundle** is one ``.safetensors`` file: the weights as tensors and,
in the file's string metadata, the JSON config that rebuilds the model and the
JSON tokenizer. Loading parses a JSON header and raw tensor bytes — it never
unpickles, so a crafted file cannot run code.

An **enhancement bundle** (:class:`avsr.models.enhancer.EnhancerModel`)
is the same kind of file without a tokenizer (``"tokenizer": null``); its
config has ``"kind": "enhancer"``. :func:`load_enhancer` reads it.

A **token LM bundle** (:class:`avsr.models.lm.TokenLM`, for shallow fusion)
is the same kind of file, written by :func:`save_model`; its config has
``"kind": "token_lm"`` and its tokenizer must be the recogniser's
(:func:`load_lm` checks).

A **pretrained encoder bundle** (:class:`avsr.models.pretrain.PretrainModel`,
written by :func:`save_pretrain_model` at the end of masked pretraining) is
the same kind of file without a tokenizer; its config has ``"kind":
"pretrain"``. The recognition recipe starts from one with ``--init_from``
(only the encoder's weights are taken).

A **training checkpoint** (model, optimizer, scheduler, step) is a
``torch.save`` file, read back with ``torch.load(weights_only=True)``, whose
restricted unpickler refuses anything but tensors and plain containers.

Example:
    >>> import tempfile, os, torch
    >>> from avsr.tokenizer import CharTokenizer
    >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
    >>> save_bundle(path, {"dim": 4}, {"w": torch.ones(2, 4)}, CharTokenizer(list("ab ")))
    >>> config, state, tok = load_bundle(path)
    >>> config, state["w"].shape, tok.vocab_size
    ({'dim': 4}, torch.Size([2, 4]), 6)
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
from torch import Tensor

from avsr.errors import InputError
from avsr.tokenizer import Tokenizer
from avsr.utils import atomic_path

if TYPE_CHECKING:
    from torch import nn

    from avsr.models.enhancer import EnhancerModel
    from avsr.models.lm import TokenLM
    from avsr.models.pretrain import PretrainModel

BUNDLE_FORMAT = "avsr-bundle"
BUNDLE_VERSION = "1"
#: ``config["kind"]`` of a token language model bundle.
LM_KIND = "token_lm"
#: ``config["kind"]`` of a speech enhancement bundle (:data:`avsr.models.enhancer.ENHANCER_KIND`).
ENHANCER_KIND = "enhancer"
#: ``config["kind"]`` of a pretrained encoder bundle (masked prediction; no tokenizer).
PRETRAIN_KIND = "pretrain"


def _plain_tensors(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """CPU, contiguous tensors that share no memory (safetensors refuses shared storage)."""
    out: dict[str, Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, value in state_dict.items():
        if not isinstance(value, Tensor):
            raise InputError(None, f"state_dict entry {name!r} is not a tensor")
        t = value.detach().cpu().contiguous()
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key in seen or t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()  # tied or a view into a larger buffer: give it its own memory
        else:
            seen.add(key)
        out[name] = t
    return out


def save_bundle(
    path: str | os.PathLike,
    config: Mapping[str, Any],
    state_dict: Mapping[str, Tensor],
    tokenizer: Tokenizer | None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write a model bundle atomically.

    Args:
        path: output ``.safetensors`` file.
        config: JSON-able model configuration (``build_model(config)``).
        state_dict: the model weights.
        tokenizer: stored as its :meth:`Tokenizer.to_dict` JSON (``None`` for
            a model without one, e.g. a pretrained encoder or an enhancer).
        extra: optional JSON-able notes (training step, data, scores ...).
    """
    from safetensors.torch import save_file

    try:
        metadata = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "config": json.dumps(dict(config), sort_keys=True),
            "tokenizer": json.dumps(tokenizer.to_dict() if tokenizer is not None else None),
            "extra": json.dumps(dict(extra or {}), sort_keys=True),
        }
    except (TypeError, ValueError) as e:
        raise InputError(path, f"config/extra must be JSON-able: {e}") from None
    tensors = _plain_tensors(state_dict)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def _check_file(path: str | os.PathLike) -> None:
    if not os.path.isfile(path):
        raise InputError(path, "no such file")


def read_bundle_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The bundle's ``config``, ``tokenizer`` (as dict) and ``extra``, without the weights.

    Raises:
        InputError: not a readable avsr model bundle.
    """
    from safetensors import safe_open

    _check_file(path)
    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
    except Exception as e:  # any parse failure means "not a bundle"; nothing is executed
        raise InputError(path, f"not a safetensors model bundle ({type(e).__name__})") from None
    if meta.get("format") != BUNDLE_FORMAT:
        raise InputError(path, "safetensors file without avsr bundle metadata")
    try:
        return {
            "config": json.loads(meta["config"]),
            "tokenizer": json.loads(meta["tokenizer"]),
            "extra": json.loads(meta.get("extra", "{}")),
            "version": meta.get("version"),
        }
    except (KeyError, json.JSONDecodeError) as e:
        raise InputError(path, f"damaged bundle metadata ({e})") from None


def load_bundle(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Tensor], Tokenizer | None]:
    """Read a model bundle (never executes code from the file).

    Args:
        path: a file written by :func:`save_bundle`.

    Returns:
        ``(config, state_dict, tokenizer)``; the tokenizer is ``None`` for a
        bundle saved without one.

    Raises:
        InputError: missing file, not a bundle, or damaged contents.
    """
    from safetensors.torch import load_file

    meta = read_bundle_metadata(path)
    try:
        state = load_file(os.fspath(path), device="cpu")
    except Exception as e:
        raise InputError(path, f"damaged bundle weights ({type(e).__name__})") from None
    tokenizer = Tokenizer.from_dict(meta["tokenizer"]) if meta["tokenizer"] is not None else None
    return meta["config"], state, tokenizer


def save_model(path: str | os.PathLike, model: "nn.Module", tokenizer: Tokenizer | None,
               extra: Mapping[str, Any] | None = None) -> None:
    """:func:`save_bundle` for a model that has a ``config`` attribute (``tokenizer`` ``None`` for an enhancer)."""
    config = getattr(model, "config", None)
    if not isinstance(config, Mapping):
        raise InputError(None, "model has no config dict to save")
    save_bundle(path, config, model.state_dict(), tokenizer, extra)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple["nn.Module", Tokenizer]:
    """Rebuild an AVSR model and its tokenizer from a bundle.

    Args:
        path: a bundle written by :func:`save_model` / :func:`save_bundle`.
        device: where to put the model.

    Returns:
        ``(model, tokenizer)``; the model is in eval mode.

    Raises:
        InputError: bad file, or weights that do not fit the config.
    """
    from avsr.models.avsr import build_model

    config, state, tokenizer = load_bundle(path)
    if config.get("kind") == LM_KIND:
        raise InputError(path, "is a token language model bundle, not a recognition model (pass it as --lm)")
    if config.get("kind") == ENHANCER_KIND:
        raise InputError(path, "is a speech enhancement bundle, not a recognition model (use avsr enhance)")
    if config.get("kind") == PRETRAIN_KIND:
        raise InputError(path, "is a pretrained encoder bundle, not a recognition model "
                               "(fine-tune it with the recognition recipe's --init_from)")
    if tokenizer is None:
        raise InputError(path, "not a recognition model bundle (no tokenizer)")
    try:
        model = build_model(config)
    except (TypeError, ValueError) as e:
        raise InputError(path, f"not a recognition model bundle ({e})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise InputError(path, f"weights do not match the stored config: {first}") from None
    return model.to(device).eval(), tokenizer


def _rebuild(path: str | os.PathLike, build: Callable[[], "nn.Module"], state: Mapping[str, Tensor], what: str,
             errors: tuple[type[Exception], ...] = (TypeError, ValueError, RuntimeError)) -> "nn.Module":
    """``build()`` a model and load a bundle's weights into it (strictly).

    Args:
        path: the bundle (named in the error).
        build: makes the model from the bundle's config.
        state: the bundle's weights.
        what: the kind of weights in the message (``"enhancer"``, ``"LM"``...).
        errors: the exceptions of ``build`` and loading that mean the weights do not fit.

    Returns:
        the model with the weights.

    Raises:
        InputError: the config does not build, or the weights do not fit it (the first line of why).
    """
    try:
        model = build()
        model.load_state_dict(state, strict=True)
    except errors as e:
        first = str(e).strip().splitlines()[0]
        raise InputError(path, f"{what} weights do not match the stored config: {first}") from None
    return model


def load_enhancer(path: str | os.PathLike, device: str | torch.device = "cpu") -> "EnhancerModel":
    """Rebuild a speech enhancement model from a bundle written by :func:`save_model`.

    Args:
        path: the bundle (config ``kind`` ``"enhancer"``).
        device: where to put the model.

    Returns:
        the :class:`avsr.models.enhancer.EnhancerModel`, in eval mode.

    Raises:
        InputError: a bad file, not an enhancement bundle, or weights that do not fit.
    """
    from avsr.models.enhancer import build_enhancer

    config, state, _ = load_bundle(path)
    if config.get("kind") != ENHANCER_KIND:
        raise InputError(path, "not a speech enhancement bundle (train one with recipes/SynthGRID/enhance)")
    return _rebuild(path, lambda: build_enhancer(config), state, "enhancer").to(device).eval()


def load_lm(
    path: str | os.PathLike, device: str | torch.device = "cpu", tokenizer: Tokenizer | None = None
) -> tuple["TokenLM", Tokenizer]:
    """Rebuild a token language model (shallow fusion) from a bundle written by :func:`save_model`.

    Args:
        path: the LM bundle (config ``kind`` ``"token_lm"``).
        device: where to put the LM.
        tokenizer: the recogniser's tokenizer; the LM's must be the same.

    Returns:
        ``(lm, lm_tokenizer)``; the LM is in eval mode.

    Raises:
        InputError: a bad file, not an LM bundle, weights that do not fit, or
            another tokenizer than ``tokenizer``.
    """
    from avsr.models.lm import build_lm

    config, state, lm_tokenizer = load_bundle(path)
    if config.get("kind") != LM_KIND:
        raise InputError(path, "not a token language model bundle (train one with recipes/SynthGRID/lm)")
    if tokenizer is not None and lm_tokenizer != tokenizer:
        raise InputError(path, "language model was trained with another tokenizer than the recognition "
                               "model's (train the LM with the model's tokenizer)")
    lm = _rebuild(path, lambda: build_lm(config), state, "LM")
    return lm.to(device).eval(), lm_tokenizer


def save_pretrain_model(path: str | os.PathLike, model: "nn.Module", extra: Mapping[str, Any] | None = None) -> None:
    """Write a pretrained encoder bundle (:class:`~avsr.models.pretrain.PretrainModel`, no tokenizer).

    Args:
        path: output ``.safetensors`` file.
        model: the pretraining model (its ``config`` rebuilds it).
        extra: optional JSON-able notes.
    """
    config = getattr(model, "config", None)
    if not isinstance(config, Mapping):
        raise InputError(None, "model has no config dict to save")
    save_bundle(path, {**config, "kind": PRETRAIN_KIND}, model.state_dict(), None, extra)


def load_pretrain_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> "PretrainModel":
    """Rebuild a pretraining model from a bundle written by :func:`save_pretrain_model`.

    Args:
        path: the pretrained encoder bundle (config ``kind`` ``"pretrain"``).
        device: where to put the model.

    Returns:
        the model, in eval mode.

    Raises:
        InputError: a bad file, not a pretrained encoder bundle, or weights that do not fit.
    """
    from avsr.models.pretrain import build_pretrain_model

    config, state, _ = load_bundle(path)
    if config.get("kind") != PRETRAIN_KIND:
        raise InputError(path, "not a pretrained encoder bundle (make one with recipes/SynthGRID/pretrain)")
    model = _rebuild(path, lambda: build_pretrain_model({k: v for k, v in config.items() if k != "kind"}), state,
                     "pretrained", errors=(KeyError, TypeError, ValueError, RuntimeError))
    return model.to(device).eval()


def save_training_checkpoint(
    path: str | os.PathLike,
    *,
    model: "nn.Module",
    step: int,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Save everything needed to resume training, atomically.

    Args:
        path: output file (``.pt``).
        model: its ``state_dict`` is saved.
        step: optimisation steps done.
        optimizer: optional, its ``state_dict``.
        scheduler: optional LR scheduler, its ``state_dict``.
        extra: plain data (numbers, strings, lists, dicts, tensors).
    """
    payload = {
        "format": "avsr-training-checkpoint",
        "step": int(step),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "extra": dict(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_training_checkpoint(
    path: str | os.PathLike,
    *,
    model: "nn.Module | None" = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Load a training checkpoint with the restricted (weights-only) unpickler.

    The given ``model``/``optimizer``/``scheduler`` get their states restored.

    Args:
        path: a file from :func:`save_training_checkpoint`.
        model, optimizer, scheduler: objects to restore (optional).
        map_location: device for the loaded tensors.

    Returns:
        The checkpoint dict (``step``, ``model``, ``optimizer``, ``scheduler``,
        ``extra``).

    Raises:
        InputError: missing, unsafe or damaged file.
    """
    _check_file(path)
    try:
        ckpt = torch.load(os.fspath(path), map_location=map_location, weights_only=True)
    except Exception as e:  # the weights-only unpickler refuses code; so do we
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(path, f"not a safe training checkpoint ({reason[:120]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "avsr-training-checkpoint":
        raise InputError(path, "not an avsr training checkpoint")
    try:
        if model is not None:
            model.load_state_dict(ckpt["model"])
        if optimizer is not None and ckpt.get("optimizer") is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler") is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0]
        raise InputError(path, f"checkpoint does not fit the model/optimizer: {first}") from None
    return ckpt


# --------------------------------------------------------------------------- imported checkpoints


def read_auto_avsr_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read an Auto-AVSR ``.pth`` with the weights-only unpickler (never runs code from the file).

    Args:
        path: their state dict (or a Lightning ``.ckpt`` of their training).

    Returns:
        what the file holds (a dict of tensors, or a Lightning checkpoint dict).

    Raises:
        InputError: missing, unsafe or damaged file.
    """
    _check_file(path)
    try:
        data = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as e:  # the weights-only unpickler refuses code; so do we
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(path, f"not a safe PyTorch checkpoint ({reason[:120]})") from None
    if not isinstance(data, dict):
        raise InputError(path, "not an Auto-AVSR checkpoint (not a state dict)")
    return data


def units_path_for(tokenizer_path: str | os.PathLike) -> str:
    """Where Auto-AVSR keeps the units file of a sentencepiece model: ``X.model`` -> ``X_units.txt``."""
    root, _ = os.path.splitext(os.fspath(tokenizer_path))
    return root + "_units.txt"


def load_auto_avsr(
    path: str | os.PathLike,
    tokenizer_path: str | os.PathLike,
    units_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> tuple["nn.Module", Tokenizer, dict[str, Any]]:
    """Convert an Auto-AVSR checkpoint and its vocabulary into a model, tokenizer and bundle notes.

    Args:
        path: their ``.pth`` (e.g. ``vsr_trlrs3vox2_base.pth``).
        tokenizer_path: their sentencepiece model (``spm/unigram/unigram5000.model``).
        units_path: their units file (default: ``unigram5000_units.txt`` beside the model).
        device: where to put the model.

    Returns:
        ``(model, tokenizer, extra)``; ``extra`` holds the origin, their
        decoding defaults and the crop preset (what :func:`save_model` stores).

    Raises:
        InputError: a missing or bad file, or a checkpoint that does not fit (naming the key).
    """
    from avsr.models.compat import auto_avsr
    from avsr.tokenizer import SentencePieceTokenizer

    _check_file(tokenizer_path)
    units_path = units_path if units_path is not None else units_path_for(tokenizer_path)
    if not os.path.isfile(units_path):
        raise InputError(units_path, "no such file: Auto-AVSR's units file (spm/unigram/unigram5000_units.txt) "
                                     "must lie beside the sentencepiece model, or be given with --units")
    try:
        with open(tokenizer_path, "rb") as f:
            tokenizer = SentencePieceTokenizer(f.read())
        with open(units_path, encoding="utf-8") as f:
            units = auto_avsr.parse_units(f.read())
    except InputError as e:
        raise InputError(tokenizer_path if "sentencepiece" in e.problem else units_path, e.problem) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(units_path, f"cannot read ({type(e).__name__})") from None
    raw = read_auto_avsr_checkpoint(path)
    try:
        model = auto_avsr.convert(raw, tokenizer, units)
        modality = auto_avsr.detect_modality(auto_avsr.unwrap(raw))
    except InputError as e:
        raise InputError(path, e.problem) from None
    return model.to(device).eval(), tokenizer, auto_avsr.bundle_extra(modality)


def is_bundle(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a safetensors file (an avsr bundle, or a damaged one), by its extension."""
    return os.fspath(path).lower().endswith(".safetensors")


def load_recognizer(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    tokenizer_path: str | os.PathLike | None = None,
    units_path: str | os.PathLike | None = None,
) -> tuple["nn.Module", Tokenizer, dict[str, Any]]:
    """A recognition model from a bundle, or from an Auto-AVSR ``.pth`` (converted on the fly).

    Args:
        path: a ``.safetensors`` bundle or an Auto-AVSR checkpoint.
        device: where to put the model.
        tokenizer_path: the sentencepiece model (needed for a ``.pth``).
        units_path: the units file of a ``.pth`` (default: beside the sentencepiece model).

    Returns:
        ``(model, tokenizer, extra)``; ``extra`` is the bundle's notes
        (``decoding`` defaults, ``crop_preset``... when it has them).

    Raises:
        InputError: a bad file, or a ``.pth`` without ``tokenizer_path``.
    """
    if is_bundle(path):
        if tokenizer_path is not None:
            raise InputError(path, "is a model bundle: it carries its tokenizer (drop --tokenizer)")
        model, tokenizer = load_model(path, device=device)
        return model, tokenizer, read_bundle_metadata(path)["extra"]
    if tokenizer_path is None:
        raise InputError(path, "not a .safetensors bundle: an Auto-AVSR checkpoint needs its sentencepiece "
                               "model (--tokenizer unigram5000.model)")
    return load_auto_avsr(path, tokenizer_path, units_path, device)
