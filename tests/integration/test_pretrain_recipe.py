"""The SynthGRID pretraining recipe end to end: make_targets.py, then train.py, as a user runs them.

One tiny corpus per module (24 train / 6 valid utterances) with iteration-1
cluster targets (MFCC, 8 clusters); every run is a subprocess of
``recipes/SynthGRID/pretrain/train.py`` with overrides that make it a few
seconds long on one CPU thread:

* smoke: ``tiny.yaml`` for an epoch writes a pretrained encoder bundle whose
  encoder a recognition run (the recognition recipe's ``tiny.yaml``,
  ``--init_from``) starts from; iteration-2 targets from that bundle;
  ``base.yaml`` for two ``--debug`` batches;
* resume: a run SIGKILLed in its second epoch and rerun ends with the
  uninterrupted run's weights, every batch applied once;
* DDP: ``torchrun --nproc_per_node 2`` (gloo) keeps the ranks' weights equal;
* bad input: one ``train.py: error:`` line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from avsr.checkpoints import PRETRAIN_KIND, load_pretrain_model, read_bundle_metadata
from avsr.models.avsr import BASE, TINY
from avsr.training.clusters import load_targets, save_targets
from avsr.training.clusters import main as clusters_main
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

RECIPE = SYNTHGRID / "pretrain"
TRAIN = RECIPE / "train.py"
MAKE_TARGETS = RECIPE / "make_targets.py"
FAST = {"valid_modalities": "[av,video]", "train_noise_snrs": "[clean,0]"}


def targets_cmd(data: Path, out: Path, *args: str) -> list[str]:
    return [sys.executable, str(MAKE_TARGETS), "--manifests", str(data / "train.csv"), str(data / "valid.csv"),
            "--clusters", "8", "--out", str(out), "--quiet", *args]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A tiny SynthGRID corpus and its iteration-1 targets (``targets-iter1.safetensors``)."""
    out = make_corpus(tmp_path_factory.mktemp("synthgrid"))
    r = run(targets_cmd(out, out / "targets-iter1.safetensors"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "30 utterances" in r.stdout and "8 clusters of mfcc" in r.stdout
    return out


def train_cmd(hparams: str, data: Path, out: Path, **changes) -> list[str]:
    changes = {"targets_file": data / "targets-iter1.safetensors", **FAST, **changes}
    return [sys.executable, str(TRAIN), str(RECIPE / "hparams" / hparams), *overrides(data, out, **changes)]


def parameters(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state without batch-norm running statistics (which a forward in training mode updates)."""
    return {k: v for k, v in state.items() if "running_" not in k and "num_batches_tracked" not in k}


# ---------------------------------------------------------------------------- smoke


def test_tiny_pretraining_exports_an_encoder_that_starts_recognition(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "pre"
    r = run(train_cmd("tiny.yaml", data, out, trace_folder=out / "trace"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stderr.strip() == ""
    bundle = out / "pretrained.safetensors"
    meta = read_bundle_metadata(bundle)
    assert meta["config"]["kind"] == PRETRAIN_KIND and meta["tokenizer"] is None
    model = load_pretrain_model(bundle)
    assert model.n_clusters == 8
    assert model.config["encoder"]["d_model"] == TINY["d_model"]
    assert model.config["encoder"]["audio_drop_prob"] == 0.35  # the hparams' model overrides
    log = (out / "train_log.txt").read_text()
    assert "epoch: 1" in log and "valid acc_av" in log and "valid loss_video" in log and "train acc" in log
    assert list((out / "tensorboard").iterdir())
    # one end-of-epoch checkpoint: the exported model is its model, which is the final weights
    assert_same_weights(dict(model.state_dict()), weights(out / "trace" / "weights.rank0.safetensors"))

    # the recognition recipe starts from it: with lr 0 its encoder keeps the pretrained parameters
    rec = tmp_path / "rec"
    r = run([sys.executable, str(SYNTHGRID / "avsr" / "train.py"), str(SYNTHGRID / "avsr" / "hparams" / "tiny.yaml"),
             *overrides(data, rec, init_from=bundle, lr=0.0, debug=True, debug_batches=1, debug_epochs=1,
                        valid_batch_seconds=3, trace_folder=rec / "trace")])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"encoder initialised from the pretrained bundle {bundle}" in (rec / "log.txt").read_text()
    final = weights(rec / "trace" / "weights.rank0.safetensors")
    encoder = parameters({k: v for k, v in final.items() if k.startswith("encoder.")})
    assert_same_weights(encoder, parameters({k: v for k, v in model.state_dict().items() if k.startswith("encoder.")}))
    assert any(k.startswith("decoder.") for k in final)  # the recognition heads are there, freshly initialised

    # iteration 2: targets from the pretrained model's layer features
    r = run(targets_cmd(data, tmp_path / "t2.safetensors", "--model", str(bundle), "--layer", "3"))
    assert r.returncode == 0, r.stderr[-3000:]
    t1, t2 = load_targets(data / "targets-iter1.safetensors"), load_targets(tmp_path / "t2.safetensors")
    assert t2.source == "model:pretrained.safetensors:layer3" and t2.centroids.shape == (8, TINY["d_model"])
    assert t1.targets.keys() == t2.targets.keys()
    assert all(len(t1.targets[k]) == len(t2.targets[k]) for k in t1.targets)  # both at 25 fps


@pytest.mark.slow
def test_base_pretraining_runs_two_debug_batches_on_cpu(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "base"
    r = run(train_cmd("base.yaml", data, out, batch_seconds=3, valid_batch_seconds=3, num_workers=0,
                      valid_modalities="[av]", debug=True, debug_batches=2, debug_epochs=1), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "steps: 2" in (out / "train_log.txt").read_text()
    model = load_pretrain_model(out / "pretrained.safetensors")
    enc = model.config["encoder"]
    assert enc["d_model"] == BASE["d_model"] and enc["encoder_layers"] == BASE["encoder_layers"]


# --------------------------------------------------------------------------- resume


def test_a_killed_pretraining_resumes_to_the_uninterrupted_result(data: Path, tmp_path: Path) -> None:
    def cmd(out: Path) -> list[str]:
        return train_cmd("tiny.yaml", data, out, number_of_epochs=2, ckpt_interval_steps=2, batch_seconds=8,
                         valid_modalities="[av]", trace_folder=out / "trace")

    a, b = tmp_path / "a", tmp_path / "b"
    r = run(cmd(a))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    full = trace(a)
    assert [x["optimizer_step"] for x in full] == list(range(1, len(full) + 1)) and len(full) // 2 >= 5

    kill_when(cmd(b), b / "save", lambda m: m.get("brain_intra_epoch_ckpt") and m["counter"] == 2 and m["brain"]["step"] >= 2,
              tmp_path / "b-stderr.txt")
    path, meta = checkpoints(b / "save")[-1]
    assert meta["brain_intra_epoch_ckpt"] and meta["counter"] == 2, "killed after the end of the epoch"
    assert not (b / "pretrained.safetensors").exists()
    before = trace(b)

    r = run(cmd(b))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"Loading a checkpoint from {path}" in (b / "log.txt").read_text()
    assert_resumed_like_uninterrupted(full, before, trace(b)[len(before):], meta["brain"])
    # span masks, modality dropout and noise drew the same numbers: the same weights
    assert_same_weights(weights(a / "trace" / "weights.rank0.safetensors"), weights(b / "trace" / "weights.rank0.safetensors"))
    assert_same_weights(weights(a / "pretrained.safetensors"), weights(b / "pretrained.safetensors"))
    assert (a / "train_log.txt").read_text().splitlines()[-1] == (b / "train_log.txt").read_text().splitlines()[-1]


# ------------------------------------------------------------------------------ DDP


def test_ddp_pretraining_keeps_the_ranks_in_step(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cmd = [*TORCHRUN, "--standalone", "--nproc_per_node", "2", str(TRAIN), str(RECIPE / "hparams" / "tiny.yaml"),
           *overrides(data, out, targets_file=data / "targets-iter1.safetensors", ckpt_interval_steps=3,
                      trace_folder=out / "trace", **FAST)]
    r = run(cmd, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ranks = [trace(out, rank) for rank in (0, 1)]
    ids = [[i for x in t for i in x["ids"]] for t in ranks]
    assert len(ranks[0]) == len(ranks[1]) >= 3
    assert not set(ids[0]) & set(ids[1]) and sorted(ids[0] + ids[1]) == sorted(train_ids(data))
    w0, w1 = (weights(out / "trace" / f"weights.rank{rank}.safetensors") for rank in (0, 1))
    assert_same_weights(w0, w1)
    assert_same_weights(weights(out / "pretrained.safetensors"), w0)
    end = [c for c, m in checkpoints(out / "save") if m["end-of-epoch"]][0]
    assert (end / "random_states.ckpt").is_file() and (end / "random_states.ckpt.rank1").is_file()


# ------------------------------------------------------------------------ bad input


def test_bad_targets_are_one_clear_line(data: Path, tmp_path: Path, capsys) -> None:
    r = run(train_cmd("tiny.yaml", data, tmp_path / "a", targets_file=tmp_path / "none.safetensors"), timeout=120)
    assert_one_error_line(r, "train.py", "none.safetensors: no such cluster-targets file")
    # targets of the validation utterances only: the training utterances have none
    t = load_targets(data / "targets-iter1.safetensors")
    t.targets = {k: v for k, v in t.targets.items() if k.startswith("valid")}
    save_targets(tmp_path / "valid-only.safetensors", t)
    r = run(train_cmd("tiny.yaml", data, tmp_path / "b", targets_file=tmp_path / "valid-only.safetensors"), timeout=120)
    assert_one_error_line(r, "train.py", "train.csv: utterance 'train-s0-000000' has no cluster targets",
                          "valid-only.safetensors")
    # make_targets.py's own errors (its main, in this process)
    assert clusters_main(["--manifests", str(data / "valid.csv"), "--clusters", "1000", "--out",
                          str(tmp_path / "x.safetensors"), "--quiet"], prog="make_targets.py") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("make_targets.py: error: ") and "too few for 1000 clusters" in err[0]
