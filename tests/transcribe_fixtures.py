"""Shared fixtures of the transcription tests: a random-weight bundle and small media files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from avsr.checkpoints import save_model
from avsr.data.synth import generate
from avsr.io import read_av, write_av
from avsr.models.avsr import build_model
from avsr.tokenizer import CharTokenizer
from tiny_configs import SMALL_MODEL


def make_bundle(path: Path) -> tuple[torch.nn.Module, CharTokenizer]:
    """A random-weight SMALL_MODEL with a character tokenizer, saved as a bundle at ``path``."""
    tok = CharTokenizer.train(["abcdefghijklmnopqrstuvwxyz0123456789 "])
    torch.manual_seed(0)
    model = build_model({**SMALL_MODEL, "vocab_size": tok.vocab_size}).eval()
    save_model(path, model, tok)
    return model, tok


def make_media(root: Path) -> dict[str, Path | list]:
    """One SynthGRID full-face utterance and files made from it, plus bad inputs.

    Returns:
        paths by name: ``face.mp4`` (face + audio), ``silent_face.mp4`` (no
        audio stream), ``speech.wav`` (audio only), ``gray.mp4`` (audio, a
        plain gray picture), ``long.wav`` (the speech twice with 3 s of
        silence between), ``empty.mp4``, ``text.mp4``, ``truncated.mp4``;
        and ``words``: the utterance's ``[word, start, end]`` list.
    """
    manifest = generate(root / "synth", num=1, split="test", seed=0, processes=1, full_face=True, progress=False)
    with open(manifest, newline="") as f:
        row = next(csv.DictReader(f))
    video = manifest.parent / row["video"]
    clip = read_av(video)
    files: dict[str, Path | list] = {"face.mp4": video, "words": json.loads(row["words"])}
    media = root / "media"
    media.mkdir()
    for name in ("silent_face.mp4", "speech.wav", "gray.mp4", "long.wav", "empty.mp4", "text.mp4", "truncated.mp4"):
        files[name] = media / name
    write_av(files["silent_face.mp4"], clip.frames, 25.0)
    sf.write(files["speech.wav"], clip.audio, 16000)
    gray = np.full((len(clip.frames), 64, 64, 3), 128, dtype=np.uint8)
    write_av(files["gray.mp4"], gray, 25.0, clip.audio)
    sf.write(files["long.wav"], np.concatenate([clip.audio, np.zeros(3 * 16000, np.float32), clip.audio]), 16000)
    files["empty.mp4"].write_bytes(b"")
    files["text.mp4"].write_text("not a video\n")
    raw = video.read_bytes()
    files["truncated.mp4"].write_bytes(raw[: len(raw) // 3])
    return files
