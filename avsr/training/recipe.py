"""The recipe runners: every ``recipes/*/avsr/train.py`` calls :func:`run_asr`, every
``recipes/*/pretrain/train.py`` :func:`run_pretrain`, every ``recipes/*/enhance/train.py``
:func:`run_enhance`; they share the start, the fit and the export.

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

``train_fraction`` (e.g. 0.1) trains on a fixed subset of the training
manifest (:func:`avsr.data.manifest.subset_utterances`: the same utterances
for every run with the same ``train_subset_seed``), for experiments with
few labels. ``init_from`` starts from a recognition bundle or from the
encoder of a pretrained bundle (:func:`init_from_bundle`).

Pretraining (:func:`run_pretrain`, ``recipes/SynthGRID/pretrain``) trains
the encoder on cluster targets without transcripts and writes a
pretrained encoder bundle, chosen and averaged by the validation
masked-prediction loss.

Enhancement (:func:`run_enhance`, ``recipes/SynthGRID/enhance``) trains an
audio-visual enhancer on mixtures made on the fly (noise or a competing
talker, :class:`avsr.data.augment.InterferenceMixer`) of the recognition
recipe's clean utterances (no transcripts needed) and writes an
enhancement bundle, chosen and averaged by the largest validation SI-SDR
improvement.
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
from avsr.data.augment import InterferenceMixer, NoiseMixer, NoiseSource, UtteranceJoiner, noise_source
from avsr.data.dataset import duration_batches, make_dataset
from avsr.data.manifest import read_manifest, subset_utterances
from avsr.errors import InputError, run_reporting
from avsr.models.avsr import BASE, TINY, AVSRModel, build_model
from avsr.models.enhancer import BASE_ENHANCER, TINY_ENHANCER, EnhancerModel, build_enhancer
from avsr.models.pretrain import PretrainModel, build_pretrain_model
from avsr.tokenizer import Tokenizer
from avsr.training.asr import AVSRBrain
from avsr.training.brain import RecipeBrain, trace_file
from avsr.training.enhance import EnhanceBrain
from avsr.training.pretrain import PretrainBrain

__all__ = ["PRESETS", "ENHANCER_PRESETS", "load_tokenizer", "save_tokenizer", "build_recipe_model",
           "build_pretrain_recipe_model", "build_recipe_enhancer", "init_from_bundle", "init_encoder_from",
           "init_video_from_recogniser", "run_asr", "run_pretrain", "run_enhance", "main"]

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


def _model_settings(hparams: dict[str, Any], presets: dict[str, dict[str, Any]] = PRESETS) -> dict[str, Any]:
    """Model settings of an hparams file: the ``model_preset`` of ``presets`` with the ``model`` overrides.

    ``presets`` is :data:`PRESETS` (``AVSRConfig`` settings) or :data:`ENHANCER_PRESETS`.
    """
    preset = hparams.get("model_preset", "tiny")
    if preset not in presets:
        raise InputError(None, f"unknown model_preset {preset!r} (choose from {', '.join(presets)})")
    return {**presets[preset], **dict(hparams.get("model") or {})}


def build_recipe_model(hparams: dict[str, Any], tokenizer: Tokenizer) -> AVSRModel:
    """The model of an hparams file: ``model_preset`` + ``model`` overrides + the tokenizer's vocabulary."""
    try:
        return build_model({**_model_settings(hparams), "vocab_size": tokenizer.vocab_size})
    except (TypeError, ValueError) as e:
        raise InputError(None, f"bad model settings: {e}") from None


