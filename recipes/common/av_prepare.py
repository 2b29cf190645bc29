"""Corpus-independent preparation of an audio-visual corpus for the recognition and pretraining recipes.

A corpus' ``prepare.py`` lists its utterances as :class:`avsr.data.lrs.Clip`
records per split (train / valid / test) and calls :func:`prepare_corpus`,
which, for every clip:

1. extracts the mouth track of the whole video with ``tools/extract_lips.py``
   (its worker pool: ``jobs`` processes, one landmark detector each);
2. reads the transcript and, for clips marked ``cut`` that are longer than
   ``max_seconds``, cuts them between words by their word timings
   (:func:`avsr.data.lrs.cut_by_words`); frame-aligned boundaries (25 fps,
   640 samples per frame) keep audio and mouths in step;
3. writes each segment's audio as 16 kHz mono 16-bit wav and its mouths as an
   ``.npz`` (``avsr lips`` format) under ``OUT/<subset>/<speaker>/``, and a
   small record of what it made under ``OUT/.records/``.

Then it writes ``OUT/<split>.csv`` manifests (:mod:`avsr.data.manifest`
columns plus ``speaker``, ``subset``, ``start``, ``end`` and ``face``, the
fraction of frames on which a face was found) and trains a sentencepiece
unigram vocabulary on the training transcripts (``OUT/tokenizer.json``).

Rerunning skips every clip whose record is there (same source files, same
cut settings) and the tokenizer when the training texts have not changed.
Videos that cannot be read, have no face, or whose segments have no face
are listed in ``OUT/failures.csv`` (``video, subset, id, problem``) and the
run goes on; failed clips are remembered too (``retry_failed`` tries them
again).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Iterable, Mapping, Sequence

import numpy as np

from avsr.data.lrs import Clip, Segment, cut_by_words, read_transcript
from avsr.errors import AVSRError, InputError
from avsr.utils import atomic_path, save_csv_atomic

__all__ = ["MANIFEST_COLUMNS", "PrepareSummary", "load_extract_lips", "cut_clip", "prepare_corpus"]

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_RATE = 16000
FPS = 25.0
MANIFEST_COLUMNS: tuple[str, ...] = (
    "id", "speaker", "subset", "duration", "text", "audio", "mouths", "video", "start", "end", "face",
)
FAILURE_COLUMNS: tuple[str, ...] = ("video", "subset", "id", "problem")
_RECORD_VERSION = 1


@dataclass
class PrepareSummary:
    """What :func:`prepare_corpus` did.

    Attributes:
        manifests: split -> manifest path.
        utterances: split -> rows written.
        hours: split -> hours of speech.
        clips_done: clips processed in this run.
        clips_skipped: clips whose earlier results were reused.
        failures: ``(video, subset, id, problem)`` rows (also in ``failures.csv``).
        tokenizer: the tokenizer file, or ``None`` when not asked for.
        tokenizer_trained: trained in this run (``False``: reused).
    """

    manifests: dict[str, Path] = field(default_factory=dict)
    utterances: dict[str, int] = field(default_factory=dict)
    hours: dict[str, float] = field(default_factory=dict)
    clips_done: int = 0
    clips_skipped: int = 0
    failures: list[tuple[str, str, str, str]] = field(default_factory=list)
    tokenizer: Path | None = None
    tokenizer_trained: bool = False


def load_extract_lips() -> ModuleType:
    """``tools/extract_lips.py`` as the module ``extract_lips`` (its pool workers import it by that name)."""
    module = sys.modules.get("extract_lips")
    if module is not None:
        return module
    path = ROOT / "tools" / "extract_lips.py"
    spec = importlib.util.spec_from_file_location("extract_lips", path)
    if spec is None or spec.loader is None:  # pragma: no cover - the file is part of the checkout
        raise InputError(path, "cannot load the lip extraction tool")
    module = importlib.util.module_from_spec(spec)
    sys.modules["extract_lips"] = module
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------- records
def _stat_key(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _record_key(clip: Clip, max_seconds: float, pad: float) -> dict:
    return {
        "version": _RECORD_VERSION, "video": _stat_key(clip.video), "transcript": _stat_key(clip.transcript),
        "cut": clip.cut, "max_seconds": max_seconds if clip.cut else None, "pad": pad if clip.cut else None,
    }


def _record_path(out: Path, clip: Clip) -> Path:
    return out / ".records" / clip.subset / clip.speaker / f"{clip.id}.json"


def _load_record(out: Path, clip: Clip, key: dict) -> dict | None:
    """The clip's earlier result if it is for the same sources and settings and its files are all there."""
    path = _record_path(out, clip)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("key") != key:
        return None
    for row in record.get("rows", []):
        if not ((out / row["audio"]).is_file() and (out / row["mouths"]).is_file()):
            return None
    return record


