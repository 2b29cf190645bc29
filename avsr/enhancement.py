"""Speech enhancement of media files: a noisy recording (and the speaker's lips) in, cleaner speech out.

The Python API behind ``avsr enhance``::

    en = Enhancer.from_pretrained()                 # or .from_checkpoint("enhancer.safetensors")
    info = en.enhance_file("talk.mp4", "clean.mp4") # the video stream copied untouched, new audio
    info = en.enhance_file("talk.mp4", "clean.wav", modality="audio")
    y = en.enhance_array(noisy, mouths, found)      # numpy in, numpy out

Pipeline (the same media readers as :mod:`avsr.inference`):

1. The input is cut into chunks of ``chunk_seconds`` on the 25 fps grid
   that overlap by ``overlap_seconds``; each chunk's audio is read with a
   seek and its frames are streamed through the lip frontend
   (:func:`avsr.vision.extract_mouths_from_file`) into 96×96 crops and a
   ``found`` mask, so memory stays flat however long the input is.
2. Each chunk is enhanced by :meth:`EnhancerModel.enhance` with the lips
   where a face was found and the audio alone elsewhere (frames without a
   face use the model's no-video embedding); ``modality="audio"`` never
   looks at the pictures. Stretches without a face are reported once per
   input as a warning on the ``avsr`` logger (stderr in the CLI), as is a
   file without a video stream.
3. Overlaps are cross-faded linearly, and the result is written as it
   comes: a ``.wav``/``.flac`` file block by block, or a video container
   (``.mp4``, ``.mkv``, ...) whose video stream is copied packet for packet
   from the input (:func:`avsr.io.replace_audio`; the pictures stay
   bit-identical) with the enhanced audio, which is held until the remux
   (64 kB per second of input). Every write is atomic: a failure leaves no
   output.

Time 0 of the output is the start of the input file (the clock of
:func:`avsr.io.read_av`), so the enhanced audio stays in sync with the pictures.

Example (an untrained model starts at the identity mask, so it returns its input):
    >>> import numpy as np
    >>> from avsr.models.enhancer import enhancer_tiny
    >>> en = Enhancer(enhancer_tiny())
    >>> x = (0.1 * np.sin(np.arange(32000) / 9.0)).astype(np.float32)
    >>> bool(np.abs(en.enhance_array(x) - x).max() < 1e-2)
    True
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np
import torch

from avsr.errors import AVSRError, InputError
from avsr.inference import FRAME_RATE, SAMPLES_PER_STEP, _DetectorOwner, check_device

if TYPE_CHECKING:
    from avsr.models.enhancer import EnhancerModel

__all__ = ["DEFAULT_ENHANCER", "ENHANCE_MODALITIES", "AUDIO_OUTPUTS", "Enhancer", "chunk_plan", "no_face_spans",
           "output_extension", "plan_outputs"]

logger = logging.getLogger(__name__)

#: The bundled demo enhancer (trained by ``recipes/SynthGRID/enhance``).
DEFAULT_ENHANCER = "synthgrid-enhance-tiny"
#: ``av``: the lips where a face is seen (audio alone elsewhere); ``audio``: never the lips.
ENHANCE_MODALITIES: tuple[str, ...] = ("av", "audio")
#: Output suffixes written as plain audio; any other suffix is a video container.
AUDIO_OUTPUTS: frozenset[str] = frozenset({".wav", ".flac"})


def chunk_plan(steps: int, chunk_steps: int, overlap_steps: int) -> list[tuple[int, int]]:
    """Overlapping chunks covering ``[0, steps)`` on the 25 fps grid.

    Chunk ``j`` is ``[j S, min(j S + C, steps))`` with stride ``S = C - O``;
    consecutive chunks overlap by ``O`` steps, and every chunk after the
    first is longer than the overlap.

    Args:
        steps: length in 25 fps steps (>= 1).
        chunk_steps: chunk length ``C``.
        overlap_steps: overlap ``O`` (``0 <= O < C``).

    Returns:
        ``(k0, k1)`` pairs in order.

    Example:
        >>> chunk_plan(600, 250, 25)
        [(0, 250), (225, 475), (450, 600)]
    """
    if steps < 1:
        return []
    stride = chunk_steps - overlap_steps
    out, k0 = [], 0
    while True:
        k1 = min(k0 + chunk_steps, steps)
        out.append((k0, k1))
        if k1 == steps:
            return out
        k0 += stride


def no_face_spans(found: np.ndarray, fps: float = FRAME_RATE) -> list[tuple[float, float]]:
    """Time spans (seconds) of the runs of ``False`` in a per-frame face mask.

    Example:
        >>> no_face_spans(np.array([1, 0, 0, 1, 0], bool))
        [(0.04, 0.12), (0.16, 0.2)]
    """
    f = np.asarray(found, bool)
    edges = np.diff(np.concatenate([[1], f.astype(np.int8), [1]]))
    starts, ends = np.flatnonzero(edges == -1), np.flatnonzero(edges == 1)
    return [(round(float(s) / fps, 3), round(float(e) / fps, 3)) for s, e in zip(starts, ends)]


def output_extension(has_video: bool, source: str) -> str:
    """The suffix an output gets in a folder: the input's for a video, ``.wav`` for audio only."""
    ext = os.path.splitext(source)[1].lower()
    return ext if has_video and ext and ext not in AUDIO_OUTPUTS else ".wav"