def init_encoder_from(encoder: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load the encoder weights of a bundle (recognition model or pretrained encoder) into ``encoder``.

    Args:
        encoder: an :class:`~avsr.models.encoder.AVEncoder`.
        path: a recognition bundle or a pretrained encoder bundle
            (:func:`avsr.checkpoints.save_pretrain_model`) whose encoder has
            the same architecture.

    Raises:
        InputError: a missing or damaged bundle, or an encoder that does not fit.
    """
    from avsr.checkpoints import load_bundle

    _, state, _ = load_bundle(path)
    _load_encoder(encoder, state, path)


def _load_encoder(encoder: torch.nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    prefix = "encoder."
    part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not part:
        raise InputError(path, "init_from bundle has no encoder weights")
    try:
        encoder.load_state_dict(part, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise InputError(path, f"init_from encoder does not fit the recipe's model: {first}") from None


def init_from_bundle(model: AVSRModel, path: str | os.PathLike, tokenizer: Tokenizer) -> None:
    """Start training from the weights of a bundle.

    A recognition bundle (e.g. a shipped model, to train it further) gives
    every weight; a pretrained encoder bundle (the pretraining recipe's
    output) gives the encoder's, and the CTC head and decoder start fresh.

    Args:
        model: the freshly built recipe model.
        path: a recognition bundle (``.safetensors``) with the same architecture
            and tokenizer, or a pretrained encoder bundle with the same encoder.
        tokenizer: the recipe's tokenizer (must equal a recognition bundle's).

    Raises:
        InputError: a missing or damaged bundle, another tokenizer, or weights that do not fit.
    """
    from avsr.checkpoints import PRETRAIN_KIND, load_bundle

    config, state, bundle_tokenizer = load_bundle(path)
    if config.get("kind") == PRETRAIN_KIND:
        _load_encoder(model.encoder, state, path)
        logger.info("encoder initialised from the pretrained bundle %s", path)
        return
    if bundle_tokenizer != tokenizer:
        raise InputError(path, "init_from bundle has another tokenizer than the recipe's")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise InputError(path, f"init_from weights do not fit the recipe's model: {first}") from None


def _noise_source(hparams: dict[str, Any], key: str, sources: dict[str, Any]) -> NoiseSource | None:
    """The training noise source of the spec ``hparams[key]`` (``None`` when unset); one per spec in ``sources``."""
    spec = hparams.get(key)
    if not spec:
        return None
    if str(spec) not in sources:  # the synthesised bank takes seconds to build: once per spec
        sources[str(spec)] = noise_source(
            str(spec), "train", seed=int(hparams.get("noise_bank_seed", 0)),
            seconds=float(hparams.get("noise_bank_seconds", 30.0)), variants=int(hparams.get("noise_bank_variants", 2)),
        )
    return sources[str(spec)]


def _mixer(hparams: dict[str, Any], key: str, seed: int, sources: dict[str, Any]) -> NoiseMixer | None:
    """The noise mixer of ``key`` (``train_noise`` / ``valid_noise``); mixers of one spec share one source."""
    source = _noise_source(hparams, key, sources)
    if source is None:
        return None
    kinds = hparams.get("noise_kinds") or None
    snrs = hparams.get(f"{key}_snrs", hparams.get("train_noise_snrs", ["clean"]))
    return NoiseMixer(source, snrs, seed=seed, kinds=kinds)


def _joiner(hparams: dict[str, Any], seed: int) -> UtteranceJoiner | None:
    """The training batch joiner (``join_prob``, ``join_max``, ``join_pause``, ``join_edge_prob``,
    ``join_edge_pause``), or ``None`` when off."""
    prob = float(hparams.get("join_prob", 0.0) or 0.0)
    edge_prob = float(hparams.get("join_edge_prob", 0.0) or 0.0)
    if prob == 0.0 and edge_prob == 0.0:
        return None
    return UtteranceJoiner(prob, int(hparams.get("join_max", 3)), hparams.get("join_pause", (0.2, 1.0)), seed=seed,
                           edge_prob=edge_prob, edge_pause=hparams.get("join_edge_pause", (0.2, 1.0)))


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


def _start(argv: Sequence[str]) -> tuple[dict[str, Any], Any]:
    """Parse the command line, join the DDP group, load and check the hparams, make the output folder.

    Args:
        argv: ``hparams.yaml`` followed by SpeechBrain options and hparam overrides.

    Returns:
        ``(hparams, run_opts)``.
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
    return hparams, run_opts


