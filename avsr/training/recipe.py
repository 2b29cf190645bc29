"""The recipe runners: every ``recipes/*/avsr/train.py`` calls :func:`run_asr`, every
``recipes/*/enhance/train.py`` :func:`run_enhance` (both through :func:`main`).

Two recipes that differ only in data share all of this; only their
``hparams/*.yaml`` and ``prepare.py`` differ. The hparams file
(HyperPyYAML: flat scalars, ``!new:`` for top-level objects only) names the
manifests, the tokenizer, the model preset and its overrides, the noise and
the optimisation settings; see ``recipes/SynthGRID/avsr/hparams/tiny.yaml``.

Usage (SpeechBrain's command line: any hparam can be overridden, e.g.
``--batch_seconds 60``; ``--device cuda:0``, ``--precision bf16``,
``--debug`` for a few-batch smoke run)::

    python train.py hparams/tiny.yaml --data_folder exp/synthgrid
    torchrun --nproc_per_node 2 train.py hparams/tiny.yaml   # DDP (gloo on CPU, NCCL on GPU)

The run ends by averaging the ``keep_best`` checkpoints with the lowest
validation WER into ``<output_folder>/model.safetensors`` (a bundle that
``avsr evaluate --checkpoint`` and ``avsr.checkpoints.load_model`` read).
Killed runs resume from their last (intra-epoch) checkpoint when the same
command is run again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml

from avsr.checkpoints import save_model
from avsr.data.augment import InterferenceMixer, NoiseMixer, UtteranceJoiner, noise_source
from avsr.data.dataset import duration_batches, make_dataset
from avsr.data.manifest import read_manifest
from avsr.errors import AVSRError, InputError
from avsr.models.avsr import BASE, TINY, AVSRModel, build_model
from avsr.models.enhancer import BASE_ENHANCER, TINY_ENHANCER, EnhancerModel, build_enhancer
from avsr.tokenizer import Tokenizer
from avsr.training.asr import AVSRBrain, trace_file

__all__ = ["PRESETS", "ENHANCER_PRESETS", "load_tokenizer", "save_tokenizer", "build_recipe_model", "init_from_bundle",
           "build_recipe_enhancer", "init_video_from_recogniser", "run_asr", "run_enhance", "main"]

logger = logging.getLogger(__name__)


def _quiet_optional_torchvision(record: logging.LogRecord) -> bool:
    """Drop SpeechBrain's import-time 'torchvision is not available' warning (no figures are saved here)."""
    return "torchvision is not available" not in record.getMessage()


# Emitted when the hparams load speechbrain.utils.train_logger, before logging is set up, so it
# would land on stderr next to the one line an error must be.
logging.getLogger("speechbrain.utils.train_logger").addFilter(_quiet_optional_torchvision)