class _AudioSink:
    """Collects the enhanced blocks: streamed into an audio file, or held for a remux."""

    def __init__(self, path: Path, tmp: Path, stream: bool) -> None:
        self.path, self.stream = path, stream
        self.blocks: list[np.ndarray] = []
        self.file = None
        if stream:
            import soundfile as sf

            fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
            self.file = sf.SoundFile(os.fspath(tmp), "w", 16000, 1, format=fmt, subtype="PCM_16")

    def write(self, block: np.ndarray) -> None:
        block = np.clip(block, -1.0, 1.0).astype(np.float32)
        if self.file is not None:
            self.file.write(block)
        else:
            self.blocks.append(block)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class Enhancer(_DetectorOwner):
    """Audio-visual speech enhancement of media files and arrays.

    Args:
        model: an :class:`avsr.models.enhancer.EnhancerModel`; moved to ``device``, put in eval mode.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``... (default: the model's device).
        chunk_seconds: length of the chunks a long input is enhanced in.
        overlap_seconds: overlap of consecutive chunks (cross-faded).
        progress: a progress bar (chunks) on stderr.

    Raises:
        InputError: a bad device or chunking.
    """

    def __init__(
        self,
        model: "EnhancerModel",
        *,
        device: str | torch.device | None = None,
        chunk_seconds: float = 10.0,
        overlap_seconds: float = 1.0,
        progress: bool = False,
    ) -> None:
        if not (chunk_seconds >= 1.0 and math.isfinite(chunk_seconds)):
            raise InputError(None, f"chunk length must be at least 1 s, got {chunk_seconds}")
        if not 0.0 <= overlap_seconds <= chunk_seconds / 2:
            raise InputError(None, f"chunk overlap must be in [0, chunk/2], got {overlap_seconds}")
        self.device = check_device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.chunk_steps = int(round(chunk_seconds * FRAME_RATE))
        self.overlap_steps = int(round(overlap_seconds * FRAME_RATE))
        self.progress = progress

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "auto", **kwargs) -> "Enhancer":
        """An enhancer for a bundle written by ``recipes/*/enhance/train.py``.

        Raises:
            InputError: missing or damaged bundle, not an enhancer, or a bad device.
        """
        from avsr.checkpoints import load_enhancer

        dev = check_device(device)
        return cls(load_enhancer(path, device=dev), device=dev, **kwargs)

    @classmethod
    def from_pretrained(cls, name: str | None = None, device: str | torch.device = "auto", **kwargs) -> "Enhancer":
        """An enhancer for a bundled model (default :data:`DEFAULT_ENHANCER`).

        Raises:
            InputError: unknown name (the message lists the installed ones), or not an enhancer.
        """
        from avsr.pretrained import pretrained_path

        return cls.from_checkpoint(pretrained_path(name or DEFAULT_ENHANCER), device=device, **kwargs)

    # ------------------------------------------------------------------ arrays

    @torch.inference_mode()
    def _chunk(self, audio: np.ndarray, mouths: np.ndarray | None, found: np.ndarray | None) -> np.ndarray:
        """Enhance one chunk (audio of ``n`` samples, ``ceil(n / 640)`` mouth frames or ``None``)."""
        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).unsqueeze(0).to(self.device)
        video = valid = None
        if mouths is not None and found is not None and found.any():
            video = torch.from_numpy(np.ascontiguousarray(mouths)).unsqueeze(0).to(self.device)
            valid = torch.from_numpy(np.asarray(found, bool)).unsqueeze(0).to(self.device)
        return self.model.enhance(x, None, video, None, valid)[0].cpu().numpy()

    def enhance_array(
        self, audio: np.ndarray, mouths: np.ndarray | None = None, found: np.ndarray | None = None
    ) -> np.ndarray:
        """Enhance a waveform in memory (chunked and cross-faded like a file).

        Args:
            audio: ``(N,)`` float 16 kHz waveform; ``audio[640 k]`` is heard with mouth frame ``k``.
            mouths: ``(T, H, W)`` uint8 crops at 25 fps, or ``None`` (audio only).
            found: ``(T,)`` bool, frames with a face (default all).

        Returns:
            ``float32 (N,)`` enhanced waveform.

        Raises:
            InputError: malformed arrays.
        """
        x = np.asarray(audio, dtype=np.float32)
        if x.ndim != 1 or len(x) == 0 or not np.isfinite(x).all():
            raise InputError(None, f"audio must be a finite, non-empty 1-D array, got shape {x.shape}")
        if mouths is not None:
            mouths = np.asarray(mouths)
            if mouths.ndim != 3 or mouths.dtype != np.uint8 or len(mouths) == 0:
                raise InputError(None, f"mouths must be (T, H, W) uint8, got {mouths.shape} {mouths.dtype}")
            found = np.ones(len(mouths), bool) if found is None else np.asarray(found, bool)
            if found.shape != (len(mouths),):
                raise InputError(None, f"found must be ({len(mouths)},) bool, got {found.shape}")
        steps = -(-len(x) // SAMPLES_PER_STEP)

        def source(k0: int, k1: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
            a = np.zeros((k1 - k0) * SAMPLES_PER_STEP, np.float32)
            part = x[k0 * SAMPLES_PER_STEP : k1 * SAMPLES_PER_STEP]
            a[: len(part)] = part
            if mouths is None:
                return a, None, None
            idx = np.arange(k0, k1)
            inside = idx < len(mouths)
            idx = np.minimum(idx, len(mouths) - 1)
            return a, mouths[idx], found[idx] & inside

        out = np.concatenate([block for block, _ in self._stream(steps, source)])
        return out[: len(x)]

    def _stream(self, steps: int, source, desc: str | None = None) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Enhanced blocks in order (overlaps cross-faded) and each block's ``found`` frames (or ``None``)."""
        from tqdm import tqdm

        plan = chunk_plan(steps, self.chunk_steps, self.overlap_steps)
        tail = self.overlap_steps * SAMPLES_PER_STEP
        pending: np.ndarray | None = None
        bar = tqdm(plan, desc=desc or "enhance", unit="chunk", file=sys.stderr, disable=not self.progress,
                   dynamic_ncols=True, leave=False)
        try:
            for j, (k0, k1) in enumerate(bar):
                audio, mouths, found = source(k0, k1)
                y = self._chunk(audio, mouths, found)
                if pending is not None:
                    fade = np.linspace(0.0, 1.0, len(pending), endpoint=False, dtype=np.float32)
                    y[: len(pending)] = pending * (1 - fade) + y[: len(pending)] * fade
                skip = self.overlap_steps if j else 0  # frames already reported with the previous chunk
                seen = found[skip:] if found is not None else None
                if j == len(plan) - 1 or tail == 0:
                    pending = None
                    yield y, seen
                else:
                    pending = y[-tail:].copy()
                    yield y[:-tail], seen
        finally:
            bar.close()

    # ------------------------------------------------------------------ files

    def enhance_file(self, source: str | os.PathLike, target: str | os.PathLike, modality: str = "av") -> dict:
        """Enhance one media file into ``target``.

        Args:
            source: a media file with an audio stream (any container; audio-only files too).
            target: output file; ``.wav``/``.flac`` write audio, other suffixes
                (``.mp4``, ``.mkv``, ...) a video with the source's video stream copied.
            modality: ``"av"`` (the lips where a face is seen) or ``"audio"``.

        Returns:
            ``{"input", "output", "duration", "modality", "no_face"}``: ``no_face``
            lists the ``[start, end]`` seconds enhanced from the audio alone for lack of a face.

        Raises:
            InputError: a bad file, no audio stream, a video output for an
                input without video, or an unwritable target (nothing is written).
        """
        from avsr.inference import _FileMedia
        from avsr.io import replace_audio
        from avsr.utils import atomic_path

        if modality not in ENHANCE_MODALITIES:
            raise InputError(None, f"unknown modality {modality!r} (choose from {', '.join(ENHANCE_MODALITIES)})")
        src, dst = os.fspath(source), Path(target)
        try:
            media = _FileMedia(src, self._landmarks)
            if not media.has_audio:
                raise InputError(src, "no audio stream: nothing to enhance")
            to_audio = dst.suffix.lower() in AUDIO_OUTPUTS
            if not to_audio and not media.has_video:
                raise InputError(src, f"no video stream to carry into {dst.name}; write a .wav instead")
            use_video = modality == "av" and media.has_video
            if modality == "av" and not media.has_video:
                logger.warning("%s: no video stream: enhanced from the audio alone", src)
            steps = max(1, math.ceil(media.duration * FRAME_RATE - 1e-6))
            found_all: list[np.ndarray] = []

            def read(k0: int, k1: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
                audio = media.audio(k0, k1)
                if not use_video:
                    return audio, None, None
                crops = media.mouths(k0, k1)
                if crops is None:
                    return audio, None, np.zeros(k1 - k0, bool)
                return audio, crops[0], crops[1]

            with atomic_path(dst) as tmp:
                sink = _AudioSink(dst, tmp, stream=to_audio)
                try:
                    for block, seen in self._stream(steps, read, desc=Path(src).name):
                        sink.write(block)
                        if seen is not None:
                            found_all.append(seen)
                finally:
                    sink.close()
                if not to_audio:
                    replace_audio(src, tmp, np.concatenate(sink.blocks), 16000, audio_start=0.0)
        except InputError as e:
            if e.path is None:
                raise InputError(src, e.problem) from None
            raise
        spans = no_face_spans(np.concatenate(found_all)) if found_all else []
        if use_video and spans:
            total = sum(e - s for s, e in spans)
            if total >= media.duration - 0.05:
                logger.warning("%s: no face found: enhanced from the audio alone", src)
            else:
                shown = ", ".join(f"{s:.2f}-{e:.2f} s" for s, e in spans[:5]) + (" ..." if len(spans) > 5 else "")
                logger.warning("%s: no face on %s (%.1f s in all): enhanced from the audio alone there",
                               src, shown, total)
        return {"input": src, "output": os.fspath(dst), "duration": round(media.duration, 3),
                "modality": "av" if use_video else "audio", "no_face": [list(s) for s in spans] if use_video else []}

    def enhance_many(
        self, sources: Iterable[str | os.PathLike], targets: dict[str, Path], modality: str = "av"
    ) -> Iterator[tuple[str, dict | None, str | None]]:
        """Enhance files one after another; a bad file does not stop the others.

        Yields:
            ``(path, info, None)`` on success, ``(path, None, error line)`` on failure.
        """
        for source in sources:
            path = os.fspath(source)
            try:
                yield path, self.enhance_file(path, targets[path], modality), None
            except AVSRError as e:
                yield path, None, str(e)


def plan_outputs(inputs: Sequence[str], out: str | os.PathLike) -> dict[str, Path]:
    """Where each input's enhanced file goes (see :func:`avsr.inference.output_paths`).

    One input and a file name: that file. A folder (or several inputs):
    ``OUT/<name><ext>``, with the input's suffix for a video and ``.wav``
    for an audio-only file (an input that cannot be probed gets ``.wav``; it
    will fail with its own error).

    Raises:
        InputError: the output cannot be written there.
    """
    from avsr.inference import output_paths
    from avsr.io import probe

    o = os.fspath(out)
    as_folder = len(inputs) != 1 or os.path.isdir(o) or o.endswith(("/", os.sep))  # output_paths' rule
    targets = output_paths(list(inputs), o, "") or {}
    if not as_folder:
        if not Path(o).suffix:
            raise InputError(o, "give the output a suffix (.wav or .flac for audio, .mp4, .mkv ... for video)")
        return targets
    planned = {}
    for path, target in targets.items():
        try:
            has_video = bool(probe(path)["has_video"])
        except AVSRError:
            has_video = False
        planned[path] = target.with_name(target.name + output_extension(has_video, path))
    return planned
