"""Evaluate a recogniser over noise types, SNRs and modalities: WER/CER tables and a plot.

Every ``(noise, snr, modality)`` cell decodes the whole test set with joint
CTC/attention beam search (:func:`avsr.decoding.joint_beam_search`, the best
hypothesis) and scores it with corpus-level WER and CER
(:func:`avsr.metrics.error_counts`).

Noise
    Only the synthesised **test** sources (``NoiseBank("test")`` of
    :mod:`avsr.audio.noise`), which share nothing with the training and
    validation noise. Each utterance's noise excerpt is a function of the
    utterance id and the noise type alone (a seed from a BLAKE2 hash, never
    Python's salted ``hash()``); the same excerpt is scaled to every SNR
    (:func:`avsr.audio.noise.mix`, exact over the speech-active samples), so
    the points of a curve differ in the noise level only. Results therefore
    do not depend on the batch size, the manifest order or which other cells
    are evaluated, and a rerun gives the same numbers. With a real corpus,
    a held-out noise list can stand in for the synthesised sources
    (``noise_list``: the ``test.csv`` of ``tools/prepare_noise.py``, e.g.
    MUSAN's held-out files, or a folder laid out like MUSAN); the noise
    types are then the list's kinds, drawn the same deterministic way.
Clean rows
    Clean audio is decoded once per modality and reported under **every**
    noise type with ``snr == "clean"``, so each per-noise curve has its clean
    point. The video-only modality never hears the noise: it is decoded once
    and its numbers appear in every cell.
Rows
    ``noise`` (a noise type), ``snr`` (``"clean"`` or dB as a number),
    ``modality`` (``av``, ``audio``, ``video``), ``wer`` and ``cer`` (percent,
    2 decimals) and ``utterances``; one per noise × SNR × modality, in the
    order asked for.

Example:
    >>> parse_modalities("av,video"), parse_noises("babble, music")
    (('av', 'video'), ('babble', 'music'))
    >>> print(results_markdown([{"noise": "white", "snr": "clean", "modality": "av",
    ...                          "wer": 1.5, "cer": 0.5, "utterances": 3}]).splitlines()[-1])
    | white | clean | av | 1.50 | 0.50 | 3 |
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from avsr.errors import InputError
from avsr.inference import DEFAULT_LM_WEIGHT, check_device, check_search, decode_texts, pad_batch

if TYPE_CHECKING:
    from torch import nn

    from avsr.data.augment import NoiseSource
    from avsr.data.manifest import Utterance
    from avsr.models.lm import TokenLM
    from avsr.tokenizer import Tokenizer

__all__ = [
    "MODALITIES", "COLUMNS", "DEFAULT_NOISES", "DEFAULT_SNRS", "parse_modalities", "parse_noises", "evaluation_noise",
    "check_search", "check_device", "check_output_dir", "read_test_set", "noise_seed", "noisy_speech",
    "evaluate", "results_markdown", "plot_results", "noise_source_name", "write_results",
]

#: Modalities: audio-visual, audio only, video only.
MODALITIES: tuple[str, ...] = ("av", "audio", "video")
#: Columns of ``results.csv`` (the keys of every row), in order.
COLUMNS: tuple[str, ...] = ("noise", "snr", "modality", "wer", "cer", "utterances")
DEFAULT_NOISES: tuple[str, ...] = ("babble",)
DEFAULT_SNRS: tuple[str | float, ...] = ("clean", 10, 5, 0, -5, -10)
_NEEDS_AUDIO = ("av", "audio")
_NEEDS_VIDEO = ("av", "video")
_TITLES = {"av": "audio-visual", "audio": "audio only", "video": "video only"}


# --------------------------------------------------------------------------- settings


def _items(values: str | Iterable[str]) -> list[str]:
    """Comma-separated string or list -> stripped, non-empty items, duplicates dropped (order kept)."""
    raw = values.split(",") if isinstance(values, str) else [str(v) for v in values]
    out: list[str] = []
    for v in raw:
        v = v.strip()
        if v and v not in out:
            out.append(v)
    return out


def _choices(values: str | Iterable[str], known: Sequence[str], what: str) -> tuple[str, ...]:
    """:func:`_items` of ``values``, each one of ``known``.

    Args:
        values: a list, or a comma-separated string.
        known: the allowed values (listed in the error).
        what: their name in messages (``"modality"``, ``"noise type"``).

    Returns:
        the values, duplicates dropped, in the given order.

    Raises:
        InputError: an unknown value, or none.
    """
    items = _items(values)
    unknown = [v for v in items if v not in known]
    if unknown:
        raise InputError(None, f"unknown {what} {', '.join(unknown)} (choose from {', '.join(known)})")
    if not items:
        raise InputError(None, f"no {what} given")
    return tuple(items)


def parse_modalities(values: str | Iterable[str]) -> tuple[str, ...]:
    """Parse modalities (``av``, ``audio``, ``video``).

    Args:
        values: a list, or a comma-separated string.

    Returns:
        the modalities, duplicates dropped, in the given order.

    Raises:
        InputError: an unknown modality, or none.
    """
    return _choices(values, MODALITIES, "modality")


def parse_noises(values: str | Iterable[str] | None, noise_list: str | os.PathLike | None = None) -> tuple[str, ...]:
    """Parse noise types: of the synthesised library, or the kinds of a noise list.

    Args:
        values: a list, or a comma-separated string; ``None``: babble, or
            every kind of ``noise_list``.
        noise_list: a held-out noise list or folder (see the module notes).

    Returns:
        the noise types, duplicates dropped, in the given order.

    Raises:
        InputError: an unknown noise type, or none; a missing or empty noise list.
    """
    known, what = _noise_kinds(noise_list)
    default = DEFAULT_NOISES if noise_list is None else known
    return _choices(default if values is None else values, known, what)


def _noise_kinds(noise_list: str | os.PathLike | None) -> tuple[tuple[str, ...], str]:
    """The noise types an evaluation can draw, and their name in messages: the synthesised library's or the list's."""
    from avsr.audio.noise import NOISE_TYPES

    if noise_list is None:
        return NOISE_TYPES, "noise type"
    from avsr.data.augment import NoiseFolder

    return NoiseFolder(noise_list).kinds, f"noise type of {os.fspath(noise_list)}"


def evaluation_noise(kinds: Sequence[str], noise_list: str | os.PathLike | None = None, *,
                     seconds: float = 30.0, variants: int = 2) -> "NoiseSource":
    """The evaluation noise of ``kinds``: the synthesised **test** sources, or the files of a held-out list.

    Args:
        kinds: noise types (:func:`parse_noises` with the same ``noise_list``).
        noise_list: a held-out noise list (CSV with ``audio`` and ``kind``) or
            a folder with one subfolder per kind; ``None``: the synthesised library.
        seconds, variants: size of the pooled synthesised signals.

    Raises:
        InputError: a kind the source does not have, or a bad noise list.
    """
    if noise_list is None:
        from avsr.audio.noise import NoiseBank

        return NoiseBank("test", kinds=tuple(kinds), seconds=seconds, variants=variants)
    from avsr.data.augment import NoiseFolder

    return NoiseFolder(noise_list, kinds=tuple(kinds))


def _parse_levels(snrs: str | Sequence[str | float | int]) -> list[float]:
    """:func:`avsr.data.augment.parse_snrs`, duplicates dropped (order kept)."""
    from avsr.data.augment import parse_snrs

    out: list[float] = []
    for s in parse_snrs(snrs):
        if s not in out:
            out.append(s)
    return out


def check_output_dir(path: str | os.PathLike) -> None:
    """Fail early, before any work, if results cannot be written into folder ``path``.

    Nothing is created: ``path`` (or, when it does not exist yet, the nearest
    existing folder above it) must be a writable folder.

    Args:
        path: the intended output folder.

    Raises:
        InputError: ``path`` or a parent is a file, or the folder is not writable.
    """
    p = os.path.abspath(os.fspath(path))
    if os.path.exists(p) and not os.path.isdir(p):
        raise InputError(path, "output must be a folder, but it is a file")
    existing = p
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise InputError(path, f"cannot create the output folder: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(path, f"cannot write into {existing} (permission denied or read-only)")


def read_test_set(
    manifest: str | os.PathLike, modalities: Sequence[str] = MODALITIES, limit: int | None = None
) -> list["Utterance"]:
    """Read and check a test manifest for the given modalities.

    Args:
        manifest: CSV (:func:`avsr.data.manifest.read_manifest`).
        modalities: every row must have audio when ``av``/``audio`` is among
            them, and mouths when ``av``/``video`` is.
        limit: keep only the first ``limit`` rows (``>= 1``).

    Returns:
        the utterances, in file order.

    Raises:
        InputError: a bad manifest, a missing file, or a bad ``limit``.
    """
    from avsr.data.manifest import read_manifest

    mods = parse_modalities(modalities)
    if limit is not None and (int(limit) != limit or limit < 1):
        raise InputError(None, f"limit must be a positive integer, got {limit}")
    utts = read_manifest(
        manifest,
        need_audio=any(m in _NEEDS_AUDIO for m in mods),
        need_mouths=any(m in _NEEDS_VIDEO for m in mods),
    )
    return utts[: int(limit)] if limit is not None else utts


# --------------------------------------------------------------------------- noise


def noise_seed(utterance_id: str, noise: str) -> int:
    """Seed of the noise excerpt that utterance ``utterance_id`` gets with noise type ``noise``.

    A BLAKE2 hash: the same on every run, machine and Python process.

    Example:
        >>> noise_seed("u1", "babble") == noise_seed("u1", "babble") != noise_seed("u1", "music")
        True
    """
    digest = hashlib.blake2b(f"avsr-evaluate\x1f{utterance_id}\x1f{noise}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def noisy_speech(
    speech: np.ndarray, utterance_id: str, noise: str, snrs: Sequence[float], bank: "NoiseSource"
) -> list[np.ndarray]:
    """The evaluation mixtures of one utterance with one noise type at several SNRs.

    One excerpt (drawn with :func:`noise_seed`) is scaled to every SNR.

    Args:
        speech: ``(N,)`` clean waveform.
        utterance_id: the utterance's id.
        noise: a noise type of ``bank``.
        snrs: SNRs in dB (finite).
        bank: a ``"test"`` :class:`avsr.audio.noise.NoiseBank`, or a held-out
            noise list (:func:`evaluation_noise`).

    Returns:
        one ``float32 (N,)`` mixture per SNR.

    Raises:
        InputError: ``bank`` is a synthesised bank of other than the test sources, or the speech is
            silent (the SNR is undefined).
    """
    from avsr.audio.noise import NoiseBank, mix

    if isinstance(bank, NoiseBank) and bank.split != "test":
        raise InputError(None, f"evaluation noise must come from the test sources, not {bank.split!r}")
    rng = np.random.default_rng(noise_seed(utterance_id, noise))
    excerpt = bank.sample(len(speech), rng, noise)
    return [mix(speech, excerpt, snr, bank.sample_rate) for snr in snrs]


# --------------------------------------------------------------------------- decoding


@dataclass
class _Counts:
    """Word and character edits and reference lengths of one cell."""

    word_errors: int = 0
    words: int = 0
    char_errors: int = 0
    chars: int = 0
    utterances: int = 0

    def add(self, references: list[str], hypotheses: list[str]) -> None:
        from avsr.metrics import error_counts

        w = error_counts(references, hypotheses, "word")
        c = error_counts(references, hypotheses, "char")
        self.word_errors += w.errors
        self.words += w.reference_length
        self.char_errors += c.errors
        self.chars += c.reference_length
        self.utterances += len(references)


def _percent(errors: int, total: int) -> float:
    if total == 0:
        return 0.0 if errors == 0 else math.inf
    return round(100.0 * errors / total, 2)


def _snr_value(snr: float) -> str | int | float:
    """``"clean"`` for ``inf``, an int for whole dB, else the float."""
    if math.isinf(snr):
        return "clean"
    return int(snr) if float(snr).is_integer() else float(snr)


def _check_files(utterances: Sequence["Utterance"], modalities: Sequence[str]) -> None:
    for u in utterances:
        if u.audio is None and any(m in _NEEDS_AUDIO for m in modalities):
            raise InputError(None, f"utterance {u.id!r} has no audio file (needed by {', '.join(modalities)})")
        if u.mouths is None and any(m in _NEEDS_VIDEO for m in modalities):
            raise InputError(None, f"utterance {u.id!r} has no mouths file (needed by {', '.join(modalities)})")


def evaluate(
    model: "nn.Module",
    tokenizer: "Tokenizer",
    utterances: Sequence["Utterance"],
    *,
    modalities: str | Sequence[str] = MODALITIES,
    noises: str | Sequence[str] | None = None,
    snrs: str | Sequence[str | float | int] = DEFAULT_SNRS,
    beam_size: int = 10,
    ctc_weight: float = 0.3,
    batch_size: int = 16,
    progress: bool = True,
    noise_seconds: float = 30.0,
    noise_variants: int = 2,
    noise_list: str | os.PathLike | None = None,
    lm: "TokenLM | None" = None,
    lm_weight: float = DEFAULT_LM_WEIGHT,
) -> list[dict]:
    """WER and CER of every (noise, SNR, modality) cell (see the module notes).

    Args:
        model: an :class:`avsr.models.AVSRModel` (``encode``, ``decoder``,
            ``ctc_log_probs``, ``sos_id``, ``eos_id``); put in eval mode for
            the run, its mode restored afterwards.
        tokenizer: the model's tokenizer.
        utterances: test rows (:func:`read_test_set`), with audio and/or
            mouths files as the modalities need.
        modalities: among ``av``, ``audio``, ``video``.
        noises: noise types (:data:`avsr.audio.noise.NOISE_TYPES`, their test
            sources only; ``None``: babble); with ``noise_list``, its kinds
            (``None``: all of them).
        snrs: ``"clean"`` and/or dB values.
        beam_size: beam of the joint CTC/attention search.
        ctc_weight: CTC weight of the joint score.
        batch_size: utterances encoded and searched together (sorted by
            duration, so batches need little padding).
        progress: a progress bar on stderr.
        noise_seconds: length of each pooled test-noise signal.
        noise_variants: pooled signals per noise type.
        noise_list: held-out noise files to use instead of the synthesised
            sources (:func:`evaluation_noise`).
        lm: optional token language model for shallow fusion (the model's tokenizer).
        lm_weight: weight of its score in the joint search.

    Returns:
        rows with keys :data:`COLUMNS`, noise-major, then SNR, then modality,
        each in the order given.

    Raises:
        InputError: an unknown modality or noise type, a bad SNR or search
            setting, no utterances, a missing modality file, or a bad audio
            or mouths file.
    """
    from tqdm import tqdm

    from avsr.data.dataset import load_audio, load_mouths

    mods = parse_modalities(modalities)
    kinds = parse_noises(noises, noise_list)
    levels = _parse_levels(snrs)
    check_search(beam_size, ctc_weight, batch_size, lm_weight)
    if not utterances:
        raise InputError(None, "no utterances to evaluate")
    _check_files(utterances, mods)

    audio_mods = [m for m in mods if m in _NEEDS_AUDIO]
    clean = any(math.isinf(s) for s in levels)
    noisy = [s for s in levels if not math.isinf(s)]
    # what each batch is decoded under: (noise kind or None, snr or inf, modality)
    passes: list[tuple[str | None, float, str]] = []
    if "video" in mods:
        passes.append((None, math.inf, "video"))
    if clean:
        passes += [(None, math.inf, m) for m in audio_mods]
    passes += [(k, s, m) for k in kinds for s in noisy for m in audio_mods]
    bank = None
    if audio_mods and noisy:
        bank = evaluation_noise(kinds, noise_list, seconds=noise_seconds, variants=noise_variants)
    counts = {p: _Counts() for p in passes}

    order = sorted(utterances, key=lambda u: (u.duration, u.id))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(batches) * len(passes), desc="evaluate", unit="pass", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    try:
        with torch.no_grad():
            for batch in batches:
                refs = [u.text for u in batch]
                speech = [load_audio(u.audio).numpy() for u in batch] if audio_mods else []
                video = None
                if any(m in _NEEDS_VIDEO for m in mods):
                    mouths = [load_mouths(u.mouths) for u in batch]
                    _check_frame_sizes(batch, mouths)
                    video = pad_batch(mouths, device)
                mixtures = _mixtures(batch, speech, kinds, noisy, bank) if bank is not None else {}
                for kind, snr, modality in passes:
                    audio = None
                    if modality in _NEEDS_AUDIO:
                        waves = speech if kind is None else mixtures[kind, snr]
                        audio = pad_batch([torch.from_numpy(np.ascontiguousarray(w)) for w in waves], device)
                    hyps = decode_texts(model, tokenizer, audio, video if modality in _NEEDS_VIDEO else None,
                                        beam_size, ctc_weight, lm=lm, lm_weight=lm_weight)
                    counts[kind, snr, modality].add(refs, hyps)
                    bar.update(1)
    finally:
        bar.close()
        model.train(was_training)

    rows = []
    for kind in kinds:
        for snr in levels:
            for modality in mods:
                if modality == "video":
                    key = (None, math.inf, "video")
                else:
                    key = (None, math.inf, modality) if math.isinf(snr) else (kind, snr, modality)
                c = counts[key]
                rows.append({
                    "noise": kind, "snr": _snr_value(snr), "modality": modality,
                    "wer": _percent(c.word_errors, c.words), "cer": _percent(c.char_errors, c.chars),
                    "utterances": c.utterances,
                })
    return rows


def _check_frame_sizes(batch: Sequence["Utterance"], mouths: list[Tensor]) -> None:
    """All mouth crops of a batch must have one frame size (the model crops them alike)."""
    first = tuple(mouths[0].shape[1:])
    for u, m in zip(batch, mouths):
        if tuple(m.shape[1:]) != first:
            raise InputError(u.mouths, f"mouth frames are {tuple(m.shape[1:])}, others in the test set {first}")
        if m.shape[0] == 0:
            raise InputError(u.mouths, "no mouth frames")


def _mixtures(
    batch: Sequence["Utterance"], speech: list[np.ndarray], kinds: Sequence[str], snrs: Sequence[float],
    bank: "NoiseSource",
) -> dict[tuple[str, float], list[np.ndarray]]:
    """``(kind, snr) -> mixtures of the batch``; a silent file becomes an error naming it."""
    out: dict[tuple[str, float], list[np.ndarray]] = {(k, s): [] for k in kinds for s in snrs}
    for u, x in zip(batch, speech):
        for kind in kinds:
            try:
                ys = noisy_speech(x, u.id, kind, snrs, bank)
            except InputError as e:
                raise InputError(u.audio, f"cannot add {kind} noise: {e.problem}") from None
            for snr, y in zip(snrs, ys):
                out[kind, snr].append(y)
    return out


# --------------------------------------------------------------------------- output


def _check_rows(rows: Sequence[dict]) -> None:
    if not rows:
        raise InputError(None, "no results to write")
    for r in rows:
        if tuple(r) != COLUMNS:
            raise InputError(None, f"result rows must have the keys {', '.join(COLUMNS)}, got {', '.join(r)}")


def _snr_order(rows: Sequence[dict]) -> list[str | int | float]:
    """Distinct SNRs in order of first appearance."""
    out: list[str | int | float] = []
    for r in rows:
        if r["snr"] not in out:
            out.append(r["snr"])
    return out


def _snr_title(snr: str | int | float) -> str:
    return "clean" if snr == "clean" else f"{snr:g} dB"


def results_markdown(rows: Sequence[dict], noise_source: str = "test sources") -> str:
    """The results as markdown: WER per modality × SNR for each noise type, then the plain table.

    Args:
        rows: from :func:`evaluate`.
        noise_source: where the noise came from, for the headings (``"test
            sources"``: the synthesised library's; :func:`noise_source_name`).

    Returns:
        markdown text (ending in a newline).
    """
    from avsr.utils import markdown_table

    _check_rows(rows)
    parts = []
    snrs = _snr_order(rows)
    for noise in dict.fromkeys(r["noise"] for r in rows):
        table = []
        for modality in dict.fromkeys(r["modality"] for r in rows if r["noise"] == noise):
            line: dict[str, object] = {"modality": modality}
            cells = {r["snr"]: r["wer"] for r in rows if r["noise"] == noise and r["modality"] == modality}
            line.update({_snr_title(s): format(cells[s], ".2f") if s in cells else "" for s in snrs})
            table.append(line)
        parts.append(markdown_table(table, f"### WER (%), {noise} noise ({noise_source})",
                                    right=tuple(_snr_title(s) for s in snrs)))
    plain = markdown_table(list(rows), "### All results (WER and CER in %)", formats={"wer": ".2f", "cer": ".2f"},
                           right=("snr", "wer", "cer", "utterances"))
    return "\n".join(parts + [plain])


def plot_results(rows: Sequence[dict], path: str | os.PathLike) -> None:
    """WER against SNR, one subplot per noise type, one line per modality (PNG, written atomically).

    Clean is the rightmost point of each curve.

    Args:
        rows: from :func:`evaluate`.
        path: output ``.png``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from avsr.utils import atomic_path

    _check_rows(rows)
    numeric = sorted({float(r["snr"]) for r in rows if r["snr"] != "clean"})
    if len(numeric) > 1:
        step = (numeric[-1] - numeric[0]) / (len(numeric) - 1)
    else:
        step = 5.0
    clean_x = (numeric[-1] + step) if numeric else 0.0

    def x_of(snr: str | int | float) -> float:
        return clean_x if snr == "clean" else float(snr)

    noises = list(dict.fromkeys(r["noise"] for r in rows))
    fig = Figure(figsize=(4.2 * len(noises) + 0.6, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(noises), squeeze=False, sharey=True)[0]
    has_clean = any(r["snr"] == "clean" for r in rows)
    ticks = numeric + ([clean_x] if has_clean else [])
    labels = [f"{s:g}" for s in numeric] + (["clean"] if has_clean else [])
    for ax, noise in zip(axes, noises):
        for modality in dict.fromkeys(r["modality"] for r in rows if r["noise"] == noise):
            pts = sorted((x_of(r["snr"]), r["wer"]) for r in rows if r["noise"] == noise and r["modality"] == modality)
            pts = [(x, y) for x, y in pts if math.isfinite(y)]
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=_TITLES.get(modality, modality))
        ax.set_title(f"{noise} noise")
        ax.set_xticks(ticks)
        ax.set_xticklabels(labels)
        ax.set_xlabel("SNR (dB)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("WER (%)")
    axes[0].set_ylim(bottom=0)
    axes[-1].legend(loc="best", fontsize="small")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})


def noise_source_name(noise_list: str | os.PathLike | None = None) -> str:
    """How results headings name the noise: the synthesised test sources, or the noise list's path."""
    return "test sources" if noise_list is None else os.fspath(noise_list)


def write_results(rows: Sequence[dict], out_dir: str | os.PathLike, noise_source: str = "test sources") -> dict[str, Path]:
    """Write ``results.csv``, ``results.md`` and ``wer_vs_snr.png`` into ``out_dir``, each atomically.

    Args:
        rows: from :func:`evaluate`.
        out_dir: output folder (created).
        noise_source: where the noise came from (:func:`noise_source_name`).

    Returns:
        ``{"csv": path, "markdown": path, "plot": path}``.

    Raises:
        InputError: no rows, rows with other keys, or an unwritable folder.
    """
    from avsr.utils import save_table

    _check_rows(rows)
    check_output_dir(out_dir)
    out = Path(out_dir)
    paths = {"csv": out / "results.csv", "markdown": out / "results.md", "plot": out / "wer_vs_snr.png"}
    markdown = results_markdown(rows, noise_source)
    try:
        save_table(out, "results", markdown, rows, COLUMNS)
        plot_results(rows, paths["plot"])
    except OSError as e:
        raise InputError(out, f"cannot write the results ({e.strerror or e})") from None
    return paths
