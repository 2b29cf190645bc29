"""tools/benchmarks/transcribe_speed.py runs end to end and its stages add up to no more than the whole."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from transcribe_fixtures import make_bundle

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "benchmarks" / "transcribe_speed.py"


@pytest.fixture(scope="module")
def bench():
    """The benchmark script as a module."""
    spec = importlib.util.spec_from_file_location("transcribe_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A tiny random model bundle."""
    path = tmp_path_factory.mktemp("bundle") / "tiny.safetensors"
    make_bundle(path)
    return path


@pytest.mark.slow
def test_transcribe_speed_table(bench, bundle: Path, tmp_path: Path, capsys) -> None:
    assert bench.main(["--checkpoint", str(bundle), "--seconds", "4", "--beam", "1", "--tokens-per-second", "5",
                       "--out", str(tmp_path)]) == 0
    assert "| whole pipeline |" in capsys.readouterr().out
    with open(tmp_path / "transcribe_speed.csv", newline="") as f:
        rows = {r["stage"]: r for r in csv.DictReader(f)}
    parts = ["media decoding", "voice activity detection", "lip frontend", "model", "search"]
    assert list(rows) == parts + ["model + search", "whole pipeline", "whole pipeline, CPU time"]
    seconds = {k: float(r["seconds"]) for k, r in rows.items()}
    assert all(v >= 0 for v in seconds.values()) and seconds["lip frontend"] > 0 and seconds["model"] > 0
    assert seconds["model + search"] == pytest.approx(seconds["model"] + seconds["search"], abs=2e-3)
    # decoding is timed in a second pass, so allow it some slack over the pipeline's own share
    assert sum(seconds[k] for k in parts) <= 1.25 * seconds["whole pipeline"]
    assert float(rows["whole pipeline"]["rtf"]) == pytest.approx(seconds["whole pipeline"] / 4.0, rel=0.01)
    title = (tmp_path / "transcribe_speed.md").read_text().splitlines()[0]
    assert title.startswith("avsr transcribe speed") and "search capped at 5 tokens/s" in title


def test_bad_input_is_one_line(bench, bundle: Path, tmp_path: Path, capsys) -> None:
    code = bench.main(["--checkpoint", str(bundle), "--video", str(tmp_path / "missing.mp4"), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "missing.mp4" in err[0]


@pytest.mark.parametrize("rate", ["0", "-1", "26", "nan"])
def test_tokens_per_second_must_be_in_range(bench, rate: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--auto-avsr", "video", "--tokens-per-second", rate, "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "--tokens-per-second must be in (0, 25]" in capsys.readouterr().err
