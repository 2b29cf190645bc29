"""End to end on real SynthGRID data: generate, tokenize, train, decode, save, load, align.

A handful of SynthGRID utterances (eSpeak audio, drawn mouths) are cut to
their first words, a character tokenizer is built from their texts, and a
shrunken ``avsr_tiny`` model, trained with modality dropout, memorises them.
Then, from audio + video, audio only and video only:

* joint CTC/attention beam search and greedy CTC transcribe every
  utterance exactly (WER 0 via :func:`avsr.metrics.wer`), and beam search
  gives the same tokens with and without the incremental decoder cache,
* a ``save_model`` -> ``load_model`` round trip decodes bit-identically,
* CTC word timestamps are ordered and lie inside the utterance.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from avsr.checkpoints import load_model, save_model
from avsr.data.synth import FPS, SAMPLE_RATE, generate, read_manifest
from avsr.decoding import greedy_ctc, joint_beam_search
from avsr.decoding.ctc import word_timestamps
from avsr.metrics import wer
from avsr.models.avsr import IGNORE_ID, AVSRModel, avsr_tiny
from avsr.tokenizer import CharTokenizer

pytestmark = pytest.mark.slow  # about 20-40 s on a shared 2-core CPU, still run by default

NUM_UTTERANCES = 6
WORDS_KEPT = 3  # "bin blue at" ...: short utterances keep the test fast
TAIL_SECONDS = 0.12  # kept after the last word's end
FRAME_RATE = int(FPS)  # 25 fps mouths
SAMPLES_PER_FRAME = SAMPLE_RATE // FRAME_RATE  # 640
TRAIN_STEPS = 250
BEAM_SIZE = 5
MODALITIES = {"audio+video": (True, True), "audio only": (True, False), "video only": (False, True)}
OVERRIDES = dict(
    d_model=64,
    audio_channels=16,
    video_width=4,
    video_layers=[1],
    encoder_layers=2,
    encoder_heads=4,
    encoder_ff=128,
    conv_kernel=7,
    decoder_layers=1,
    decoder_heads=4,
    decoder_ff=128,
    dropout=0.0,
    spec_augment=False,
    video_augment=False,
    audio_drop_prob=0.34,
    video_drop_prob=0.33,
    ctc_weight=0.5,
    label_smoothing=0.0,
)


@dataclass
class Batch:
    """Padded SynthGRID utterances and their transcripts."""

    audio: torch.Tensor  # (B, N) float waveform
    audio_lengths: torch.Tensor  # (B,)
    video: torch.Tensor  # (B, T, 96, 96) uint8 mouths
    video_lengths: torch.Tensor  # (B,)
    texts: list[str]

    def inputs(self, use_audio: bool, use_video: bool) -> tuple[torch.Tensor | None, ...]:
        """``(audio, audio_lengths, video, video_lengths)`` with unused modalities ``None``."""
        a = (self.audio, self.audio_lengths) if use_audio else (None, None)
        v = (self.video, self.video_lengths) if use_video else (None, None)
        return (*a, *v)


def load_cut(row: dict) -> tuple[np.ndarray, np.ndarray, str]:
    """One manifest row cut after its ``WORDS_KEPT``-th word.

    Returns:
        ``(waveform (N,), mouths (T, 96, 96) uint8, text)`` with ``N = 640 T``.
    """
    words = row["words"][:WORDS_KEPT]
    frames = min(int(np.ceil((words[-1][2] + TAIL_SECONDS) * FRAME_RATE)), int(row["num_frames"]))
    audio, rate = sf.read(row["audio"], dtype="float32")
    assert rate == SAMPLE_RATE
    mouths = np.load(row["mouths"])["mouths"][:frames]
    audio = np.pad(audio, (0, max(0, frames * SAMPLES_PER_FRAME - audio.size)))[: frames * SAMPLES_PER_FRAME]
    return audio, mouths, " ".join(w[0] for w in words)


def pad_batch(utterances: list[tuple[np.ndarray, np.ndarray, str]]) -> Batch:
    """Zero-pad waveforms and mouth frames into one batch."""
    b = len(utterances)
    n = max(a.size for a, _, _ in utterances)
    t = max(m.shape[0] for _, m, _ in utterances)
    audio = torch.zeros(b, n)
    video = torch.zeros(b, t, 96, 96, dtype=torch.uint8)
    for i, (a, m, _) in enumerate(utterances):
        audio[i, : a.size] = torch.from_numpy(a)
        video[i, : m.shape[0]] = torch.from_numpy(m)
    return Batch(
        audio,
        torch.tensor([a.size for a, _, _ in utterances]),
        video,
        torch.tensor([m.shape[0] for _, m, _ in utterances]),
        [text for _, _, text in utterances],
    )


def pad_targets(ids: list[list[int]]) -> torch.Tensor:
    """(B, L) token ids padded with ``IGNORE_ID``."""
    out = torch.full((len(ids), max(map(len, ids))), IGNORE_ID)
    for i, seq in enumerate(ids):
        out[i, : len(seq)] = torch.tensor(seq)
    return out


def train(model: AVSRModel, batch: Batch, targets: torch.Tensor, steps: int) -> list[float]:
    """Full-batch AdamW with warm-up and cosine decay, all modalities in, modality dropout on.

    Args:
        model: the model to train (left in training mode).
        batch: the utterances.
        targets: (B, L) token ids padded with ``IGNORE_ID``.
        steps: optimiser steps.

    Returns:
        the loss of every step.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    warmup = 20
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps))
    )
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(*batch.inputs(True, True), targets)["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return losses


@torch.no_grad()
def decode(model: AVSRModel, tokenizer: CharTokenizer, batch: Batch, use_audio: bool, use_video: bool) -> dict:
    """Decode ``batch`` from the chosen modalities.

    Args:
        model: a trained model (switched to eval mode).
        tokenizer: turns tokens into text.
        batch: the utterances.
        use_audio, use_video: the modalities given to the encoder.

    Returns:
        dict with ``beam`` / ``greedy_ctc`` texts, ``beam_tokens``,
        ``beam_uncached_tokens`` (search without the decoder cache),
        ``beam_scores``, ``log_probs`` (B, T, V) and ``enc_lengths`` (B,).
    """
    model.eval()
    enc, enc_lengths = model.encode(*batch.inputs(use_audio, use_video))
    log_probs = model.ctc_log_probs(enc)
    hyps = joint_beam_search(model, enc, enc_lengths, beam_size=BEAM_SIZE, ctc_weight=0.3)
    beam_tokens = [h[0].tokens for h in hyps]
    uncached = joint_beam_search(model, enc, enc_lengths, beam_size=BEAM_SIZE, ctc_weight=0.3, use_cache=False)
    return {
        "beam_uncached_tokens": [h[0].tokens for h in uncached],
        "enc_lengths": enc_lengths,
        "log_probs": log_probs,
        "beam_tokens": beam_tokens,
        "beam_scores": [h[0].score for h in hyps],
        "beam": [tokenizer.decode(t) for t in beam_tokens],
        "greedy_ctc": [tokenizer.decode(t) for t in greedy_ctc(log_probs, enc_lengths)],
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AVSRModel, CharTokenizer, Batch, list[float]]]:
    """Generate SynthGRID utterances and memorise them with one model.

    Yields:
        ``(model in eval mode, tokenizer, batch, training losses)``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    try:
        root = tmp_path_factory.mktemp("synthgrid")
        manifest = generate(root, NUM_UTTERANCES, split="train", seed=0, processes=1, progress=False)
        batch = pad_batch([load_cut(row) for row in read_manifest(manifest)])
        tokenizer = CharTokenizer.train(batch.texts)
        targets = pad_targets([tokenizer.encode(t) for t in batch.texts])
        torch.manual_seed(0)
        model = avsr_tiny(tokenizer.vocab_size, **OVERRIDES)
        losses = train(model, batch, targets, TRAIN_STEPS)
        yield model.eval(), tokenizer, batch, losses
    finally:
        torch.set_num_threads(threads)


def test_training_loss_falls(trained: tuple[AVSRModel, CharTokenizer, Batch, list[float]]) -> None:
    _, _, _, losses = trained
    assert np.mean(losses[-10:]) < 0.1 * np.mean(losses[:10])


@pytest.mark.parametrize("modality", list(MODALITIES))
def test_memorised_in_every_modality(
    trained: tuple[AVSRModel, CharTokenizer, Batch, list[float]], modality: str
) -> None:
    model, tokenizer, batch, _ = trained
    out = decode(model, tokenizer, batch, *MODALITIES[modality])
    assert wer(batch.texts, out["beam"]) == 0.0, out["beam"]
    assert wer(batch.texts, out["greedy_ctc"]) == 0.0, out["greedy_ctc"]
    assert out["beam_uncached_tokens"] == out["beam_tokens"]  # the decoder cache changes nothing


def test_save_load_round_trip_decodes_identically(
    trained: tuple[AVSRModel, CharTokenizer, Batch, list[float]], tmp_path: Path
) -> None:
    model, tokenizer, batch, _ = trained
    path = tmp_path / "model.safetensors"
    save_model(path, model, tokenizer)
    loaded, loaded_tokenizer = load_model(path)
    assert loaded_tokenizer == tokenizer
    for use_audio, use_video in MODALITIES.values():
        before = decode(model, tokenizer, batch, use_audio, use_video)
        after = decode(loaded, loaded_tokenizer, batch, use_audio, use_video)
        assert torch.equal(before["log_probs"], after["log_probs"])
        assert after["beam_tokens"] == before["beam_tokens"]
        assert after["beam_scores"] == before["beam_scores"]
        assert after["greedy_ctc"] == before["greedy_ctc"]


def test_word_timestamps_ordered_and_inside(trained: tuple[AVSRModel, CharTokenizer, Batch, list[float]]) -> None:
    model, tokenizer, batch, _ = trained
    out = decode(model, tokenizer, batch, True, True)
    for i, text in enumerate(batch.texts):
        frames = int(out["enc_lengths"][i])
        timings = word_timestamps(out["log_probs"][i, :frames], out["beam_tokens"][i], tokenizer)
        assert [t.word for t in timings] == text.split()
        duration = frames / FRAME_RATE
        assert 0.0 <= timings[0].start
        assert timings[-1].end <= duration + 1e-9
        for t in timings:
            assert t.start < t.end
        for prev, nxt in zip(timings, timings[1:]):
            assert prev.end <= nxt.start
