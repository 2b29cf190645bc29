"""avsr.training: random-state recoverable, kill-safe checkpointer, reproducible data loaders, checkpoint selection."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import speechbrain as sb
import torch
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks

from avsr.data.dataset import duration_batches, make_dataset
from avsr.data.manifest import read_manifest
from avsr.models.avsr import build_model
from avsr.tokenizer import CharTokenizer
from avsr.training.asr import AVSRBrain, RandomStates
from avsr.training.checkpointer import TMP_PREFIX, AtomicCheckpointer
from tests.tiny_configs import SMALL_MODEL


def _draw() -> tuple:
    return (torch.rand(4).tolist(), np.random.rand(4).tolist(), np.random.randint(0, 1000, 3).tolist(),
            [random.random() for _ in range(4)], random.getrandbits(64), random.gauss(0.0, 1.0))


def test_random_states_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(3)
    np.random.seed(4)
    random.seed(5)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    random.gauss(0.0, 1.0)  # and in python's
    _draw()
    RandomStates()._save(tmp_path / "rng.ckpt")
    expected = _draw()
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    assert _draw() != expected
    RandomStates()._load(tmp_path / "rng.ckpt")
    assert _draw() == expected


@register_checkpoint_hooks
class Box:
    """A recoverable holding a number; ``fail`` makes its saver crash half-way (like a kill)."""

    def __init__(self, value: int = 0) -> None:
        self.value = value
        self.fail = False

    @mark_as_saver
    def _save(self, path) -> None:
        Path(path).write_text("")  # the file exists, but is empty, when the save dies
        if self.fail:
            raise KeyboardInterrupt("killed while saving")
        Path(path).write_text(str(self.value))

    @mark_as_loader
    def _load(self, path, end_of_epoch: bool = False) -> None:
        self.value = int(Path(path).read_text())


def test_a_save_that_dies_half_way_leaves_no_checkpoint(tmp_path: Path) -> None:
    model, box = torch.nn.Linear(2, 2), Box(1)
    ckpt = AtomicCheckpointer(tmp_path, {"model": model, "box": box})
    ckpt.save_checkpoint(meta={"n": 1})
    box.value, box.fail = 2, True
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(meta={"n": 2})
    assert [c.meta["n"] for c in ckpt.list_checkpoints()] == [1]
    assert len(list(tmp_path.glob(TMP_PREFIX + "*"))) == 1  # the half-written one, invisible to SpeechBrain
    fresh = Box()
    assert AtomicCheckpointer(tmp_path, {"model": torch.nn.Linear(2, 2), "box": fresh}).recover_if_possible().meta["n"] == 1
    assert fresh.value == 1
    box.fail = False
    ckpt.save_checkpoint(meta={"n": 3})
    assert not list(tmp_path.glob(TMP_PREFIX + "*"))  # the next save clears what the dead one left
    assert sorted(c.meta["n"] for c in ckpt.list_checkpoints()) == [1, 3]


def test_plain_speechbrain_checkpointer_is_not_kill_safe(tmp_path: Path) -> None:
    """Why AtomicCheckpointer exists: SpeechBrain's own leaves a broken 'newest' checkpoint."""
    box = Box(1)
    ckpt = sb.utils.checkpoints.Checkpointer(tmp_path, {"box": box})
    ckpt.save_checkpoint()
    box.fail = True
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint()
    with pytest.raises(ValueError):  # the empty file of the dead save is what it recovers
        sb.utils.checkpoints.Checkpointer(tmp_path, {"box": Box()}).recover_if_possible()


def test_checkpoints_missing_a_recoverable_are_ignored(tmp_path: Path) -> None:
    box = Box(1)
    ckpt = AtomicCheckpointer(tmp_path, {"model": torch.nn.Linear(2, 2), "box": box})
    ckpt.save_checkpoint(meta={"n": 1})
    box.value = 2
    newest = ckpt.save_checkpoint(meta={"n": 2})
    (newest.path / "box.ckpt").unlink()  # as if killed while deleting it
    fresh = Box()
    found = AtomicCheckpointer(tmp_path, {"model": torch.nn.Linear(2, 2), "box": fresh}).recover_if_possible()
    assert found.meta["n"] == 1 and fresh.value == 1


def test_named_checkpoints_are_replaced(tmp_path: Path) -> None:
    box = Box(1)
    ckpt = AtomicCheckpointer(tmp_path, {"box": box})
    ckpt.save_checkpoint(name="last")
    box.value = 5
    ckpt.save_checkpoint(name="last")
    assert len(ckpt.list_checkpoints()) == 1
    fresh = Box()
    AtomicCheckpointer(tmp_path, {"box": fresh}).recover_if_possible()
    assert fresh.value == 5


@pytest.fixture(scope="module")
def train_set(tmp_path_factory):
    d = tmp_path_factory.mktemp("ds")
    sf.write(d / "a.flac", np.zeros(160, np.float32), 16000)
    rng = np.random.default_rng(0)
    rows = "\n".join(f"u{i},ab,{float(x):.3f},a.flac" for i, x in enumerate(rng.uniform(0.5, 3.0, 30)))
    (d / "m.csv").write_text("id,text,duration,audio\n" + rows + "\n")
    tok = CharTokenizer.train(["ab"])
    return make_dataset(read_manifest(d / "m.csv"), tok, video=False), tok


