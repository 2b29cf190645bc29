"""Transcription: a media file (or an in-memory clip) in, words with times out.

The Python API behind ``avsr transcribe``::

    tr = Transcriber.from_pretrained()              # or .from_checkpoint("model.safetensors")
    result = tr.transcribe("talk.mp4")              # modality="auto" | "av" | "audio" | "video"
    result["text"], result["segments"][0]["modality"], result["words"][0]["start"]

Pipeline (one direction, as in the rest of the toolkit):

1. :mod:`avsr.io` probes the file and streams its audio once through the
   voice activity detector (silero-vad, whose model ships inside its wheel),
   which splits the input at pauses into segments of at most
   ``max_segment`` seconds (fixed windows for a file without audio).
   Speech with no pause long enough (babble everywhere is speech to the
   detector) is cut where the speech probability and the energy dip, so
   cuts fall between words rather than at a fixed length.
2. Per segment, the audio of that time range is read with a seek, and the
   lip frontend (:func:`avsr.vision.extract_mouths_from_file`) streams the
   frames of that range into 96×96 mouth crops at 25 fps with a ``found``
   mask.
3. The modality of each segment is decided from what is there (``auto``):
   audio-visual where a face was found on at least ``min_face`` of the
   segment's frames, audio-only where not, lip reading where a video has no
   audio stream, one that does not decode, or a silent one (peak below
   :data:`SILENT_PEAK`, -70 dBFS: a muted recording). Each fallback is a
   warning on the ``avsr`` logger; no speech at all gives an empty
   transcript and a warning. ``av``/``audio``/``video`` force one.
4. Segments are decoded in batches of one modality: ``model.encode`` →
   joint CTC/attention beam search (:func:`avsr.decoding.joint_beam_search`)
   → text; word start/end times come from CTC forced alignment
   (:func:`avsr.decoding.word_timestamps`) and are shifted to absolute time.

Segment boundaries lie on the 25 fps step grid (40 ms, 640 samples), so the
audio and video of a segment have exactly matching lengths.

Memory
    Audio is streamed for the voice activity detector (only its 32 ms speech
    probabilities are kept) and read per segment; video is decoded per
    segment. What is held at once is the model plus at most
    ``3 × batch_size`` segments of 16 kHz audio and 96×96 crops (about
    5 MB per 20 s segment), however long the input. A decoded
    :class:`avsr.io.AVClip` passed in is of course already in memory.

Timing
    Set :attr:`Transcriber.timings` to a dict and every call adds the wall
    seconds of each stage to it (:data:`TIMED_STAGES`): ``vad`` (the audio
    streamed through the decoder and the voice activity detector),
    ``audio`` (reading each segment's audio), ``lips`` (decoding each
    segment's frames + landmarks + alignment + crop), ``encode`` (the model's
    forward pass and CTC head), ``search`` (joint CTC/attention beam search)
    and ``align`` (CTC word alignment). ``tools/benchmarks/transcribe_speed.py``
    reports them as real-time factors.

The result is a plain dict (what ``--format json`` writes)::

    {"input": str, "duration": float,
     "segments": [{"start", "end", "text", "modality", "confidence"}],
     "words": [{"word", "start", "end", "confidence"}],
     "text": str}

Times are seconds from the start of the file, rounded to milliseconds. A
segment is decoded with some context around its speech, but its times are
those of the speech the voice activity detector found in it (what subtitles
should show), and its words are kept inside them. Word times come from the
CTC alignment, so they are only as good as the model's CTC spikes are
placed (see the recipe README: the bundled model's are not well placed).
Confidences are in ``[0, 1]`` (segment: the per-token geometric mean of the
joint CTC/attention probability of the result; word: of its tokens' CTC
posteriors along the alignment).

Example (a random-weight model: the words are nonsense, the structure is not):
    >>> import numpy as np, torch
    >>> from avsr.io import AVClip
    >>> from avsr.models import avsr_tiny
    >>> from avsr.tokenizer import CharTokenizer
    >>> tok = CharTokenizer(list("ab "))
    >>> _ = torch.manual_seed(0)
    >>> tr = Transcriber(avsr_tiny(tok.vocab_size, encoder_layers=1, decoder_layers=1), tok, beam_size=2)
    >>> clip = AVClip("tone", None, None, None, np.zeros(16000, np.float32), 16000)
    >>> sorted(tr.transcribe(clip))
    ['duration', 'input', 'segments', 'text', 'words']
"""

from __future__ import annotations

import contextlib
import glob
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch
from torch import Tensor

from avsr.errors import AVSRError, InputError, NoFaceError

if TYPE_CHECKING:
    from torch import nn

    from avsr.decoding import Hypothesis
    from avsr.io import AVClip
    from avsr.models.lm import TokenLM
    from avsr.tokenizer import Tokenizer
    from avsr.vision import LandmarkDetector, MouthTrack

__all__ = [
    "FRAME_RATE",
    "MODALITY_CHOICES",
    "MEDIA_EXTENSIONS",
    "TIMED_STAGES",
    "DEFAULT_LM_WEIGHT",
    "check_device",
    "check_search",
    "bundle_decoding",
    "quantize_linear",
    "pad_batch",
    "Decoded",
    "encode_and_search",
    "decode_texts",
    "VoiceActivityDetector",
    "plan_segments",
    "speech_bounds",
    "fixed_windows",
    "InputFile",
    "expand_inputs",
    "check_jobs",
    "output_paths",
    "Transcriber",
]

logger = logging.getLogger(__name__)

#: Steps per second of the encoder (and of the mouth crops).
FRAME_RATE = 25
#: Audio samples per encoder step (16 kHz / 25).
SAMPLES_PER_STEP = 640
#: What ``modality`` may be: decide per segment, or force one.
MODALITY_CHOICES: tuple[str, ...] = ("auto", "av", "audio", "video")
#: File name endings taken from a folder given as input.
MEDIA_EXTENSIONS: frozenset[str] = frozenset({
    ".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".mpg", ".mpeg", ".ts", ".mts", ".flv", ".wmv", ".3gp",
    ".ogv", ".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".wma",
})
#: Weight of the language model score in the joint search when an LM is given (``--lm-weight``).
DEFAULT_LM_WEIGHT = 0.3
#: Stages whose wall time :attr:`Transcriber.timings` accumulates, in pipeline order.
TIMED_STAGES: tuple[str, ...] = ("vad", "audio", "lips", "encode", "search", "align")
_NEEDS_AUDIO = ("av", "audio")
_NEEDS_VIDEO = ("av", "video")
#: Context added around each speech region (s), :func:`plan_segments`.
SEGMENT_PAD = 0.2
#: An audio track whose peak stays below this (-70 dBFS) is silent: ``auto`` lip-reads a video with one.
SILENT_PEAK = 10 ** (-70 / 20)


# --------------------------------------------------------------------------- settings


