"""Tiny stand-ins for LRS3, LRS2 and MUSAN, laid out like the real corpora.

The talking faces are full-face SynthGRID videos (``avsr.data.synth``,
downscaled to 256x256 to keep decoding and landmark detection quick); the
text files follow the corpora's format (``Text:``, ``Conf:``, a blank line and
a ``WORD START END ASDSCORE`` table). Special clips: a pretrain clip made of
three SynthGRID sentences (longer than the cut length used by the tests), a
clip whose face is lost half-way (grey frames from the middle on), a clip
with no face at all and a file that is not a video.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

GREY = 90
SIZE = 256


@dataclass
class Source:
    """One SynthGRID clip: frames, audio, words ``(word, start, end)``."""

    frames: np.ndarray
    audio: np.ndarray
    words: list[tuple[str, float, float]]

    @property
    def duration(self) -> float:
        return len(self.audio) / 16000


@dataclass
class Truth:
    """What a stand-in file holds: its text, duration and word table (``None``: not a usable clip)."""

    text: str
    duration: float
    words: list[tuple[str, float, float]] = field(default_factory=list)
    face_from: float | None = None  # the face disappears at this time


def synth_sources(out: Path, num: int = 4) -> list[Source]:
    """``num`` full-face SynthGRID clips, frames downscaled to ``SIZE``."""
    from avsr.data.synth import generate
    from avsr.io import read_av

    manifest = generate(out, num, "train", seed=3, processes=1, full_face=True, progress=False)
    sources = []
    with open(manifest, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            clip = read_av(out / row["video"])
            frames = np.stack([cv2.resize(fr, (SIZE, SIZE), interpolation=cv2.INTER_AREA) for fr in clip.frames])
            words = [(w, float(s), float(e)) for w, s, e in json.loads(row["words"])]
            sources.append(Source(frames, clip.audio.astype(np.float32), words))
    return sources


def join(sources: list[Source]) -> Source:
    """The clips one after the other (words shifted to the joined clock)."""
    frames, audio, words, t = [], [], [], 0.0
    for s in sources:
        n = len(s.frames)
        frames.append(s.frames)
        audio.append(np.pad(s.audio, (0, max(0, n * 640 - len(s.audio))))[: n * 640])
        words += [(w, a + t, b + t) for w, a, b in s.words]
        t += n / 25.0
    return Source(np.concatenate(frames), np.concatenate(audio), words)


def write_clip(video: Path, source: Source, *, table: bool, face_from: float | None = None, no_face: bool = False,
               conf: int = 3) -> Truth:
    """Write ``ID.mp4`` and ``ID.txt`` in the corpus format; returns what they hold."""
    from avsr.io import write_av

    frames = source.frames.copy()
    if no_face:
        frames[:] = GREY
    elif face_from is not None:
        frames[int(round(face_from * 25)):] = GREY
    video.parent.mkdir(parents=True, exist_ok=True)
    write_av(video, frames, 25.0, source.audio, 16000, audio_codec="aac", crf=23, preset="ultrafast")
    text = " ".join(w for w, _, _ in source.words)
    lines = [f"Text:  {text.upper()}", f"Conf:  {conf}"]
    if table:
        lines += ["", "WORD START END ASDSCORE"] + [f"{w.upper()} {a:.2f} {b:.2f} {4.5:.1f}" for w, a, b in source.words]
    video.with_suffix(".txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Truth(text, source.duration, [(w, round(a, 2), round(b, 2)) for w, a, b in source.words], face_from)


def write_unreadable(video: Path, text: str = "not a video") -> None:
    """A ``.mp4`` that is not a video, with a transcript."""
    video.parent.mkdir(parents=True, exist_ok=True)
    video.write_bytes(b"\x00\x01 this is not an mp4 file " * 20)
    video.with_suffix(".txt").write_text(f"Text:  {text.upper()}\nConf:  3\n", encoding="utf-8")


def build_lrs3(root: Path, s: list[Source]) -> dict[str, Truth]:
    """An LRS3 tree; returns ``{subset/SPEAKER/ID: Truth}`` for the usable clips."""
    truth = {
        "pretrain/spkA/00001": write_clip(root / "pretrain/spkA/00001.mp4", join([s[0], s[1], s[2]]), table=True),
        "pretrain/spkB/00002": write_clip(root / "pretrain/spkB/00002.mp4", s[3], table=True),
        "trainval/spkA/50001": write_clip(root / "trainval/spkA/50001.mp4", s[1], table=True),
        "trainval/spkB/50001": write_clip(root / "trainval/spkB/50001.mp4", s[2], table=True),
        "trainval/spkC/50001": write_clip(root / "trainval/spkC/50001.mp4", s[0], table=True,
                                          face_from=round(s[0].duration / 2, 2)),
        "trainval/spkD/50001": write_clip(root / "trainval/spkD/50001.mp4", s[3], table=True),
        "test/spkT/00001": write_clip(root / "test/spkT/00001.mp4", s[2], table=True),
        "test/spkU/00001": write_clip(root / "test/spkU/00001.mp4", s[1], table=True),
    }
    write_clip(root / "test/spkU/00002.mp4", s[0], table=True, no_face=True)
    write_unreadable(root / "test/spkU/00003.mp4")
    return truth


def build_lrs2(base: Path, s: list[Source]) -> tuple[Path, dict[str, Truth]]:
    """An LRS2 archive: ``base/mvlrs_v1/{main,pretrain}`` and the lists in ``base``; returns (corpus root, truths)."""
    root = base / "mvlrs_v1"
    truth = {
        "pretrain/p100/00001": write_clip(root / "pretrain/p100/00001.mp4", join([s[3], s[0]]), table=True),
        "main/p100/00001": write_clip(root / "main/p100/00001.mp4", s[0], table=False),
        "main/p200/00001": write_clip(root / "main/p200/00001.mp4", s[1], table=False),
        "main/p300/00001": write_clip(root / "main/p300/00001.mp4", s[2], table=False),
        "main/p400/00001": write_clip(root / "main/p400/00001.mp4", s[3], table=False),
    }
    (base / "pretrain.txt").write_text("p100/00001\n", encoding="utf-8")
    (base / "train.txt").write_text("p100/00001\np200/00001\n", encoding="utf-8")
    (base / "val.txt").write_text("p300/00001\n", encoding="utf-8")
    (base / "test.txt").write_text("p400/00001 NF\n", encoding="utf-8")
    return root, truth


def build_musan(root: Path, per_kind: int = 5, seconds: float = 1.0) -> dict[str, list[Path]]:
    """A MUSAN tree (``music/``, ``noise/``, ``speech/`` with subfolders of 16 kHz wavs, ANNOTATIONS, LICENSE)."""
    from avsr.audio.noise import make_noise

    layout = {"music": ("fma", "music", "music"), "noise": ("free-sound", "white", "noise"),
              "speech": ("librivox", "babble", "speech")}
    files: dict[str, list[Path]] = {}
    for kind, (sub, synth, prefix) in layout.items():
        folder = root / kind / sub
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ANNOTATIONS").write_text("name\n", encoding="utf-8")
        (folder / "LICENSE").write_text("test data\n", encoding="utf-8")
        files[kind] = []
        for i in range(per_kind):
            path = folder / f"{prefix}-{sub}-{i:04d}.wav"
            sf.write(path, make_noise(synth, int(seconds * 16000), "train", seed=i), 16000, subtype="PCM_16")
            files[kind].append(path)
    return files


def mtimes(folder: Path, suffixes: tuple[str, ...] = (".wav", ".npz", ".json", ".csv")) -> dict[str, int]:
    """``relative path -> mtime_ns`` of the files under ``folder`` with these suffixes."""
    return {os.fspath(p.relative_to(folder)): p.stat().st_mtime_ns
            for p in folder.rglob("*") if p.is_file() and p.suffix in suffixes}
