#!/usr/bin/env python
"""Speed of the ``tiny`` AVSR model on this machine: size, training steps, decoding.

Measured side by side in one run, on random audio (16 kHz) + 88x88 mouth
video (25 fps) clips of ``--seconds`` seconds:

* parameters (total, encoder, decoder, CTC head),
* training steps/s: forward + backward + AdamW step on a batch of ``--batch``
  audio-visual clips with ``--seconds * 10`` target tokens each (median and
  fastest of ``--steps`` timed steps),
* decoding real-time factor (wall time / audio duration, batch 1, encoder
  included, best of ``--repeats`` runs) for greedy CTC, greedy attention and joint CTC/attention beam
  search (beam ``--beam``, CTC weight 0.3), plus beam search batched over all
  ``--utts`` clips at once.

The model is untrained, so the attention decoder rarely stops by itself:
outputs run to the length cap (``--max-len-ratio`` tokens per 25 fps frame,
0.4 = 10 tokens/s, about the character rate of read speech). Beam search gets
a length bonus (``--length-bonus``, default 5) so that it too fills the cap
instead of preferring the empty output; with a bonus its end detection cannot
stop early. That makes the decoding figures a worst case for that length.

Prints a markdown table and writes ``model_speed.md`` and ``model_speed.csv``
under ``--out``.

Usage:
    python tools/benchmarks/model_speed.py [--seconds 3] [--batch 4] [--steps 10] [--utts 4] [--beam 10]
        [--repeats 3] [--out results/benchmarks]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

from avsr.decoding import greedy_attention, greedy_ctc, joint_beam_search  # noqa: E402
from avsr.models.avsr import AVSRModel, avsr_tiny  # noqa: E402
from avsr.utils import markdown_table, save_table  # noqa: E402

SAMPLE_RATE = 16000
FPS = 25


def make_clips(n: int, seconds: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random audio-visual clips of equal length.

    Returns:
        ``audio (n, N)``, ``audio_lengths (n,)``, ``video (n, T, 88, 88) uint8``,
        ``video_lengths (n,)``.
    """
    g = torch.Generator().manual_seed(seed)
    samples, frames = int(seconds * SAMPLE_RATE), int(seconds * FPS)
    audio = 0.1 * torch.randn(n, samples, generator=g)
    video = torch.randint(0, 256, (n, frames, 88, 88), generator=g, dtype=torch.uint8)
    return audio, torch.full((n,), samples), video, torch.full((n,), frames)


