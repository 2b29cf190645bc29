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


def _bad_audio_copy(source: Path, target: Path) -> None:
    """``source``'s streams remuxed into ``target`` (mkv) with every audio packet replaced by random bytes."""
    import av

    rng = np.random.default_rng(0)
    with av.open(str(source)) as src, av.open(str(target), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in (src.streams.video[0], src.streams.audio[0])}
        for packet in src.demux():
            if packet.dts is None:  # the demuxer's flush packets
                continue
            target = streams[packet.stream.index]
            if packet.stream.type == "audio":
                junk = av.Packet(rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
                junk.pts, junk.dts, junk.time_base = packet.pts, packet.dts, packet.time_base
                packet = junk
            packet.stream = target
            out.mux(packet)


def make_hard_media(files: dict, root: Path) -> dict[str, Path]:
    """Partial and awkward inputs made from :func:`make_media`'s full-face utterance.

    Args:
        files: what :func:`make_media` returned.
        root: folder to write into.

    Returns:
        paths by name: ``half_face.mp4`` (the utterance twice, 3 s apart; the
        face only in the first), ``one_frame.mp4`` (one face frame, no audio),
        ``one_frame_av.mp4`` (one face frame, 40 ms of speech), ``stereo8k.wav``
        (8 kHz, two different channels), ``portrait.mp4`` (1080×1920, the
        face scaled to the width), ``fps60.mp4`` (frames repeated to 60 fps),
        ``silent_audio_face.mp4`` (face + an all-zeros audio track),
        ``bad_audio.mkv`` (video fine, audio packets garbage),
        ``truncated.mkv`` (the first 60 % of a Matroska copy),
        ``gray_no_audio.mp4`` (no face, no audio).
    """
    import cv2

    clip = read_av(files["face.mp4"])
    frames, speech = clip.frames, clip.audio
    t = len(frames)
    gray = np.full_like(frames, 128)
    root.mkdir(parents=True, exist_ok=True)
    out = {name: root / name for name in (
        "half_face.mp4", "one_frame.mp4", "one_frame_av.mp4", "stereo8k.wav", "portrait.mp4", "fps60.mp4",
        "silent_audio_face.mp4", "bad_audio.mkv", "truncated.mkv", "gray_no_audio.mp4")}
    pause = np.zeros(3 * 16000, np.float32)
    write_av(out["half_face.mp4"], np.concatenate([frames, gray[:1].repeat(75, 0), gray]), 25.0,
             np.concatenate([speech, pause, speech]))
    write_av(out["one_frame.mp4"], frames[t // 2 : t // 2 + 1], 25.0)
    write_av(out["one_frame_av.mp4"], frames[t // 2 : t // 2 + 1], 25.0, speech[t // 2 * 640 : t // 2 * 640 + 640])
    sf.write(out["stereo8k.wav"], np.stack([speech[::2], 0.5 * speech[1::2]], axis=1), 8000)
    h = round(frames.shape[1] * 1080 / frames.shape[2])
    tall = np.zeros((t, 1920, 1080, 3), np.uint8)
    for i, f in enumerate(frames):
        tall[i, (1920 - h) // 2 : (1920 - h) // 2 + h] = cv2.resize(f, (1080, h), interpolation=cv2.INTER_AREA)
    write_av(out["portrait.mp4"], tall, 25.0, speech, preset="ultrafast")
    write_av(out["fps60.mp4"], frames[np.arange(round(t * 60 / 25)) * 25 // 60], 60.0, speech)
    write_av(out["silent_audio_face.mp4"], frames, 25.0, np.zeros_like(speech))
    _bad_audio_copy(files["face.mp4"], out["bad_audio.mkv"])
    mkv = root / "full.mkv"
    write_av(mkv, frames, 25.0, speech)
    raw = mkv.read_bytes()
    out["truncated.mkv"].write_bytes(raw[: len(raw) * 6 // 10])
    write_av(out["gray_no_audio.mp4"], gray, 25.0)
    return out


def make_lm(path: Path, tokenizer: CharTokenizer, texts: list[str] | None = None) -> None:
    """A small token LM trained on ``texts`` (default: one sentence, many times), saved as an LM bundle."""
    from avsr.models.lm import train_token_lm

    lm = train_token_lm(texts or ["bin blue now"] * 32, tokenizer, epochs=4, seed=0, embed_dim=16, hidden_dim=32)
    save_model(path, lm, tokenizer)
