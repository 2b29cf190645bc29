"""The SynthGRID recognition recipe end to end: prepare.py, then train.py as a user runs it.

One tiny corpus per module (24 train / 6 valid / 6 test utterances, ~10 s to
make); every training run is a subprocess of ``recipes/SynthGRID/avsr/train.py``
with overrides that make it a few seconds long on one CPU thread:

* smoke: ``tiny.yaml`` for an epoch, ``base.yaml`` (112M parameters) for two
  ``--debug`` batches; each writes a bundle that ``load_model`` reads;
* resume: a run SIGKILLed in the middle of its second epoch and rerun ends
  with the same weights as an uninterrupted run, every batch applied once;
* DDP: ``torchrun --nproc_per_node 2`` (gloo on CPU) splits the batches and
  keeps the ranks' weights equal;
* bad input: one ``train.py: error:`` / ``prepare.py: error:`` line, exit 1,
  no traceback, no bundle.

Batch ids and final weights come from the recipe's opt-in ``trace_folder``.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

from avsr.checkpoints import load_model
from avsr.models.avsr import BASE, TINY
from avsr.training.recipe import load_tokenizer
from tests.recipe_helpers import (
    SYNTHGRID,
    TORCHRUN,
    assert_one_error_line,
    assert_resumed_like_uninterrupted,
    assert_same_weights,
    checkpoints,
    kill_when,
    make_corpus,
    overrides,
    run,
    trace,
    train_ids,
    weights,
)

RECIPE = SYNTHGRID / "avsr"
TRAIN = RECIPE / "train.py"
PREPARE = RECIPE / "prepare.py"
SELECTION_NOISE = RECIPE / "selection_noise.py"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A tiny SynthGRID corpus made with the recipe's prepare.py."""
    return make_corpus(tmp_path_factory.mktemp("synthgrid"))


def train_cmd(hparams: str, data: Path, out: Path, **changes) -> list[str]:
    return [sys.executable, str(TRAIN), str(RECIPE / "hparams" / hparams), *overrides(data, out, **changes)]


# ---------------------------------------------------------------------------- smoke


