"""Overfit a handful of synthetic audio-visual utterances to zero token errors.

Each token is signalled in both modalities: in the audio by a sine tone of
a token-specific pitch, in the video by a token-specific frame brightness.
One model, trained with modality dropout, must then transcribe every
utterance exactly with greedy CTC and with greedy attention decoding, from
audio + video, audio only and video only.
"""

from __future__ import annotations

import math

import torch

from avsr.decoding import greedy_ctc
from avsr.models.avsr import IGNORE_ID, AVSRModel, build_model

SOS = 8  # vocab: 0 blank, 1 unk, 2..7 tokens, 8 sos/eos
SEQUENCES = [[2, 3, 4], [5, 6, 7, 2], [3, 3, 5], [7, 6]]
TOKEN_STEPS = 4  # 25 fps steps per token (0.16 s)
GAP_STEPS = 2
SAMPLES_PER_STEP = 640

CONFIG = dict(
    vocab_size=SOS + 1,
    d_model=48,
    audio_channels=8,
    video_width=4,
    video_layers=[1, 1],
    crop_size=24,
    encoder_layers=2,
    encoder_heads=4,
    encoder_ff=96,
    conv_kernel=5,
    decoder_layers=1,
    decoder_heads=4,
    decoder_ff=96,
    dropout=0.0,
    spec_augment=False,
    video_augment=False,
    audio_drop_prob=0.3,
    video_drop_prob=0.3,
    ctc_weight=0.5,
    label_smoothing=0.0,
)


def synth_utterance(tokens: list[int], gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Waveform (steps * 640,) and frames (steps, 24, 24) uint8 for a token sequence."""
    steps = GAP_STEPS + len(tokens) * (TOKEN_STEPS + GAP_STEPS)
    n = steps * SAMPLES_PER_STEP
    wave = torch.randn(n, generator=gen) * 0.003
    frames = torch.full((steps, 24, 24), 10, dtype=torch.uint8)
    t = torch.arange(TOKEN_STEPS * SAMPLES_PER_STEP) / 16000.0
    for i, tok in enumerate(tokens):
        start = GAP_STEPS + i * (TOKEN_STEPS + GAP_STEPS)
        tone = 0.3 * torch.sin(2 * math.pi * (250.0 + 300.0 * tok) * t)
        wave[start * SAMPLES_PER_STEP : (start + TOKEN_STEPS) * SAMPLES_PER_STEP] += tone
        frames[start : start + TOKEN_STEPS] = 40 + 30 * tok
    return wave, frames


def make_batch() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    utts = [synth_utterance(s, gen) for s in SEQUENCES]
    b = len(utts)
    max_n = max(w.numel() for w, _ in utts)
    max_t = max(f.size(0) for _, f in utts)
    audio = torch.zeros(b, max_n)
    video = torch.zeros(b, max_t, 24, 24, dtype=torch.uint8)
    targets = torch.full((b, max(len(s) for s in SEQUENCES)), IGNORE_ID)
    for i, ((w, f), s) in enumerate(zip(utts, SEQUENCES)):
        audio[i, : w.numel()] = w
        video[i, : f.size(0)] = f
        targets[i, : len(s)] = torch.tensor(s)
    audio_lengths = torch.tensor([w.numel() for w, _ in utts])
    video_lengths = torch.tensor([f.size(0) for _, f in utts])
    return audio, audio_lengths, video, video_lengths, targets


@torch.no_grad()
def greedy_attention(model: AVSRModel, enc: torch.Tensor, lengths: torch.Tensor, max_len: int = 10) -> list[list[int]]:
    """Raw argmax decoding with the attention decoder, stopping at eos.

    Deliberately not ``avsr.decoding.greedy_attention``: that one never emits
    the blank id, while this argmax over the whole vocabulary also fails the
    test if the decoder wrongly prefers blank.
    """
    ys = torch.full((enc.size(0), 1), model.sos_id, dtype=torch.long)
    done = torch.zeros(enc.size(0), dtype=torch.bool)
    for _ in range(max_len):
        nxt = model.decoder(ys, enc, lengths)[:, -1].argmax(-1)
        nxt = nxt.masked_fill(done, model.eos_id)
        ys = torch.cat([ys, nxt.unsqueeze(1)], dim=1)
        done |= nxt == model.eos_id
        if done.all():
            break
    hyps = []
    for row in ys[:, 1:].tolist():
        hyps.append(row[: row.index(model.eos_id)] if model.eos_id in row else row)
    return hyps


@torch.no_grad()
def decode_all_modes(model: AVSRModel, batch: tuple[torch.Tensor, ...]) -> dict[str, tuple[list, list]]:
    audio, audio_lengths, video, video_lengths, _ = batch
    model.eval()
    modes = {
        "av": (audio, audio_lengths, video, video_lengths),
        "audio": (audio, audio_lengths, None, None),
        "video": (None, None, video, video_lengths),
    }
    results = {}
    for name, inputs in modes.items():
        enc, lengths = model.encode(*inputs)
        results[name] = (greedy_ctc(model.ctc_log_probs(enc), lengths), greedy_attention(model, enc, lengths))
    model.train()
    return results


def test_overfit_synthetic_utterances_all_modalities() -> None:
    torch.manual_seed(0)
    batch = make_batch()
    # audio covers exactly one 640-sample step per video frame
    assert (torch.ceil(batch[1] / 640) == batch[3]).all()
    model = build_model(CONFIG).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first_loss = None
    results: dict[str, tuple[list, list]] = {}
    for step in range(1, 601):
        out = model(*batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first_loss = first_loss if first_loss is not None else float(out["loss"].detach())
        if step % 25 == 0:
            results = decode_all_modes(model, batch)
            if all(ctc == SEQUENCES and att == SEQUENCES for ctc, att in results.values()):
                break
    assert float(out["loss"].detach()) < first_loss
    for name, (ctc, att) in results.items():
        assert ctc == SEQUENCES, f"greedy CTC, {name}: {ctc}"
        assert att == SEQUENCES, f"greedy attention, {name}: {att}"
