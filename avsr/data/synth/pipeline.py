"""Generate SynthGRID utterances in parallel, resumably, with a manifest.

One utterance = one job (:func:`make_utterance`): pick a speaker and a GRID
sentence from the utterance's own random generator, synthesise speech with
eSpeak NG (phoneme events give the timing), turn the phonemes into a viseme
track, render the mouth, add nuisances, and write:

``<out>/<split>/<id>.flac``
    16 kHz mono speech (the fast path for training).
``<out>/<split>/<id>.npz``
    ``mouths`` ``uint8 (T, 96, 96)`` grayscale mouth crops at 25 fps (the
    fast path: what the lip frontend would produce), and ``fps``; in the
    full-face form also ``mouth_centre`` ``float32 (T, 2)``, where the drawn
    mouth is in each video frame (pixels): ground truth for the lip frontend.
``<out>/<split>/<id>.mp4``
    H.264 video with AAC audio: the 96x96 colour crop, or the full face when a
    face photo is used.
``<out>/<split>/<id>.json``
    the manifest row, written last: its presence marks the utterance done,
    so an interrupted run resumes where it stopped.

``<out>/<split>.csv`` (written atomically at the end) lists the rows: ``id,
split, speaker, duration, text, audio, mouths, video, words, phonemes`` and
a few extras. Paths are relative to the folder holding the CSV. ``words`` is
JSON ``[[word, start, end], ...]`` and ``phonemes`` JSON ``[[phoneme, start,
end], ...]`` in seconds on the audio clock (the video may be offset by one
frame on purpose: ``av_offset``).

Everything an utterance contains is a function of ``(seed, split, index)``
only, so a run is reproducible whatever the number of processes or the
order in which jobs finish.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import multiprocessing as mp
import os
import signal
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np
import soundfile as sf

from avsr.data.synth.espeak import Event, get_engine, resample
from avsr.data.synth.grammar import Sentence, espeak_text, sample_sentence
from avsr.data.synth.render import (
    MouthStyle,
    Nuisance,
    apply_nuisance,
    face_scale,
    frame_index,
    load_face,
    render_crops,
    render_face,
    to_gray,
)
from avsr.data.synth.speakers import SPLITS, Speaker, speakers_for_split, stable_seed
from avsr.data.synth.visemes import viseme_track
from avsr.errors import InputError
from avsr.utils import atomic_path, save_csv_atomic, save_npz_atomic

__all__ = [
    "FPS", "SAMPLE_RATE", "MANIFEST_COLUMNS", "UtteranceSpec", "Speech", "plan", "synthesize_speech",
    "make_utterance", "generate", "read_manifest", "write_manifest", "align_events",
]

FPS = 25.0
SAMPLE_RATE = 16000
_SAMPLES_PER_FRAME = int(SAMPLE_RATE / FPS)
#: Manifest columns, in order.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "id", "split", "speaker", "duration", "text", "audio", "mouths", "video", "words", "phonemes",
    "num_frames", "fps", "sample_rate", "voice", "av_offset", "form",
)


@dataclass(frozen=True)
class UtteranceSpec:
    """What one job makes (everything else follows from ``seed``).

    Attributes:
        id: utterance id, e.g. ``"train-s0-000012"``.
        split: ``"train"``, ``"valid"`` or ``"test"``.
        seed: the utterance's own seed.
        speaker: who speaks.
        sentence: what is said.
    """

    id: str
    split: str
    seed: int
    speaker: Speaker
    sentence: Sentence


def plan(split: str, num: int, seed: int, voices: list[str] | None = None) -> list[UtteranceSpec]:
    """The utterances of a run: ``num`` sentences by speakers of ``split``.

    Args:
        split: ``"train"``, ``"valid"`` or ``"test"``.
        num: how many utterances.
        seed: run seed.
        voices: restrict to these eSpeak voices (``None``: all).

    Returns:
        ``num`` specs; spec ``i`` depends only on ``(seed, split, i)`` (and ``voices``).
    """
    speakers = speakers_for_split(split, voices)
    specs = []
    for i in range(num):
        useed = stable_seed("synthgrid", seed, split, i)
        rng = np.random.default_rng(useed)
        speaker = speakers[int(rng.integers(len(speakers)))]
        specs.append(UtteranceSpec(f"{split}-s{seed}-{i:06d}", split, useed, speaker, sample_sentence(rng)))
    return specs


# --------------------------------------------------------------------------- speech


@dataclass
class Speech:
    """Synthesised speech with its timing.

    Attributes:
        audio: ``float32 (N,)`` at 16 kHz, ``N = num_frames * 640``.
        words: ``(word, start, end)`` in seconds.
        phonemes: ``(phoneme, start, end)`` in seconds, pauses included
            (mnemonics starting with ``_``).
        num_frames: video frames at 25 fps covering the audio.
    """

    audio: np.ndarray
    words: list[tuple[str, float, float]]
    phonemes: list[tuple[str, float, float]]
    num_frames: int


def _is_pause(phoneme: str) -> bool:
    return phoneme.startswith("_")


def align_events(
    events: list[Event], spans: list[tuple[int, int]], words: tuple[str, ...], end_time: float
) -> tuple[list[tuple[str, float, float]], list[tuple[str, float, float]]]:
    """Word and phoneme intervals from eSpeak events.

    A phoneme lasts until the next phoneme starts; it belongs to the word
    whose event came last before it. A word spans its first to its last
    non-pause phoneme.

    Args:
        events: eSpeak events in time order (times in seconds from the waveform start).
        spans: 1-based character spans of the words in the text given to eSpeak.
        words: the words.
        end_time: end of the waveform (s).

    Returns:
        ``(words, phonemes)``: lists of ``(label, start, end)``.
    """
    phon_events = [e for e in events if e.kind == "phoneme"]
    ends = iter([e.time for e in phon_events[1:]] + [end_time])
    phonemes: list[tuple[str, float, float]] = []
    owner: list[int] = []
    current = 0
    for e in events:
        if e.kind == "word" and e.text_position > 0:  # eSpeak adds some position-0 word events: skip them
            current = next((i for i, (a, b) in enumerate(spans) if a <= e.text_position <= b), current)
        elif e.kind == "phoneme":
            phonemes.append((e.phoneme, e.time, max(next(ends), e.time)))
            owner.append(current)
    out_words: list[tuple[str, float, float]] = []
    for wi, word in enumerate(words):
        mine = [p for p, o in zip(phonemes, owner) if o == wi and not _is_pause(p[0]) and p[2] > p[1]]
        if mine:
            out_words.append((word, mine[0][1], mine[-1][2]))
        else:  # no phoneme reported for the word (never seen): an empty interval after the last word
            t = out_words[-1][2] if out_words else 0.0
            out_words.append((word, t, t))
    return out_words, phonemes


def synthesize_speech(spec: UtteranceSpec, rng: np.random.Generator, word_gap: int | None = None) -> Speech:
    """Speak ``spec.sentence`` with ``spec.speaker``; add silence around it.

    Args:
        spec: the utterance.
        rng: the utterance's generator (draws word gaps, silences, level).
        word_gap: pause between words in units of 10 ms (``None``: drawn, 0-30 ms).

    Returns:
        :class:`Speech` on a clock that starts at the first audio sample.
    """
    text, spans = espeak_text(spec.sentence.words)
    drawn_gap = int(rng.choice([0, 0, 1, 2, 3]))
    word_gap = drawn_gap if word_gap is None else int(word_gap)
    engine = get_engine()
    wav, events = engine.synth_isolated(
        text, voice=spec.speaker.espeak_voice, rate=spec.speaker.rate, pitch=spec.speaker.pitch,
        word_gap=word_gap, seed=spec.seed & 0x7FFFFFFF,
    )
    speech = resample(wav, engine.sample_rate, SAMPLE_RATE)
    lead, trail = rng.uniform(0.2, 0.5), rng.uniform(0.2, 0.5)
    words, phonemes = align_events(events, spans, spec.sentence.words, len(wav) / engine.sample_rate)
    words = [(w, s + lead, e + lead) for w, s, e in words]
    phonemes = [(p, s + lead, e + lead) for p, s, e in phonemes]
    total = lead + len(speech) / SAMPLE_RATE + trail
    num_frames = int(math.ceil(total * FPS))
    audio = np.zeros(num_frames * _SAMPLES_PER_FRAME, np.float64)
    start = int(round(lead * SAMPLE_RATE))
    audio[start:start + len(speech)] = speech[: len(audio) - start]
    active = np.abs(speech) > 1e-4
    rms = float(np.sqrt(np.mean(speech[active] ** 2))) if active.any() else 1.0
    target = 10 ** (rng.uniform(-23.0, -17.0) / 20.0)
    audio *= target / max(rms, 1e-8)
    peak = float(np.abs(audio).max())
    if peak > 0.95:
        audio *= 0.95 / peak
    return Speech(audio.astype(np.float32), words, phonemes, num_frames)


# --------------------------------------------------------------------------- one utterance


def _relative(path: Path, root: Path) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def _face_id(face: str | None | bool) -> str | None:
    """What identifies the face form: ``None`` (crops only), ``"astronaut"``, or the photo's content digest."""
    if face is False:
        return None
    if face is None:
        return "astronaut"
    return f"sha1:{_file_digest(os.path.abspath(os.fspath(face)))}"