def check_device(name: str | torch.device) -> torch.device:
    """Parse a device name and make sure it is usable.

    Args:
        name: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``,
            ``"cuda"`` or ``"cuda:N"``.

    Returns:
        the device.

    Raises:
        InputError: an unknown device, or CUDA asked for where there is none.
    """
    if isinstance(name, str) and name.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise InputError(None, f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise InputError(None, f"unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(None, f"device {name!r}: CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(None, f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return device


def check_search(beam_size: int, ctc_weight: float, batch_size: int, lm_weight: float = 0.0) -> None:
    """Check the decoding settings.

    Args:
        beam_size: hypotheses kept per utterance (``>= 1``).
        ctc_weight: CTC weight of the joint score, in ``[0, 1]``.
        batch_size: utterances decoded together (``>= 1``).
        lm_weight: weight of the language model score (``>= 0``, finite).

    Raises:
        InputError: a value out of range.
    """
    if int(beam_size) != beam_size or beam_size < 1:
        raise InputError(None, f"beam size must be a positive integer, got {beam_size}")
    if not (isinstance(ctc_weight, (int, float)) and 0.0 <= ctc_weight <= 1.0):
        raise InputError(None, f"CTC weight must be in [0, 1], got {ctc_weight}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise InputError(None, f"batch size must be a positive integer, got {batch_size}")
    if not (isinstance(lm_weight, (int, float)) and 0.0 <= lm_weight < math.inf):
        raise InputError(None, f"LM weight must be a number >= 0, got {lm_weight}")


def _check_modality(modality: str) -> str:
    if modality not in MODALITY_CHOICES:
        raise InputError(None, f"unknown modality {modality!r} (choose from {', '.join(MODALITY_CHOICES)})")
    return modality


class _Clock:
    """Adds the wall time between laps to ``timings[stage]``; does nothing when ``timings`` is ``None``.

    On CUDA each lap waits for the queued kernels, so that work is counted in its own stage.

    Args:
        timings: seconds per stage, updated in place (or ``None``: no timing).
    """

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self._last = time.perf_counter() if timings is not None else 0.0

    def lap(self, stage: str) -> None:
        """Count the time since the previous lap (or the start) as ``stage``."""
        if self.timings is None:
            return
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self._last
        self._last = now


def bundle_decoding(extra: dict) -> dict[str, float | int]:
    """The decoding defaults a bundle stores (``extra["decoding"]``): ``beam_size`` and ``ctc_weight``.

    Args:
        extra: the bundle's notes (:func:`avsr.checkpoints.read_bundle_metadata`).

    Returns:
        the settings it has (an empty dict for bundles without any).
    """
    decoding = extra.get("decoding") if isinstance(extra, dict) else None
    if not isinstance(decoding, dict):
        return {}
    out: dict[str, float | int] = {}
    if isinstance(decoding.get("beam_size"), int):
        out["beam_size"] = int(decoding["beam_size"])
    if isinstance(decoding.get("ctc_weight"), (int, float)):
        out["ctc_weight"] = float(decoding["ctc_weight"])
    return out


def quantize_linear(model: "nn.Module") -> "nn.Module":
    """int8 dynamic quantisation of every ``nn.Linear`` (weights int8, activations quantised per batch).

    The convolutions (frontends, conformer depthwise) stay float32. In
    place; CPU only (PyTorch's ``quantize_dynamic``).

    Args:
        model: a float model in eval mode.

    Returns:
        the same model with quantised linear layers.
    """
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch's deprecation notes of the quantized tensor API
        return quantize_dynamic(model.eval(), {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


# --------------------------------------------------------------------------- decoding a batch


def pad_batch(signals: Sequence[Tensor], device: torch.device | str) -> tuple[Tensor, Tensor]:
    """Zero-pad along the first axis.

    Args:
        signals: tensors ``(L_i, ...)`` with equal trailing shapes.
        device: where the batch goes.

    Returns:
        ``(padded (B, L_max, ...), lengths (B,))``.
    """
    lengths = torch.tensor([len(s) for s in signals], dtype=torch.long)
    padded = torch.nn.utils.rnn.pad_sequence(list(signals), batch_first=True)
    return padded.to(device), lengths.to(device)


@dataclass
class Decoded:
    """Output of :func:`encode_and_search` for a batch of ``B`` utterances.

    Attributes:
        lengths: ``(B,)`` valid encoder steps (25 fps).
        log_probs: ``(B, T, V)`` CTC log-probabilities.
        hypotheses: the n-best :class:`~avsr.decoding.Hypothesis` list per utterance.
    """

    lengths: Tensor
    log_probs: Tensor
    hypotheses: list[list["Hypothesis"]]


def encode_and_search(
    model: "nn.Module",
    audio: tuple[Tensor, Tensor] | None,
    video: tuple[Tensor, Tensor] | None,
    *,
    beam_size: int = 10,
    ctc_weight: float = 0.3,
    nbest: int = 1,
    timings: dict[str, float] | None = None,
    lm: "TokenLM | None" = None,
    lm_weight: float = DEFAULT_LM_WEIGHT,
    max_len_ratio: float = 1.0,
) -> Decoded:
    """Encode a batch with the modalities given and run joint CTC/attention beam search.

    The one decoding path of ``avsr evaluate`` and ``avsr transcribe``.

    Args:
        model: an :class:`avsr.models.AVSRModel` (in eval mode).
        audio: ``(waveforms (B, N), lengths (B,))`` at 16 kHz, or ``None``.
        video: ``(mouths (B, T, H, W), lengths (B,))``, or ``None``.
        beam_size: beam of the search.
        ctc_weight: CTC weight of the joint score.
        nbest: hypotheses returned per utterance.
        timings: adds the seconds of ``encode`` and ``search`` to it when given.
        lm: optional token language model for shallow fusion (same tokenizer as the model).
        lm_weight: weight of the LM score (used only with ``lm``).
        max_len_ratio: longest output as a fraction of the encoder steps (1.0: one token a step).

    Returns:
        :class:`Decoded`.
    """
    from avsr.decoding import joint_beam_search

    a, a_len = audio if audio is not None else (None, None)
    v, v_len = video if video is not None else (None, None)
    clock = _Clock(timings)
    enc, lengths = model.encode(a, a_len, v, v_len)
    log_probs = model.ctc_log_probs(enc)
    clock.lap("encode")
    hyps = joint_beam_search(
        model, enc, lengths, ctc_log_probs=log_probs, beam_size=beam_size, ctc_weight=ctc_weight,
        blank_id=int(getattr(model, "blank_id", 0)), nbest=nbest,
        lm=lm, lm_weight=lm_weight if lm is not None else 0.0, max_len_ratio=max_len_ratio,
    )
    clock.lap("search")
    return Decoded(lengths=lengths, log_probs=log_probs, hypotheses=hyps)


def decode_texts(
    model: "nn.Module",
    tokenizer: "Tokenizer",
    audio: tuple[Tensor, Tensor] | None,
    video: tuple[Tensor, Tensor] | None,
    beam_size: int,
    ctc_weight: float,
    lm: "TokenLM | None" = None,
    lm_weight: float = DEFAULT_LM_WEIGHT,
) -> list[str]:
    """The best hypothesis of :func:`encode_and_search` as text, one per utterance."""
    out = encode_and_search(model, audio, video, beam_size=beam_size, ctc_weight=ctc_weight, lm=lm,
                            lm_weight=lm_weight)
    return [tokenizer.decode(h[0].tokens) for h in out.hypotheses]


# --------------------------------------------------------------------------- segmentation


class VoiceActivityDetector:
    """Speech regions of 16 kHz audio, with silero-vad (TorchScript, CPU, model inside its wheel).

    Audio arrives as a stream of chunks (any sizes), so a long file never
    has to be in memory: only one speech probability per 512 samples is kept.

    Args:
        threshold: speech probability above which a window is speech.
        min_speech: shortest speech region kept, in seconds.
        min_silence: shortest pause that separates two regions, in seconds.
    """

    WINDOW = 512
    SAMPLE_RATE = 16000

    def __init__(self, threshold: float = 0.5, min_speech: float = 0.25, min_silence: float = 0.3) -> None:
        self.threshold = float(threshold)
        self.min_speech = float(min_speech)
        self.min_silence = float(min_silence)
        self._model = None

    def _load(self):  # -> the silero TorchScript model
        if self._model is None:
            threads = torch.get_num_threads()  # importing silero_vad sets torch to one thread
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    from silero_vad import load_silero_vad

                    self._model = load_silero_vad(onnx=False)
            except ImportError:
                raise InputError(None, "voice activity detection needs the silero-vad package "
                                       "(pip install silero-vad)") from None
            finally:
                torch.set_num_threads(threads)
        return self._model

    def speech(self, chunks: Iterable[np.ndarray], max_speech: float = math.inf) -> list[tuple[float, float]]:
        """Speech regions of an audio stream.

        Args:
            chunks: consecutive ``float32`` 16 kHz mono chunks.
            max_speech: longer regions are cut, in seconds: each cut goes in
                the second half of the allowed length, at the window where
                the smoothed speech probability plus a little of the
                standardised log energy is lowest (a pause, or under
                babble, where the voice is probably between words).

        Returns:
            ``(start, end)`` in seconds from the first sample, in order.
        """
        from silero_vad import get_speech_timestamps_from_probs

        model = self._load()
        model.reset_states()
        probs: list[float] = []
        energy: list[float] = []  # mean square of each window
        total = 0
        rest = np.zeros(0, dtype=np.float32)
        w = self.WINDOW

        def step(window: np.ndarray) -> None:
            probs.append(float(model(torch.from_numpy(window), self.SAMPLE_RATE)))
            energy.append(float(np.mean(np.square(window, dtype=np.float64))))

        with torch.inference_mode():
            for chunk in chunks:
                buf = np.concatenate([rest, np.asarray(chunk, dtype=np.float32).reshape(-1)])
                n = len(buf) // w * w
                for i in range(0, n, w):
                    step(buf[i : i + w])
                total += n
                rest = buf[n:]
            if len(rest):
                step(np.pad(rest, (0, w - len(rest))))
                total += len(rest)
        if not probs:
            return []
        spans = get_speech_timestamps_from_probs(
            probs, sampling_rate=self.SAMPLE_RATE, threshold=self.threshold,
            min_speech_duration_ms=int(self.min_speech * 1000), max_speech_duration_s=math.inf,
            min_silence_duration_ms=int(self.min_silence * 1000), speech_pad_ms=0, audio_length_samples=total,
        )
        regions = [(int(s["start"]), int(s["end"])) for s in spans]
        if math.isfinite(max_speech):
            score = _cut_score(np.asarray(probs), np.asarray(energy))
            max_len = max(1, int(max_speech * self.SAMPLE_RATE))
            regions = [r for s, e in regions for r in _cut_long(s, e, score, max_len, w)]
        return [(s / self.SAMPLE_RATE, e / self.SAMPLE_RATE) for s, e in regions]


def _cut_score(probs: np.ndarray, energy: np.ndarray, smooth: int = 5, energy_weight: float = 0.1) -> np.ndarray:
    """Per VAD window, how bad a place it is to cut speech: lower is a better cut.

    Args:
        probs: ``(W,)`` speech probabilities.
        energy: ``(W,)`` mean squares of the same windows.
        smooth: moving-average length in windows (5 × 32 ms).
        energy_weight: weight of the standardised log energy.

    Returns:
        ``(W,)`` smoothed probability + ``energy_weight`` × standardised smoothed log energy.
    """
    kernel = np.ones(smooth) / smooth
    p = np.convolve(probs, kernel, mode="same")
    e = np.convolve(np.log(energy + 1e-10), kernel, mode="same")
    return p + energy_weight * (e - e.mean()) / (e.std() + 1e-9)


def _cut_long(start: int, end: int, score: np.ndarray, max_len: int, window: int) -> list[tuple[int, int]]:
    """``[start, end)`` samples cut into parts of at most ``max_len`` samples at low ``score``.

    Each cut is the centre of the lowest-scoring window whose centre lies in
    the second half of the part being closed (a hard cut at ``max_len``
    where no window centre fits there).

    Returns:
        ``(start, end)`` sample ranges, contiguous, in order.
    """
    out: list[tuple[int, int]] = []
    while end - start > max_len:
        half = window // 2
        lo = max(0, math.ceil((start + max_len / 2 - half) / window))
        hi = min(len(score) - 1, (start + max_len - half) // window)
        cut = lo * window + half + int(np.argmin(score[lo : hi + 1])) * window if hi >= lo else start + max_len
        out.append((start, cut))
        start = cut
    out.append((start, end))
    return out


def _split_even(k0: int, k1: int, max_steps: int) -> list[tuple[int, int]]:
    """``[k0, k1)`` cut into the fewest equal parts of at most ``max_steps`` steps."""
    n = max(1, math.ceil((k1 - k0) / max_steps))
    cuts = [k0 + round(i * (k1 - k0) / n) for i in range(n + 1)]
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


def plan_segments(
    speech: Sequence[tuple[float, float]], duration: float, max_segment: float = 20.0, pad: float = SEGMENT_PAD
) -> list[tuple[int, int]]:
    """Segments to decode from speech regions, on the 25 fps step grid.

    Each region is widened by ``pad`` seconds on both sides (never into its
    neighbour: two close regions share the middle of their pause), clipped
    to ``[0, duration]``, snapped to 40 ms steps, and cut into equal parts
    when still longer than ``max_segment``.

    Args:
        speech: ``(start, end)`` seconds, in order, not overlapping.
        duration: length of the input in seconds.
        max_segment: longest segment in seconds.
        pad: context added around each region, in seconds.

    Returns:
        ``(k0, k1)`` step ranges: segment ``[k0 / 25, k1 / 25)`` seconds.

    Example:
        >>> plan_segments([(1.0, 2.0), (2.1, 3.0)], duration=10.0)
        [(20, 51), (51, 80)]
    """
    regions = [(max(0.0, s), min(duration, e)) for s, e in speech if min(duration, e) > max(0.0, s)]
    out: list[tuple[int, int]] = []
    max_steps = max(1, int(max_segment * FRAME_RATE))
    last_step = max(1, round(duration * FRAME_RATE))
    for i, (s, e) in enumerate(regions):
        lo = s - pad if i == 0 else max(s - pad, (regions[i - 1][1] + s) / 2)
        hi = e + pad if i == len(regions) - 1 else min(e + pad, (e + regions[i + 1][0]) / 2)
        k0 = max(0, round(lo * FRAME_RATE))
        k1 = min(last_step, round(hi * FRAME_RATE))
        if out and k0 < out[-1][1]:
            k0 = out[-1][1]
        if k1 <= k0:
            continue
        out.extend(_split_even(k0, k1, max_steps))
    return out


def speech_bounds(
    spans: Sequence[tuple[int, int]], speech: Sequence[tuple[float, float]], lead: float = 0.1, tail: float = 0.0
) -> list[tuple[float, float] | None]:
    """Where the speech is inside each segment: the segments are padded, subtitles should not be.

    Args:
        spans: ``(k0, k1)`` segments of :func:`plan_segments`.
        speech: the speech regions they were planned from, in seconds.
        lead: seconds added before each region (the detector's onsets come a
            few tens of milliseconds into the first word).
        tail: seconds added after each region (its offsets already lag the
            speech by about a tenth of a second).

    Returns:
        per segment, ``(start, end)`` of the speech regions overlapping it,
        widened by ``lead`` / ``tail`` and clipped to the segment, or ``None``
        where none does.

    Example:
        >>> speech_bounds([(20, 51), (51, 80), (80, 90)], [(1.0, 2.0), (2.1, 3.0)], lead=0.0)
        [(1.0, 2.0), (2.1, 3.0), None]
    """
    out: list[tuple[float, float] | None] = []
    for k0, k1 in spans:
        t0, t1 = k0 / FRAME_RATE, k1 / FRAME_RATE
        inside = [(max(s - lead, t0), min(e + tail, t1)) for s, e in speech if s < t1 and e > t0]
        out.append((inside[0][0], inside[-1][1]) if inside else None)
    return out


def _tighten(segment: dict, words: list[dict], start: float, end: float) -> None:
    """Give a decoded segment the times of its speech, and keep its words inside them."""
    segment["start"], segment["end"] = round(start, 3), round(end, 3)
    for w in words:
        w["start"] = round(min(max(w["start"], start), end), 3)
        w["end"] = round(min(max(w["end"], w["start"]), end), 3)


def fixed_windows(duration: float, max_segment: float = 20.0) -> list[tuple[int, int]]:
    """The whole input as the fewest equal segments of at most ``max_segment`` seconds.

    Example:
        >>> fixed_windows(50.0)
        [(0, 417), (417, 833), (833, 1250)]
    """
    steps = max(1, round(duration * FRAME_RATE))
    return _split_even(0, steps, max(1, int(max_segment * FRAME_RATE)))


# --------------------------------------------------------------------------- media sources


def _exact(audio: np.ndarray, offset: int, n: int) -> np.ndarray:
    """``n`` samples starting ``offset`` samples into ``audio`` (zeros outside it)."""
    out = np.zeros(n, dtype=np.float32)
    lo, hi = max(0, offset), min(len(audio), offset + n)
    if hi > lo:
        out[lo - offset : hi - offset] = audio[lo:hi]
    return out


def _fit_track(track: "MouthTrack", n: int) -> tuple[np.ndarray, np.ndarray]:
    """Crops and ``found`` of exactly ``n`` frames: the last frame repeated (not found) if short."""
    mouths, found = track.mouths[:n], track.found[:n]
    if len(mouths) < n:
        extra = n - len(mouths)
        mouths = np.concatenate([mouths, np.repeat(mouths[-1:], extra, axis=0)])
        found = np.concatenate([found, np.zeros(extra, dtype=bool)])
    return mouths, found


_Detector = Callable[[], "LandmarkDetector"]
_Owner = TypeVar("_Owner", bound="_DetectorOwner")


class _DetectorOwner:
    """A face landmark detector created on first use and released by :meth:`close` (or ``with``).

    Shared by :class:`Transcriber` and :class:`avsr.enhancement.Enhancer`,
    which hand :meth:`_landmarks` to the media readers.
    """

    _detector: "LandmarkDetector | None" = None

    def close(self) -> None:
        """Release the face landmark detector (created on first use)."""
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    def __enter__(self: _Owner) -> _Owner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _landmarks(self) -> "LandmarkDetector":
        """The detector, created on the first call."""
        if self._detector is None:
            from avsr.vision import LandmarkDetector

            self._detector = LandmarkDetector()
        return self._detector


class _FileMedia:
    """A media file: probed once, audio streamed, both modalities read per segment."""

    def __init__(self, path: str, detector: _Detector, crop_preset: str | None = None) -> None:
        from avsr.io import probe

        self.crop_preset = crop_preset
        info = probe(path)
        self.name = path
        self.has_audio = bool(info["has_audio"])
        self.has_video = bool(info["has_video"])
        self.no_audio = "no audio stream"  # why, once has_audio is False
        self.peak = 0.0  # largest |sample| seen by speech()
        self._audio_declared = float(info["audio"]["duration"] or 0.0) if info["audio"] else 0.0
        spans = [info["duration"]] + [info[k]["duration"] for k in ("audio", "video") if info[k]]
        self.duration = max([float(d) for d in spans if d] or [0.0])
        self._container_end = float(info["duration"]) if info["duration"] else math.inf
        self._video_end = float(info["video"]["duration"] or math.inf) if info["video"] else 0.0
        self._detector = detector

    def speech(self, vad: VoiceActivityDetector, max_segment: float) -> list[tuple[float, float]]:
        from avsr.io import iter_audio

        first: list[float] = []
        last = [0.0]  # end time of the audio decoded

        def chunks() -> Iterator[np.ndarray]:
            for chunk, t in iter_audio(self.name):
                if not first:
                    first.append(t)
                if len(chunk):
                    self.peak = max(self.peak, float(np.abs(chunk).max()))
                last[0] = t + len(chunk) / VoiceActivityDetector.SAMPLE_RATE
                yield chunk

        regions = vad.speech(chunks(), max_speech=max_segment)
        if self._audio_declared - last[0] > 0.5:  # a download cut short keeps its header
            logger.warning("%s: the audio stops at %.2f s of the %.2f s the file declares (truncated?): "
                           "decoded what is there", self.name, last[0], self._audio_declared)
        t0 = first[0] if first else 0.0
        return [(s + t0, e + t0) for s, e in regions]

    def audio(self, k0: int, k1: int) -> np.ndarray:
        from avsr.io import read_av

        start, end = k0 / FRAME_RATE, k1 / FRAME_RATE
        if start >= self._container_end:  # padding past the container's end: silence
            return np.zeros((k1 - k0) * SAMPLES_PER_STEP, dtype=np.float32)
        clip = read_av(self.name, start=start or None, end=end, video=False)
        offset = round((start - clip.audio_start) * clip.sample_rate)
        return _exact(clip.audio if clip.audio is not None else np.zeros(0, np.float32), offset,
                      (k1 - k0) * SAMPLES_PER_STEP)

    def mouths(self, k0: int, k1: int) -> tuple[np.ndarray, np.ndarray] | None:
        from avsr.vision import extract_mouths_from_file

        if k0 / FRAME_RATE >= self._video_end - 1e-3:  # after the last frame (audio longer than video)
            return None
        try:
            track = extract_mouths_from_file(self.name, fps=FRAME_RATE, start=k0 / FRAME_RATE or None,
                                             end=k1 / FRAME_RATE, detector=self._detector(),
                                             preset=self.crop_preset)
        except NoFaceError:
            return None
        return _fit_track(track, k1 - k0)


class _ClipMedia:
    """An :class:`avsr.io.AVClip` already in memory (crops computed once for the whole clip)."""

    def __init__(self, clip: "AVClip", detector: _Detector, crop_preset: str | None = None) -> None:
        from avsr.io import SAMPLE_RATE

        self.crop_preset = crop_preset
        self.name = clip.path or "<clip>"
        self.clip = clip
        self.has_audio = clip.audio is not None and len(clip.audio) > 0
        self.has_video = clip.frames is not None and len(clip.frames) > 0
        self.no_audio = "no audio stream"  # why, once has_audio is False
        self.peak = float(np.abs(clip.audio).max()) if self.has_audio else 0.0
        if self.has_audio and clip.sample_rate != SAMPLE_RATE:
            raise InputError(self.name, f"clip audio is at {clip.sample_rate} Hz; read it at {SAMPLE_RATE} Hz")
        if not self.has_audio and not self.has_video:
            raise InputError(self.name, "clip has neither audio nor video")
        ends = [0.0]
        if self.has_audio:
            ends.append(clip.audio_start + len(clip.audio) / clip.sample_rate)
        if self.has_video:
            ends.append(float(clip.duration) + (float(clip.timestamps[0]) if clip.timestamps is not None else 0.0))
        self.duration = max(ends)
        self._detector = detector
        self._track: tuple[np.ndarray, np.ndarray, float] | None | bool = False  # False: not computed yet

    def speech(self, vad: VoiceActivityDetector, max_segment: float) -> list[tuple[float, float]]:
        audio = self.clip.audio
        blocks = (audio[i : i + 16000] for i in range(0, len(audio), 16000))
        return [(s + self.clip.audio_start, e + self.clip.audio_start)
                for s, e in vad.speech(blocks, max_speech=max_segment)]

    def audio(self, k0: int, k1: int) -> np.ndarray:
        offset = round((k0 / FRAME_RATE - self.clip.audio_start) * self.clip.sample_rate)
        return _exact(self.clip.audio, offset, (k1 - k0) * SAMPLES_PER_STEP)

    def mouths(self, k0: int, k1: int) -> tuple[np.ndarray, np.ndarray] | None:
        from avsr.vision import extract_mouths

        if self._track is False:
            c = self.clip
            try:
                t = extract_mouths(c.frames, c.timestamps, fps=FRAME_RATE, detector=self._detector(),
                                   preset=self.crop_preset)
                self._track = (t.mouths, t.found, float(c.timestamps[0]) if c.timestamps is not None else 0.0)
            except NoFaceError:
                self._track = None
            except ValueError as e:  # malformed frames or timestamps
                raise InputError(self.name, str(e)) from None
        if self._track is None:
            return None
        mouths, found, t0 = self._track
        n = k1 - k0
        first = round((k0 / FRAME_RATE - t0) * FRAME_RATE)
        idx = np.clip(np.arange(first, first + n), 0, len(mouths) - 1)
        inside = (np.arange(first, first + n) >= 0) & (np.arange(first, first + n) < len(mouths))
        seg_found = found[idx] & inside
        if not seg_found.any():
            return None
        return mouths[idx], seg_found


# --------------------------------------------------------------------------- batch inputs


@dataclass
class InputFile:
    """One input of a batch: a path, or why a pattern gave none.

    Attributes:
        path: the file (or the pattern / folder that failed).
        error: one-line problem, ``None`` when ``path`` is a file to transcribe.
    """

    path: str
    error: str | None = None


def _media_in(folder: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in MEDIA_EXTENSIONS:
                found.append(os.path.join(root, name))
    return found


def expand_inputs(patterns: Iterable[str | os.PathLike]) -> list[InputFile]:
    """Turn command-line inputs into files: files as they are, folders and glob patterns expanded.

    A folder gives its media files (by :data:`MEDIA_EXTENSIONS`, sub-folders
    included, sorted); a pattern with ``*``, ``?`` or ``[`` that is not an
    existing path gives the files it matches (``**`` recursive, sorted).
    Files that do not exist are kept: transcribing them reports the problem.
    Duplicates are dropped (first kept).

    Args:
        patterns: paths, folders or glob patterns.

    Returns:
        the inputs in order; folders without media and patterns matching
        nothing become entries with an ``error``.
    """
    out: list[InputFile] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            out.append(InputFile(path))

    for pattern in patterns:
        p = os.fspath(pattern)
        if os.path.isdir(p):
            files = _media_in(p)
            if not files:
                out.append(InputFile(p, f"{p}: no media files in this folder"))
            for f in files:
                add(f)
        elif os.path.exists(p) or not glob.has_magic(p):
            add(p)
        else:
            matches = sorted(glob.glob(p, recursive=True))
            files = []
            for m in matches:
                files.extend(_media_in(m) if os.path.isdir(m) else [m])
            if not files:
                out.append(InputFile(p, f"{p}: no files match"))
            for f in files:
                add(f)
    return out


def output_paths(inputs: Sequence[str], out: str | os.PathLike | None, extension: str) -> dict[str, Path] | None:
    """Where each input's result goes.

    One input and an ``out`` that is not a folder (nor ends with a slash):
    that file. Otherwise ``out`` is a folder and input ``dir/name.mp4``
    writes ``out/name<extension>``; inputs with the same name get ``-1``,
    ``-2``... Nothing is created; the target is checked for writability.

    Args:
        inputs: the input files.
        out: the ``-o`` argument, or ``None`` (no files written).
        extension: e.g. ``".srt"``.

    Returns:
        ``{input: output path}``, or ``None`` when ``out`` is ``None``.

    Raises:
        InputError: the output cannot be written there.
    """
    if out is None:
        return None
    o = os.fspath(out)
    as_folder = len(inputs) != 1 or os.path.isdir(o) or o.endswith(("/", os.sep))
    if not as_folder:
        from avsr.vision import check_output

        check_output(o)
        return {inputs[0]: Path(o)}
    from avsr.evaluation import check_output_dir

    check_output_dir(o)
    targets: dict[str, Path] = {}
    taken: set[str] = set()
    for path in inputs:
        stem = Path(path).stem or "output"
        name, n = stem, 0
        while name in taken:
            n += 1
            name = f"{stem}-{n}"
        taken.add(name)
        targets[path] = Path(o) / f"{name}{extension}"
    return targets


# --------------------------------------------------------------------------- the transcriber


@dataclass
class _Item:
    """One segment waiting to be decoded."""

    index: int
    k0: int
    k1: int
    modality: str
    audio: np.ndarray | None = None
    mouths: np.ndarray | None = None


@dataclass
class _Tally:
    """What happened to the segments of one input (for the notices)."""

    segments: int = 0
    no_face: list[int] = field(default_factory=list)  # segments where the face was missing
    unreadable_video: str | None = None


class Transcriber(_DetectorOwner):
    """Speech recognition of media files with an AVSR model (audio, lips or both).

    Args:
        model: an :class:`avsr.models.AVSRModel`; moved to ``device``, put in eval mode.
        tokenizer: its tokenizer.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``... (default: the model's device).
        beam_size: beam of the joint CTC/attention search.
        ctc_weight: CTC weight of the joint score.
        batch_size: segments decoded together.
        max_segment: longest segment in seconds.
        min_face: fraction of a segment's frames with a detected face needed
            for ``auto`` to use the lips.
        progress: a progress bar (segments; files with ``jobs > 1``) on stderr.
        lm: optional token language model (:class:`avsr.models.lm.TokenLM`,
            trained with the model's tokenizer) for shallow fusion.
        lm_weight: weight of the LM score in the joint search.
        crop_preset: mouth-crop preset of :mod:`avsr.vision` the model was
            trained on (``None``: the default crop; a converted Auto-AVSR
            bundle names ``"auto_avsr"``).
        quantize: int8 dynamic quantisation of the model's linear layers
            (CPU only; :func:`quantize_linear`).
        max_len_ratio: longest output of the search as a fraction of the
            encoder's 25 fps steps (default 1.0, one token a step: no
            practical limit); e.g. ``4 / 25`` caps a segment at 4 tokens a
            second (``tools/benchmarks/transcribe_speed.py`` uses this for
            random-weight models, which never end a hypothesis).

    A model that reads one modality (e.g. Auto-AVSR's audio or video model)
    is given only that one: ``auto`` means that modality, and forcing another
    is an error.

    Raises:
        InputError: a bad setting or device, or an LM of another vocabulary size.
    """

    def __init__(
        self,
        model: "nn.Module",
        tokenizer: "Tokenizer",
        *,
        device: str | torch.device | None = None,
        beam_size: int = 10,
        ctc_weight: float = 0.3,
        batch_size: int = 8,
        max_segment: float = 20.0,
        min_face: float = 0.5,
        progress: bool = False,
        lm: "TokenLM | None" = None,
        lm_weight: float = DEFAULT_LM_WEIGHT,
        crop_preset: str | None = None,
        quantize: bool = False,
        max_len_ratio: float = 1.0,
    ) -> None:
        check_search(beam_size, ctc_weight, batch_size, lm_weight)
        if not (max_len_ratio > 0 and math.isfinite(max_len_ratio)):
            raise InputError(None, f"max output length ratio must be positive, got {max_len_ratio}")
        if lm is not None and lm.vocab_size != tokenizer.vocab_size:
            raise InputError(None, f"language model has {lm.vocab_size} tokens, the tokenizer "
                                   f"{tokenizer.vocab_size}: train the LM with the model's tokenizer")
        if not (max_segment >= 1.0):
            raise InputError(None, f"max segment must be at least 1 s, got {max_segment}")
        if not 0.0 <= min_face <= 1.0:
            raise InputError(None, f"min face fraction must be in [0, 1], got {min_face}")
        self.device = check_device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.quantized = bool(quantize)
        if self.quantized:
            if self.device.type != "cpu":
                raise InputError(None, "int8 quantisation (--quantize) runs on the CPU only: use --device cpu")
            self.model = quantize_linear(self.model)
        if crop_preset is not None:
            from avsr.vision import get_preset

            get_preset(crop_preset)  # an unknown name fails here, before any work
        self.crop_preset = crop_preset
        self.tokenizer = tokenizer
        self.lm = lm.to(self.device).eval() if lm is not None else None
        self.lm_weight = float(lm_weight)
        self.beam_size = int(beam_size)
        self.ctc_weight = float(ctc_weight)
        self.batch_size = int(batch_size)
        self.max_segment = float(max_segment)
        self.min_face = float(min_face)
        self.max_len_ratio = float(max_len_ratio)
        self.progress = progress
        self.vad = VoiceActivityDetector()
        #: ``None``, or a dict to which each call adds the seconds per stage (:data:`TIMED_STAGES`;
        #: in this process only: not in the workers of ``transcribe_many(jobs > 1)``).
        self.timings: dict[str, float] | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "auto",
                        lm: "str | os.PathLike | TokenLM | None" = None, *,
                        tokenizer: str | os.PathLike | None = None, units: str | os.PathLike | None = None,
                        **kwargs) -> "Transcriber":
        """A transcriber for a model bundle (``.safetensors``), or an Auto-AVSR ``.pth`` converted on the fly.

        Decoding settings the bundle stores (a converted Auto-AVSR bundle:
        beam 40, CTC weight 0.1) and its mouth-crop preset are used unless
        ``kwargs`` sets them.

        Args:
            path: the bundle, or an Auto-AVSR checkpoint.
            device: where to run.
            lm: a token LM bundle (:func:`avsr.checkpoints.load_lm`; its
                tokenizer must be the model's) or model, for shallow fusion.
            tokenizer: the sentencepiece model of an Auto-AVSR checkpoint.
            units: its units file (default: beside the sentencepiece model).
            **kwargs: settings of :class:`Transcriber` (``lm_weight``, ``beam_size``...);
                ``None`` values take the bundle's (or the built-in) defaults.

        Raises:
            InputError: missing or damaged bundle, an LM with another tokenizer,
                a bad device or setting.
        """
        from avsr.checkpoints import load_lm, load_recognizer

        dev = check_device(device)
        model, tok, extra = load_recognizer(path, device="cpu" if kwargs.get("quantize") else dev,
                                            tokenizer_path=tokenizer, units_path=units)
        if isinstance(lm, (str, os.PathLike)):
            lm, _ = load_lm(lm, device=dev, tokenizer=tok)
        settings = {k: v for k, v in kwargs.items() if v is not None}
        for key, value in bundle_decoding(extra).items():
            settings.setdefault(key, value)
        if extra.get("crop_preset"):
            settings.setdefault("crop_preset", str(extra["crop_preset"]))
        return cls(model, tok, device=dev, lm=lm, **settings)

    @classmethod
    def from_pretrained(cls, name: str | None = None, device: str | torch.device = "auto",
                        **kwargs) -> "Transcriber":
        """A transcriber for a bundled model (:mod:`avsr.pretrained`).

        Args:
            name: a name from :func:`avsr.pretrained.available` (default: the demo model).
            device: where to run.
            **kwargs: ``lm`` (as in :meth:`from_checkpoint`) and settings of :class:`Transcriber`.

        Raises:
            InputError: unknown name (the message lists the installed ones).
        """
        from avsr.pretrained import DEFAULT_MODEL, pretrained_path

        return cls.from_checkpoint(pretrained_path(name or DEFAULT_MODEL), device=device, **kwargs)

    # ------------------------------------------------------------------ transcription

    def transcribe(self, source: "str | os.PathLike | AVClip", modality: str = "auto") -> dict:
        """Transcribe one media file or decoded clip.

        Args:
            source: a media file (any container, frame rate, size; audio-only
                files too) or an :class:`avsr.io.AVClip` (16 kHz audio).
            modality: ``"auto"`` (per segment: lips and audio where a face is
                seen, audio where not, lips where the file has no audio),
                ``"av"``, ``"audio"`` or ``"video"``.

        Returns:
            the result dict described in the module notes.

        Raises:
            InputError: a bad file, a forced modality the file does not have
                (e.g. ``"video"`` for an audio file, or no face anywhere).
        """
        from avsr.io import AVClip

        modality = self._model_modality(_check_modality(modality))
        is_clip = isinstance(source, AVClip)
        name = (source.path or "<clip>") if is_clip else os.fspath(source)
        try:
            media = (_ClipMedia(source, self._landmarks, self.crop_preset) if is_clip
                     else _FileMedia(name, self._landmarks, self.crop_preset))
            return self._run(media, modality)
        except InputError as e:
            if e.path is None:  # name the input in every message
                raise type(e)(name, e.problem) from None
            raise

    def _model_modality(self, modality: str) -> str:
        """``modality`` restricted to what the model reads (``auto`` -> its one modality)."""
        reads = tuple(getattr(self.model, "modalities", ("audio", "video")))
        if len(reads) == 2:
            return modality
        only = reads[0]
        if modality == "auto":
            return only
        if modality != only:
            raise InputError(None, f"this model reads {only} only: cannot use --modality {modality} "
                                   f"(use auto or {only})")
        return modality

    def transcribe_many(
        self, inputs: Iterable[str | os.PathLike], modality: str = "auto", jobs: int = 1
    ) -> Iterator[tuple[str, dict | None, str | None]]:
        """Transcribe files; a bad file does not stop the others.

        With ``jobs > 1`` the files are shared among that many worker
        processes (spawned, each with its own copy of this transcriber and
        ``torch`` threads = this process's threads // jobs). Results still
        come in input order, and a file's warnings are logged here, on the
        ``avsr`` loggers, just before its result. Ctrl-C, or leaving the
        loop early, stops the workers at once; they write nothing.

        Args:
            inputs: media files.
            modality: as in :meth:`transcribe`.
            jobs: worker processes (1: one file after another in this process).

        Yields:
            ``(path, result, None)`` on success, ``(path, None, error line)`` on failure.

        Raises:
            InputError: a bad modality or number of jobs (on the first ``next``).
        """
        modality = self._model_modality(_check_modality(modality))
        check_jobs(jobs)
        paths = [os.fspath(source) for source in inputs]
        if jobs == 1 or len(paths) < 2:
            for path in paths:
                yield self._transcribe_one(path, modality)
            return
        jobs = min(jobs, len(paths))
        with tempfile.TemporaryDirectory(prefix="avsr-jobs-") as tmp:
            spec = self._worker_spec(jobs, Path(tmp) / "weights.pt")
            yield from _transcribe_in_workers(spec, paths, modality, jobs, self.progress)

    def _transcribe_one(self, path: str, modality: str) -> tuple[str, dict | None, str | None]:
        """One item of :meth:`transcribe_many`: any error becomes its one line."""
        try:
            return path, self.transcribe(path, modality), None
        except AVSRError as e:
            return path, None, str(e)
        except Exception as e:  # something unforeseen in one file must not stop the batch
            if os.environ.get("AVSR_DEBUG"):
                raise
            detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return path, None, f"{path}: internal error: {type(e).__name__}{': ' + detail if detail else ''}"

    def _worker_spec(self, jobs: int, weights: Path) -> "_WorkerSpec":
        """What a worker process needs to rebuild this transcriber; the weights are written to ``weights``."""
        config = getattr(self.model, "config", None)
        if not isinstance(config, dict) or not config:
            raise InputError(None, "several jobs need a model built from a config (a bundle or build_model)")
        if self.quantized:
            raise InputError(None, "--quantize works with one job only (drop --jobs)")
        torch.save({"model": self.model.state_dict(), "lm": self.lm.state_dict() if self.lm is not None else None},
                   weights)
        settings = dict(device=str(self.device), beam_size=self.beam_size, ctc_weight=self.ctc_weight,
                        batch_size=self.batch_size, max_segment=self.max_segment, min_face=self.min_face,
                        lm_weight=self.lm_weight, crop_preset=self.crop_preset, max_len_ratio=self.max_len_ratio)
        lm_config = dict(self.lm.config) if self.lm is not None else None
        return _WorkerSpec(dict(config), self.tokenizer.to_dict(), lm_config, str(weights), settings,
                           max(1, torch.get_num_threads() // jobs))

    def _plan(self, media: "_FileMedia | _ClipMedia", modality: str
              ) -> tuple[list[tuple[int, int]], str, list[tuple[float, float]]]:
        """Segments, the modality family of the file (what its streams allow) and its speech regions."""
        if modality in _NEEDS_AUDIO and not media.has_audio:
            raise InputError(media.name, f"no audio stream: cannot use --modality {modality} "
                                         "(try --modality video or auto)")
        if modality in _NEEDS_VIDEO and not media.has_video:
            raise InputError(media.name, f"no video stream: cannot use --modality {modality} "
                                         "(try --modality audio or auto)")
        speech: list[tuple[float, float]] = []
        if media.has_audio:
            clock = _Clock(self.timings)
            speech = self._speech(media, modality)  # may find the audio unusable (has_audio becomes False)
            clock.lap("vad")
        if media.has_audio:
            spans = plan_segments(speech, media.duration, self.max_segment)
        else:
            spans = fixed_windows(media.duration, self.max_segment)
        if modality == "auto":
            if not media.has_audio:
                return spans, "video", speech  # said in _notices, unless there is no face either (an error)
            return spans, "auto" if media.has_video else "audio", speech
        return spans, modality, speech

    def _speech(self, media: "_FileMedia | _ClipMedia", modality: str) -> list[tuple[float, float]]:
        """Speech regions of a file with audio; where a video's audio is unusable for ``auto``/``video``
        (it does not decode, or it is silent) ``media.has_audio`` becomes False, saying why in
        ``media.no_audio``, and the lips are read instead."""
        lips_possible = media.has_video and modality in ("auto", "video")
        try:  # regions leave room for the padding and the 40 ms grid: padded segments fit in max_segment
            speech = media.speech(self.vad, self.max_segment - 2 * SEGMENT_PAD - 2 / FRAME_RATE)
        except InputError as e:
            if not lips_possible:
                raise
            media.has_audio, media.no_audio = False, e.problem  # e.g. "cannot decode audio (damaged data)"
            return []
        if lips_possible and media.peak < SILENT_PEAK:
            media.has_audio, media.no_audio = False, "the audio track is silent"
        return speech

    def _prepare(self, media: "_FileMedia | _ClipMedia", index: int, k0: int, k1: int, plan: str,
                 tally: _Tally) -> _Item | None:
        """Read one segment and decide its modality; ``None`` when it cannot be decoded."""
        track = None
        if plan in ("auto", "av", "video"):
            clock = _Clock(self.timings)
            try:
                track = media.mouths(k0, k1)
            except InputError as e:
                if plan == "video":
                    raise
                tally.unreadable_video = tally.unreadable_video or e.problem  # damaged video: use the audio
            finally:
                clock.lap("lips")
            if track is None:
                tally.no_face.append(index)
        if plan == "audio":
            chosen = "audio"
        elif plan == "video":
            chosen = "video" if track is not None else None
        elif plan == "av":
            chosen = "av" if track is not None else "audio"
        else:  # auto with both streams
            chosen = "av" if track is not None and float(track[1].mean()) >= self.min_face else "audio"
            if track is not None and chosen == "audio":
                tally.no_face.append(index)
        if chosen is None:
            return None
        item = _Item(index, k0, k1, chosen)
        if chosen in _NEEDS_AUDIO:
            clock = _Clock(self.timings)
            item.audio = media.audio(k0, k1)
            clock.lap("audio")
        if chosen in _NEEDS_VIDEO:
            item.mouths = track[0]
        return item

    def _run(self, media: "_FileMedia | _ClipMedia", modality: str) -> dict:
        from tqdm import tqdm

        spans, plan, speech = self._plan(media, modality)
        tally = _Tally(segments=len(spans))
        pending: dict[str, list[_Item]] = {"av": [], "audio": [], "video": []}
        decoded: dict[int, dict] = {}
        words: dict[int, list[dict]] = {}
        bar = tqdm(total=len(spans), desc=os.path.basename(media.name), unit="seg", file=sys.stderr,
                   disable=not self.progress, dynamic_ncols=True, leave=False)
        try:
            for index, (k0, k1) in enumerate(spans):
                item = self._prepare(media, index, k0, k1, plan, tally)
                if item is not None:
                    queue = pending[item.modality]
                    queue.append(item)
                    if len(queue) >= self.batch_size:
                        self._decode(queue, decoded, words)
                        queue.clear()
                bar.update(1)
            for queue in pending.values():
                if queue:
                    self._decode(queue, decoded, words)
        finally:
            bar.close()
        self._notices(media, plan, modality, tally)
        for index, bounds in enumerate(speech_bounds(spans, speech)):
            if bounds is not None and index in decoded:
                _tighten(decoded[index], words[index], *bounds)
        order = sorted(decoded)
        segments = [decoded[i] for i in order]
        return {
            "input": media.name,
            "duration": round(float(media.duration), 3),
            "segments": segments,
            "words": [w for i in order for w in words[i]],
            "text": " ".join(s["text"] for s in segments if s["text"]),
        }

    def _notices(self, media: "_FileMedia | _ClipMedia", plan: str, modality: str, tally: _Tally) -> None:
        """Say (on the ``avsr.inference`` logger) where the input lacked what was asked for."""
        n, missing = tally.segments, len(set(tally.no_face))
        if tally.unreadable_video:
            logger.warning("%s: video unreadable in places (%s): decoded those segments audio-only",
                           media.name, tally.unreadable_video)
        if not n:
            logger.warning("%s: no speech found: empty transcript", media.name)
            return
        if plan == "video" and not media.has_audio:
            if missing == n:
                raise NoFaceError(media.name, f"{media.no_audio} and no face found: nothing to recognise")
            if modality == "auto":
                logger.warning("%s: %s: lip reading only", media.name, media.no_audio)
            if missing:
                logger.warning("%s: no face in %d of %d segments: skipped them (no audio to fall back to)",
                               media.name, missing, n)
            return
        if not missing:
            return
        if plan == "auto":
            if missing == n:
                logger.warning("%s: no face found: decoded audio-only", media.name)
            else:
                logger.warning("%s: no face (or too little of one) in %d of %d segments: decoded those "
                               "audio-only", media.name, missing, n)
            return
        if missing == n:
            raise NoFaceError(media.name, f"no face found in any frame: cannot use --modality {modality} "
                                          "(try --modality audio or auto)")
        what = "skipped" if plan == "video" else "decoded audio-only"
        logger.warning("%s: no face in %d of %d segments: %s", media.name, missing, n, what)

    @torch.inference_mode()
    def _decode(self, items: list[_Item], decoded: dict[int, dict], words: dict[int, list[dict]]) -> None:
        """Decode items of one modality as a batch; results by segment index."""
        from avsr.decoding import word_timestamps

        modality = items[0].modality
        audio = video = None
        if modality in _NEEDS_AUDIO:
            audio = pad_batch([torch.from_numpy(it.audio) for it in items], self.device)
        if modality in _NEEDS_VIDEO:
            video = pad_batch([torch.from_numpy(np.ascontiguousarray(it.mouths)) for it in items], self.device)
        out = encode_and_search(self.model, audio, video, timings=self.timings, beam_size=self.beam_size,
                                ctc_weight=self.ctc_weight, lm=self.lm, lm_weight=self.lm_weight,
                                max_len_ratio=self.max_len_ratio)
        lam = self.ctc_weight
        clock = _Clock(self.timings)
        for b, it in enumerate(items):
            hyp = out.hypotheses[b][0]
            tokens = [int(t) for t in hyp.tokens]
            start, end = it.k0 / FRAME_RATE, it.k1 / FRAME_RATE
            joint = (1.0 - lam) * hyp.att_score + lam * hyp.ctc_score
            confidence = math.exp(min(0.0, joint / (len(tokens) + 1))) if math.isfinite(joint) else 0.0
            decoded[it.index] = {
                "start": round(start, 3), "end": round(end, 3),
                "text": " ".join(self.tokenizer.decode(tokens).split()),
                "modality": modality, "confidence": round(confidence, 4),
            }
            frames = int(out.lengths[b])
            try:
                timings = word_timestamps(out.log_probs[b, :frames], tokens, self.tokenizer, FRAME_RATE,
                                          blank=int(getattr(self.model, "blank_id", 0)))
                words[it.index] = [
                    {"word": w.word, "start": round(start + w.start, 3), "end": round(min(end, start + w.end), 3),
                     "confidence": round(w.confidence, 4)}
                    for w in timings
                ]
            except InputError:  # CTC cannot place these tokens (possible only without CTC in the search)
                words[it.index] = _spread_words(decoded[it.index]["text"], start, end)
        clock.lap("align")


# --------------------------------------------------------------------------- worker processes (jobs > 1)


def check_jobs(jobs: int) -> None:
    """Check a number of worker processes.

    Raises:
        InputError: not a positive integer.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise InputError(None, f"jobs must be a positive integer, got {jobs}")


@dataclass
class _WorkerSpec:
    """Plain data that rebuilds a :class:`Transcriber` in a worker process."""

    model_config: dict
    tokenizer: dict
    lm_config: dict | None
    weights: str  # a torch.save({"model": state, "lm": state | None}) file, read back weights-only
    settings: dict
    threads: int


_worker: Transcriber | None = None
_worker_records: list[logging.LogRecord] = []


class _Collect(logging.Handler):
    """Keeps a worker's log records, to be sent back with the file's result."""

    def emit(self, record: logging.LogRecord) -> None:
        _worker_records.append(record)


def _worker_init(spec: _WorkerSpec) -> None:
    """Start a worker process: build its transcriber; Ctrl-C is ignored (the parent stops the workers)."""
    global _worker
    import signal
    import threading

    from tqdm import tqdm

    from avsr.models.avsr import build_model
    from avsr.models.lm import build_lm
    from avsr.tokenizer import Tokenizer

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # blocked since the spawn (see _held_interrupts)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    # tqdm would create a multiprocessing lock here, which the resource tracker reports as leaked
    # when the parent stops this worker; a thread lock is enough (one bar at a time).
    tqdm.set_lock(threading.RLock())
    torch.set_num_threads(spec.threads)
    weights = torch.load(spec.weights, map_location="cpu", weights_only=True)
    model = build_model(spec.model_config)
    model.load_state_dict(weights["model"])
    lm = None
    if spec.lm_config is not None:
        lm = build_lm(spec.lm_config)
        lm.load_state_dict(weights["lm"])
    logging.getLogger("avsr").addHandler(_Collect(logging.WARNING))
    _worker = Transcriber(model, Tokenizer.from_dict(spec.tokenizer), lm=lm, **spec.settings)


def _worker_transcribe(path: str, modality: str) -> tuple[tuple[str, dict | None, str | None], list[tuple]]:
    """One file in a worker: the :meth:`Transcriber.transcribe_many` item and its ``(logger, level, message)``s."""
    _worker_records.clear()
    item = _worker._transcribe_one(path, modality)
    return item, [(r.name, r.levelno, r.getMessage()) for r in _worker_records]


@contextlib.contextmanager
def _held_interrupts() -> Iterator[None]:
    """Spawn worker processes that never see Ctrl-C, without losing one that comes meanwhile.

    SIGINT is blocked in this thread, and a mask is inherited through fork
    and exec: workers start with it blocked (their initializer then ignores
    it), so a Ctrl-C at the terminal reaches this process alone and no worker
    dies of it with a traceback. Another thread may still take the signal, so
    in the main thread the handler only notes it until the block ends; it is
    raised again then (to the handler there was before), with every worker
    known, never half-way through sending one its spec.
    """
    import signal
    import threading

    held: list[int] = []
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum)) if main else None
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if main:
            signal.signal(signal.SIGINT, old if old is not None else signal.default_int_handler)
    if held:
        signal.raise_signal(signal.SIGINT)


def _transcribe_in_workers(spec: _WorkerSpec, paths: list[str], modality: str, jobs: int,
                           progress: bool) -> Iterator[tuple[str, dict | None, str | None]]:
    """:meth:`Transcriber.transcribe_many` over ``jobs`` spawned processes, results in input order."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from tqdm import tqdm

    ctx = multiprocessing.get_context("spawn")  # no forked copies of torch / mediapipe threads
    before = {p.pid for p in multiprocessing.active_children()}
    executor = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=(spec,))
    bar = tqdm(total=len(paths), desc="transcribe", unit="file", file=sys.stderr, disable=not progress,
               dynamic_ncols=True, leave=False)
    finished = False
    try:
        with _held_interrupts():  # submit() spawns the workers
            futures = [executor.submit(_worker_transcribe, path, modality) for path in paths]
        for future in futures:
            future.add_done_callback(lambda _: bar.update(1))
        for path, future in zip(paths, futures):
            try:
                item, records = future.result()
            except BrokenProcessPool as e:  # a worker was killed (out of memory?) or could not start
                yield path, None, f"{path}: internal error: worker process failed ({e})"
                continue
            for name, level, message in records:
                logging.getLogger(name).log(level, "%s", message)
            yield item
        finished = True
    finally:
        if not finished:  # Ctrl-C, an error, or the caller stopped early: stop the workers now
            executor.shutdown(wait=False, cancel_futures=True)
            workers = [p for p in multiprocessing.active_children() if p.pid not in before]  # started above
            for process in workers:
                process.terminate()
            for process in workers:
                process.join()
        executor.shutdown(wait=True)
        bar.close()


def _spread_words(text: str, start: float, end: float) -> list[dict]:
    """Words of ``text`` spread evenly over ``[start, end)``, confidence 0 (no alignment)."""
    ws = text.split()
    step = (end - start) / max(1, len(ws))
    return [{"word": w, "start": round(start + i * step, 3), "end": round(start + (i + 1) * step, 3),
             "confidence": 0.0} for i, w in enumerate(ws)]
