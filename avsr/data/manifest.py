"""Training manifests: one CSV row per utterance.

Columns (others are kept and ignored):

``id``
    unique utterance id.
``text``
    the transcript (non-empty; optional with ``need_text=False``, for
    self-supervised pretraining on unlabelled speech).
``duration``
    seconds (used to batch by total duration).
``audio``
    16 kHz (or any rate: it is resampled) audio file; optional if ``mouths`` is given.
``mouths``
    npz with ``mouths`` (T, 96, 96) uint8 at 25 fps (``avsr lips`` /
    ``tools/extract_lips.py`` output); optional if ``audio`` is given.
``video``
    the source video (kept for reference; training reads ``mouths``).

Relative paths are relative to the manifest's folder. SynthGRID manifests
(``avsr synth``) are manifests of this form.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.flac").write_bytes(b"x")
    >>> _ = (d / "m.csv").write_text("id,text,duration,audio\\nu1,bin blue,1.5,a.flac\\n")
    >>> [(r.id, r.text, r.duration, r.mouths) for r in read_manifest(d / "m.csv")]
    [('u1', 'bin blue', 1.5, None)]
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from avsr.errors import InputError

__all__ = ["Utterance", "read_manifest", "subset_utterances"]

REQUIRED = ("id", "text", "duration")


@dataclass(frozen=True)
class Utterance:
    """One manifest row, paths made absolute.

    Attributes:
        id: utterance id.
        text: transcript.
        duration: seconds.
        audio: audio file or ``None``.
        mouths: mouth-crop npz or ``None``.
        video: source video or ``None``.
        extra: the other columns, as strings.
    """

    id: str
    text: str
    duration: float
    audio: str | None = None
    mouths: str | None = None
    video: str | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False)


def _path(base: Path, value: str | None, manifest: Path, uid: str, column: str, check: bool) -> str | None:
    if not value:
        return None
    p = Path(value)
    p = p if p.is_absolute() else (base / p)
    if check and not p.is_file():
        raise InputError(manifest, f"utterance {uid!r}: {column} file {os.fspath(p)} does not exist")
    return os.fspath(p.resolve())


def read_manifest(
    path: str | os.PathLike,
    *,
    need_audio: bool = False,
    need_mouths: bool = False,
    check_files: bool = True,
    need_text: bool = True,
) -> list[Utterance]:
    """Read and validate a manifest CSV.

    Args:
        path: the CSV file.
        need_audio: every row must have an ``audio`` file.
        need_mouths: every row must have a ``mouths`` file.
        check_files: check that the referenced files exist.
        need_text: every row must have a transcript (``False``: the ``text``
            column may be absent or empty; such rows get ``text == ""``).

    Returns:
        the utterances, in file order.

    Raises:
        InputError: a missing manifest or column, an empty transcript, a bad
            duration, a duplicate id, or a missing file (naming the row).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such manifest")
    try:
        with open(p, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = set(reader.fieldnames or [])
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise InputError(p, f"not a readable CSV manifest ({e})") from None
    missing = [c for c in REQUIRED if c not in columns and (need_text or c != "text")]
    if missing:
        raise InputError(p, f"manifest lacks the column(s) {', '.join(missing)}")
    if not ({"audio", "mouths"} & columns):
        raise InputError(p, "manifest needs an 'audio' or a 'mouths' column")
    if not rows:
        raise InputError(p, "manifest has no rows")
    out: list[Utterance] = []
    seen: set[str] = set()
    base = p.parent
    for n, row in enumerate(rows, start=2):
        uid = (row.get("id") or "").strip()
        if not uid:
            raise InputError(p, f"line {n}: empty id")
        if uid in seen:
            raise InputError(p, f"line {n}: duplicate id {uid!r}")
        seen.add(uid)
        text = " ".join((row.get("text") or "").split())
        if not text and need_text:
            raise InputError(p, f"utterance {uid!r}: empty transcript")
        try:
            duration = float(row["duration"])
        except (TypeError, ValueError):
            raise InputError(p, f"utterance {uid!r}: duration {row.get('duration')!r} is not a number") from None
        if not math.isfinite(duration) or duration <= 0:
            raise InputError(p, f"utterance {uid!r}: duration must be positive, got {duration}")
        audio = _path(base, row.get("audio"), p, uid, "audio", check_files)
        mouths = _path(base, row.get("mouths"), p, uid, "mouths", check_files)
        video = _path(base, row.get("video"), p, uid, "video", False)
        if need_audio and audio is None:
            raise InputError(p, f"utterance {uid!r}: no audio file")
        if need_mouths and mouths is None:
            raise InputError(p, f"utterance {uid!r}: no mouths file (extract them with tools/extract_lips.py)")
        if audio is None and mouths is None:
            raise InputError(p, f"utterance {uid!r}: neither audio nor mouths")
        extra = {k: v for k, v in row.items() if k not in {"id", "text", "duration", "audio", "mouths", "video"}}
        out.append(Utterance(uid, text, duration, audio, mouths, video, extra))
    return out


def subset_utterances(utterances: list[Utterance], fraction: float, *, seed: int = 0) -> list[Utterance]:
    """A fixed fraction of the utterances, the same for every run (e.g. a 10% labelled subset).

    Each utterance is ranked by a hash of its id and ``seed``; the first
    ``round(fraction * n)`` (at least one) are kept, in manifest order. The
    choice depends on the ids only, not on the rows' order, and a larger
    fraction keeps every utterance of a smaller one.

    Args:
        utterances: rows from :func:`read_manifest`.
        fraction: in (0, 1].
        seed: picks another subset.

    Returns:
        the kept utterances.

    Example:
        >>> rows = [Utterance(f"u{i}", "a", 1.0, "a.flac") for i in range(20)]
        >>> [u.id for u in subset_utterances(rows, 0.1)] == [u.id for u in subset_utterances(rows[::-1], 0.1)][::-1]
        True
    """
    if not 0.0 < fraction <= 1.0:
        raise InputError(None, f"train_fraction must be in (0, 1], got {fraction}")
    keep = max(1, round(fraction * len(utterances)))
    ranked = sorted(utterances, key=lambda u: hashlib.sha1(f"{seed}:{u.id}".encode()).hexdigest())
    chosen = {u.id for u in ranked[:keep]}
    return [u for u in utterances if u.id in chosen]
