"""Transcription results as text, subtitles (SRT, WebVTT via ``pysubs2``) and JSON.

A result is the dict of :meth:`avsr.inference.Transcriber.transcribe`.
Subtitle cues follow the segments; a segment too long to read in one cue
(more than ``max_chars`` characters or ``max_duration`` seconds) is cut
between words, each cue timed by its words.

Example:
    >>> result = {"input": "a.mp4", "duration": 3.0, "text": "bin blue",
    ...           "segments": [{"start": 0.5, "end": 1.5, "text": "bin blue", "modality": "av", "confidence": 0.9}],
    ...           "words": [{"word": "bin", "start": 0.6, "end": 0.9, "confidence": 0.9},
    ...                     {"word": "blue", "start": 0.9, "end": 1.3, "confidence": 0.8}]}
    >>> print(format_result(result, "srt"), end="")
    1
    00:00:00,500 --> 00:00:01,500
    bin blue
    <BLANKLINE>
    >>> format_result(result, "txt")
    'bin blue\\n'
"""

from __future__ import annotations

import json
import os
from typing import Any

from avsr.errors import InputError

__all__ = ["FORMATS", "EXTENSIONS", "subtitle_cues", "format_result", "write_result"]

#: Output formats.
FORMATS: tuple[str, ...] = ("txt", "srt", "vtt", "json")
#: File extension of each format.
EXTENSIONS: dict[str, str] = {"txt": ".txt", "srt": ".srt", "vtt": ".vtt", "json": ".json"}


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise InputError(None, f"unknown output format {fmt!r} (choose from {', '.join(FORMATS)})")
    return fmt


def _words_in(result: dict, start: float, end: float) -> list[dict]:
    return [w for w in result.get("words", []) if start - 1e-6 <= w["start"] and w["end"] <= end + 1e-6]


def subtitle_cues(result: dict, max_chars: int = 84, max_duration: float = 7.0) -> list[tuple[float, float, str]]:
    """Subtitle cues of a result: one per segment, long segments cut between words.

    Args:
        result: a transcription result.
        max_chars: most characters in a cue (two lines of 42).
        max_duration: longest cue in seconds.

    Returns:
        ``(start, end, text)`` cues in time order; segments without text give none.
    """
    cues: list[tuple[float, float, str]] = []
    for seg in result.get("segments", []):
        text = seg["text"].strip()
        if not text:
            continue
        start, end = float(seg["start"]), float(seg["end"])
        words = _words_in(result, start, end)
        if (len(text) <= max_chars and end - start <= max_duration) or not words:
            cues.append((start, end, text))
            continue
        group: list[dict] = []
        for w in words:
            candidate = " ".join(x["word"] for x in group + [w])
            too_long = len(candidate) > max_chars or (group and w["end"] - group[0]["start"] > max_duration)
            if group and too_long:
                cues.append((group[0]["start"], group[-1]["end"], " ".join(x["word"] for x in group)))
                group = []
            group.append(w)
        if group:
            cues.append((group[0]["start"], group[-1]["end"], " ".join(x["word"] for x in group)))
    return cues


def _lines(text: str, width: int = 42) -> str:
    """Break a cue into lines of at most ``width`` characters (at spaces), joined by ``\\N``."""
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return r"\N".join(lines)


def format_result(result: dict[str, Any], fmt: str, *, indent: int | None = 2) -> str:
    """A result in one output format.

    Args:
        result: a transcription result.
        fmt: ``"txt"`` (the text and a newline), ``"srt"``, ``"vtt"`` or ``"json"``.
        indent: JSON indentation; ``None`` gives one line (JSON Lines).

    Returns:
        the text to write.

    Raises:
        InputError: an unknown format.
    """
    _check_format(fmt)
    if fmt == "txt":
        return result["text"] + "\n"
    if fmt == "json":
        return json.dumps(result, ensure_ascii=False, indent=indent) + "\n"
    import pysubs2

    subs = pysubs2.SSAFile()
    for start, end, text in subtitle_cues(result):
        subs.append(pysubs2.SSAEvent(start=round(start * 1000), end=round(end * 1000), text=_lines(text)))
    return subs.to_string(fmt)


def write_result(result: dict[str, Any], path: str | os.PathLike, fmt: str) -> None:
    """Write a result to ``path`` in ``fmt``, atomically (UTF-8).

    Raises:
        InputError: an unknown format, or the file cannot be written.
    """
    from avsr.utils import atomic_path

    text = format_result(result, fmt)
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as e:
        raise InputError(path, f"cannot write ({(e.strerror or type(e).__name__).lower()})") from None