@lru_cache(maxsize=8)
def _file_digest(path: str) -> str:
    """SHA-1 of a file's bytes (hex), cached per process."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _job_key(spec: UtteranceSpec, face: str | None | bool) -> str:
    """A fingerprint of everything a job's output depends on (to tell a finished job from a stale one)."""
    parts = [spec.id, spec.seed, spec.speaker.id, spec.sentence.text, _face_id(face)]
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16]


def _finished_row(row_path: Path, root: Path, key: str) -> dict | None:
    """The row of a finished job with fingerprint ``key``, or ``None`` if it must be (re)made.

    A row counts as finished only if it was made for the same job (same
    fingerprint: a rerun with other voices or another face photo redoes it)
    and all the files it names exist.
    """
    if not row_path.exists():
        return None
    try:
        row = json.loads(row_path.read_text())
    except (OSError, ValueError):
        return None  # a broken record: make it again
    if not isinstance(row, dict) or row.get("key") != key:
        return None
    if not all(isinstance(row.get(k), str) and (root / row[k]).is_file() for k in ("audio", "mouths", "video")):
        return None
    return row


def _remove_stale_temporaries(folder: Path, utt_id: str) -> None:
    """Delete temporary files an interrupted earlier attempt at ``utt_id`` left behind."""
    if folder.is_dir():
        for tmp in folder.glob(f".{utt_id}.*"):
            try:
                tmp.unlink()
            except OSError:
                pass