def count(module: torch.nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in module.parameters())


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    """``(result, wall seconds)``."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def train_steps_per_second(
    model: AVSRModel, batch: int, seconds: float, steps: int, vocab: int
) -> tuple[float, float]:
    """Forward + backward + AdamW steps per second, after one warm-up step.

    Returns:
        ``(median, fastest)``: from the median and the fastest of ``steps`` timed steps
        (the fastest is the least disturbed by other load on a shared machine).
    """
    audio, alen, video, vlen = make_clips(batch, seconds, seed=1)
    targets = torch.randint(1, vocab - 1, (batch, int(seconds * 10)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        loss = model(audio, alen, video, vlen, targets)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    times = sorted(timed(step)[1] for _ in range(steps))
    return 1.0 / times[len(times) // 2], 1.0 / times[0]


@torch.no_grad()
def decode_rows(
    model: AVSRModel, utts: int, seconds: float, beam: int, max_len_ratio: float, length_bonus: float,
    repeats: int = 3,
) -> list[dict]:
    """Real-time factors of the decoders (encoder time included; best of ``repeats`` runs)."""
    model.eval()
    audio, alen, video, vlen = make_clips(utts, seconds, seed=2)
    total_audio = utts * seconds

    def encode(i: slice) -> tuple[torch.Tensor, torch.Tensor]:
        return model.encode(audio[i], alen[i], video[i], vlen[i])

    searches: dict[str, Callable[[torch.Tensor, torch.Tensor], list[list[int]]]] = {
        "encoder only": lambda e, n: [[] for _ in range(e.shape[0])],
        "greedy CTC": lambda e, n: greedy_ctc(model.ctc_log_probs(e), n),
        "greedy attention": lambda e, n: greedy_attention(model, e, n, max_len_ratio=max_len_ratio),
        f"beam {beam}, joint CTC/attention (ctc_weight 0.3)": lambda e, n: [
            h[0].tokens for h in joint_beam_search(model, e, n, beam_size=beam, ctc_weight=0.3,
                                                   max_len_ratio=max_len_ratio, length_bonus=length_bonus)
        ],
    }
    for search in searches.values():
        search(*encode(slice(0, 1)))  # warm-up
    # interleave the settings, best of `repeats`: load from other processes hits all of them alike
    best = {name: float("inf") for name in searches}
    tokens = {name: 0 for name in searches}
    batched_best, batched_tokens = float("inf"), 0
    beam_search = searches[f"beam {beam}, joint CTC/attention (ctc_weight 0.3)"]
    for _ in range(repeats):
        for name, search in searches.items():
            elapsed, tokens[name] = 0.0, 0
            for u in range(utts):
                out, sec = timed(lambda: search(*encode(slice(u, u + 1))))
                elapsed += sec
                tokens[name] += sum(len(t) for t in out)  # type: ignore[union-attr]
            best[name] = min(best[name], elapsed)
        out, sec = timed(lambda: beam_search(*encode(slice(0, utts))))
        batched_best = min(batched_best, sec)
        batched_tokens = sum(len(t) for t in out)  # type: ignore[union-attr]
    rows = [_decode_row(name, 1, best[name], total_audio, tokens[name]) for name in searches]
    name = f"beam {beam}, joint CTC/attention, {utts} clips batched"
    rows.append(_decode_row(name, utts, batched_best, total_audio, batched_tokens))
    return rows


def _decode_row(name: str, batch: int, seconds: float, audio_seconds: float, tokens: int) -> dict:
    return {
        "measure": "decode RTF (lower is faster)",
        "setting": f"{name}; batch {batch}; {tokens} tokens out",
        "value": round(seconds / audio_seconds, 4),
        "unit": "s / s audio",
    }


def run(args: argparse.Namespace) -> list[dict]:
    """Measure parameters, training speed and decoding speed of ``avsr_tiny``; one dict per table row."""
    torch.manual_seed(0)
    model = avsr_tiny(args.vocab)
    rows = [
        {"measure": "parameters", "setting": part, "value": round(count(module) / 1e6, 3), "unit": "M"}
        for part, module in [("total", model), ("encoder (frontends, fusion, conformer)", model.encoder),
                             ("attention decoder", model.decoder), ("CTC head", model.ctc_head)]
    ]
    median, fastest = train_steps_per_second(model, args.batch, args.seconds, args.steps, args.vocab)
    setting = f"forward+backward+AdamW, batch {args.batch} x {args.seconds:g} s AV"
    for label, sps in (("median", median), ("fastest", fastest)):
        rows.append({"measure": "training", "setting": f"{setting}, {label} of {args.steps} steps",
                     "value": round(sps, 3), "unit": "steps/s"})
    rows.append({"measure": "training", "setting": "same (median), audio seconds processed per wall second",
                 "value": round(median * args.batch * args.seconds, 2), "unit": "s audio / s"})
    rows += decode_rows(model, args.utts, args.seconds, args.beam, args.max_len_ratio, args.length_bonus,
                        args.repeats)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and save it; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--seconds", type=float, default=3.0, help="clip duration (default 3)")
    parser.add_argument("--batch", type=int, default=4, help="training batch size (default 4)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (default 10)")
    parser.add_argument("--utts", type=int, default=4, help="clips to decode (default 4)")
    parser.add_argument("--beam", type=int, default=10, help="beam size (default 10)")
    parser.add_argument("--vocab", type=int, default=40, help="vocabulary size (default 40, characters)")
    parser.add_argument("--max-len-ratio", type=float, default=0.4, help="output tokens per frame cap (default 0.4)")
    parser.add_argument("--length-bonus", type=float, default=5.0,
                        help="beam length bonus per token (default 5: the untrained model then fills the cap too)")
    parser.add_argument("--repeats", type=int, default=3, help="decode runs per setting, best kept (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", default="results/benchmarks", help="folder for model_speed.md / .csv")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args)
    header = (
        f"avsr_tiny speed on random {args.seconds:g} s audio+video clips; {torch.get_num_threads()} torch threads, "
        f"{platform.machine()}, torch {torch.__version__}, Python {platform.python_version()}. "
        f"Untrained model: outputs run to the cap of {args.max_len_ratio:g} tokens/frame."
    )
    table = markdown_table(rows, header, right=("value",))
    print(table)
    md_path, csv_path = save_table(args.out, "model_speed", table, rows)
    print(f"saved {md_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
