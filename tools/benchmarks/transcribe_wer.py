#!/usr/bin/env python
"""Does the whole transcription pipeline lose anything? WER of ``avsr transcribe`` on videos.

Transcribes the ``video`` of every row of a manifest (noisy full-face videos,
e.g. written by ``tools/make_noisy.py``) with :class:`avsr.inference.Transcriber`
(media decoding, voice activity segmentation, the lip frontend on the full
frame, joint CTC/attention beam search) once per modality, and scores the
text against the row's transcript. With ``--crops MANIFEST`` it also runs
:func:`avsr.evaluation.evaluate` on a manifest of the same utterances whose
``audio`` is the same noisy audio and whose ``mouths`` were pre-extracted
from the same videos (``tools/extract_lips.py``), with no noise added, so the
two columns differ only by what the pipeline does between file and model.

Prints a markdown table (modality, WER of transcribe, WER of evaluate on the
crops, difference) and writes ``transcribe_wer.md`` / ``.csv`` under ``--out``.

Usage:
    python tools/benchmarks/transcribe_wer.py exp/ff/noisy/test_snrm5.csv \\
        --crops exp/ff/m_noisy_extracted.csv --modality av,audio,video --out results/benchmarks
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

from avsr.data.manifest import read_manifest  # noqa: E402
from avsr.errors import AVSRError  # noqa: E402
from avsr.evaluation import evaluate, parse_modalities  # noqa: E402
from avsr.inference import Transcriber  # noqa: E402
from avsr.metrics import wer  # noqa: E402
from avsr.utils import markdown_table, save_table  # noqa: E402


def transcribe_wer(transcriber: Transcriber, videos: Sequence[str], references: Sequence[str],
                   modality: str) -> tuple[float, list[str]]:
    """WER (%) of ``transcriber`` on ``videos`` with one forced modality, and the hypotheses."""
    hyps = []
    for path, result, error in transcriber.transcribe_many(videos, modality=modality):
        if error is not None:
            raise SystemExit(f"transcribe_wer.py: error: {error}")
        hyps.append(result["text"])
    return 100.0 * wer(references, hyps), hyps


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("manifest", help="manifest with video and text columns")
    p.add_argument("--crops", default=None, help="manifest of the same ids with audio + pre-extracted mouths")
    p.add_argument("--modality", default="av,audio,video")
    p.add_argument("--model", default=None, help="bundled model name (default: the demo model)")
    p.add_argument("--checkpoint", default=None, help="model bundle instead of a bundled model")
    p.add_argument("--beam", type=int, default=10)
    p.add_argument("--limit", type=int, default=None, help="only the first N rows")
    p.add_argument("--out", default="results/benchmarks")
    args = p.parse_args(argv)
    try:
        modalities = parse_modalities(args.modality)
        rows = [u for u in read_manifest(args.manifest) if u.video][: args.limit]
        if not rows:
            raise SystemExit(f"transcribe_wer.py: error: {args.manifest}: no rows with a video")
        settings = dict(device="cpu", beam_size=args.beam)
        transcriber = (Transcriber.from_checkpoint(args.checkpoint, **settings) if args.checkpoint
                       else Transcriber.from_pretrained(args.model, **settings))
        refs = [u.text for u in rows]
        table = []
        with transcriber:
            for modality in modalities:
                t0 = time.perf_counter()
                score, _ = transcribe_wer(transcriber, [u.video for u in rows], refs, modality)
                table.append({"modality": modality, "transcribe": score, "seconds": time.perf_counter() - t0})
        if args.crops:
            ids = [u.id for u in rows]
            crops = {u.id: u for u in read_manifest(args.crops, need_audio=True, need_mouths=True)}
            missing = [i for i in ids if i not in crops]
            if missing:
                raise SystemExit(f"transcribe_wer.py: error: {args.crops}: no row for {missing[0]!r}")
            results = evaluate(transcriber.model, transcriber.tokenizer, [crops[i] for i in ids],
                               modalities=modalities, noises=("babble",), snrs="clean",
                               beam_size=args.beam, progress=False)
            by_modality = {r["modality"]: r["wer"] for r in results}
            for row in table:
                row["evaluate (crops)"] = by_modality[row["modality"]]
                row["difference"] = round(row["transcribe"] - row["evaluate (crops)"], 2) + 0.0  # no "-0.00"
    except AVSRError as e:
        raise SystemExit(f"transcribe_wer.py: error: {e}") from None
    md = markdown_table(table, header=f"WER (%) of avsr transcribe on {len(rows)} videos of {args.manifest}",
                        formats={k: ".2f" for k in ("transcribe", "evaluate (crops)", "difference")}
                        | {"seconds": ".0f"},
                        right=("transcribe", "evaluate (crops)", "difference", "seconds"))
    print(md, end="")
    save_table(args.out, "transcribe_wer", md, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
