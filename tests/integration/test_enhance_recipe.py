"""The SynthGRID enhancement recipe end to end: train.py on a tiny corpus, as a user runs it.

A tiny corpus (10 train / 4 valid utterances of disjoint speakers) made with
the generator the recognition recipe's prepare.py uses; every run is a
subprocess of ``recipes/SynthGRID/enhance/train.py`` with overrides that make
it seconds long on one CPU thread:

* ``tiny.yaml`` for an epoch: the bundle loads with ``load_enhancer``, its
  lip frontend is the shipped recogniser's, unchanged (copied and frozen);
* ``base.yaml`` for two ``--debug`` batches (marked slow);
* bad input: one ``train.py: error:`` line, exit 1, no bundle.

Resuming after a kill needs no test of its own here: the only state the
enhancement Brain adds is the :class:`InterferenceMixer`'s generator, the
same per-rank ``RankSeeded`` recoverable as the recognition recipe's noise
mixer (whose kill-and-resume test covers the mechanism); its round trip
through a checkpointer is tested in ``tests/unit/test_augment.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avsr.checkpoints import load_enhancer, load_model
from avsr.data.synth import generate
from avsr.pretrained import pretrained_path

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "SynthGRID" / "enhance"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
ENV.pop("RANK", None)
ENV.pop("WORLD_SIZE", None)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthgrid")
    generate(out, 10, "train", 0, processes=1, progress=False)
    generate(out, 4, "valid", 1, processes=1, progress=False)
    return out


def train(hparams: str, data: Path, out: Path, *extra: str, batch_seconds: float = 6) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(RECIPE / "train.py"), str(RECIPE / "hparams" / hparams), "--noprogressbar",
           "--data_folder", str(data), "--output_folder", str(out), "--number_of_epochs", "1",
           "--batch_seconds", str(batch_seconds), "--valid_batch_seconds", "20", "--noise_bank_seconds", "2",
           "--noise_bank_variants", "1", "--num_threads", "1", "--ckpt_interval_minutes", "0", *extra]
    return subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_tiny_recipe_trains_with_the_recognisers_lips(data: Path, tmp_path: Path) -> None:
    r = train("tiny.yaml", data, tmp_path / "tiny")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    model = load_enhancer(tmp_path / "tiny" / "model.safetensors")
    assert model.config["freeze_video"] and model.config["d_model"] == 128
    recogniser, _ = load_model(pretrained_path("synthgrid-avsr-tiny"))
    lips = recogniser.encoder.video_frontend.state_dict()
    for name, value in model.video.state_dict().items():  # copied, and frozen (batch-norm statistics too)
        assert torch.equal(value, lips[name]), name
    log = (tmp_path / "tiny" / "train_log.txt").read_text()
    assert "epoch: 1" in log and "SISDRi_av" in log and "SISDRi_audio" in log
    assert r.stderr.strip() == ""


@pytest.mark.slow
def test_base_recipe_runs_two_debug_batches(data: Path, tmp_path: Path) -> None:
    r = train("base.yaml", data, tmp_path / "base", "--num_workers", "0", "--debug", "--debug_batches", "2",
              "--debug_epochs", "1", batch_seconds=3)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "steps: 2" in (tmp_path / "base" / "train_log.txt").read_text()
    model = load_enhancer(tmp_path / "base" / "model.safetensors")
    assert model.config["d_model"] == 256 and model.config["video_width"] == 64


def test_bad_input_is_one_line(data: Path, tmp_path: Path) -> None:
    r = train("tiny.yaml", tmp_path / "missing", tmp_path / "bad")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [line for line in r.stderr.strip().splitlines() if line.startswith("train.py: error:")]
    assert "no such manifest" in r.stderr and not (tmp_path / "bad" / "model.safetensors").exists()
    r = train("tiny.yaml", data, tmp_path / "bad2", "--video_init_from", str(tmp_path / "none.safetensors"))
    assert r.returncode == 1 and "train.py: error:" in r.stderr and "no such file" in r.stderr
