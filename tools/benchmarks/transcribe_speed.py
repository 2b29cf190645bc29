#!/usr/bin/env python
"""Speed of ``avsr transcribe`` on this machine: real-time factor of the whole pipeline and of each stage.

The input is the noisy demo video of ``egs/transcribe`` (or ``--video``)
looped to ``--seconds`` seconds (default 60) and written once to a temporary
folder: held-out SynthGRID speakers on a 512x512 face, 25 fps, H.264 + AAC,
test babble at -5 dB. It is transcribed with the bundled demo model (or
``--model``/``--checkpoint``) by :class:`avsr.inference.Transcriber`, exactly
as ``avsr transcribe --modality av`` does, after one warm-up call on the
first seconds (model, voice activity detector and face mesh loaded).

The split comes from :attr:`Transcriber.timings` (wall seconds per stage of
that one call) and, measured side by side in the same run, a plain decode of
the same media with the same decoders (the audio stream once, as the voice
activity detector reads it, and the frames of each decoded segment at 25 fps,
as the lip frontend reads them), which separates decoding from the work done
on the decoded media:

* media decoding: audio stream + each segment's audio + each segment's frames,
* voice activity detection (silero-vad, the stream minus its decoding),
* lip frontend: landmarks + alignment + 96x96 crop (lips stage minus frame decoding),
* model: encoder forward + CTC head,
* search: joint CTC/attention beam search + CTC word alignment,
* model + search and the whole pipeline (wall time of the call), and the
  CPU time of the call (all threads of the process), which a busy machine
  inflates less than the wall time.

Real-time factor = seconds of work / seconds of input (lower is faster;
0.3 = 3.3x faster than real time). The header records the CPU, the torch
threads, the process's nice value and the load average before and after,
since a busy machine inflates every figure. Prints a markdown table and writes
``transcribe_speed.md`` and ``transcribe_speed.csv`` under ``--out``.

``--auto-avsr video|audio|av`` measures instead the architecture of
Auto-AVSR's published LRS3 models (about 250 M parameters for audio or video,
440 M audio-visual) with random weights and a 5049-token vocabulary, as
their checkpoints have; ``--quantize`` also measures the same model with
int8 dynamic quantisation of its linear layers (``avsr transcribe
--quantize``) on the same input and reports how much that changes the
output: the largest difference of the CTC log-probabilities and the share of
25 fps steps whose most likely token is the same, on the first segment, and
the word difference of the two transcripts.

``--tokens-per-second R`` caps the beam search at ``R`` output tokens per
second of each segment (``Transcriber(max_len_ratio=R / 25)``). A
random-weight model never ends a hypothesis, so without a cap its search runs
to the length limit, one token per 25 fps encoder step (25 tokens a second),
which makes the search time meaningless; ``--auto-avsr`` therefore uses 3.5
by default, a rough estimate of what a trained model with their 5000-unit
subword vocabulary emits on TED speech (some 2.5 to 3 words a second, a
little more units than words). The cap is stated in the table's title.

Usage:
    python tools/benchmarks/transcribe_speed.py [--seconds 60] [--video V] [--model NAME | --checkpoint PATH]
        [--auto-avsr video|audio|av] [--quantize] [--tokens-per-second R] [--beam 10] [--modality av]
        [--out results/benchmarks]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from avsr.errors import AVSRError  # noqa: E402
from avsr.inference import FRAME_RATE, Transcriber  # noqa: E402
from avsr.io import iter_audio, iter_frames_at, probe, read_av, write_av  # noqa: E402
from avsr.utils import markdown_table, save_table  # noqa: E402

DEMO = ROOT / "egs" / "transcribe" / "demo.mp4"
#: Goals of issue 10 on this CPU (real-time factors).
TARGETS = {"whole pipeline": 0.3, "model + search": 0.1}
#: Output length cap of ``--auto-avsr`` (tokens per second of speech), as a trained subword model emits.
AUTO_AVSR_TOKENS_PER_SECOND = 3.5


def make_long_video(source: str | os.PathLike, path: str | os.PathLike, seconds: float) -> float:
    """Loop ``source`` (audio and pictures together) to ``seconds`` and write it to ``path``.

    Args:
        source: a video with audio (25 fps, as the demo).
        path: output ``.mp4``.
        seconds: length of the output.

    Returns:
        the duration written, in seconds (a whole number of 25 fps frames).
    """
    clip = read_av(source)
    frames = int(round(seconds * FRAME_RATE))
    step = clip.sample_rate // FRAME_RATE
    audio = clip.audio[: len(clip.frames) * step]
    audio = np.pad(audio, (0, len(clip.frames) * step - len(audio)))
    reps = math.ceil(frames / len(clip.frames))
    write_av(path, np.tile(clip.frames, (reps, 1, 1, 1))[:frames], FRAME_RATE,
             np.tile(audio, reps)[: frames * step], clip.sample_rate, crf=30, preset="veryfast")
    return frames / FRAME_RATE


def decode_passes(video: str, segments: list[dict]) -> tuple[float, float]:
    """Time plain decoding of what the pipeline decodes.

    Args:
        video: the input.
        segments: the result's segments (their ``start``/``end``).

    Returns:
        ``(audio stream seconds, segment frames seconds)``: one pass of the
        audio stream, and the frames of every segment at 25 fps.
    """
    t0 = time.perf_counter()
    for _ in iter_audio(video):
        pass
    audio = time.perf_counter() - t0
    t0 = time.perf_counter()
    for seg in segments:
        for _ in iter_frames_at(video, FRAME_RATE, start=seg["start"] or None, end=seg["end"]):
            pass
    return audio, time.perf_counter() - t0


def measure(tr: Transcriber, video: str, modality: str, duration: float) -> tuple[list[dict], dict]:
    """Transcribe ``video`` once with stage timings; return the table rows and the result."""
    tr.timings = {}
    t0, c0 = time.perf_counter(), time.process_time()
    result = tr.transcribe(video, modality)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    stages, tr.timings = tr.timings, None
    audio_stream, frames = decode_passes(video, result["segments"]) if "lips" in stages else (
        decode_passes(video, [])[0], 0.0)
    split = [
        ("media decoding", "audio stream + segment audio + segment frames at 25 fps",
         audio_stream + stages.get("audio", 0.0) + frames),
        ("voice activity detection", "silero-vad on the stream (its decoding counted above)",
         max(0.0, stages.get("vad", 0.0) - audio_stream)),
        ("lip frontend", "landmarks + alignment + crop (frame decoding counted above)",
         max(0.0, stages.get("lips", 0.0) - frames)),
        ("model", "encoder forward + CTC head", stages.get("encode", 0.0)),
        ("search", "joint CTC/attention beam search + CTC word alignment",
         stages.get("search", 0.0) + stages.get("align", 0.0)),
    ]
    split.append(("model + search", "", split[3][2] + split[4][2]))
    split.append(("whole pipeline", "wall time of Transcriber.transcribe", wall))
    split.append(("whole pipeline, CPU time", "CPU seconds of this process (all its threads) in that call", cpu))
    rows = [
        {"stage": name, "what": what, "seconds": round(sec, 3), "rtf": round(sec / duration, 4),
         "share_pct": round(100 * sec / wall, 1),
         "target": f"<= {TARGETS[name]:g}" if name in TARGETS else ""}
        for name, what, sec in split
    ]
    return rows, result


def model_name(args: argparse.Namespace) -> str:
    """How the header names the model measured."""
    if args.auto_avsr:
        return f"Auto-AVSR {args.auto_avsr} architecture (random weights, {_params(args.auto_avsr)} M parameters)"
    return Path(args.checkpoint).name if args.checkpoint else args.model or "synthgrid-avsr-tiny (default)"


_PARAMS: dict[str, float] = {}


def _params(modality: str) -> str:
    return f"{_PARAMS.get(modality, float('nan')):.0f}"


def auto_avsr_transcriber(modality: str, beam: int, max_len_ratio: float = 1.0) -> Transcriber:
    """A random-weight model of Auto-AVSR's published size and vocabulary size (5049), on the CPU.

    Args:
        modality: ``video``, ``audio`` or ``av``.
        beam: beam size.
        max_len_ratio: the search's output length cap (:class:`Transcriber`).

    Returns:
        the transcriber (beam ``beam``, CTC weight 0.1, their crop).
    """
    from avsr.models.avsr import auto_avsr_config, build_model, count_parameters
    from avsr.models.compat.auto_avsr import CROP_PRESET
    from avsr.tokenizer import CharTokenizer

    tok = CharTokenizer([chr(0x4E00 + i) for i in range(5049 - 3)])  # 5049 ids, as their units + blank + eos
    torch.manual_seed(0)
    model = build_model(auto_avsr_config(tok.vocab_size, modality)).eval()
    _PARAMS[modality] = count_parameters(model) / 1e6
    return Transcriber(model, tok, device="cpu", beam_size=beam, ctc_weight=0.1, crop_preset=CROP_PRESET,
                       max_len_ratio=max_len_ratio)


@torch.inference_mode()
def _first_segment_log_probs(model: torch.nn.Module, path: str, result: dict, modality: str,
                             preset: str | None = None) -> torch.Tensor:
    """CTC log-probabilities of the first segment of ``result`` (the same input for both models)."""
    from avsr.vision import extract_mouths_from_file

    seg = result["segments"][0] if result["segments"] else {"start": 0.0, "end": 4.0}
    start, end = float(seg["start"]), float(seg["end"])
    reads = getattr(model, "modalities", ("audio", "video"))
    audio = mouths = None
    if "audio" in reads and modality in ("auto", "av", "audio"):
        clip = read_av(path, start=start or None, end=end, video=False)
        audio = torch.from_numpy(clip.audio).unsqueeze(0)
    if "video" in reads and modality in ("auto", "av", "video"):
        track = extract_mouths_from_file(path, fps=FRAME_RATE, start=start or None, end=end,
                                         preset=preset)
        mouths = torch.from_numpy(np.ascontiguousarray(track.mouths)).unsqueeze(0)
    if audio is not None and mouths is not None:  # the same number of 25 fps steps
        steps = min(audio.size(1) // 640, mouths.size(1))
        audio, mouths = audio[:, : steps * 640], mouths[:, :steps]
    enc, _ = model.encode(audio, None, mouths, None)
    return model.ctc_log_probs(enc)[0].float()


def quantized_rows(tr: Transcriber, video: str, modality: str, duration: float,
                   result: dict) -> tuple[list[dict], list[dict]]:
    """RTF of the int8-quantised model on the same input (timing rows), and how much its output differs."""
    import copy

    import jiwer

    from avsr.inference import quantize_linear

    reference = _first_segment_log_probs(tr.model, video, result, modality, tr.crop_preset)
    float_model = copy.deepcopy(tr.model)
    tr.model = quantize_linear(tr.model)
    tr.quantized = True
    tr.transcribe(video, modality)  # warm-up of the quantised kernels
    rows, q_result = measure(tr, video, modality, duration)
    quantized = _first_segment_log_probs(tr.model, video, result, modality, tr.crop_preset)
    tr.model = float_model
    n = min(len(reference), len(quantized))
    max_diff = float((reference[:n] - quantized[:n]).abs().max())
    agree = float((reference[:n].argmax(-1) == quantized[:n].argmax(-1)).float().mean())
    ref_text, q_text = result["text"] or "-", q_result["text"] or "-"
    word_change = 100.0 * jiwer.wer(ref_text, q_text)
    timing = [dict(r, stage=f"int8: {r['stage']}") for r in rows if r["stage"] in
              ("model", "search", "model + search", "whole pipeline")]
    change = [
        {"measure": "max abs CTC log-prob difference", "what": "first segment, int8 vs float32",
         "value": round(max_diff, 4)},
        {"measure": "same best token per 25 fps step (%)", "what": "first segment, int8 vs float32",
         "value": round(100.0 * agree, 2)},
        {"measure": "transcript word difference (%)", "what": "WER of the int8 transcript against the float32 one",
         "value": round(word_change, 2)},
    ]
    return timing, change


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and save it; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video", default=str(DEMO), help="clip to loop (default: egs/transcribe/demo.mp4)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of the looped input (default 60)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--model", default=None, help="bundled model name (default: the demo model)")
    group.add_argument("--checkpoint", default=None, help="model bundle (.safetensors)")
    group.add_argument("--auto-avsr", default=None, choices=("video", "audio", "av"),
                       help="random-weight model of Auto-AVSR's published architecture (this modality)")
    p.add_argument("--quantize", action="store_true",
                   help="also measure int8 dynamic quantisation of the linear layers, and its output change")
    p.add_argument("--tokens-per-second", type=float, default=None, metavar="R",
                   help="cap the search at R output tokens per second of speech (default: "
                        f"{AUTO_AVSR_TOKENS_PER_SECOND:g} with --auto-avsr, else no cap)")
    p.add_argument("--beam", type=int, default=10, help="beam size (default 10, as avsr transcribe)")
    p.add_argument("--modality", default="av", choices=("av", "audio", "video", "auto"),
                   help="modality (default av)")
    p.add_argument("--out", default="results/benchmarks", help="folder for transcribe_speed.md / .csv")
    args = p.parse_args(argv)

    if not args.seconds > 0:
        p.error(f"--seconds must be positive, got {args.seconds}")
    rate = args.tokens_per_second
    if rate is None and args.auto_avsr:
        rate = AUTO_AVSR_TOKENS_PER_SECOND
    if rate is not None and not (0 < rate <= FRAME_RATE):
        p.error(f"--tokens-per-second must be in (0, {FRAME_RATE}], got {rate:g}")
    ratio = rate / FRAME_RATE if rate is not None else 1.0
    load_before = os.getloadavg()
    kwargs = dict(device="cpu", beam_size=args.beam, max_len_ratio=ratio)
    modality = args.modality
    try:
        if args.auto_avsr:
            tr = auto_avsr_transcriber(args.auto_avsr, args.beam, ratio)
            modality = "auto" if args.auto_avsr != "av" else args.modality
        else:
            tr = (Transcriber.from_checkpoint(args.checkpoint, **kwargs) if args.checkpoint
                  else Transcriber.from_pretrained(args.model, **kwargs))
        with tr, tempfile.TemporaryDirectory(prefix="transcribe-speed-") as tmp:
            video = os.path.join(tmp, "long.mp4")
            duration = make_long_video(args.video, video, args.seconds)
            warm = os.path.join(tmp, "warm.mp4")
            make_long_video(args.video, warm, 3.0)
            tr.transcribe(warm, modality)  # load the VAD, the face mesh graph, first-call allocations
            rows, result = measure(tr, video, modality, duration)
            info = probe(video)["video"]
            change: list[dict] = []
            if args.quantize:
                timing, change = quantized_rows(tr, video, modality, duration, result)
                rows += timing
    except AVSRError as e:
        print(f"transcribe_speed: error: {e}", file=sys.stderr)
        return 1
    load_after = os.getloadavg()
    header = (
        f"avsr transcribe speed, --modality {modality}, beam {args.beam}"
        f"{f', search capped at {rate:g} tokens/s' if rate is not None else ''}, model "
        f"{model_name(args)}, "
        f"on {Path(args.video).name} looped to {duration:g} s ({info['width']}x{info['height']}, "
        f"{info['fps']:g} fps, {info['codec']}; {len(result['segments'])} segments). "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, torch {torch.__version__} "
        f"with {torch.get_num_threads()} thread(s), nice {os.nice(0)}, Python {platform.python_version()}; "
        f"load average (1/5/15 min) {'/'.join(f'{x:.2f}' for x in load_before)} before, "
        f"{'/'.join(f'{x:.2f}' for x in load_after)} after (other jobs on the machine inflate every figure)."
    )
    table = markdown_table(
        rows, header, titles={"rtf": "real-time factor", "share_pct": "% of whole", "seconds": "seconds"},
        formats={"seconds": ".2f", "rtf": ".3f", "share_pct": ".1f"}, right=("seconds", "rtf", "share_pct", "target"),
    )
    print(table)
    name = f"transcribe_speed_auto_avsr_{args.auto_avsr}" if args.auto_avsr else "transcribe_speed"
    md_path, csv_path = save_table(args.out, name, table, rows)
    print(f"saved {md_path} and {csv_path}")
    if change:
        change_table = markdown_table(change, f"Output change of int8 dynamic quantisation ({model_name(args)}, "
                                              "same input)", formats={"value": "g"}, right=("value",))
        print(change_table)
        md_path, csv_path = save_table(args.out, name + "_int8_change", change_table, change)
        print(f"saved {md_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