def _manifest(hparams: dict[str, Any], key: str, need_text: bool = True) -> list:
    """The utterances of the manifest ``hparams[key]``, with the files of the modalities used."""
    return read_manifest(hparams[key], need_audio=bool(hparams.get("use_audio", True)),
                         need_mouths=bool(hparams.get("use_video", True)), need_text=need_text)


def _train_utterances(hparams: dict[str, Any], need_text: bool = True) -> list:
    """The training manifest's utterances, or the fixed ``train_fraction`` of them (``train_subset_seed``)."""
    utterances = _manifest(hparams, "train_manifest", need_text)
    fraction = float(hparams.get("train_fraction", 1.0) or 1.0)
    if fraction != 1.0:
        utterances = subset_utterances(utterances, fraction, seed=int(hparams.get("train_subset_seed", 0)))
        logger.info("training on %d utterances (train_fraction %g)", len(utterances), fraction)
    return utterances


def _dataset_kwargs(hparams: dict[str, Any]) -> dict[str, bool]:
    return {"audio": bool(hparams.get("use_audio", True)), "video": bool(hparams.get("use_video", True))}


def _fit(brain_class: type[RecipeBrain], model: torch.nn.Module, hparams: dict[str, Any], run_opts: Any,
         train: Any, valid: Any, mixer: Callable[[dict[str, Any], str, int, dict[str, Any]], Any] = _mixer,
         ) -> RecipeBrain:
    """Batch by duration, size the schedule, make the mixers, register the recoverables, train; trace each rank's weights.

    Args:
        brain_class: the recipe's Brain.
        model: the model to train (registered as the ``model`` recoverable).
        hparams: the loaded hparams (the runner's objects added: noise, joiner, tokenizer ...).
        run_opts: SpeechBrain's run options.
        train: training dataset.
        valid: validation dataset.
        mixer: makes ``hparams["train_noise"]`` / ``hparams["valid_noise"]`` from
            ``(hparams, key, seed, sources)`` (default :func:`_mixer`, the noise mixer).

    Returns:
        the Brain after ``fit``.
    """
    sampler = duration_batches(train, float(hparams["batch_seconds"]), seed=int(hparams["seed"]))
    valid_sampler = duration_batches(valid, float(hparams["valid_batch_seconds"]), shuffle=False)
    world = int(os.environ.get("WORLD_SIZE", 1))
    accum = int(hparams.get("grad_accumulation_factor", 1))
    steps_per_epoch = math.ceil(len(sampler) / world / accum)
    annealing = hparams.get("lr_annealing")
    hparams["lr_total_steps"] = steps_per_epoch * int(hparams["number_of_epochs"])
    if annealing is not None and hasattr(annealing, "num_training_steps"):
        annealing.num_training_steps = hparams["lr_total_steps"]

    rank = int(os.environ.get("RANK", 0))
    sources: dict[str, Any] = {}
    hparams["train_noise"] = mixer(hparams, "train_noise", int(hparams["seed"]) + 1000 * rank, sources)
    hparams["valid_noise"] = mixer(hparams, "valid_noise", int(hparams.get("valid_noise_seed", 1234)), sources)
    checkpointer = hparams["checkpointer"]
    checkpointer.add_recoverable("model", model)
    checkpointer.add_recoverable("counter", hparams["epoch_counter"])
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
        train_loader_kwargs={"batch_sampler": sampler, **loader_opts},
        valid_loader_kwargs={"batch_sampler": valid_sampler, **loader_opts},
    )
    if hparams.get("trace_folder"):  # opt-in (tests): each rank's final weights, before averaging
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in brain.model.state_dict().items()}
        save_file(state, os.fspath(trace_file(hparams["trace_folder"], "weights", ".safetensors")))
    return brain


