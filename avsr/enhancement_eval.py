"""Evaluate speech enhancement over noise types and SNRs: SI-SDRi, PESQ, STOI tables, spectrograms, WER.

Every ``(noise, snr)`` cell mixes each test utterance, enhances the mixture
with every system and scores it against the clean speech
(:mod:`avsr.metrics`: SI-SDR, wide-band PESQ, STOI and ESTOI, averaged over
utterances):

``noisy``
    the mixture itself (the starting point);
``av``
    the enhancer with the lips (mouth crops of the manifest);
``audio``
    the same enhancer without them (its audio-only mode);
``spectral_gating``
    a classical baseline, non-stationary spectral gating (the ``noisereduce`` package).

Noise
    ``talker`` is a competing SynthGRID talker: another utterance of the
    test set by a different speaker. Every other type is a synthesised noise
    of the **test** sources (:class:`avsr.audio.noise.NoiseBank`), never
    heard in training (or, with ``noise_list``, a kind of a held-out noise
    list such as MUSAN's test files: :func:`avsr.evaluation.evaluation_noise`).
    As in :mod:`avsr.evaluation`, an utterance's excerpt (and interfering
    talker) depends only on its id and the noise type, and one excerpt is
    scaled to every SNR, so reruns give the same numbers. Clean input is
    scored once and reported under every noise type (``snr == "clean"``;
    its SI-SDRi is undefined and left empty: the SI-SDR of the enhanced
    speech against the clean input is what shows whether clean speech is
    harmed).
Recognition
    Optionally, one condition (by default babble at -5 dB) is also
    transcribed by a recogniser from its audio alone (joint CTC/attention
    beam search, :func:`avsr.inference.decode_texts`): clean, noisy, and
    each system's output, so the table shows what enhancement does for
    recognition.

Example:
    >>> parse_enhance_noises("babble,talker")
    ('babble', 'talker')
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from avsr.errors import InputError
from avsr.evaluation import (_choices, _noise_kinds, _parse_levels, _snr_value, check_output_dir, evaluation_noise,
                             noise_seed)

if TYPE_CHECKING:
    from torch import nn

    from avsr.data.manifest import Utterance
    from avsr.enhancement import Enhancer
    from avsr.tokenizer import Tokenizer

__all__ = ["SYSTEMS", "COLUMNS", "WER_COLUMNS", "TALKER", "parse_enhance_noises", "parse_condition",
           "spectral_gating", "evaluate_enhancement", "results_markdown", "wer_markdown", "plot_spectrograms",
           "write_enhance_results"]

#: Systems scored in every cell, in table order.
SYSTEMS: tuple[str, ...] = ("noisy", "av", "audio", "spectral_gating")
#: Columns of ``enhance_results.csv``.
COLUMNS: tuple[str, ...] = ("noise", "snr", "system", "si_sdr", "si_sdri", "pesq", "stoi", "estoi", "utterances")
#: Columns of ``wer.csv``.
WER_COLUMNS: tuple[str, ...] = ("noise", "snr", "input", "wer", "utterances")
#: The competing-talker "noise type".
TALKER = "talker"
_TITLES = {"noisy": "noisy input", "av": "audio-visual", "audio": "audio only", "spectral_gating": "spectral gating",
           "clean": "clean speech"}


def parse_enhance_noises(values: str | Sequence[str] | None,
                         noise_list: str | os.PathLike | None = None) -> tuple[str, ...]:
    """Noise types of the test sources (or of ``noise_list``) plus ``talker``, duplicates dropped.

    ``None``: babble, music and talker; with ``noise_list``, its kinds and talker.

    Raises:
        InputError: an unknown type, or none; a missing or empty noise list.
    """
    known, what = _noise_kinds(noise_list)
    default = ("babble", "music") if noise_list is None else known
    return _choices((*default, TALKER) if values is None else values, (*known, TALKER), what)


def parse_condition(value: str | None, noise_list: str | os.PathLike | None = None) -> tuple[str, float] | None:
    """``"babble:-5"`` -> ``("babble", -5.0)``; ``"none"``/``None`` -> ``None``.

    The noise is one of :func:`parse_enhance_noises` (with the same ``noise_list``).

    Raises:
        InputError: not ``NOISE:SNR`` with a known noise and a finite SNR.
    """
    if value is None or str(value).strip().lower() in ("", "none", "off"):
        return None
    noise, sep, snr = str(value).partition(":")
    if not sep:
        raise InputError(None, f"condition {value!r} must be NOISE:SNR, e.g. babble:-5")
    (kind,) = parse_enhance_noises(noise, noise_list)
    (level,) = _parse_levels(snr)
    if math.isinf(level):
        raise InputError(None, f"condition {value!r} needs a finite SNR")
    return kind, level


def spectral_gating(noisy: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """The classical baseline: non-stationary spectral gating (``noisereduce.reduce_noise``).

    Args:
        noisy: ``(N,)`` waveform.
        sample_rate: Hz.

    Returns:
        ``float32 (N,)`` denoised waveform.
    """
    import noisereduce

    y = noisereduce.reduce_noise(y=np.asarray(noisy, np.float32), sr=sample_rate, stationary=False, n_jobs=1)
    return np.asarray(y, np.float32)[: len(noisy)]


def _interference(u: "Utterance", kind: str, n: int, bank, talkers: Sequence["Utterance"]) -> np.ndarray:
    """The noise excerpt (or competing talker) of utterance ``u`` for ``kind``, ``n`` samples."""
    from avsr.audio.noise import _fit_length
    from avsr.data.dataset import load_audio

    rng = np.random.default_rng(noise_seed(u.id, kind))
    if kind != TALKER:
        return bank.sample(n, rng, kind)
    speaker = u.extra.get("speaker") or u.id
    others = [t for t in talkers if (t.extra.get("speaker") or t.id) != speaker]
    if not others:
        raise InputError(None, "a competing talker needs a test set with at least two speakers")
    other = others[int(rng.integers(len(others)))]
    return _fit_length(load_audio(other.audio).numpy(), n, rng).astype(np.float32)


class _Scores:
    """Sums of the metrics of one (cell, system)."""

    def __init__(self) -> None:
        self.sums = {"si_sdr": 0.0, "si_sdri": 0.0, "pesq": 0.0, "stoi": 0.0, "estoi": 0.0}
        self.n = 0

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] += v
        self.n += 1

    def mean(self, key: str) -> float:
        return self.sums[key] / self.n if self.n else math.nan


def _score(estimate: np.ndarray, clean: np.ndarray, noisy_si_sdr: float | None, pesq: bool) -> dict[str, float]:
    from avsr import metrics

    out = {"si_sdr": metrics.si_sdr(estimate, clean)}
    out["si_sdri"] = out["si_sdr"] - noisy_si_sdr if noisy_si_sdr is not None else 0.0
    out["pesq"] = metrics.pesq_wb(estimate, clean) if pesq else math.nan
    out["stoi"] = metrics.stoi(estimate, clean)
    out["estoi"] = metrics.stoi(estimate, clean, extended=True)
    return out


def evaluate_enhancement(
    enhancer: "Enhancer",
    utterances: Sequence["Utterance"],
    *,
    noises: str | Sequence[str] | None = None,
    snrs: str | Sequence[str | float | int] = ("clean", 5, 0, -5),
    pesq: bool = True,
    recogniser: "tuple[nn.Module, Tokenizer] | None" = None,
    wer_condition: tuple[str, float] | None = ("babble", -5.0),
    beam_size: int = 10,
    ctc_weight: float = 0.3,
    batch_size: int = 16,
    progress: bool = True,
    noise_seconds: float = 30.0,
    noise_variants: int = 2,
    noise_list: str | os.PathLike | None = None,
    example: dict | None = None,
) -> tuple[list[dict], list[dict]]:
    """Score every (noise, SNR, system) cell, and the recogniser's WER at one condition.

    Args:
        enhancer: the :class:`avsr.enhancement.Enhancer` (its audio-visual and audio-only modes are scored).
        utterances: test rows with audio and mouths files (and a ``speaker`` column for ``talker``).
        noises: noise types (:func:`parse_enhance_noises`; ``None``: its default).
        snrs: ``"clean"`` and/or dB values.
        pesq: also score wide-band PESQ (the slowest metric).
        recogniser: ``(model, tokenizer)`` of a recognition model, or ``None`` (no WER table).
        wer_condition: ``(noise, snr)`` transcribed by the recogniser.
        beam_size, ctc_weight, batch_size: the recogniser's search settings.
        progress: a progress bar on stderr.
        noise_seconds, noise_variants: size of the pooled test noise.
        noise_list: held-out noise files instead of the synthesised test sources
            (:func:`avsr.evaluation.evaluation_noise`); ``noises`` are then its kinds.
        example: if a dict, filled with the first utterance's signals at the
            WER condition (or the first noisy cell): ``clean``, ``noisy``,
            ``av``, ``audio``, ``spectral_gating`` and ``title``.

    Returns:
        ``(rows, wer_rows)``: rows with keys :data:`COLUMNS` (noise-major, then
        SNR, then :data:`SYSTEMS`), and rows with keys :data:`WER_COLUMNS`.

    Raises:
        InputError: bad settings, no utterances, or bad files.
    """
    from tqdm import tqdm

    from avsr.audio.noise import mix
    from avsr.data.dataset import load_audio, load_mouths
    from avsr.inference import check_search, decode_texts, pad_batch
    from avsr.metrics import error_counts, si_sdr

    kinds = parse_enhance_noises(noises, noise_list)
    levels = _parse_levels(snrs)
    check_search(beam_size, ctc_weight, batch_size)
    if not utterances:
        raise InputError(None, "no utterances to evaluate")
    for u in utterances:
        if u.audio is None or u.mouths is None:
            raise InputError(None, f"utterance {u.id!r} needs both an audio and a mouths file")
    noisy_levels = [s for s in levels if not math.isinf(s)]
    cells = ([(None, math.inf)] if len(noisy_levels) < len(levels) else []) + [(k, s) for k in kinds for s in noisy_levels]
    needed = sorted(({*kinds} | ({wer_condition[0]} if wer_condition else set())) - {TALKER})
    bank = evaluation_noise(needed, noise_list, seconds=noise_seconds, variants=noise_variants) if needed else None
    scores = {(c, s): _Scores() for c in cells for s in SYSTEMS}
    wer_inputs = ("clean", "noisy", "av", "audio", "spectral_gating")
    wer_counts = {k: [0, 0] for k in wer_inputs}
    pending: dict[str, list[np.ndarray]] = {k: [] for k in wer_inputs}
    pending_refs: list[str] = []
    do_wer = recogniser is not None and wer_condition is not None

    def flush() -> None:
        if not pending_refs:
            return
        model, tokenizer = recogniser
        device = next(model.parameters()).device
        for name in wer_inputs:
            audio = pad_batch([torch.from_numpy(np.ascontiguousarray(w)) for w in pending[name]], device)
            with torch.no_grad():
                hyps = decode_texts(model, tokenizer, audio, None, beam_size, ctc_weight)
            c = error_counts(pending_refs, hyps)
            wer_counts[name][0] += c.errors
            wer_counts[name][1] += c.reference_length
            pending[name].clear()
        pending_refs.clear()

    def systems(noisy: np.ndarray, mouths: np.ndarray) -> dict[str, np.ndarray]:
        return {"noisy": noisy, "av": enhancer.enhance_array(noisy, mouths),
                "audio": enhancer.enhance_array(noisy), "spectral_gating": spectral_gating(noisy)}

    bar = tqdm(total=len(utterances) * (len(cells) + int(do_wer)), desc="evaluate-enhance", unit="mix",
               file=sys.stderr, disable=not progress, dynamic_ncols=True)
    try:
        for index, u in enumerate(utterances):
            clean = load_audio(u.audio).numpy()
            mouths = load_mouths(u.mouths).numpy()
            if not np.any(clean):
                raise InputError(u.audio, "silent utterance: the SNR is undefined")
            excerpts: dict[str, np.ndarray] = {}

            def mixture(kind: str | None, snr: float) -> np.ndarray:
                if kind is None:
                    return clean
                if kind not in excerpts:
                    excerpts[kind] = _interference(u, kind, len(clean), bank, utterances)
                return mix(clean, excerpts[kind], snr, 16000)

            done: dict[tuple[str | None, float], dict[str, np.ndarray]] = {}
            for cell in cells:
                outs = done[cell] = systems(mixture(*cell), mouths)
                base = si_sdr(outs["noisy"], clean) if cell[0] is not None else None
                for name, y in outs.items():
                    try:
                        scores[cell, name].add(_score(y, clean, base, pesq))
                    except InputError as e:
                        raise InputError(u.audio, e.problem) from None
                bar.update(1)
            if do_wer:
                outs = done.get(wer_condition) or systems(mixture(*wer_condition), mouths)
                pending["clean"].append(clean)
                for name in SYSTEMS:
                    pending[name].append(outs[name])
                pending_refs.append(u.text)
                if len(pending_refs) >= batch_size:
                    flush()
                bar.update(1)
            if example is not None and index == 0:
                key = wer_condition if wer_condition is not None else next((c for c in cells if c[0]), cells[0])
                outs = done.get(key) or systems(mixture(*key), mouths)
                example.update({name: outs[name] for name in SYSTEMS}, clean=clean,
                               title=f"{u.id}: {key[0] or 'clean'} {'' if math.isinf(key[1]) else f'{key[1]:g} dB'}")
        if do_wer:
            flush()
    finally:
        bar.close()

    rows = []
    n = len(utterances)
    for kind in kinds:
        for snr in levels:
            cell = (None, math.inf) if math.isinf(snr) else (kind, snr)
            for name in SYSTEMS:
                sc = scores[cell, name]
                rows.append({
                    "noise": kind, "snr": _snr_value(snr),
                    "system": name, "si_sdr": round(sc.mean("si_sdr"), 2),
                    "si_sdri": "" if math.isinf(snr) else round(sc.mean("si_sdri"), 2),
                    "pesq": round(sc.mean("pesq"), 3) if pesq else "", "stoi": round(sc.mean("stoi"), 4),
                    "estoi": round(sc.mean("estoi"), 4), "utterances": sc.n,
                })
    wer_rows = []
    if do_wer:
        kind, snr = wer_condition
        for name in wer_inputs:
            e, total = wer_counts[name]
            wer_rows.append({"noise": kind, "snr": _snr_value(snr), "input": name,
                             "wer": round(100.0 * e / max(1, total), 2), "utterances": n})
    return rows, wer_rows


def _fmt(value: object, spec: str) -> str:
    return "" if value == "" or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def results_markdown(rows: Sequence[dict]) -> str:
    """The enhancement table: one row per noise × SNR × system."""
    lines = ["| noise | SNR (dB) | system | SI-SDR (dB) | SI-SDRi (dB) | PESQ | STOI | ESTOI |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['noise']} | {r['snr']} | {_TITLES.get(r['system'], r['system'])} | {_fmt(r['si_sdr'], '.2f')} "
                     f"| {_fmt(r['si_sdri'], '.2f')} | {_fmt(r['pesq'], '.2f')} | {_fmt(r['stoi'], '.3f')} "
                     f"| {_fmt(r['estoi'], '.3f')} |")
    return "\n".join(lines) + "\n"


def wer_markdown(rows: Sequence[dict]) -> str:
    """The recognition table: WER of the recogniser (audio only) per input."""
    if not rows:
        return ""
    lines = [f"Recogniser WER (%), audio only, {rows[0]['noise']} at {rows[0]['snr']} dB, "
             f"{rows[0]['utterances']} utterances:", "", "| input | WER (%) |", "|---|---:|"]
    lines += [f"| {_TITLES.get(r['input'], r['input'])} | {r['wer']:.2f} |" for r in rows]
    return "\n".join(lines) + "\n"


def plot_spectrograms(example: dict, path: str | os.PathLike) -> None:
    """Log-magnitude spectrograms of one example (noisy, audio-visual, audio only, clean), PNG, atomically.

    Args:
        example: the dict :func:`evaluate_enhancement` fills.
        path: output ``.png``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from scipy.signal import stft

    from avsr.utils import atomic_path

    names = [n for n in ("noisy", "av", "audio", "spectral_gating", "clean") if n in example]
    fig = Figure(figsize=(8, 1.7 * len(names) + 0.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    peak = None
    for ax, name in zip(axes, names):
        f, t, z = stft(example[name], fs=16000, nperseg=512, noverlap=512 - 160)
        db = 20 * np.log10(np.abs(z) + 1e-6)
        peak = db.max() if peak is None else peak
        ax.pcolormesh(t, f / 1000, db, vmin=peak - 80, vmax=peak, shading="auto", cmap="magma")
        ax.set_ylabel("kHz")
        ax.set_title(_TITLES.get(name, name), fontsize="small", loc="left")
    axes[-1].set_xlabel("time (s)")
    fig.suptitle(example.get("title", ""), fontsize="small")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})


def write_enhance_results(rows: Sequence[dict], wer_rows: Sequence[dict], example: dict | None,
                          out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``enhance_results.{csv,md}``, ``wer.{csv,md}`` (if any) and ``spectrograms.png`` (if an example).

    Returns:
        the written paths by name.

    Raises:
        InputError: no rows, or an unwritable folder.
    """
    from avsr.utils import save_table

    if not rows:
        raise InputError(None, "no results to write")
    check_output_dir(out_dir)
    out = Path(out_dir)
    paths = {"csv": out / "enhance_results.csv", "markdown": out / "enhance_results.md"}
    try:
        save_table(out, "enhance_results", results_markdown(rows), rows, COLUMNS)
        if wer_rows:
            markdown, csv = save_table(out, "wer", wer_markdown(wer_rows), wer_rows, WER_COLUMNS)
            paths["wer_csv"], paths["wer_markdown"] = csv, markdown
        if example:
            paths["plot"] = out / "spectrograms.png"
            plot_spectrograms(example, paths["plot"])
    except OSError as e:
        raise InputError(out, f"cannot write the results ({e.strerror or e})") from None
    return paths
