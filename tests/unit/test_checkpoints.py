"""Model bundles and training checkpoints: exact round trips, atomic writes, no code execution."""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import pytest
import torch
from torch import nn

from avsr.checkpoints import (
    load_bundle,
    load_training_checkpoint,
    read_bundle_metadata,
    save_bundle,
    save_model,
    save_training_checkpoint,
)
from avsr.errors import InputError
from avsr.tokenizer import CharTokenizer, SentencePieceTokenizer


class Exploit:
    """Unpickling this creates ``marker`` (stands in for arbitrary code)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = {"vocab": 7, "dim": 5, "name": "tied", "sizes": [1, 2]}
        self.emb = nn.Embedding(7, 5)
        self.out = nn.Linear(5, 7)
        self.out.weight = self.emb.weight  # shared storage
        self.norm = nn.BatchNorm1d(5)  # int64 buffer num_batches_tracked
        self.register_buffer("bf16", torch.randn(3, 2).to(torch.bfloat16))
        self.register_buffer("flags", torch.tensor([True, False]))
        self.register_buffer("empty", torch.zeros(0, 4))


def tokenizers() -> list:
    texts = ["bin blue at f two now", "place red by g nine soon", "lay white with p four again"] * 5
    return [CharTokenizer.train(texts), SentencePieceTokenizer.train(texts, vocab_size=40)]


@pytest.mark.parametrize("tok_index", [0, 1])
def test_bundle_round_trip_is_bit_exact(tmp_path: Path, tok_index: int) -> None:
    torch.manual_seed(0)
    model = Tied()
    model.norm.running_mean.uniform_()
    tok = tokenizers()[tok_index]
    path = tmp_path / "model.safetensors"
    save_model(path, model, tok, extra={"step": 12})
    config, state, tok2 = load_bundle(path)
    ref = model.state_dict()
    assert config == model.config
    assert tok2 == tok and tok2.to_dict() == tok.to_dict()
    assert tok2.encode("blue now") == tok.encode("blue now")
    assert set(state) == set(ref)
    for name, value in ref.items():
        assert state[name].dtype == value.dtype and state[name].shape == value.shape
        assert torch.equal(state[name], value), name
    assert read_bundle_metadata(path)["extra"] == {"step": 12}
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp files left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # as open() makes it, not the temp file's 0600


def test_bundle_write_failure_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    path = tmp_path / "m.safetensors"
    tok = CharTokenizer(list("ab "))
    save_bundle(path, {"a": 1}, {"w": torch.ones(2)}, tok)
    before = path.read_bytes()

    def crash_half_way(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash_half_way)
    with pytest.raises(OSError):
        save_bundle(path, {"a": 2}, {"w": torch.zeros(2)}, tok)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    monkeypatch.undo()
    with pytest.raises(InputError):
        save_bundle(path, {"a": 2}, {"bad": "not a tensor"}, tok)  # type: ignore[dict-item]


def test_crafted_pickle_bundle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(Exploit(str(marker))))
    with pytest.raises(InputError, match="not a safetensors model bundle"):
        load_bundle(path)
    assert not marker.exists()
    # torch.save-style zip pickle under the bundle name: also refused
    torch.save({"w": Exploit(str(marker))}, path)
    with pytest.raises(InputError):
        load_bundle(path)
    assert not marker.exists()


def test_bundle_errors_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_bundle(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.ones(1)}, str(plain))
    with pytest.raises(InputError, match="without avsr bundle metadata"):
        load_bundle(plain)
    truncated = tmp_path / "cut.safetensors"
    save_bundle(truncated, {}, {"w": torch.ones(1000)}, CharTokenizer(list("ab")))
    truncated.write_bytes(truncated.read_bytes()[:-100])
    with pytest.raises(InputError):
        load_bundle(truncated)


def _train_setup(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return model, opt, sched


def _train(model, opt, sched, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 4, generator=g)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def test_training_checkpoint_resumes_exactly(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    model, opt, sched = _train_setup(0)
    _train(model, opt, sched, 3, seed=1)
    save_training_checkpoint(path, model=model, optimizer=opt, scheduler=sched, step=3, extra={"epoch": 1})
    _train(model, opt, sched, 2, seed=2)  # continue uninterrupted

    model2, opt2, sched2 = _train_setup(99)
    ckpt = load_training_checkpoint(path, model=model2, optimizer=opt2, scheduler=sched2)
    assert ckpt["step"] == 3 and ckpt["extra"] == {"epoch": 1}
    assert sched2.last_epoch == 3
    _train(model2, opt2, sched2, 2, seed=2)  # resumed run
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)


def test_crafted_training_checkpoint_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "ckpt.pt"
    torch.save({"format": "avsr-training-checkpoint", "model": Exploit(str(marker))}, path)
    with pytest.raises(InputError, match="not a safe training checkpoint"):
        load_training_checkpoint(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps(Exploit(str(marker)), protocol=2))  # legacy (non-zip) pickle
    with pytest.raises(InputError):
        load_training_checkpoint(path)
    assert not marker.exists()
    with pytest.raises(InputError, match="no such file"):
        load_training_checkpoint(tmp_path / "missing.pt")


def test_training_checkpoint_mismatch_is_input_error(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    model, opt, sched = _train_setup(0)
    save_training_checkpoint(path, model=model, step=0)
    with pytest.raises(InputError, match="does not fit"):
        load_training_checkpoint(path, model=nn.Linear(3, 3))


def test_load_model_rebuilds_from_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``load_model`` = ``build_model(config)`` + strict weights; a stand-in builder keeps this unit-level."""
    import sys
    import types

    fake = types.ModuleType("avsr.models.avsr")
    fake.build_model = lambda config: Tied()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "avsr.models.avsr", fake)
    from avsr.checkpoints import load_model

    torch.manual_seed(1)
    model, tok = Tied(), CharTokenizer(list("abc "))
    path = tmp_path / "m.safetensors"
    save_model(path, model, tok)
    loaded, tok2 = load_model(path)
    assert tok2 == tok and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert loaded.out.weight is loaded.emb.weight  # ties survive loading
    save_bundle(path, model.config, {"emb.weight": torch.zeros(7, 5)}, tok)
    with pytest.raises(InputError, match="weights do not match"):
        load_model(path)
