"""Auto-AVSR checkpoints (Ma et al., ICASSP 2023) -> :class:`avsr.models.AVSRModel`.

Auto-AVSR (``github.com/mpc001/auto_avsr``) publishes its LRS3 models as
plain PyTorch state dicts (``.pth``) of its ESPnet-based ``E2E`` module, with
a sentencepiece unigram vocabulary (``spm/unigram/unigram5000.model``) and a
units file (``unigram5000_units.txt``) that numbers the output classes::

    0            <blank>
    1 .. N       the units file's pieces, in its line order ("<unk> 1" first)
    N + 1        <eos> (also sos)        ->  odim = N + 2

This module, given such a state dict (already read by
:func:`avsr.checkpoints.read_auto_avsr_checkpoint`), detects the model
(video, audio or audio-visual) from its keys, reads the architecture from
the tensor shapes, builds the matching :class:`~avsr.models.AVSRModel`
(:func:`avsr.models.avsr.auto_avsr_config`) and fills every parameter.
Every key of the checkpoint must be used and every parameter filled: a
missing, unexpected or mis-shaped key is one :class:`~avsr.errors.InputError`
naming it.

Key layouts accepted:

* the release layout (``encoder.frontend.*``, ``encoder.embed.0.*``,
  ``encoder.encoders.N.*``, ``encoder.after_norm.*``, ``decoder.*``,
  ``ctc.ctc_lo.*``; the audio-visual model adds ``aux_encoder.*`` for the
  audio stream and ``fusion.*``, its ``MLPHead``);
* the 2025 layout of their repository (``frontend.*``, ``proj_encoder.*``
  instead of ``encoder.frontend.*``, ``encoder.embed.0.*``);
* either wrapped as a Lightning checkpoint (``{"state_dict": {"model.…": …}}``).

ESPnet's convolution module is spelled ``pointwise_cov1``/``pointwise_cov2``
in their code (an old ESPnet typo); ``pointwise_conv1``/``pointwise_conv2``
is accepted too.

The output classes are re-ordered into this toolkit's id layout (blank 0,
sentencepiece id ``i`` at ``i + 1``, sos/eos last; see :mod:`avsr.tokenizer`):
the rows of the decoder embedding, the decoder output layer and the CTC
layer are permuted by piece. A piece of the sentencepiece model that the
units file lacks can never be emitted (its output bias is set to
:data:`NEVER`); a unit that the sentencepiece model lacks cannot be written
as text and is dropped (with a warning).

What the conversion does not change: Auto-AVSR's convolution module does
not mask padded steps before its depthwise convolution, this toolkit's
does, so batched decoding gives exactly what decoding one utterance gives
(for a single utterance the two are the same computation).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from avsr.errors import InputError

if TYPE_CHECKING:
    from avsr.models.avsr import AVSRModel
    from avsr.tokenizer import Tokenizer

__all__ = [
    "DECODING",
    "CROP_PRESET",
    "NEVER",
    "unwrap",
    "detect_modality",
    "infer_config",
    "parse_units",
    "vocabulary_map",
    "check_state_dict",
    "convert",
    "bundle_extra",
]

logger = logging.getLogger(__name__)

#: Their decoding settings (``get_beam_search_decoder``: CTC weight 0.1, beam 40,
#: no length bonus; ESPnet ``maxlenratio=0``: at most one token per encoder step).
DECODING: dict[str, Any] = {"beam_size": 40, "ctc_weight": 0.1, "length_bonus": 0.0, "max_len_ratio": 1.0}
#: Name of the mouth-crop preset of :mod:`avsr.vision` that reproduces their preprocessing.
CROP_PRESET = "auto_avsr"
#: Output bias of classes the checkpoint has no weights for: never chosen.
NEVER = -1.0e4


# --------------------------------------------------------------------------- keys


def unwrap(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """The model's state dict in the release layout, whatever wrapping and layout it came in.

    Args:
        checkpoint: what ``torch.load(..., weights_only=True)`` returned: a
            state dict, or a Lightning checkpoint with ``"state_dict"``.

    Returns:
        ``{key: tensor}`` with ``model.`` prefixes removed and the 2025 layout
        renamed to the release layout.

    Raises:
        InputError: not a dict of tensors.
    """
    state: Any = checkpoint
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if isinstance(state, Mapping) and isinstance(state.get("model_state_dict"), Mapping):
        state = state["model_state_dict"]
    if not isinstance(state, Mapping) or not state:
        raise InputError(None, "not an Auto-AVSR checkpoint (no state dict in it)")
    bad = next((k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)), None)
    if bad is not None:
        raise InputError(None, f"not an Auto-AVSR checkpoint (entry {bad!r} is not a tensor)")
    keys = list(state)
    if all(k.startswith("model.") for k in keys):
        state = {k[len("model."):]: v for k, v in state.items()}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("frontend."):  # 2025 layout
            key = "encoder." + key
        elif key.startswith("proj_encoder."):
            key = "encoder.embed.0." + key[len("proj_encoder."):]
        key = key.replace(".pointwise_conv1.", ".pointwise_cov1.").replace(".pointwise_conv2.", ".pointwise_cov2.")
        out[key] = value
    return out


def detect_modality(state: Mapping[str, Tensor]) -> str:
    """``"av"``, ``"video"`` or ``"audio"`` from the keys of an (unwrapped) Auto-AVSR state dict.

    Raises:
        InputError: no Auto-AVSR frontend among the keys.
    """
    if "encoder.frontend.frontend3D.0.weight" in state and any(k.startswith("aux_encoder.") for k in state):
        return "av"
    if "encoder.frontend.frontend3D.0.weight" in state:
        return "video"
    if "encoder.frontend.trunk.conv1.weight" in state:
        return "audio"
    raise InputError(None, "not an Auto-AVSR checkpoint: no encoder.frontend.frontend3D.0.weight "
                           "(video) or encoder.frontend.trunk.conv1.weight (audio)")


def _shape(state: Mapping[str, Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise InputError(None, f"Auto-AVSR checkpoint lacks {key}")
    return tuple(state[key].shape)


def _count(state: Mapping[str, Tensor], prefix: str) -> int:
    """Number of consecutive ``prefix{i}.`` groups."""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in state if (m := pat.match(k))}
    n = 0
    while n in found:
        n += 1
    return n


def _stage_blocks(state: Mapping[str, Tensor], trunk: str) -> list[int]:
    return [_count(state, f"{trunk}.layer{i}.") for i in range(1, 5)]


def infer_config(state: Mapping[str, Tensor], vocab_size: int, modality: str | None = None) -> dict[str, Any]:
    """The :class:`~avsr.models.avsr.AVSRConfig` dict of an (unwrapped) Auto-AVSR state dict.

    Widths, depths, heads (from ``pos_bias_u``), kernel and fusion width come
    from the tensor shapes, so reduced test models convert like the published
    ones. Not readable from shapes, hence taken as published: the decoder's
    heads (= the encoder's), swish activations (PReLU when the checkpoint has
    its slopes), the crop normalisation.

    Args:
        state: the state dict (release layout, see :func:`unwrap`).
        vocab_size: the output size wanted (this toolkit's tokenizer's).
        modality: the model kind, detected when ``None``.

    Returns:
        the config dict.
    """
    from avsr.models.avsr import auto_avsr_config

    modality = modality or detect_modality(state)
    enc = "encoder"
    d_model, d_in = _shape(state, f"{enc}.embed.0.weight")
    heads = _shape(state, f"{enc}.encoders.0.self_attn.pos_bias_u")[0]
    overrides: dict[str, Any] = {
        "d_model": d_model,
        "encoder_heads": heads,
        "decoder_heads": heads,
        "encoder_ff": _shape(state, f"{enc}.encoders.0.feed_forward.w_1.weight")[0],
        "conv_kernel": _shape(state, f"{enc}.encoders.0.conv_module.depthwise_conv.weight")[-1],
        "decoder_layers": _count(state, "decoder.decoders."),
        "decoder_ff": _shape(state, "decoder.decoders.0.feed_forward.w_1.weight")[0],
    }
    layers = _count(state, f"{enc}.encoders.")
    overrides["stream_layers" if modality == "av" else "encoder_layers"] = layers
    prelu = any(k.endswith("relu1.weight") for k in state)
    overrides["resnet_act"] = "prelu" if prelu else "swish"
    if modality in ("video", "av"):
        overrides["video_width"] = _shape(state, "encoder.frontend.frontend3D.0.weight")[0]
        overrides["video_layers"] = _stage_blocks(state, "encoder.frontend.trunk")
    if modality in ("audio", "av"):
        trunk = "aux_encoder.frontend.trunk" if modality == "av" else "encoder.frontend.trunk"
        overrides["frontend_width"] = _shape(state, f"{trunk}.conv1.weight")[0]
        if _stage_blocks(state, trunk) != [2, 2, 2, 2]:
            raise InputError(None, f"unsupported Auto-AVSR audio trunk: blocks per stage {_stage_blocks(state, trunk)}")
    if modality == "av":
        overrides["fusion_hidden"] = _shape(state, "fusion.fc1.weight")[0]
    return auto_avsr_config(vocab_size, modality, **overrides)


# --------------------------------------------------------------------------- vocabulary


def parse_units(text: str) -> list[str]:
    """The pieces of a units file (``"piece id"`` per line, ids 1, 2, ... in order).

    Args:
        text: the file's content.

    Returns:
        the pieces in id order (index 0 is unit id 1).

    Raises:
        InputError: a malformed line or ids out of order.
    """
    pieces: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) != len(pieces) + 1:
            raise InputError(None, f"units file line {n} is not 'piece {len(pieces) + 1}': {line!r}")
        pieces.append(parts[0])
    if not pieces:
        raise InputError(None, "units file is empty")
    return pieces


def vocabulary_map(units: Sequence[str], tokenizer: "Tokenizer") -> tuple[int, list[int | None]]:
    """Where each of this toolkit's ids is among Auto-AVSR's output classes.

    Args:
        units: the pieces of their units file (:func:`parse_units`).
        tokenizer: this toolkit's tokenizer of their sentencepiece model.

    Returns:
        ``odim`` (their output size, ``len(units) + 2``) and, per id of
        ``tokenizer``, their class index or ``None`` (no weights for it).
    """
    odim = len(units) + 2
    theirs = {piece: i + 1 for i, piece in enumerate(units)}
    index: list[int | None] = []
    for tid in range(tokenizer.vocab_size):
        if tid == tokenizer.blank_id:
            index.append(0)
        elif tid == tokenizer.sos_id:
            index.append(odim - 1)
        else:
            index.append(theirs.get(tokenizer.id_to_piece(tid)))
    dropped = len(units) - len({i for i in index if i is not None and 0 < i < odim - 1})
    if dropped:
        logger.warning("%d of the %d units are not pieces of the sentencepiece model: they cannot be "
                       "written as text and are dropped", dropped, len(units))
    if all(i is None for i in index[1:-1]):
        raise InputError(None, "the units file and the sentencepiece model share no piece (another vocabulary?)")
    return odim, index


def _rows(src: Tensor, index: Sequence[int | None], fill: float) -> Tensor:
    """Rows of ``src`` (their classes) in our id order; ``fill`` where there is no row."""
    out = src.new_full((len(index), *src.shape[1:]), fill)
    have = [i for i, j in enumerate(index) if j is not None]
    out[have] = src[[index[i] for i in have]]
    return out


# --------------------------------------------------------------------------- the key plan


@dataclass(frozen=True)
class _Recipe:
    """How one parameter of our model is made from checkpoint tensors."""

    sources: tuple[str, ...]
    make: Callable[[list[Tensor]], Tensor]
    expect: Callable[[tuple[int, ...]], list[tuple[int, ...] | None]]  # expected source shapes (None: unchecked)


def _copy(key: str) -> _Recipe:
    return _Recipe((key,), lambda ts: ts[0], lambda shape: [shape])


def _pointwise(key: str) -> _Recipe:
    """A kernel-1 Conv1d (out, in, 1) as a Linear (out, in)."""
    def make(ts: list[Tensor]) -> Tensor:
        return ts[0].squeeze(-1) if ts[0].dim() == 3 else ts[0]

    return _Recipe((key,), make, lambda shape: [shape + (1,) if len(shape) == 2 else shape])


def _kv(k: str, v: str) -> _Recipe:
    """Separate key and value projections as our fused ``kv`` projection."""
    def expect(shape: tuple[int, ...]) -> list[tuple[int, ...] | None]:
        half = (shape[0] // 2, *shape[1:])
        return [half, half]

    return _Recipe((k, v), lambda ts: torch.cat(ts, dim=0), expect)


def _vocab(key: str, index: Sequence[int | None], odim: int, fill: float) -> _Recipe:
    return _Recipe((key,), lambda ts: _rows(ts[0], index, fill), lambda shape: [(odim, *shape[1:])])


def _fusion_in(key: str, d_video: int) -> _Recipe:
    """Their ``fc1`` reads ``[video; audio]``, ours ``[audio; video]``: swap the column blocks."""
    return _Recipe((key,), lambda ts: torch.cat([ts[0][:, d_video:], ts[0][:, :d_video]], dim=1),
                   lambda shape: [shape])


_BLOCK_RULES: list[tuple[str, str, str]] = [
    # (our suffix, their suffix, kind)
    (r"ffn1\.net\.0\.(weight|bias)", r"norm_ff_macaron.\1", "copy"),
    (r"ffn1\.net\.1\.(weight|bias)", r"feed_forward_macaron.w_1.\1", "copy"),
    (r"ffn1\.net\.4\.(weight|bias)", r"feed_forward_macaron.w_2.\1", "copy"),
    (r"attn_norm\.(weight|bias)", r"norm_mha.\1", "copy"),
    (r"attn\.q\.(weight|bias)", r"self_attn.linear_q.\1", "copy"),
    (r"attn\.kv\.(weight|bias)", r"self_attn.linear_k.\1|self_attn.linear_v.\1", "kv"),
    (r"attn\.out\.(weight|bias)", r"self_attn.linear_out.\1", "copy"),
    (r"attn\.linear_pos\.weight", r"self_attn.linear_pos.weight", "copy"),
    (r"attn\.pos_bias_(u|v)", r"self_attn.pos_bias_\1", "copy"),
    (r"conv\.norm_in\.(weight|bias)", r"norm_conv.\1", "copy"),
    (r"conv\.pointwise_in\.(weight|bias)", r"conv_module.pointwise_cov1.\1", "pointwise"),
    (r"conv\.depthwise\.(weight|bias)", r"conv_module.depthwise_conv.\1", "copy"),
    (r"conv\.norm_mid\.(\w+)", r"conv_module.norm.\1", "copy"),
    (r"conv\.pointwise_out\.(weight|bias)", r"conv_module.pointwise_cov2.\1", "pointwise"),
    (r"ffn2\.net\.0\.(weight|bias)", r"norm_ff.\1", "copy"),
    (r"ffn2\.net\.1\.(weight|bias)", r"feed_forward.w_1.\1", "copy"),
    (r"ffn2\.net\.4\.(weight|bias)", r"feed_forward.w_2.\1", "copy"),
    (r"norm_out\.(weight|bias)", r"norm_final.\1", "copy"),
]

_DECODER_RULES: list[tuple[str, str, str]] = [
    (r"self_norm\.(weight|bias)", r"norm1.\1", "copy"),
    (r"self_attn\.q\.(weight|bias)", r"self_attn.linear_q.\1", "copy"),
    (r"self_attn\.kv\.(weight|bias)", r"self_attn.linear_k.\1|self_attn.linear_v.\1", "kv"),
    (r"self_attn\.out\.(weight|bias)", r"self_attn.linear_out.\1", "copy"),
    (r"cross_norm\.(weight|bias)", r"norm2.\1", "copy"),
    (r"cross_attn\.q\.(weight|bias)", r"src_attn.linear_q.\1", "copy"),
    (r"cross_attn\.kv\.(weight|bias)", r"src_attn.linear_k.\1|src_attn.linear_v.\1", "kv"),
    (r"cross_attn\.out\.(weight|bias)", r"src_attn.linear_out.\1", "copy"),
    (r"ffn\.net\.0\.(weight|bias)", r"norm3.\1", "copy"),
    (r"ffn\.net\.1\.(weight|bias)", r"feed_forward.w_1.\1", "copy"),
    (r"ffn\.net\.4\.(weight|bias)", r"feed_forward.w_2.\1", "copy"),
]

_RESNET_BLOCK_RULES: list[tuple[str, str]] = [
    (r"conv1\.weight", "conv1.weight"),
    (r"bn1\.(\w+)", r"bn1.\1"),
    (r"conv2\.weight", "conv2.weight"),
    (r"bn2\.(\w+)", r"bn2.\1"),
    (r"act1\.weight", "relu1.weight"),
    (r"act2\.weight", "relu2.weight"),
    (r"shortcut\.0\.weight", "downsample.0.weight"),
    (r"shortcut\.1\.(\w+)", r"downsample.1.\1"),
]


def _apply(rules: Sequence[tuple[str, str, str]], suffix: str, prefix: str) -> _Recipe | None:
    for ours, theirs, kind in rules:
        m = re.fullmatch(ours, suffix)
        if m is None:
            continue
        names = [prefix + m.expand(t) for t in theirs.split("|")]
        if kind == "kv":
            return _kv(*names)
        return _pointwise(names[0]) if kind == "pointwise" else _copy(names[0])
    return None


def _block_names(layers: Sequence[int]) -> list[str]:
    """``layer{stage}.{block}`` of each of our consecutive ResNet blocks."""
    return [f"layer{i + 1}.{j}" for i, n in enumerate(layers) for j in range(n)]


def _recipe(key: str, config: Mapping[str, Any], index: Sequence[int | None], odim: int) -> _Recipe | None:
    """The recipe of our parameter ``key``, or ``None`` when Auto-AVSR has no counterpart."""
    av = len(config["modalities"]) == 2
    # conformer stacks
    for ours, theirs in (("encoder.conformer.", "encoder."), ("encoder.video_encoder.", "encoder."),
                         ("encoder.audio_encoder.", "aux_encoder.")):
        if key.startswith(ours):
            rest = key[len(ours):]
            if av and ours == "encoder.conformer.":
                return None
            if not av and ours == "encoder.audio_encoder.":
                theirs = "encoder."
            if rest.startswith("after_norm."):
                return _copy(theirs + rest)
            m = re.fullmatch(r"layers\.(\d+)\.(.+)", rest)
            return _apply(_BLOCK_RULES, m.group(2), f"{theirs}encoders.{m.group(1)}.") if m else None
    if key.startswith("encoder.video_frontend."):
        rest, fe = key[len("encoder.video_frontend."):], "encoder.frontend."
        simple = {"stem_conv.weight": "frontend3D.0.weight", "act.weight": "frontend3D.2.weight"}
        if rest in simple:
            return _copy(fe + simple[rest])
        if rest.startswith("stem_bn."):
            return _copy(fe + "frontend3D.1." + rest[len("stem_bn."):])
        if rest.startswith("out."):
            return _copy("encoder.embed.0." + rest[len("out."):])
        m = re.fullmatch(r"trunk\.blocks\.(\d+)\.(.+)", rest)
        if m:
            name = _block_names(config["video_layers"])[int(m.group(1))]
            return _apply([(o, t, "copy") for o, t in _RESNET_BLOCK_RULES], m.group(2), f"{fe}trunk.{name}.")
        return None
    if key.startswith("encoder.audio_frontend."):
        rest = key[len("encoder.audio_frontend."):]
        enc = "aux_encoder." if av else "encoder."
        fe = enc + "frontend.trunk."
        simple = {"stem_conv.weight": "conv1.weight", "act.weight": "relu.weight"}
        if rest in simple:
            return _copy(fe + simple[rest])
        if rest.startswith("stem_bn."):
            return _copy(fe + "bn1." + rest[len("stem_bn."):])
        if rest.startswith("out."):
            return _copy(enc + "embed.0." + rest[len("out."):])
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", rest)
        if m:
            name = _block_names([2, 2, 2, 2])[int(m.group(1))]
            return _apply([(o, t, "copy") for o, t in _RESNET_BLOCK_RULES], m.group(2), f"{fe}{name}.")
        return None
    if key.startswith("encoder.fusion."):
        rest = key[len("encoder.fusion."):]
        if rest == "fc1.weight":
            return _fusion_in("fusion.fc1.weight", config["d_model"])
        return _copy("fusion." + rest)
    if key == "decoder.embed.weight":
        return _vocab("decoder.embed.0.weight", index, odim, 0.0)
    if key in ("decoder.out.weight", "decoder.out.bias"):
        return _vocab("decoder.output_layer." + key.rsplit(".", 1)[1], index, odim,
                      NEVER if key.endswith("bias") else 0.0)
    if key.startswith("decoder.norm."):
        return _copy("decoder.after_norm." + key[len("decoder.norm."):])
    m = re.fullmatch(r"decoder\.layers\.(\d+)\.(.+)", key)
    if m:
        return _apply(_DECODER_RULES, m.group(2), f"decoder.decoders.{m.group(1)}.")
    if key in ("ctc_head.proj.weight", "ctc_head.proj.bias"):
        return _vocab("ctc.ctc_lo." + key.rsplit(".", 1)[1], index, odim, NEVER if key.endswith("bias") else 0.0)
    return None


def _plan(targets: Mapping[str, tuple[int, ...]], config: Mapping[str, Any], index: Sequence[int | None],
          odim: int) -> dict[str, _Recipe]:
    plan: dict[str, _Recipe] = {}
    for key in targets:
        recipe = _recipe(key, config, index, odim)
        if recipe is None:
            raise InputError(None, f"no Auto-AVSR counterpart for parameter {key} (unsupported model variant)")
        plan[key] = recipe
    return plan


def check_state_dict(state: Mapping[str, Tensor], model: "AVSRModel", index: Sequence[int | None],
                     odim: int) -> dict[str, _Recipe]:
    """Check that ``state`` fills ``model`` exactly: every key used, none missing, all shapes right.

    Works on shapes only (``state`` and ``model`` may live on the ``meta`` device).

    Args:
        state: unwrapped Auto-AVSR state dict.
        model: the model it should fill.
        index: our id -> their class (:func:`vocabulary_map`).
        odim: their output size.

    Returns:
        the plan (our key -> recipe), used by :func:`convert`.

    Raises:
        InputError: naming the first missing, unexpected or mis-shaped key.
    """
    targets = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    plan = _plan(targets, model.config, index, odim)
    needed: dict[str, tuple[int, ...] | None] = {}
    for key, recipe in plan.items():
        for source, shape in zip(recipe.sources, recipe.expect(targets[key])):
            needed[source] = shape
    missing = [k for k in needed if k not in state]
    if missing:
        raise InputError(None, f"Auto-AVSR checkpoint lacks {missing[0]}"
                               + (f" (and {len(missing) - 1} more keys)" if len(missing) > 1 else ""))
    extra = sorted(k for k in state if k not in needed)
    if extra:
        raise InputError(None, f"unexpected key {extra[0]} in the Auto-AVSR checkpoint"
                               + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    for source, shape in needed.items():
        if shape is not None and tuple(state[source].shape) != shape:
            raise InputError(None, f"{source} has shape {tuple(state[source].shape)}, expected {shape} "
                                   "(not the architecture the other keys describe)")
    return plan


def convert(state: Mapping[str, Any], tokenizer: "Tokenizer", units: Sequence[str]) -> "AVSRModel":
    """Build an :class:`~avsr.models.AVSRModel` holding an Auto-AVSR checkpoint's weights.

    Args:
        state: the checkpoint's content (a state dict, or a Lightning
            checkpoint; see :func:`unwrap`).
        tokenizer: :class:`~avsr.tokenizer.SentencePieceTokenizer` of their
            sentencepiece model.
        units: the pieces of their units file (:func:`parse_units`).

    Returns:
        the model (eval mode, float32, on CPU).

    Raises:
        InputError: not an Auto-AVSR checkpoint, or one whose keys or shapes
            do not fit (naming the key), or another vocabulary.
    """
    from avsr.models.avsr import build_model

    state = unwrap(state)
    modality = detect_modality(state)
    odim, index = vocabulary_map(units, tokenizer)
    out_rows = _shape(state, "decoder.output_layer.weight")[0]
    if out_rows != odim:
        raise InputError(None, f"checkpoint has {out_rows} output classes but the units file gives {odim} "
                               "(units + blank + eos): another vocabulary?")
    config = infer_config(state, tokenizer.vocab_size, modality)
    with torch.device("meta"):  # no memory, no random init: every tensor comes from the checkpoint
        model = build_model(config)
    plan = check_state_dict(state, model, index, odim)
    converted = {key: recipe.make([state[s].detach().cpu().float() if state[s].is_floating_point()
                                   else state[s].detach().cpu() for s in recipe.sources]).contiguous()
                 for key, recipe in plan.items()}
    model.load_state_dict(converted, strict=True, assign=True)
    left = next((name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta), None)
    if left is not None:  # a buffer that is not in the state dict: cannot happen with these modules
        raise InputError(None, f"internal: {left} was not filled by the conversion")
    return model.eval()


def bundle_extra(modality: str | None = None) -> dict[str, Any]:
    """What a converted bundle stores beside its weights: origin, decoding defaults, crop preset.

    Args:
        modality: ``"video"``, ``"audio"`` or ``"av"`` (recorded for information).

    Returns:
        the JSON-able ``extra`` dict of :func:`avsr.checkpoints.save_model`.
    """
    extra: dict[str, Any] = {
        "source": "auto-avsr",
        "decoding": dict(DECODING),
        "crop_preset": CROP_PRESET,
    }
    if modality is not None:
        extra["modality"] = modality
    return extra
