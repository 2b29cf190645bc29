"""The LRS2 / LRS3 corpora: transcript files, word-timed cutting, official layouts and splits.

Both corpora (BBC and TED videos, Oxford VGG) ship one ``ID.mp4`` and one
``ID.txt`` per utterance under ``SUBSET/GROUP/`` (``GROUP``: the TED talk
for LRS3, the BBC programme for LRS2). The text file reads::

    Text:  THE WORDS OF THE UTTERANCE
    Conf:  3

    WORD START END ASDSCORE
    THE 0.08 0.21 3.6
    WORDS 0.21 0.60 5.1
    ...

The word table (times in seconds from the start of the clip) is present in
the ``pretrain`` subsets, whose clips run to minutes; this module parses
it and cuts such clips into segments of at most ``max_seconds`` between
words (:func:`cut_by_words`). LRS3 has ``pretrain/``, ``trainval/`` and
``test/`` folders (test speakers are disjoint from the other two); LRS2 has
``main/`` and ``pretrain/`` with file lists ``pretrain.txt``,
``train.txt``, ``val.txt`` and ``test.txt`` (lines ``GROUP/ID``, test lines
may carry a tag such as ``NF``/``MV`` after a space).

Nothing here reads media: :func:`list_lrs3` and :func:`list_lrs2` return
:class:`Clip` records for a preparation step to process.

Example:
    >>> words = [Word("a", 0.0, 0.5), Word("b", 0.6, 1.9), Word("c", 2.2, 2.8), Word("d", 3.0, 4.4)]
    >>> [(s.start, s.end, s.text) for s in cut_by_words(words, max_seconds=2.5, duration=5.0, pad=0.1)]
    [(0.0, 2.0, 'a b'), (2.1, 4.5, 'c d')]
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from avsr.errors import InputError

__all__ = [
    "Word",
    "Transcript",
    "Segment",
    "Clip",
    "normalise_text",
    "read_transcript",
    "cut_by_words",
    "list_lrs3",
    "list_lrs2",
    "held_out_speakers",
    "LRS3_SUBSETS",
    "LRS2_SUBSETS",
]

LRS3_SUBSETS: tuple[str, ...] = ("pretrain", "trainval", "test")
#: LRS2 list name -> folder holding its clips.
LRS2_SUBSETS: dict[str, str] = {"pretrain": "pretrain", "train": "main", "val": "main", "test": "main"}
_TABLE_HEADER = ("WORD", "START", "END")
_MARKUP = re.compile(r"\{[^}]*\}")  # {LG}, {NS}: non-speech annotations, not words


@dataclass(frozen=True)
class Word:
    """One row of a word table: the word and its time span in seconds."""

    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Transcript:
    """A parsed LRS text file.

    Attributes:
        text: the normalised transcript (:func:`normalise_text`).
        conf: the ``Conf:`` field as written, or ``None``.
        words: the word table (empty when the file has none), words normalised.
    """

    text: str
    conf: str | None
    words: tuple[Word, ...]


@dataclass(frozen=True)
class Segment:
    """A stretch of a clip to keep: ``[start, end)`` seconds and what is said in it."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Clip:
    """One utterance of the corpus, before any processing.

    Attributes:
        id: unique id, e.g. ``"lrs3-trainval-0af00UcTOSc-50001"``.
        subset: the corpus folder or list it comes from (``pretrain``, ``trainval``, ...).
        speaker: the group folder (LRS3: the talk, one speaker; LRS2: the programme).
        video: the ``.mp4``.
        transcript: the ``.txt``.
        cut: cut into segments by its word timings when longer than the limit.
    """

    id: str
    subset: str
    speaker: str
    video: str
    transcript: str
    cut: bool = False


def normalise_text(text: str) -> str:
    """Lower-case, drop ``{...}`` annotations and collapse white space.

    Example:
        >>> normalise_text("  IT'S {LG} A  TEST ")
        "it's a test"
    """
    return " ".join(_MARKUP.sub(" ", text).lower().split())