def _export(brain: RecipeBrain, hparams: dict[str, Any], save: Any) -> Path:
    """Average the best checkpoints into the model and write the bundle (main process only)."""
    bundle = Path(hparams["bundle"])
    if sb.utils.distributed.if_main_process():
        averaged = brain.average_best()
        logger.info("averaged %d checkpoints: %s", len(averaged), ", ".join(averaged))
        save(bundle, brain.model.cpu())
        logger.info("model bundle: %s", bundle)
    return bundle


def run_asr(argv: Sequence[str]) -> Path:
    """Train a recognition recipe end to end (prepare must have run).

    Args:
        argv: ``hparams.yaml`` followed by SpeechBrain options and hparam overrides.

    Returns:
        the averaged model bundle's path.
    """
    hparams, run_opts = _start(argv)
    tokenizer = load_tokenizer(hparams["tokenizer_file"])
    model = build_recipe_model(hparams, tokenizer)
    if hparams.get("init_from"):  # a resumed run's checkpoint, when there is one, takes precedence
        init_from_bundle(model, hparams["init_from"], tokenizer)
    train = make_dataset(_train_utterances(hparams), tokenizer, **_dataset_kwargs(hparams))
    valid = make_dataset(_manifest(hparams, "valid_manifest"), tokenizer, **_dataset_kwargs(hparams))
    hparams["tokenizer"] = tokenizer
    rank = int(os.environ.get("RANK", 0))
    hparams["train_join"] = _joiner(hparams, int(hparams["seed"]) + 2000 + 1000 * rank)
    brain = _fit(AVSRBrain, model, hparams, run_opts, train, valid)
    return _export(brain, hparams, lambda path, m: save_model(path, m, tokenizer))


def build_pretrain_recipe_model(hparams: dict[str, Any], n_clusters: int) -> PretrainModel:
    """The pretraining model of an hparams file: ``model_preset`` + ``model`` overrides, ``K`` cluster outputs.

    The encoder is the one :func:`build_recipe_model` builds from the same
    preset and overrides, so its weights fit the recognition recipe's model.
    """
    # vocab_size only sizes the recognition heads, which the pretraining model has not
    encoder = {**_model_settings(hparams), "vocab_size": 2}
    try:
        return build_pretrain_model({"encoder": encoder, "n_clusters": n_clusters,
                                     "proj_dim": int(hparams.get("proj_dim", 256)),
                                     "logit_temp": float(hparams.get("logit_temp", 0.1))})
    except (TypeError, ValueError) as e:
        raise InputError(None, f"bad model settings: {e}") from None


def run_pretrain(argv: Sequence[str]) -> Path:
    """Masked multimodal pretraining on cluster targets (no transcripts), end to end.

    The hparams name ``targets_file`` (made by the recipe's cluster-target
    step, holding the training and validation utterances' targets); the run
    ends with the pretrained encoder bundle ``bundle`` that the recognition
    recipe's ``--init_from`` takes.

    Args:
        argv: ``hparams.yaml`` followed by SpeechBrain options and hparam overrides.

    Returns:
        the averaged pretrained bundle's path.
    """
    from avsr.checkpoints import save_pretrain_model
    from avsr.training.clusters import load_targets

    hparams, run_opts = _start(argv)
    targets = load_targets(hparams["targets_file"])
    model = build_pretrain_recipe_model(hparams, targets.n_clusters)
    if hparams.get("init_from"):  # e.g. iteration 2 from iteration 1: the encoder only
        init_encoder_from(model.encoder, hparams["init_from"])
    datasets = []
    for key in ("train_manifest", "valid_manifest"):
        utterances = _train_utterances(hparams, False) if key == "train_manifest" else _manifest(hparams, key, False)
        try:
            datasets.append(make_dataset(utterances, None, targets=targets.targets, **_dataset_kwargs(hparams)))
        except InputError as e:
            raise InputError(hparams[key], f"{e.problem} in {hparams['targets_file']}") from None
    brain = _fit(PretrainBrain, model, hparams, run_opts, *datasets)
    return _export(brain, hparams, lambda path, m: save_pretrain_model(
        path, m, extra={"targets": targets.source, "n_clusters": targets.n_clusters}))