def make_utterance(spec: UtteranceSpec, out_dir: str | os.PathLike, face: str | None | bool = False) -> dict:
    """Make one utterance's files and return its manifest row.

    Args:
        spec: what to make.
        out_dir: dataset root; files go to ``<out_dir>/<split>/``.
        face: ``False`` for the crop form; ``None`` for the full face on the
            default photo (the astronaut); a path for another face photo.

    Returns:
        The manifest row (also written to ``<id>.json``). If that JSON already
        exists for the same job (speaker, sentence, seed, form and face photo)
        and its media files are all there, nothing is redone and it is returned;
        otherwise the utterance is made (again), overwriting what is there.
    """
    from avsr.io import write_av

    root = Path(out_dir)
    folder = root / spec.split
    form = "crop" if face is False else "face"
    row_path = folder / f"{spec.id}.json"
    key = _job_key(spec, face)
    done = _finished_row(row_path, root, key)
    if done is not None:
        return done
    _remove_stale_temporaries(folder, spec.id)
    rng = np.random.default_rng(spec.seed)
    speech = synthesize_speech(spec, rng)
    style = MouthStyle.from_seed(stable_seed("style", spec.speaker.id))
    track = viseme_track(speech.phonemes, speech.num_frames, FPS, sigma=style.sigma, gains=np.array(style.gains))
    nuisance = Nuisance.sample(rng, speech.num_frames)
    crops = apply_nuisance(render_crops(track, style, nuisance, rng), nuisance, rng)
    folder.mkdir(parents=True, exist_ok=True)
    mouths_path, audio_path, video_path = (folder / f"{spec.id}{ext}" for ext in (".npz", ".flac", ".mp4"))
    extra = {}
    if face is False:
        video = crops
    else:
        photo = load_face(face if isinstance(face, str) else None)
        frames, centres = render_face(track, style, photo, nuisance, rng)
        video = apply_nuisance(frames, nuisance, rng, jpeg=False, scale=face_scale(photo))
        if photo.gray:  # a black-and-white photo stays black and white (sensor noise included)
            video = to_gray(video)
        extra["mouth_centre"] = centres[frame_index(nuisance, len(centres))].astype(np.float32)
    save_npz_atomic(mouths_path, mouths=to_gray(crops), fps=np.float32(FPS), **extra)
    with atomic_path(audio_path) as tmp:
        sf.write(tmp, speech.audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    write_av(video_path, video, FPS, speech.audio, SAMPLE_RATE, audio_codec="aac", crf=23, preset="ultrafast")
    row = {
        "id": spec.id, "split": spec.split, "speaker": spec.speaker.id,
        "duration": round(len(speech.audio) / SAMPLE_RATE, 4), "text": spec.sentence.text,
        "audio": _relative(audio_path, root), "mouths": _relative(mouths_path, root),
        "video": _relative(video_path, root),
        "words": [[w, round(s, 4), round(e, 4)] for w, s, e in speech.words],
        "phonemes": [[p, round(s, 4), round(e, 4)] for p, s, e in speech.phonemes if not _is_pause(p)],
        "num_frames": speech.num_frames, "fps": FPS, "sample_rate": SAMPLE_RATE,
        "voice": spec.speaker.espeak_voice, "av_offset": nuisance.offset, "form": form, "key": key,
    }
    with atomic_path(row_path) as tmp:
        tmp.write_text(json.dumps(row))
    return row


def _job(args: tuple[UtteranceSpec, str, str | None | bool]) -> dict:
    return make_utterance(*args)


# --------------------------------------------------------------------------- the run


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(out_dir, f"cannot write the output folder ({e.strerror or e})") from None


def write_manifest(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Write manifest rows to CSV atomically (``words``/``phonemes`` as JSON)."""
    encoded = ({**row, "words": json.dumps(row["words"]), "phonemes": json.dumps(row["phonemes"])} for row in rows)
    save_csv_atomic(path, encoded, MANIFEST_COLUMNS, extrasaction="ignore")


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Read a SynthGRID manifest: JSON columns decoded, numbers parsed, paths made absolute.

    Raises:
        InputError: missing file or columns, or a malformed value.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such manifest")
    with open(p, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"id", "audio", "words"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(p, f"not a SynthGRID manifest (missing columns {sorted(missing)})")
        rows = list(reader)
    for row in rows:
        try:
            _parse_row(row)
        except ValueError as e:  # json.JSONDecodeError is a ValueError too
            raise InputError(p, f"malformed row {row.get('id')!r} ({e})") from None
        for key in ("audio", "mouths", "video"):
            if row.get(key):
                row[key] = str((p.parent / row[key]).resolve())
    return rows


def _parse_row(row: dict) -> None:
    """Decode a manifest row's JSON and number columns in place (raises ``ValueError``)."""
    for key in ("words", "phonemes"):
        if key in row and row[key]:
            row[key] = json.loads(row[key])
    for key in ("duration", "fps"):
        if row.get(key):
            row[key] = float(row[key])
    for key in ("num_frames", "sample_rate", "av_offset"):
        if row.get(key):
            row[key] = int(row[key])


def generate(
    out_dir: str | os.PathLike,
    num: int,
    split: str = "train",
    seed: int = 0,
    *,
    processes: int | None = None,
    full_face: bool = False,
    face_image: str | os.PathLike | None = None,
    voices: list[str] | None = None,
    progress: bool = True,
) -> Path:
    """Generate ``num`` SynthGRID utterances of one split and write the manifest.

    Args:
        out_dir: dataset root (created). Existing finished utterances are kept.
        num: number of utterances (``>= 1``).
        split: ``"train"``, ``"valid"`` or ``"test"`` (disjoint speakers).
        seed: run seed; the same seed gives the same data.
        processes: worker processes (``None`` or 0: CPU count, at most 8).
        full_face: also composite the mouth onto a face photo; the ``video``
            column then points at the full-face mp4.
        face_image: face photo to use (implies ``full_face``); default: the
            scikit-image astronaut.
        voices: restrict speakers to these eSpeak voices.
        progress: show a progress bar.

    Returns:
        Path of the manifest, ``<out_dir>/<split>.csv``.

    Raises:
        InputError: bad count, split, voice, process count, face image, or unwritable
            output (all checked before anything is written).
    """
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise InputError(None, f"the number of utterances must be a positive integer, got {num!r}")
    if split not in SPLITS:
        raise InputError(None, f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    if processes is not None and (isinstance(processes, bool) or int(processes) < 0):
        raise InputError(None, f"the number of processes must be >= 0 (0: one per CPU), got {processes!r}")
    # check every argument before anything is written
    specs = plan(split, int(num), int(seed), voices)
    face: str | None | bool = False
    if face_image is not None:
        face = os.fspath(face_image)
        if not Path(face).is_file():
            raise InputError(face, "no such face image")
    elif full_face:
        face = None
    if face is not False:
        load_face(face)  # find the mouth once, before forking: workers inherit it
        _face_id(face)
    out = Path(out_dir)
    _check_writable(out)
    jobs = [(s, os.fspath(out), face) for s in specs]
    n_proc = max(1, min(processes or min(os.cpu_count() or 1, 8), len(jobs)))
    rows = _run_jobs(jobs, n_proc, progress, f"synth {split}")
    rows.sort(key=lambda r: r["id"])
    manifest = out / f"{split}.csv"
    write_manifest(manifest, rows)
    return manifest


def _run_jobs(jobs: list, n_proc: int, progress: bool, desc: str) -> list[dict]:
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=desc, unit="utt", disable=not progress, dynamic_ncols=True)
    rows = []
    try:
        if n_proc == 1:
            for job in jobs:
                rows.append(_job(job))
                bar.update()
        else:
            method = "fork" if "fork" in mp.get_all_start_methods() else None
            # Workers ignore Ctrl-C: the parent alone handles it and terminates the pool (a worker
            # interrupted inside the pool's queue machinery could otherwise hang the shutdown).
            with mp.get_context(method).Pool(n_proc, initializer=_ignore_sigint) as pool:
                for row in pool.imap_unordered(_job, jobs, chunksize=2):
                    rows.append(row)
                    bar.update()
    finally:
        bar.close()
    return rows


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