def read_transcript(path: str | os.PathLike) -> Transcript:
    """Parse an LRS2/LRS3 ``ID.txt``.

    Args:
        path: the text file.

    Returns:
        :class:`Transcript`.

    Raises:
        InputError: unreadable file, no ``Text:`` line, or a malformed word table row.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(p, "no such transcript file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(p, f"cannot read the transcript ({type(e).__name__})") from None
    text: str | None = None
    conf: str | None = None
    words: list[Word] = []
    in_table = False
    for n, line in enumerate(lines, start=1):
        if in_table:
            if not line.strip():
                in_table = False  # a blank line ends the table (later tables are not ours)
                continue
            parts = line.split()
            try:
                start, end = float(parts[1]), float(parts[2])
            except (IndexError, ValueError):
                raise InputError(p, f"line {n}: not a 'WORD START END ...' row: {line.strip()!r}") from None
            if not (0 <= start <= end):
                raise InputError(p, f"line {n}: bad word times {start} .. {end}")
            word = normalise_text(parts[0])
            if word:
                words.append(Word(word, start, end))
        elif text is None and line.startswith("Text:"):
            text = normalise_text(line[len("Text:"):])
        elif conf is None and line.startswith("Conf:"):
            conf = line[len("Conf:"):].strip()
        elif tuple(line.split()[:3]) == _TABLE_HEADER and not words:
            in_table = True
    if text is None:
        raise InputError(p, "no 'Text:' line (not an LRS2/LRS3 transcript)")
    return Transcript(text, conf, tuple(words))


def cut_by_words(
    words: Sequence[Word], max_seconds: float, duration: float | None = None, pad: float = 0.1
) -> list[Segment]:
    """Cut a long utterance between words into segments of at most ``max_seconds``.

    Words are taken greedily in order while the span from the segment's first
    word's start to the current word's end stays within ``max_seconds - 2 pad``.
    A segment then reaches ``pad`` seconds into the silence on either side, but
    never past the middle of the gap to the neighbouring segment's words (so
    segments never overlap), before 0 or after ``duration``. A single word
    longer than the limit is dropped (it cannot be cut).

    Args:
        words: the word table, in time order.
        max_seconds: longest segment.
        duration: the clip's length in seconds (``None``: not bounded above).
        pad: silence kept around each segment, seconds.

    Returns:
        the segments in time order; their ``text`` joins their words.

    Raises:
        InputError: ``max_seconds`` too short for the padding.
    """
    span = max_seconds - 2 * pad
    if span <= 0:
        raise InputError(None, f"max_seconds {max_seconds} must exceed twice the padding {pad}")
    groups: list[list[Word]] = []
    for w in sorted(words, key=lambda w: (w.start, w.end)):
        if w.end - w.start > span:
            continue
        if groups and w.end - groups[-1][0].start <= span:
            groups[-1].append(w)
        else:
            groups.append([w])
    segments: list[Segment] = []
    for i, group in enumerate(groups):
        first, last = group[0].start, max(w.end for w in group)
        lo = first - pad
        if i > 0:
            prev_end = max(w.end for w in groups[i - 1])
            lo = max(lo, (prev_end + first) / 2)
        hi = last + pad
        if i + 1 < len(groups):
            hi = min(hi, (last + groups[i + 1][0].start) / 2)
        lo = max(lo, 0.0)
        if duration is not None:
            hi = min(hi, duration)
        segments.append(Segment(round(lo, 4), round(hi, 4), " ".join(w.word for w in group)))
    return segments


def _need_dir(path: Path, corpus: str, root: Path) -> Path:
    if not path.is_dir():
        raise InputError(root, f"not an {corpus} folder: missing folder {path.relative_to(root)}/")
    return path


def _clip_id(corpus: str, subset: str, speaker: str, name: str) -> str:
    return f"{corpus}-{subset}-{speaker}-{name}"


def list_lrs3(root: str | os.PathLike, subsets: Iterable[str] = LRS3_SUBSETS) -> tuple[dict[str, list[Clip]], list[tuple[str, str]]]:
    """The utterances of an LRS3 tree (``pretrain/``, ``trainval/``, ``test/`` of ``SPEAKER/ID.mp4`` + ``ID.txt``).

    Args:
        root: the corpus folder.
        subsets: which of :data:`LRS3_SUBSETS` to list.

    Returns:
        ``(clips, problems)``: clips per subset (``pretrain`` clips are marked
        ``cut``), sorted by id; ``problems`` lists ``(file, problem)`` for
        videos without a transcript.

    Raises:
        InputError: a missing root or subset folder, or a subset without any
            ``SPEAKER/ID.mp4`` video (naming what was expected).
    """
    base = Path(root)
    if not base.is_dir():
        raise InputError(base, "no such LRS3 folder")
    clips: dict[str, list[Clip]] = {}
    problems: list[tuple[str, str]] = []
    for subset in subsets:
        if subset not in LRS3_SUBSETS:
            raise InputError(None, f"unknown LRS3 subset {subset!r} (choose from {', '.join(LRS3_SUBSETS)})")
        folder = _need_dir(base / subset, "LRS3", base)
        videos = sorted(folder.glob("*/*.mp4"))
        if not videos:
            raise InputError(folder, "no SPEAKER/ID.mp4 videos in this LRS3 subset folder")
        found = []
        for video in videos:
            txt = video.with_suffix(".txt")
            if not txt.is_file():
                problems.append((os.fspath(video), f"no transcript {txt.name} next to the video"))
                continue
            speaker = video.parent.name
            found.append(Clip(_clip_id("lrs3", subset, speaker, video.stem), subset, speaker,
                              os.fspath(video), os.fspath(txt), cut=subset == "pretrain"))
        clips[subset] = found
    return clips, problems


def _find_list(base: Path, name: str) -> Path:
    for folder in (base, base.parent):
        if (folder / name).is_file():
            return folder / name
    raise InputError(base, f"not an LRS2 folder: missing file list {name} (looked in {base} and {base.parent})")


def list_lrs2(root: str | os.PathLike, subsets: Iterable[str] = tuple(LRS2_SUBSETS)) -> tuple[dict[str, list[Clip]], list[tuple[str, str]]]:
    """The utterances of an LRS2 tree, as its file lists define the splits.

    ``root`` holds ``main/`` and ``pretrain/`` (the corpus' ``mvlrs_v1``);
    the lists ``pretrain.txt``, ``train.txt``, ``val.txt``, ``test.txt`` sit
    in ``root`` or in its parent (where the official archive puts them).

    Args:
        root: the folder with ``main/`` and ``pretrain/``.
        subsets: which lists to read (of :data:`LRS2_SUBSETS`).

    Returns:
        ``(clips, problems)``: clips per list (``pretrain`` ones marked ``cut``);
        ``problems`` lists ``(file, problem)`` for listed clips whose video or
        transcript is missing.

    Raises:
        InputError: a missing root, folder or list, or a malformed list line.
    """
    base = Path(root)
    if not base.is_dir():
        raise InputError(base, "no such LRS2 folder")
    clips: dict[str, list[Clip]] = {}
    problems: list[tuple[str, str]] = []
    for subset in subsets:
        if subset not in LRS2_SUBSETS:
            raise InputError(None, f"unknown LRS2 list {subset!r} (choose from {', '.join(LRS2_SUBSETS)})")
        folder = _need_dir(base / LRS2_SUBSETS[subset], "LRS2", base)
        listing = _find_list(base, f"{subset}.txt")
        found = []
        for n, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            name = line.split()[0]
            parts = name.split("/")
            if len(parts) != 2 or not all(parts):
                raise InputError(listing, f"line {n}: expected GROUP/ID, got {line.strip()!r}")
            video, txt = folder / f"{name}.mp4", folder / f"{name}.txt"
            missing = [p for p in (video, txt) if not p.is_file()]
            if missing:
                problems.append((os.fspath(video), f"listed in {listing.name} but {missing[0].name} is missing"))
                continue
            found.append(Clip(_clip_id("lrs2", subset, parts[0], parts[1]), subset, parts[0],
                              os.fspath(video), os.fspath(txt), cut=subset == "pretrain"))
        clips[subset] = sorted(found, key=lambda c: c.id)
    return clips, problems


def held_out_speakers(clips: Sequence[Clip], fraction: float, *, seed: int = 0) -> set[str]:
    """Speakers to hold out for validation: about ``fraction`` of the utterances, whole speakers.

    Speakers are ordered by a hash of ``(seed, speaker)`` (stable across runs,
    machines and corpus versions: adding talks does not reshuffle the others)
    and taken in that order until their utterances reach ``fraction`` of all.

    Args:
        clips: the utterances to split (e.g. LRS3 ``trainval``).
        fraction: wanted share of utterances, in ``(0, 1)``.
        seed: picks another set.

    Returns:
        the held-out speakers (at least one, never all when there are two or more).

    Raises:
        InputError: ``fraction`` outside ``(0, 1)`` or no clips.
    """
    if not 0 < fraction < 1:
        raise InputError(None, f"the validation fraction must be in (0, 1), got {fraction}")
    counts: dict[str, int] = {}
    for c in clips:
        counts[c.speaker] = counts.get(c.speaker, 0) + 1
    if not counts:
        raise InputError(None, "no utterances to hold validation speakers out of")

    def key(speaker: str) -> str:
        return hashlib.blake2b(f"{seed}\x1f{speaker}".encode(), digest_size=8).hexdigest()

    order = sorted(counts, key=key)
    want = fraction * sum(counts.values())
    chosen: set[str] = set()
    taken = 0
    for speaker in order[: max(1, len(order) - 1)]:
        if chosen and taken >= want:
            break
        chosen.add(speaker)
        taken += counts[speaker]
    return chosen