# ---------------------------------------------------------------------------- enhancement

ENHANCER_PRESETS: dict[str, dict[str, Any]] = {"tiny": TINY_ENHANCER, "base": BASE_ENHANCER}


def build_recipe_enhancer(hparams: dict[str, Any]) -> EnhancerModel:
    """The enhancer of an hparams file: ``model_preset`` + ``model`` overrides."""
    settings = _model_settings(hparams, ENHANCER_PRESETS)
    try:
        return build_enhancer(settings)
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
    source = _noise_source(hparams, key, sources)
    if source is None:
        return None
    return InterferenceMixer(
        source, talkers, hparams.get("snr_range", (-10.0, 10.0)),
        clean_prob=float(hparams.get("clean_prob", 0.1) if key == "train_noise" else hparams.get("valid_clean_prob", 0.0)),
        talker_prob=float(hparams.get("talker_prob", 0.4)),
        seed=seed, kinds=hparams.get("noise_kinds") or None,
    )


def run_enhance(argv: Sequence[str]) -> Path:
    """Train an enhancement recipe end to end (the recognition recipe's prepare must have run).

    The manifests need no transcripts; ``train_fraction`` works as in
    :func:`run_asr`. ``init_from`` starts from an enhancement bundle,
    otherwise ``video_init_from`` copies a recogniser's lip frontend.

    Args:
        argv: ``hparams.yaml`` followed by SpeechBrain options and hparam overrides.

    Returns:
        the averaged model bundle's path.
    """
    from avsr.checkpoints import load_enhancer

    hparams, run_opts = _start(argv)
    if not bool(hparams.get("use_audio", True)):
        raise InputError(None, "enhancement needs the audio (use_audio must be true)")
    model = build_recipe_enhancer(hparams)
    if hparams.get("init_from"):  # a resumed run's checkpoint, when there is one, takes precedence
        try:
            model.load_state_dict(load_enhancer(hparams["init_from"]).state_dict())
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise InputError(hparams["init_from"], f"init_from weights do not fit the recipe's model: {first}") from None
    elif hparams.get("video_init_from"):
        init_video_from_recogniser(model, hparams["video_init_from"])
    train_utts = _train_utterances(hparams, need_text=False)
    valid_utts = _manifest(hparams, "valid_manifest", need_text=False)
    train = make_dataset(train_utts, None, **_dataset_kwargs(hparams))
    valid = make_dataset(valid_utts, None, **_dataset_kwargs(hparams))
    hparams["speakers"] = {u.id: u.extra.get("speaker") or u.id for u in train_utts + valid_utts}

    def mixer(hp: dict[str, Any], key: str, seed: int, sources: dict[str, Any]) -> InterferenceMixer | None:
        # competing talkers come from the split being mixed
        return _interference(hp, key, train_utts if key == "train_noise" else valid_utts, seed, sources)

    brain = _fit(EnhanceBrain, model, hparams, run_opts, train, valid, mixer=mixer)
    return _export(brain, hparams, lambda path, m: save_model(path, m, None))


def main(argv: Sequence[str] | None = None, run: Callable[[Sequence[str]], Path] = run_asr) -> int:
    """Command-line entry of the recipes' ``train.py``: one error line, exit 1, for user errors.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).
        run: the runner, :func:`run_asr` (recognition), :func:`run_pretrain` or :func:`run_enhance`.

    Returns:
        the exit code.
    """
    def body() -> None:
        run(sys.argv[1:] if argv is None else argv)

    return run_reporting("train.py", body, interrupted="interrupted (rerun the same command to resume)")