PRESETS: dict[str, dict[str, Any]] = {"tiny": TINY, "base": BASE}


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Read a tokenizer saved with :func:`save_tokenizer` (JSON, nothing executed)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such tokenizer file (run the recipe's prepare.py first)")
    try:
        return Tokenizer.from_dict(json.loads(p.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(p, f"not a tokenizer file ({e})") from None


def save_tokenizer(path: str | os.PathLike, tokenizer: Tokenizer) -> None:
    """Write a tokenizer as JSON, atomically."""
    from avsr.utils import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(tokenizer.to_dict()), encoding="utf-8")


def build_recipe_model(hparams: dict[str, Any], tokenizer: Tokenizer) -> AVSRModel:
    """The model of an hparams file: ``model_preset`` + ``model`` overrides + the tokenizer's vocabulary."""
    preset = hparams.get("model_preset", "tiny")
    if preset not in PRESETS:
        raise InputError(None, f"unknown model_preset {preset!r} (choose from {', '.join(PRESETS)})")
    overrides = dict(hparams.get("model") or {})
    try:
        return build_model({**PRESETS[preset], **overrides, "vocab_size": tokenizer.vocab_size})
    except (TypeError, ValueError) as e:
        raise InputError(None, f"bad model settings: {e}") from None


def init_from_bundle(model: AVSRModel, path: str | os.PathLike, tokenizer: Tokenizer) -> None:
    """Start training from the weights of a model bundle (e.g. a shipped model, to train it further).

    Args:
        model: the freshly built recipe model.
        path: a bundle (``.safetensors``) with the same architecture and tokenizer.
        tokenizer: the recipe's tokenizer (must equal the bundle's).

    Raises:
        InputError: a missing or damaged bundle, another tokenizer, or weights that do not fit.
    """
    from avsr.checkpoints import load_bundle

    _, state, bundle_tokenizer = load_bundle(path)
    if bundle_tokenizer != tokenizer:
        raise InputError(path, "init_from bundle has another tokenizer than the recipe's")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise InputError(path, f"init_from weights do not fit the recipe's model: {first}") from None


def _mixer(hparams: dict[str, Any], key: str, seed: int, sources: dict[str, Any]) -> NoiseMixer | None:
    """The noise mixer of ``key`` (``train_noise`` / ``valid_noise``); mixers of one spec share one source."""
    spec = hparams.get(key)
    if not spec:
        return None
    if str(spec) not in sources:  # the synthesised bank takes seconds to build: once per spec
        sources[str(spec)] = noise_source(
            str(spec), "train", seed=int(hparams.get("noise_bank_seed", 0)),
            seconds=float(hparams.get("noise_bank_seconds", 30.0)), variants=int(hparams.get("noise_bank_variants", 2)),
        )
    kinds = hparams.get("noise_kinds") or None
    snrs = hparams.get(f"{key}_snrs", hparams.get("train_noise_snrs", ["clean"]))
    return NoiseMixer(sources[str(spec)], snrs, seed=seed, kinds=kinds)


def _joiner(hparams: dict[str, Any], seed: int) -> UtteranceJoiner | None:
    """The training batch joiner (``join_prob``, ``join_max``, ``join_pause``), or ``None`` when off."""
    prob = float(hparams.get("join_prob", 0.0) or 0.0)
    if prob == 0.0:
        return None
    return UtteranceJoiner(prob, int(hparams.get("join_max", 3)), hparams.get("join_pause", (0.2, 1.0)), seed=seed)


def _run_opts_defaults(run_opts: Any, argv: Sequence[str]) -> Any:
    """DDP backend gloo on CPU unless one was chosen; a clear error for CUDA without a GPU.

    Returns:
        the run options (SpeechBrain's ``RunOptions`` is a frozen dataclass: a changed copy).
    """
    device = str(run_opts.get("device") or ("cuda:0" if torch.cuda.is_available() else "cpu"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(None, "--device cuda was asked for but no CUDA device is available")
    chosen = any(a.startswith("--distributed_backend") for a in argv)
    if "RANK" in os.environ and not chosen and device.startswith("cpu"):
        if isinstance(run_opts, dict):
            run_opts["distributed_backend"] = "gloo"
        else:
            overridden = set(getattr(run_opts, "overridden_args", ())) | {"distributed_backend"}  # so Brain uses it
            run_opts = dataclasses.replace(run_opts, distributed_backend="gloo", overridden_args=overridden)
    return run_opts


def _load_hparams(path: str, overrides: str) -> dict[str, Any]:
    """HyperPyYAML with the overrides; a bad key or bad YAML is an :class:`InputError`."""
    from ruamel.yaml import YAMLError

    try:
        with open(path, encoding="utf-8") as f:
            return load_hyperpyyaml(f, overrides)
    except KeyError as e:  # an override of a key the file lacks, or a !ref to one
        message = str(e.args[0]) if e.args else str(e)
        raise InputError(path, message.split(" in: ")[0]) from None
    except YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).strip().splitlines()[0]
        raise InputError(path, f"cannot parse the hparams or an override: {problem}") from None


def _positive(hparams: dict[str, Any], key: str, cast: type = float) -> float:
    """``hparams[key]`` as a positive number, or an :class:`InputError` naming the key."""
    value = hparams.get(key)
    try:
        number = cast(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not (0 < number < math.inf):
        raise InputError(None, f"{key} must be a positive number, got {value!r}")
    return number


def _setup(argv: Sequence[str]) -> tuple[Any, dict[str, Any]]:
    """Parse the command line, join the DDP group, load and check the hparams, make the output folder.

    Returns:
        ``(run_opts, hparams)``.
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(list(argv))
    run_opts = _run_opts_defaults(run_opts, argv)
    if not Path(hparams_file).is_file():
        raise InputError(hparams_file, "no such hparams file")
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams = _load_hparams(hparams_file, overrides)
    for key, cast in (("batch_seconds", float), ("valid_batch_seconds", float), ("number_of_epochs", int)):
        _positive(hparams, key, cast)
    torch.manual_seed(int(hparams["seed"]))
    if hparams.get("num_threads"):
        torch.set_num_threads(int(hparams["num_threads"]))
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"], hyperparams_to_save=hparams_file, overrides=overrides
    )
    return run_opts, hparams


def _samplers(hparams: dict[str, Any], train: Any, valid: Any) -> tuple[Any, Any]:
    """Duration batches of both sets; sets the schedule's length (``lr_total_steps``) from them."""
    sampler = duration_batches(train, float(hparams["batch_seconds"]), seed=int(hparams["seed"]))
    valid_sampler = duration_batches(valid, float(hparams["valid_batch_seconds"]), shuffle=False)
    world = int(os.environ.get("WORLD_SIZE", 1))
    accum = int(hparams.get("grad_accumulation_factor", 1))
    steps_per_epoch = math.ceil(len(sampler) / world / accum)
    annealing = hparams.get("lr_annealing")
    hparams["lr_total_steps"] = steps_per_epoch * int(hparams["number_of_epochs"])
    if annealing is not None and hasattr(annealing, "num_training_steps"):
        annealing.num_training_steps = hparams["lr_total_steps"]
    return sampler, valid_sampler


def _fit_and_export(brain_class: type, model: torch.nn.Module, hparams: dict[str, Any], run_opts: Any,
                    train: Any, valid: Any, samplers: tuple[Any, Any], tokenizer: Tokenizer | None) -> Path:
    """Register the recoverables, fit, average the best checkpoints and write the bundle (main process)."""
    checkpointer = hparams["checkpointer"]
    checkpointer.add_recoverable("model", model)
    checkpointer.add_recoverable("counter", hparams["epoch_counter"])
    annealing = hparams.get("lr_annealing")
    if annealing is not None:
        checkpointer.add_recoverable("lr_annealing", annealing)
    brain = brain_class(
        modules={"model": model}, opt_class=hparams["opt_class"], hparams=hparams,
        run_opts=run_opts, checkpointer=checkpointer,
    )
    loader_opts = {"num_workers": int(hparams.get("num_workers", 0))}
    brain.fit(
        brain.hparams.epoch_counter,
        train,
        valid,
        train_loader_kwargs={"batch_sampler": samplers[0], **loader_opts},
        valid_loader_kwargs={"batch_sampler": samplers[1], **loader_opts},
    )
    if hparams.get("trace_folder"):  # opt-in (tests): each rank's final weights, before averaging
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in brain.model.state_dict().items()}
        save_file(state, os.fspath(trace_file(hparams["trace_folder"], "weights", ".safetensors")))
    bundle = Path(hparams["bundle"])
    if sb.utils.distributed.if_main_process():
        averaged = brain.average_best()
        logger.info("averaged %d checkpoints: %s", len(averaged), ", ".join(averaged))
        save_model(bundle, brain.model.cpu(), tokenizer)
        logger.info("model bundle: %s", bundle)
    return bundle


def run_asr(argv: Sequence[str]) -> Path:
    """Train a recognition recipe end to end (prepare must have run).

    Args:
        argv: ``hparams.yaml`` followed by SpeechBrain options and hparam overrides.

    Returns:
        the averaged model bundle's path.
    """
    run_opts, hparams = _setup(argv)
    rank = int(os.environ.get("RANK", 0))
    tokenizer = load_tokenizer(hparams["tokenizer_file"])
    model = build_recipe_model(hparams, tokenizer)
    if hparams.get("init_from"):  # a resumed run's checkpoint, when there is one, takes precedence
        init_from_bundle(model, hparams["init_from"], tokenizer)
    use_audio = bool(hparams.get("use_audio", True))
    use_video = bool(hparams.get("use_video", True))
    train = make_dataset(
        read_manifest(hparams["train_manifest"], need_audio=use_audio, need_mouths=use_video),
        tokenizer, audio=use_audio, video=use_video,
    )
    valid = make_dataset(
        read_manifest(hparams["valid_manifest"], need_audio=use_audio, need_mouths=use_video),
        tokenizer, audio=use_audio, video=use_video,
    )
    samplers = _samplers(hparams, train, valid)
    hparams["tokenizer"] = tokenizer
    sources: dict[str, Any] = {}
    hparams["train_noise"] = _mixer(hparams, "train_noise", int(hparams["seed"]) + 1000 * rank, sources)
    hparams["valid_noise"] = _mixer(hparams, "valid_noise", int(hparams.get("valid_noise_seed", 1234)), sources)
    hparams["train_join"] = _joiner(hparams, int(hparams["seed"]) + 2000 + 1000 * rank)
    return _fit_and_export(AVSRBrain, model, hparams, run_opts, train, valid, samplers, tokenizer)


# ---------------------------------------------------------------------------- enhancement

ENHANCER_PRESETS: dict[str, dict[str, Any]] = {"tiny": TINY_ENHANCER, "base": BASE_ENHANCER}


def build_recipe_enhancer(hparams: dict[str, Any]) -> EnhancerModel:
    """The enhancer of an hparams file: ``model_preset`` + ``model`` overrides."""
    preset = hparams.get("model_preset", "tiny")
    if preset not in ENHANCER_PRESETS:
        raise InputError(None, f"unknown model_preset {preset!r} (choose from {', '.join(ENHANCER_PRESETS)})")
    try:
        return build_enhancer({**ENHANCER_PRESETS[preset], **dict(hparams.get("model") or {})})
    except (TypeError, ValueError) as e:
        raise InputError(None, f"bad model settings: {e}") from None


def init_video_from_recogniser(model: EnhancerModel, path: str | os.PathLike) -> None:
    """Copy the lip features of a recognition bundle into the enhancer's video frontend.

    Args:
        model: the enhancer (its video frontend must have the recogniser's architecture).
        path: a recognition bundle, e.g. ``avsr/pretrained/synthgrid-avsr-tiny.safetensors``.

    Raises:
        InputError: a bad bundle, or a video frontend of another shape.
    """
    from avsr.checkpoints import load_model

    recogniser, _ = load_model(path)
    try:
        model.video.load_state_dict(recogniser.encoder.video_frontend.state_dict(), strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise InputError(path, f"its video frontend does not fit the enhancer's (set the model's video_* "
                               f"settings to the recogniser's): {first}") from None


def _interference(hparams: dict[str, Any], key: str, talkers: Sequence[Any], seed: int,
                  sources: dict[str, Any]) -> InterferenceMixer | None:
    """The mixer of ``key`` (``train_noise`` / ``valid_noise``): noise of the spec (train sources) and talkers.

    Validation mixes every utterance (``valid_clean_prob``, default 0): the
    mean SI-SDR improvement that selects checkpoints is about mixtures.
    """
    spec = hparams.get(key)
    if not spec:
        return None
    if str(spec) not in sources:
        sources[str(spec)] = noise_source(
            str(spec), "train", seed=int(hparams.get("noise_bank_seed", 0)),
            seconds=float(hparams.get("noise_bank_seconds", 30.0)), variants=int(hparams.get("noise_bank_variants", 2)),
        )
    return InterferenceMixer(
        sources[str(spec)], talkers, hparams.get("snr_range", (-10.0, 10.0)),
        clean_prob=float(hparams.get("clean_prob", 0.1) if key == "train_noise" else hparams.get("valid_clean_prob", 0.0)),
        talker_prob=float(hparams.get("talker_prob", 0.4)),
        seed=seed, kinds=hparams.get("noise_kinds") or None,
    )


def run_enhance(argv: Sequence[str]) -> Path:
    """Train an enhancement recipe end to end (the recognition recipe's prepare must have run).

    Args:
        argv: ``hparams.yaml`` followed by SpeechBrain options and hparam overrides.

    Returns:
        the averaged model bundle's path.
    """
    from avsr.training.enhance import EnhanceBrain

    run_opts, hparams = _setup(argv)
    rank = int(os.environ.get("RANK", 0))
    model = build_recipe_enhancer(hparams)
    if hparams.get("init_from"):  # a resumed run's checkpoint, when there is one, takes precedence
        from avsr.checkpoints import load_enhancer

        try:
            model.load_state_dict(load_enhancer(hparams["init_from"]).state_dict())
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise InputError(hparams["init_from"], f"init_from weights do not fit the recipe's model: {first}") from None
    elif hparams.get("video_init_from"):
        init_video_from_recogniser(model, hparams["video_init_from"])
    train_utts = read_manifest(hparams["train_manifest"], need_audio=True, need_mouths=True)
    valid_utts = read_manifest(hparams["valid_manifest"], need_audio=True, need_mouths=True)
    train = make_dataset(train_utts, None)
    valid = make_dataset(valid_utts, None)
    samplers = _samplers(hparams, train, valid)
    hparams["speakers"] = {u.id: u.extra.get("speaker") or u.id for u in train_utts + valid_utts}
    sources: dict[str, Any] = {}
    hparams["train_noise"] = _interference(hparams, "train_noise", train_utts, int(hparams["seed"]) + 1000 * rank,
                                           sources)
    hparams["valid_noise"] = _interference(hparams, "valid_noise", valid_utts,
                                           int(hparams.get("valid_noise_seed", 1234)), sources)
    return _fit_and_export(EnhanceBrain, model, hparams, run_opts, train, valid, samplers, None)


def main(argv: Sequence[str] | None = None, run: Callable[[Sequence[str]], Path] = run_asr) -> int:
    """Command-line entry of the recipes' ``train.py``: one error line, exit 1, for user errors.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).
        run: the runner (:func:`run_asr`, :func:`run_enhance`).

    Returns:
        the exit code.
    """
    try:
        run(sys.argv[1:] if argv is None else argv)
    except AVSRError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("train.py: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130
    return 0