def test_tiny_recipe_trains_and_writes_a_loadable_bundle(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    r = run(train_cmd("tiny.yaml", data, out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    bundle = out / "model.safetensors"
    model, tokenizer = load_model(bundle)
    assert model.config["d_model"] == TINY["d_model"] and model.config["encoder_layers"] == TINY["encoder_layers"]
    assert model.config["audio_drop_prob"] == 0.4  # the hparams' model overrides are in the bundle's config
    assert tokenizer.to_dict() == load_tokenizer(data / "tokenizer.json").to_dict()
    assert model.config["vocab_size"] == tokenizer.vocab_size
    assert "epoch: 1" in (out / "train_log.txt").read_text()
    # one end-of-epoch checkpoint: the "average of the best" is that checkpoint's model
    (end,) = [c for c, meta in checkpoints(out / "save") if meta["end-of-epoch"]]
    ckpt = torch.load(end / "model.ckpt", map_location="cpu", weights_only=True)
    assert_same_weights(dict(model.state_dict()), ckpt)
    assert r.stderr.strip() == ""


@pytest.mark.slow
def test_base_recipe_runs_two_debug_batches_on_cpu(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "base"
    r = run(train_cmd("base.yaml", data, out, batch_seconds=3, valid_batch_seconds=3, num_workers=0,
                      debug=True, debug_batches=2, debug_epochs=1), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "steps: 2" in (out / "train_log.txt").read_text()
    model, _ = load_model(out / "model.safetensors")
    assert model.config["d_model"] == BASE["d_model"] and model.config["encoder_layers"] == BASE["encoder_layers"]
    assert sum(p.numel() for p in model.parameters()) > 100e6


# --------------------------------------------------------------------------- resume


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_result(data: Path, tmp_path: Path) -> None:
    def cmd(out: Path) -> list[str]:
        return train_cmd("tiny.yaml", data, out, number_of_epochs=2, ckpt_interval_steps=2,
                         trace_folder=out / "trace", join_prob=0.5)  # the joiner's generator resumes too

    a, b = tmp_path / "a", tmp_path / "b"
    r = run(cmd(a))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    full = trace(a)
    per_epoch = len(full) // 2
    assert [x["optimizer_step"] for x in full] == list(range(1, len(full) + 1)) and per_epoch >= 8
    # set_epoch reshuffles: the second epoch is the same utterances in another order
    epochs = [[x["ids"] for x in full if x["epoch"] == e] for e in (1, 2)]
    assert epochs[0] != epochs[1] and sorted(sum(epochs[0], [])) == sorted(sum(epochs[1], [])) == sorted(train_ids(data))

    # B: the same command, SIGKILLed once an intra-epoch checkpoint 4+ steps into epoch 2 exists
    kill_when(cmd(b), b / "save", lambda m: m.get("brain_intra_epoch_ckpt") and m["counter"] == 2 and m["brain"]["step"] >= 4,
              tmp_path / "b-stderr.txt")
    path, meta = checkpoints(b / "save")[-1]  # what a rerun recovers: the newest checkpoint
    assert meta["brain_intra_epoch_ckpt"] and meta["counter"] == 2, "killed after the end of the epoch"
    assert not (b / "model.safetensors").exists()
    saved = meta["brain"]
    before = trace(b)
    assert len(before) < len(full)

    r = run(cmd(b))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"Loading a checkpoint from {path}" in (b / "log.txt").read_text()
    after = trace(b)[len(before):]
    assert after[0]["epoch"] == 2
    assert_resumed_like_uninterrupted(full, before, after, saved)

    assert_same_weights(weights(a / "trace" / "weights.rank0.safetensors"), weights(b / "trace" / "weights.rank0.safetensors"))
    assert_same_weights(weights(a / "model.safetensors"), weights(b / "model.safetensors"))
    last = {}
    for out in (a, b):
        (end,) = [m for _, m in checkpoints(out / "save") if m["end-of-epoch"] and m["epoch"] == 2]
        last[out] = end["brain"]["optimizer_step"]
    assert last[a] == last[b] == len(full)
    assert (a / "train_log.txt").read_text().splitlines()[-1] == (b / "train_log.txt").read_text().splitlines()[-1]


# ------------------------------------------------------------------------------ DDP


def test_ddp_on_cpu_splits_batches_and_keeps_the_ranks_in_step(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [*TORCHRUN, "--standalone", "--nproc_per_node", "2", str(TRAIN), str(RECIPE / "hparams" / "tiny.yaml"),
           *overrides(data, out, ckpt_interval_steps=3, trace_folder=out / "trace")]
    r = run(cmd, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ranks = [trace(out, rank) for rank in (0, 1)]
    ids = [[i for x in t for i in x["ids"]] for t in ranks]
    assert len(ranks[0]) == len(ranks[1]) >= 4  # the same number of steps (DDP needs it)
    assert not set(ids[0]) & set(ids[1])  # each rank saw its own batches...
    assert sorted(ids[0] + ids[1]) == sorted(train_ids(data))  # ...and together every utterance once
    w0, w1 = (weights(out / "trace" / f"weights.rank{rank}.safetensors") for rank in (0, 1))
    assert_same_weights(w0, w1)
    assert_same_weights(weights(out / "model.safetensors"), w0)
    # every rank's random generators are in the checkpoint, and the ranks' noise differs
    end = [c for c, m in checkpoints(out / "save") if m["end-of-epoch"]][0]
    for name in ("random_states.ckpt", "train_noise.ckpt"):
        assert (end / name).is_file() and (end / f"{name}.rank1").is_file()
    assert (end / "train_noise.ckpt").read_text() != (end / "train_noise.ckpt.rank1").read_text()


# ------------------------------------------------------------------------ bad input


def _manifest_with(data: Path, folder: Path, change) -> Path:
    """A copy of the train manifest (absolute paths into the corpus) with one row changed."""
    with open(data / "train.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for col in ("audio", "mouths", "video"):
            row[col] = str(data / row[col])
    change(rows[3])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _missing_audio(row: dict) -> None:
    row["audio"] = row["audio"].replace(".flac", "-gone.flac")


def _empty_text(row: dict) -> None:
    row["text"] = "  "


@pytest.mark.parametrize(
    "case, fragments",
    [
        ("missing_file", ["train.csv", "utterance 'train-s0-000003'", "audio file", "-gone.flac does not exist"]),
        ("empty_transcript", ["train.csv", "utterance 'train-s0-000003': empty transcript"]),
        ("unknown_noise", ["unknown noise type foo"]),
        ("non_numeric_snr", ["SNR 'abc' is not a number of dB or 'clean'"]),
        ("missing_hparams", ["nope.yaml: no such hparams file"]),
        ("unknown_override", ["Override 'batch_secs' not found"]),
        ("bad_batch_seconds", ["batch_seconds must be a positive number, got 'lots'"]),
    ],
)
def test_train_py_bad_input_is_one_clear_line(data: Path, tmp_path: Path, case: str, fragments: list[str]) -> None:
    out = tmp_path / "out"
    hparams = "tiny.yaml"
    changes: dict = {}
    if case == "missing_file":
        changes["train_manifest"] = _manifest_with(data, tmp_path / "m", _missing_audio)
    elif case == "empty_transcript":
        changes["train_manifest"] = _manifest_with(data, tmp_path / "m", _empty_text)
    elif case == "unknown_noise":
        changes["train_noise"] = "synth:foo"
    elif case == "non_numeric_snr":
        changes["train_noise_snrs"] = "[clean, 10, abc]"
    elif case == "missing_hparams":
        hparams = "nope.yaml"
    elif case == "unknown_override":
        changes["batch_secs"] = 4
    elif case == "bad_batch_seconds":
        changes["batch_seconds"] = "lots"
    r = run(train_cmd(hparams, data, out, **changes), timeout=120)
    assert_one_error_line(r, "train.py", *fragments)
    assert not (out / "model.safetensors").exists()


def prepare_cmd(out: Path, *args: str) -> list[str]:
    return [sys.executable, str(PREPARE), "--out", str(out), "--processes", "1", "--quiet", *args]


def test_prepare_py_zero_utterances_is_one_clear_line(tmp_path: Path) -> None:
    r = run(prepare_cmd(tmp_path / "d", "--train", "0", "--valid", "1", "--test", "1"), timeout=120)
    assert_one_error_line(r, "prepare.py", "the number of utterances must be a positive integer, got 0")
    assert not (tmp_path / "d" / "tokenizer.json").exists()


def test_prepare_py_output_that_is_a_file_is_one_clear_line(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.write_text("not a folder")
    r = run(prepare_cmd(out, "--train", "2", "--valid", "1", "--test", "1"), timeout=120)
    assert_one_error_line(r, "prepare.py", str(out), "cannot write the output folder")


def test_prepare_py_rejects_a_non_integer_count_with_usage(tmp_path: Path) -> None:
    r = run([sys.executable, str(PREPARE), "--out", str(tmp_path / "d"), "--train", "abc"], timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == "prepare.py: error: argument --train: invalid int value: 'abc'"
    assert "Traceback" not in r.stderr


def test_selection_noise_is_the_training_sources_never_their_draws_and_never_the_test_sources(tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    from avsr.audio.noise import make_noise
    from avsr.data.augment import NoiseFolder

    out = tmp_path / "sel"
    r = run([sys.executable, str(SELECTION_NOISE), "--out", str(out), "--seconds", "1", "--variants", "2"], timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    folder = NoiseFolder(out)
    assert sorted(folder.kinds) == ["babble", "music"]
    x, sr = sf.read(out / "babble" / "babble-train-seed1000.wav", dtype="float32")
    assert sr == 16000 and len(x) == 16000
    assert np.array_equal(x, make_noise("babble", 16000, "train", 1000))  # the training generator ...
    for seed in (0, 1):  # ... but not the signals the recipe's bank trains on
        assert not np.allclose(x, make_noise("babble", 16000, "train", seed))
    assert not np.allclose(x, make_noise("babble", 16000, "test", 1000))
    assert not list(out.rglob("*.part"))

    r = run([sys.executable, str(SELECTION_NOISE), "--out", str(tmp_path / "bad"), "--kinds", "babble,thunder"],
            timeout=60)
    assert_one_error_line(r, "selection_noise.py", "unknown noise type thunder")
    assert not (tmp_path / "bad").exists()
