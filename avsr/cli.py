"""Command line: ``avsr <subcommand>``.

Thin by design: each subcommand parses its arguments and calls the library.
Errors meant for the user (:class:`avsr.errors.AVSRError`) become one line on
stderr and exit code 1; set ``AVSR_DEBUG=1`` to see tracebacks instead.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from avsr import __version__
from avsr.errors import AVSRError, run_reporting

AddArgs = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]

# name -> (help, add_arguments, run). Filled by the ``_command`` decorator.
_COMMANDS: dict[str, tuple[str, AddArgs, Run]] = {}


def _command(name: str, help: str) -> Callable[[AddArgs], Callable[[Run], Run]]:
    """Register subcommand ``name``: ``@_command(name, help)(add_arguments)`` above its ``run``."""

    def wrap(add_arguments: AddArgs) -> Callable[[Run], Run]:
        def register(run: Run) -> Run:
            _COMMANDS[name] = (help, add_arguments, run)
            return run

        return register

    return wrap


# ---------------------------------------------------------------------------
# avsr lips
# ---------------------------------------------------------------------------
def _lips_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="input video (mp4, mkv, avi, webm, mov, ...)")
    p.add_argument("-o", "--output", required=True, help="output .npz (arrays: mouths, found, fps, preset)")
    p.add_argument("--fps", type=float, default=25.0, help="output frame rate (default 25)")
    p.add_argument("--size", type=int, default=96, help="crop size in pixels (default 96)")
    p.add_argument("--preset", default="avsr", metavar="NAME",
                   help="crop geometry: avsr (this project's models, default) or auto_avsr "
                        "(Auto-AVSR's mouth crop, for their LRS3 models)")
    p.add_argument("--preview", metavar="PNG", help="also save a contact sheet of the crops (red border: no face)")


@_command("lips", "extract aligned grayscale mouth crops from a video")(_lips_args)
def _lips_run(args: argparse.Namespace) -> int:
    from avsr.vision import check_output, extract_mouths_from_file, get_preset, save_mouths, save_preview

    get_preset(args.preset)  # an unknown name fails before any work
    for out in (args.output, args.preview):  # bad output paths fail before the video is processed
        if out:
            check_output(out)
    result = extract_mouths_from_file(args.video, fps=args.fps, size=args.size, preset=args.preset)
    save_mouths(args.output, result)
    if args.preview:
        save_preview(args.preview, result)
    n = len(result.found)
    print(
        f"{args.video}: {n} frames at {result.fps:g} fps, face found on "
        f"{int(result.found.sum())}/{n} -> {args.output}"
    )
    return 0


# ---------------------------------------------------------------------------
# avsr synth
# ---------------------------------------------------------------------------
def _synth_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (manifest: OUT/SPLIT.csv)")
    p.add_argument("--num", type=int, required=True, help="number of utterances")
    p.add_argument("--split", default="train", choices=("train", "valid", "test"),
                   help="speaker split (disjoint speakers; default train)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--processes", type=int, default=None, help="worker processes (default: CPU count, at most 8)")
    p.add_argument("--full-face", action="store_true",
                   help="also render the mouth onto a face photo (default photo: scikit-image astronaut)")
    p.add_argument("--face-image", default=None, metavar="PATH", help="face photo for the full-face video")
    p.add_argument("--voices", default=None, help="comma-separated eSpeak voices to use (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@_command("synth", "generate SynthGRID, a synthetic audio-visual GRID corpus")(_synth_args)
def _synth_run(args: argparse.Namespace) -> int:
    from avsr.data.synth import generate

    voices = args.voices.split(",") if args.voices else None
    manifest = generate(
        args.out, args.num, args.split, args.seed, processes=args.processes, full_face=args.full_face,
        face_image=args.face_image, voices=voices, progress=not args.quiet,
    )
    print(f"{args.num} {args.split} utterances -> {manifest}")
    return 0


# ---------------------------------------------------------------------------
# avsr evaluate
# ---------------------------------------------------------------------------
def _evaluate_args(p: argparse.ArgumentParser) -> None:
    from avsr.pretrained import DEFAULT_MODEL

    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", metavar="NAME", default=None,
                        help=f"bundled pretrained model (default {DEFAULT_MODEL})")
    source.add_argument("--checkpoint", metavar="PATH", default=None, help="model bundle (.safetensors)")
    p.add_argument("--manifest", required=True, help="test manifest CSV (id, text, duration, audio, mouths)")
    p.add_argument("--modality", default="av,audio,video", help="comma-separated: av, audio, video (default all)")
    p.add_argument("--noise", default=None,
                   help="comma-separated synthesised noise types, test sources (default babble)")
    _noise_list_arg(p, "all")
    p.add_argument("--snr", default="clean,10,5,0,-5,-10",
                   help="comma-separated SNRs in dB and/or clean (default clean,10,5,0,-5,-10); "
                        "write --snr=-5,0 when the list starts with a minus sign")
    p.add_argument("--out", required=True, help="output folder: results.csv, results.md, wer_vs_snr.png")
    p.add_argument("--beam", type=int, default=None,
                   help="beam size (default: the bundle's, else 10; converted Auto-AVSR bundles: 40)")
    p.add_argument("--ctc-weight", type=float, default=None,
                   help="CTC weight of the joint score (default: the bundle's, else 0.3; Auto-AVSR: 0.1)")
    p.add_argument("--batch-size", type=int, default=16, help="utterances decoded together (default 16)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N utterances")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    _lm_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _noise_list_arg(p: argparse.ArgumentParser, default_kinds: str) -> None:
    """``--noise-list``, shared by evaluate and evaluate-enhance."""
    p.add_argument("--noise-list", metavar="CSV_OR_DIR", default=None,
                   help="held-out noise files instead of the synthesised test sources: the test.csv of "
                        "tools/prepare_noise.py (e.g. MUSAN's test files) or a folder with one subfolder per kind; "
                        f"--noise then names its kinds (default: {default_kinds})")


def _lm_args(p: argparse.ArgumentParser) -> None:
    """``--lm`` / ``--lm-weight``, shared by evaluate and transcribe."""
    from avsr.inference import DEFAULT_LM_WEIGHT

    p.add_argument("--lm", metavar="PATH", default=None,
                   help="token language model bundle for shallow fusion (trained with the model's tokenizer, "
                        "e.g. by recipes/SynthGRID/lm)")
    p.add_argument("--lm-weight", type=float, default=DEFAULT_LM_WEIGHT, metavar="W",
                   help=f"weight of the LM score (default {DEFAULT_LM_WEIGHT}; used with --lm)")


@_command("evaluate", "WER/CER of a model per noise type, SNR and modality")(_evaluate_args)
def _evaluate_run(args: argparse.Namespace) -> int:
    from avsr import evaluation as ev
    from avsr.checkpoints import load_lm, load_model, read_bundle_metadata
    from avsr.data.augment import parse_snrs
    from avsr.inference import bundle_decoding
    from avsr.pretrained import DEFAULT_MODEL, pretrained_path

    # everything is checked before the model is loaded and decoding starts
    modalities = ev.parse_modalities(args.modality)
    noises = ev.parse_noises(args.noise, args.noise_list)
    snrs = parse_snrs(args.snr)
    bundle = args.checkpoint if args.checkpoint else pretrained_path(args.model or DEFAULT_MODEL)
    defaults = bundle_decoding(read_bundle_metadata(bundle)["extra"])
    beam = args.beam if args.beam is not None else defaults.get("beam_size", 10)
    ctc_weight = args.ctc_weight if args.ctc_weight is not None else defaults.get("ctc_weight", 0.3)
    ev.check_search(beam, ctc_weight, args.batch_size, args.lm_weight)
    device = ev.check_device(args.device)
    ev.check_output_dir(args.out)
    utterances = ev.read_test_set(args.manifest, modalities, limit=args.limit)
    model, tokenizer = load_model(bundle, device=device)
    lm = load_lm(args.lm, device=device, tokenizer=tokenizer)[0] if args.lm else None
    rows = ev.evaluate(
        model, tokenizer, utterances, modalities=modalities, noises=noises, snrs=snrs, beam_size=beam,
        ctc_weight=ctc_weight, batch_size=args.batch_size, progress=not args.quiet,
        noise_list=args.noise_list, lm=lm, lm_weight=args.lm_weight,
    )
    source = ev.noise_source_name(args.noise_list)
    ev.write_results(rows, args.out, source)
    print(ev.results_markdown(rows, source), end="")
    return 0


# ---------------------------------------------------------------------------
# avsr transcribe
# ---------------------------------------------------------------------------
def _transcribe_args(p: argparse.ArgumentParser) -> None:
    from avsr.inference import MODALITY_CHOICES
    from avsr.pretrained import DEFAULT_MODEL
    from avsr.transcript import FORMATS

    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="media files (any container; audio-only too), folders of them, or quoted glob patterns")
    p.add_argument("-o", "--output", metavar="OUT", default=None,
                   help="output file (one input) or folder (a file per input); default: stdout only")
    p.add_argument("--format", default="txt", choices=FORMATS, help="output format (default txt)")
    p.add_argument("--modality", default="auto", choices=MODALITY_CHOICES,
                   help="auto (default: lips and audio where a face is seen, audio where not, lips where "
                        "there is no audio), or force av, audio or video")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", metavar="NAME", default=None,
                        help=f"bundled pretrained model (default {DEFAULT_MODEL})")
    source.add_argument("--checkpoint", metavar="PATH", default=None,
                        help="model bundle (.safetensors), or an Auto-AVSR .pth (with --tokenizer)")
    p.add_argument("--tokenizer", metavar="MODEL", default=None,
                   help="sentencepiece model of an Auto-AVSR .pth (their spm/unigram/unigram5000.model)")
    p.add_argument("--units", metavar="TXT", default=None,
                   help="units file of an Auto-AVSR .pth (default: X_units.txt beside X.model)")
    p.add_argument("--beam", type=int, default=None,
                   help="beam size (default: the bundle's, else 10; Auto-AVSR models: 40)")
    p.add_argument("--ctc-weight", type=float, default=None,
                   help="CTC weight of the joint score (default: the bundle's, else 0.3; Auto-AVSR: 0.1)")
    p.add_argument("--quantize", action="store_true",
                   help="int8 dynamic quantisation of the linear layers (CPU; faster, slightly different output)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    _lm_args(p)
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="transcribe N inputs at once in worker processes (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@_command("transcribe", "transcribe media files: text, subtitles or JSON with word times")(_transcribe_args)
def _transcribe_run(args: argparse.Namespace) -> int:
    from avsr.errors import InputError
    from avsr.inference import Transcriber, check_jobs, expand_inputs, output_paths
    from avsr.transcript import EXTENSIONS, format_result, write_result

    _log_to_stderr(args.command)
    check_jobs(args.jobs)
    items = expand_inputs(args.inputs)
    files = [i.path for i in items if i.error is None]
    targets = output_paths(files, args.output, EXTENSIONS[args.format])
    if targets is None and args.format in ("srt", "vtt") and len(items) > 1:
        raise InputError(None, f"--format {args.format} with several inputs needs -o FOLDER")
    if (args.tokenizer or args.units) and not args.checkpoint:
        raise InputError(None, "--tokenizer/--units go with --checkpoint CKPT.pth (an Auto-AVSR checkpoint)")
    settings = dict(device="cpu" if args.quantize and args.device == "auto" else args.device,
                    beam_size=args.beam, ctc_weight=args.ctc_weight, progress=not args.quiet, lm=args.lm,
                    lm_weight=args.lm_weight, quantize=args.quantize or None)
    if args.checkpoint:
        transcriber = Transcriber.from_checkpoint(args.checkpoint, tokenizer=args.tokenizer, units=args.units,
                                                  **settings)
    else:
        transcriber = Transcriber.from_pretrained(args.model, **settings)
    errors = [i.error for i in items if i.error is not None]
    for line in errors:
        print(f"avsr transcribe: error: {line}", file=sys.stderr)
    with transcriber:
        for path, result, error in transcriber.transcribe_many(files, modality=args.modality, jobs=args.jobs):
            try:
                if error is None and targets is not None:
                    write_result(result, targets[path], args.format)
            except AVSRError as e:
                error = str(e)
            if error is not None:
                errors.append(error)
                print(f"avsr transcribe: error: {error}", file=sys.stderr)
                continue
            if targets is None and args.format != "txt":  # JSON Lines, or the subtitles of the one input
                print(format_result(result, args.format, indent=None), end="", flush=True)
            else:
                print(result["text"], flush=True)
    if errors:
        print(f"avsr transcribe: {len(errors)} of {len(items)} inputs failed", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------
# avsr enhance
# ---------------------------------------------------------------------------
def _enhance_args(p: argparse.ArgumentParser) -> None:
    from avsr.enhancement import DEFAULT_ENHANCER, ENHANCE_MODALITIES

    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="media files (any container; audio-only too), folders of them, or quoted glob patterns")
    p.add_argument("-o", "--output", metavar="OUT", required=True,
                   help="output file (one input: .wav/.flac for audio, .mp4/.mkv/... for the video with the "
                        "enhanced sound) or folder (a file per input: videos keep their container, audio gets .wav)")
    p.add_argument("--modality", default="av", choices=ENHANCE_MODALITIES,
                   help="av (default: the lips where a face is seen, the audio alone elsewhere) or audio")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", metavar="NAME", default=None,
                        help=f"bundled enhancement model (default {DEFAULT_ENHANCER})")
    source.add_argument("--checkpoint", metavar="PATH", default=None, help="enhancement bundle (.safetensors)")
    p.add_argument("--chunk", type=float, default=10.0, metavar="SECONDS",
                   help="long inputs are enhanced in overlapping chunks of this length (default 10)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@_command("enhance", "enhance the speech of media files, steered by the speaker's lips")(_enhance_args)
def _enhance_run(args: argparse.Namespace) -> int:
    from avsr.enhancement import Enhancer, plan_outputs
    from avsr.inference import expand_inputs

    _log_to_stderr(args.command)
    items = expand_inputs(args.inputs)
    files = [i.path for i in items if i.error is None]
    targets = plan_outputs(files, args.output) if files else {}
    settings = dict(device=args.device, chunk_seconds=args.chunk, progress=not args.quiet)
    if args.checkpoint:
        enhancer = Enhancer.from_checkpoint(args.checkpoint, **settings)
    else:
        enhancer = Enhancer.from_pretrained(args.model, **settings)
    errors = [i.error for i in items if i.error is not None]
    for line in errors:
        print(f"avsr enhance: error: {line}", file=sys.stderr)
    with enhancer:
        for path, info, error in enhancer.enhance_many(files, targets, modality=args.modality):
            if error is not None:
                errors.append(error)
                print(f"avsr enhance: error: {error}", file=sys.stderr)
                continue
            print(f"{path} -> {info['output']} ({info['duration']:.2f} s, {info['modality']})", flush=True)
    if errors:
        print(f"avsr enhance: {len(errors)} of {len(items)} inputs failed", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------
# avsr evaluate-enhance
# ---------------------------------------------------------------------------
def _evaluate_enhance_args(p: argparse.ArgumentParser) -> None:
    from avsr.enhancement import DEFAULT_ENHANCER
    from avsr.pretrained import DEFAULT_MODEL

    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", metavar="NAME", default=None,
                        help=f"bundled enhancement model (default {DEFAULT_ENHANCER})")
    source.add_argument("--checkpoint", metavar="PATH", default=None, help="enhancement bundle (.safetensors)")
    p.add_argument("--manifest", required=True, help="test manifest CSV (id, text, duration, audio, mouths, speaker)")
    p.add_argument("--noise", default=None,
                   help="comma-separated test noise types and/or talker (a competing test talker); "
                        "default babble,music,talker")
    _noise_list_arg(p, "all, and talker")
    p.add_argument("--snr", default="clean,5,0,-5",
                   help="comma-separated SNRs in dB and/or clean (default clean,5,0,-5); "
                        "write --snr=-5,0 when the list starts with a minus sign")
    p.add_argument("--out", required=True,
                   help="output folder: enhance_results.csv/.md, wer.csv/.md, spectrograms.png")
    p.add_argument("--recogniser", metavar="NAME_OR_PATH", default=DEFAULT_MODEL,
                   help=f"recognition model for the WER table: a bundled name or a bundle path (default {DEFAULT_MODEL})")
    p.add_argument("--wer", default="babble:-5", metavar="NOISE:SNR",
                   help="condition transcribed by the recogniser, audio only (default babble:-5; none to skip)")
    p.add_argument("--no-pesq", action="store_true", help="skip PESQ (the slowest metric)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N utterances")
    p.add_argument("--beam", type=int, default=10, help="recogniser beam size (default 10)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@_command("evaluate-enhance", "SI-SDRi, PESQ and STOI of an enhancer per noise type and SNR (+ WER)")(
    _evaluate_enhance_args)
def _evaluate_enhance_run(args: argparse.Namespace) -> int:
    from avsr import enhancement_eval as ee
    from avsr.checkpoints import load_model
    from avsr.data.augment import parse_snrs
    from avsr.enhancement import Enhancer
    from avsr.evaluation import check_device, check_output_dir, read_test_set
    from avsr.pretrained import available, pretrained_path

    noises = ee.parse_enhance_noises(args.noise, args.noise_list)
    parse_snrs(args.snr)
    condition = ee.parse_condition(args.wer, args.noise_list)
    device = check_device(args.device)
    check_output_dir(args.out)
    utterances = read_test_set(args.manifest, ("av",), limit=args.limit)
    if args.checkpoint:
        enhancer = Enhancer.from_checkpoint(args.checkpoint, device=device)
    else:
        enhancer = Enhancer.from_pretrained(args.model, device=device)
    recogniser = None
    if condition is not None:
        bundle = pretrained_path(args.recogniser) if args.recogniser in available() else args.recogniser
        recogniser = load_model(bundle, device=device)
    example: dict = {}
    rows, wer_rows = ee.evaluate_enhancement(
        enhancer, utterances, noises=noises, snrs=args.snr, pesq=not args.no_pesq, recogniser=recogniser,
        wer_condition=condition, beam_size=args.beam, progress=not args.quiet, noise_list=args.noise_list,
        example=example,
    )
    ee.write_enhance_results(rows, wer_rows, example, args.out)
    print(ee.results_markdown(rows), end="")
    if wer_rows:
        print()
        print(ee.wer_markdown(wer_rows), end="")
    return 0


def _log_to_stderr(command: str) -> None:
    """Warnings of the library (``avsr.*`` loggers) as ``avsr COMMAND: warning: ...`` lines on stderr."""
    import logging

    class ToStderr(logging.StreamHandler):
        """Writes to whatever ``sys.stderr`` is at the time (it may be swapped, e.g. by tests)."""

        def emit(self, record: logging.LogRecord) -> None:
            self.stream = sys.stderr
            super().emit(record)

    log = logging.getLogger("avsr")
    for old in [h for h in log.handlers if getattr(h, "_avsr_cli", False)]:
        log.removeHandler(old)
    handler = ToStderr()
    handler.setFormatter(logging.Formatter(f"avsr {command}: warning: %(message)s"))
    handler.setLevel(logging.WARNING)
    handler._avsr_cli = True  # type: ignore[attr-defined]
    log.addHandler(handler)


# ---------------------------------------------------------------------------
# avsr convert
# ---------------------------------------------------------------------------
def _convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT", help="the published checkpoint (e.g. vsr_trlrs3vox2_base.pth)")
    p.add_argument("--from", dest="source", required=True, choices=("auto-avsr",),
                   help="the toolkit that published it")
    p.add_argument("--tokenizer", required=True, metavar="MODEL",
                   help="its sentencepiece model (Auto-AVSR: spm/unigram/unigram5000.model)")
    p.add_argument("--units", metavar="TXT", default=None,
                   help="its units file (default: X_units.txt beside X.model)")
    p.add_argument("-o", "--output", required=True, help="output model bundle (.safetensors)")


@_command("convert", "convert a published model (Auto-AVSR) into an avsr model bundle")(_convert_args)
def _convert_run(args: argparse.Namespace) -> int:
    from avsr.checkpoints import load_auto_avsr, save_model
    from avsr.errors import InputError
    from avsr.models.avsr import count_parameters
    from avsr.vision import check_output

    if not args.output.lower().endswith(".safetensors"):
        raise InputError(args.output, "the bundle must be a .safetensors file")
    check_output(args.output)
    model, tokenizer, extra = load_auto_avsr(args.checkpoint, args.tokenizer, args.units)
    save_model(args.output, model, tokenizer, extra=extra)
    print(f"{args.checkpoint}: Auto-AVSR {extra.get('modality', '?')} model, "
          f"{count_parameters(model) / 1e6:.1f} M parameters, {tokenizer.vocab_size} tokens -> {args.output}")
    return 0


# ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``avsr`` parser with one subparser per registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="avsr", description="Audio-visual speech recognition and enhancement."
    )
    parser.add_argument("--version", action="version", version=f"avsr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, add_args, run) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add_args(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``avsr`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    0 on success, 1 on bad input or an internal error (one line on stderr),
    2 without a subcommand, 130 on Ctrl-C.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    # last resort included: still one line, never a traceback
    return run_reporting(f"avsr {args.command}", lambda: args._run(args), internal_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