def _save_record(out: Path, clip: Clip, key: dict, rows: list[dict], problems: list[str]) -> None:
    with atomic_path(_record_path(out, clip)) as tmp:
        tmp.write_text(json.dumps({"key": key, "rows": rows, "problems": problems}), encoding="utf-8")


# ------------------------------------------------------------------ cutting
@dataclass(frozen=True)
class _CutJob:
    clip: Clip
    track: str
    out: str
    max_seconds: float
    pad: float
    keep_track: bool


def _write_wav(path: Path, samples: np.ndarray) -> None:
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(tmp, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")


def _segments(clip: Clip, duration: float, max_seconds: float, pad: float) -> tuple[str, list[Segment] | None]:
    """The transcript and the segments to cut (``None``: keep the clip whole)."""
    transcript = read_transcript(clip.transcript)
    if not transcript.text and not transcript.words:
        raise InputError(clip.transcript, "empty transcript")
    if not (clip.cut and duration > max_seconds):
        if not transcript.text:
            raise InputError(clip.transcript, "empty transcript")
        return transcript.text, None
    if not transcript.words:
        raise InputError(clip.transcript, f"{duration:.1f} s long but no word table to cut it by")
    # half a frame of rounding at either end (cut_clip) keeps the segments within max_seconds
    return transcript.text, cut_by_words(transcript.words, max_seconds - 1 / FPS, duration, pad)


def cut_clip(job: _CutJob) -> tuple[list[dict], list[str]]:
    """Write one clip's segments (audio wav + mouths npz) from its whole-video mouth track.

    Args:
        job: the clip, its extracted track and the settings.

    Returns:
        ``(rows, problems)``: manifest rows (paths relative to ``job.out``) and
        one line per segment that was skipped (no face in it).

    Raises:
        InputError: unreadable transcript, audio or track.
    """
    from avsr.io import read_audio
    from avsr.vision import MouthTrack, load_mouths, save_mouths

    clip, out = job.clip, Path(job.out)
    track = load_mouths(job.track)
    audio = read_audio(clip.video, sample_rate=SAMPLE_RATE)
    if len(audio) == 0:
        raise InputError(clip.video, "no audio samples")
    duration = len(audio) / SAMPLE_RATE
    text, segments = _segments(clip, duration, job.max_seconds, job.pad)
    per_frame = int(round(SAMPLE_RATE / track.fps))
    folder = out / clip.subset / clip.speaker
    name = Path(clip.video).stem
    rows: list[dict] = []
    problems: list[str] = []
    pieces: list[tuple[str, str, int, int, int, int, str]] = []  # id, stem, frames a..b, samples a..b, text
    if segments is None:
        pieces.append((clip.id, name, 0, len(track), 0, len(audio), text))
    else:
        for i, seg in enumerate(segments):
            a = int(round(seg.start * track.fps))  # nearest frame: at most half a frame off the cut
            b = min(int(round(seg.end * track.fps)), len(track), len(audio) // per_frame)
            pieces.append((f"{clip.id}_{i:02d}", f"{name}_{i:02d}", a, b, a * per_frame, b * per_frame, seg.text))
    for uid, stem, fa, fb, sa, sb, words in pieces:
        found = track.found[fa:fb]
        if fb <= fa or not found.any():
            problems.append(f"no face in {fa / track.fps:.2f}-{fb / track.fps:.2f} s ({uid})")
            continue
        wav, npz = folder / f"{stem}.wav", folder / f"{stem}.npz"
        _write_wav(wav, audio[sa:sb])
        if segments is None and not job.keep_track:
            folder.mkdir(parents=True, exist_ok=True)
            os.replace(job.track, npz)  # the whole track is this utterance's: move, do not copy
        else:
            save_mouths(npz, MouthTrack(track.mouths[fa:fb], found, track.fps))
        rows.append({
            "id": uid, "speaker": clip.speaker, "subset": clip.subset, "duration": round((sb - sa) / SAMPLE_RATE, 4),
            "text": words, "audio": os.fspath(wav.relative_to(out)), "mouths": os.fspath(npz.relative_to(out)),
            "video": os.path.abspath(clip.video), "start": round(sa / SAMPLE_RATE, 4),
            "end": round(sb / SAMPLE_RATE, 4), "face": round(float(found.mean()), 3),
        })
    if segments is not None and not job.keep_track and os.path.exists(job.track):
        os.unlink(job.track)
    return rows, problems


def _cut_safely(job: _CutJob) -> tuple[list[dict], list[str], str | None]:
    """:func:`cut_clip` that never raises: ``(rows, problems, error)``."""
    try:
        rows, problems = cut_clip(job)
    except AVSRError as e:
        return [], [], e.problem if isinstance(e, InputError) else str(e)
    except Exception as e:  # one bad clip must not stop the corpus
        return [], [], f"{type(e).__name__}: {e}"
    return rows, problems, None


def _run_cuts(jobs: Sequence[_CutJob], n_jobs: int, progress: bool) -> Iterable[tuple[_CutJob, tuple]]:
    """Cut clips in ``n_jobs`` processes (here when 1), yielding ``(job, result)`` in job order."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), unit="clip", desc="cut", disable=None if progress else True, dynamic_ncols=True)
    try:
        if n_jobs <= 1 or len(jobs) <= 1:
            for job in jobs:
                yield job, _cut_safely(job)
                bar.update()
            return
        import multiprocessing as mp

        with ProcessPoolExecutor(min(n_jobs, len(jobs)), mp_context=mp.get_context("spawn")) as pool:
            for job, result in zip(jobs, pool.map(_cut_safely, jobs, chunksize=8)):
                yield job, result
                bar.update()
    finally:
        bar.close()


# --------------------------------------------------------------------- main
def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / ".write-test"):
            pass
        (out / ".write-test").unlink()
    except OSError as e:
        raise InputError(out, f"cannot write the output folder ({e.strerror or e})") from None


def _prune_empty(folder: Path) -> None:
    """Remove ``folder`` and its subfolders where they hold no file."""
    if not folder.is_dir():
        return
    for d in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True) + [folder]:
        try:
            d.rmdir()
        except OSError:  # not empty
            pass


def _train_tokenizer(out: Path, texts: list[str], vocab_size: int) -> tuple[Path, bool]:
    """Train (or reuse, when the texts and size are unchanged) the unigram tokenizer."""
    path = out / "tokenizer.json"
    digest_file = out / ".records" / "tokenizer.digest"
    digest = hashlib.blake2b(f"unigram\x1f{vocab_size}\x1f".encode() + "\n".join(texts).encode(), digest_size=16).hexdigest()
    if path.is_file() and digest_file.is_file() and digest_file.read_text().strip() == digest:
        return path, False
    from avsr.tokenizer import SentencePieceTokenizer
    from avsr.training.recipe import save_tokenizer  # imports torch and SpeechBrain: only when training

    tokenizer = SentencePieceTokenizer.train(texts, vocab_size=vocab_size, model_type="unigram")
    save_tokenizer(path, tokenizer)
    with atomic_path(digest_file) as tmp:
        tmp.write_text(digest)
    return path, True


def prepare_corpus(
    splits: Mapping[str, Sequence[Clip]],
    out: str | os.PathLike,
    *,
    problems: Sequence[tuple[str, str]] = (),
    max_seconds: float = 15.0,
    pad: float = 0.1,
    jobs: int = 2,
    vocab_size: int | None = 5000,
    tokenizer_split: str = "train",
    retry_failed: bool = False,
    keep_tracks: bool = False,
    progress: bool = True,
    log=print,
) -> PrepareSummary:
    """Extract, cut and write every clip of every split; write the manifests and the tokenizer.

    Args:
        splits: split name (``train``, ``valid``, ``test``) -> its clips.
        out: the data folder (the recipes' ``data_folder``).
        problems: ``(file, problem)`` found while listing the corpus (go to the failures file).
        max_seconds: longest segment cut from a ``cut`` clip.
        pad: silence kept around a cut segment, seconds.
        jobs: worker processes (lip extraction and cutting).
        vocab_size: sentencepiece unigram vocabulary size (``None``: no tokenizer).
        tokenizer_split: the split whose transcripts train the tokenizer.
        retry_failed: process clips that failed in an earlier run again.
        keep_tracks: keep the whole-video mouth tracks under ``OUT/.tracks``.
        progress: progress bars.
        log: where the one-line progress messages go.

    Returns:
        :class:`PrepareSummary`.

    Raises:
        InputError: an unwritable output folder, a duplicate clip id, or no
            utterance at all in the tokenizer's split.
    """
    out = Path(out)
    _check_writable(out)
    summary = PrepareSummary()
    clips: dict[str, Clip] = {}
    for split_clips in splits.values():
        for clip in split_clips:
            if clip.id in clips and clips[clip.id] != clip:
                raise InputError(clip.video, f"clip id {clip.id!r} is used twice")
            clips[clip.id] = clip
    results: dict[str, dict] = {}
    keys = {cid: _record_key(c, max_seconds, pad) for cid, c in clips.items()}
    todo: list[Clip] = []
    for cid, clip in clips.items():
        record = _load_record(out, clip, keys[cid])
        if record is not None and not (retry_failed and not record["rows"]):
            results[cid] = record
        else:
            todo.append(clip)
    summary.clips_skipped = len(results)
    log(f"{len(clips)} clips: {len(results)} done before, {len(todo)} to process with {jobs} jobs")

    tools = load_extract_lips()
    tracks = {c.id: out / ".tracks" / c.subset / c.speaker / f"{c.id}.npz" for c in todo}
    by_video = {c.video: c for c in todo}
    lip_jobs = [tools.Job(c.video, os.fspath(tracks[c.id])) for c in todo if not tools.is_done(os.fspath(tracks[c.id]))]
    failed: dict[str, str] = {}
    for outcome in tools.run_jobs(lip_jobs, jobs, FPS, 96, progress=progress):
        if not outcome.ok:
            failed[by_video[outcome.video].id] = outcome.message
    interrupted = [cid for cid, message in failed.items() if message == "interrupted"]
    if interrupted:
        raise KeyboardInterrupt
    for cid, message in failed.items():
        _save_record(out, clips[cid], keys[cid], [], [message])
        results[cid] = {"rows": [], "problems": [message]}
    cut_jobs = [_CutJob(c, os.fspath(tracks[c.id]), os.fspath(out), max_seconds, pad, keep_tracks)
                for c in todo if c.id not in failed]
    for job, (rows, seg_problems, error) in _run_cuts(cut_jobs, jobs, progress):
        cid = job.clip.id
        record = {"rows": rows, "problems": [error] if error else seg_problems}
        _save_record(out, job.clip, keys[cid], rows, record["problems"])  # failures too: retry_failed redoes them
        results[cid] = record
    summary.clips_done = len(todo)
    _prune_empty(out / ".tracks")

    for split, split_clips in splits.items():
        rows = [row for c in split_clips for row in results[c.id]["rows"]]
        path = out / f"{split}.csv"
        save_csv_atomic(path, rows, MANIFEST_COLUMNS)
        summary.manifests[split] = path
        summary.utterances[split] = len(rows)
        summary.hours[split] = sum(float(r["duration"]) for r in rows) / 3600
    listed = [(video, "", "", problem) for video, problem in problems]
    for clip in clips.values():
        for problem in results[clip.id]["problems"]:
            listed.append((clip.video, clip.subset, clip.id, problem))
    summary.failures = sorted(listed)
    failures_csv = out / "failures.csv"
    if summary.failures:
        save_csv_atomic(failures_csv, [dict(zip(FAILURE_COLUMNS, f)) for f in summary.failures], FAILURE_COLUMNS)
    elif failures_csv.exists():
        failures_csv.unlink()  # a stale list from an earlier run would mislead

    if vocab_size is not None:
        texts = [row["text"] for c in splits.get(tokenizer_split, []) for row in results[c.id]["rows"]]
        if not texts:
            raise InputError(out, f"no {tokenizer_split} utterance was prepared: nothing to train the tokenizer on")
        summary.tokenizer, summary.tokenizer_trained = _train_tokenizer(out, texts, int(vocab_size))
    for split in splits:
        log(f"{split}: {summary.utterances[split]} utterances, {summary.hours[split]:.2f} h -> {summary.manifests[split]}")
    if summary.failures:
        log(f"{len(summary.failures)} failures listed in {failures_csv}")
    return summary
