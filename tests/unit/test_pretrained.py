"""avsr.pretrained: bundled models by name, never a download, clear errors for unknown names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import avsr.pretrained as pretrained
from avsr.checkpoints import save_model
from avsr.errors import InputError
from avsr.models.avsr import build_model
from avsr.tokenizer import CharTokenizer
from tiny_configs import SMALL_MODEL


def write_bundle(path: Path) -> tuple[torch.nn.Module, CharTokenizer]:
    tok = CharTokenizer.train(["bin blue at f two now"])
    torch.manual_seed(0)
    model = build_model({**SMALL_MODEL, "vocab_size": tok.vocab_size})
    save_model(path, model, tok)
    return model, tok


def test_empty_folder_has_no_models_and_says_so(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "missing")
    assert pretrained.available() == []
    with pytest.raises(InputError, match="unknown pretrained model 'synthgrid-avsr-tiny'.*no pretrained models"):
        pretrained.load_pretrained("synthgrid-avsr-tiny")


def test_bundles_are_found_by_name_and_loaded(tmp_path: Path, monkeypatch) -> None:
    model, tok = write_bundle(tmp_path / "tiny-test.safetensors")
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "other.safetensors.part").write_bytes(b"x")
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path)

    assert pretrained.available() == ["tiny-test"]
    assert pretrained.pretrained_path("tiny-test") == tmp_path / "tiny-test.safetensors"
    loaded, loaded_tok = pretrained.load_pretrained("tiny-test")
    assert not loaded.training
    assert loaded_tok == tok
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name

    with pytest.raises(InputError) as e:
        pretrained.pretrained_path("tiny")
    assert "'tiny'" in str(e.value) and "available: tiny-test" in str(e.value)


def test_shipped_folder_lists_only_existing_files() -> None:
    assert pretrained.PRETRAINED_DIR == Path(pretrained.__file__).resolve().parent
    for name in pretrained.available():
        assert pretrained.pretrained_path(name).is_file()