def test_brain_loaders_leave_the_global_generator_alone_and_reshuffle_each_epoch(train_set, tmp_path: Path) -> None:
    ds, tok = train_set
    model = build_model({**SMALL_MODEL, "vocab_size": tok.vocab_size})
    brain = AVSRBrain(modules={"model": model}, hparams={"seed": 0, "tokenizer": tok},
                      run_opts={"device": "cpu", "noprogressbar": True},
                      checkpointer=AtomicCheckpointer(tmp_path))
    sampler = duration_batches(ds, 5.0, seed=0)
    loader = brain.make_dataloader(ds, sb.Stage.TRAIN, batch_sampler=sampler)
    assert brain.train_sampler is sampler  # so that fit() calls set_epoch every epoch
    state = torch.get_rng_state()
    ids = [list(b.id) for b in loader]
    # a new iterator draws its base seed from the loader's own generator, not the global one:
    # a resumed run (one more iterator than the interrupted run) continues with the same random state
    assert torch.equal(torch.get_rng_state(), state)
    assert sorted(i for b in ids for i in b) == sorted(ds.data_ids)
    brain.train_sampler.set_epoch(2)
    assert [list(b.id) for b in loader] != ids


def test_init_from_bundle_loads_weights_and_refuses_misfits(tmp_path: Path) -> None:
    from avsr.checkpoints import save_model
    from avsr.errors import InputError
    from avsr.models.avsr import build_model
    from avsr.training.recipe import init_from_bundle
    from tiny_configs import SMALL_MODEL

    tok = CharTokenizer.train(["bin blue at f two now"])
    torch.manual_seed(0)
    trained = build_model({**SMALL_MODEL, "vocab_size": tok.vocab_size})
    save_model(tmp_path / "b.safetensors", trained, tok)
    torch.manual_seed(1)
    fresh = build_model({**SMALL_MODEL, "vocab_size": tok.vocab_size})
    init_from_bundle(fresh, tmp_path / "b.safetensors", tok)
    for (name, a), b in zip(trained.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name

    wider = build_model({**SMALL_MODEL, "vocab_size": tok.vocab_size, "encoder_ff": 96})
    with pytest.raises(InputError, match="do not fit"):
        init_from_bundle(wider, tmp_path / "b.safetensors", tok)
    with pytest.raises(InputError, match="another tokenizer"):
        init_from_bundle(fresh, tmp_path / "b.safetensors", CharTokenizer.train(["xyz"]))
    with pytest.raises(InputError):
        init_from_bundle(fresh, tmp_path / "missing.safetensors", tok)


def test_enhancement_keeps_and_averages_the_largest_improvements(tmp_path: Path) -> None:
    from avsr.training.enhance import EnhanceBrain

    model = torch.nn.Linear(2, 1, bias=False)
    brain = EnhanceBrain(modules={"model": model}, hparams={"seed": 0, "keep_best": 2},
                         run_opts={"device": "cpu", "noprogressbar": True},
                         checkpointer=AtomicCheckpointer(tmp_path, {"model": model}))
    brain.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch, sisdri in enumerate((1.0, 3.0, -2.0, 2.0), start=1):  # the weights are the epoch's SISDRi
        with torch.no_grad():
            model.weight.fill_(sisdri)
        brain.end_validation(epoch, {"loss": -sisdri, "SISDRi": sisdri})
    # SpeechBrain keeps the keep_best best and the keep_best most recent: larger being better,
    # epoch 1 (1.0) goes and the oldest best (3.0) stays (smaller being better, it would be the other way round)
    kept = sorted(c.meta["SISDRi"] for c in brain.checkpointer.list_checkpoints())
    assert kept == [-2.0, 2.0, 3.0]
    assert len(brain.average_best(1)) == 1 and torch.all(model.weight == 3.0)
    assert len(brain.average_best()) == 2 and torch.allclose(model.weight, torch.full((1, 2), 2.5))


def test_a_frozen_encoder_stays_put_while_the_heads_learn(train_set, tmp_path: Path) -> None:
    """``freeze_encoder_steps``: the encoder is untouched (weights, AdamW moments, weight decay)
    for that many optimizer steps, then trains like the rest."""
    ds, tok = train_set
    torch.manual_seed(0)
    model = build_model({**SMALL_MODEL, "vocab_size": tok.vocab_size})
    brain = AVSRBrain(modules={"model": model}, opt_class=lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
                      hparams={"seed": 0, "tokenizer": tok, "freeze_encoder_steps": 2},
                      run_opts={"device": "cpu", "noprogressbar": True})
    brain.init_optimizers()
    loader = brain.make_dataloader(ds, sb.Stage.TRAIN, batch_sampler=duration_batches(ds, 5.0, seed=0))
    batches = iter(loader)

    def snapshot(part: torch.nn.Module) -> list[torch.Tensor]:
        return [p.detach().clone() for p in part.parameters()]

    encoder, heads = snapshot(model.encoder), snapshot(model.decoder)
    for _ in range(2):
        brain.fit_batch(next(batches))
    assert brain.optimizer_step == 2
    assert all(torch.equal(a, b) for a, b in zip(encoder, snapshot(model.encoder)))
    assert not all(torch.equal(a, b) for a, b in zip(heads, snapshot(model.decoder)))
    assert not any(p in brain.optimizer.state for p in model.encoder.parameters())  # no moments either
    brain.fit_batch(next(batches))  # step 3: the encoder learns
    assert not all(torch.equal(a, b) for a, b in zip(encoder, snapshot(model.encoder)))
