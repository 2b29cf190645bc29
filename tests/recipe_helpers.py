"""Helpers of the recipe tests: run a recipe's scripts as a user does, read their traces and checkpoints.

Shared by ``tests/integration/test_asr_recipe.py`` and ``test_pretrain_recipe.py``.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
SYNTHGRID = ROOT / "recipes" / "SynthGRID"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]  # the torchrun command
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
}
ENV.pop("RANK", None)
ENV.pop("WORLD_SIZE", None)


def make_corpus(out: Path, train: int = 24, valid: int = 6, test: int = 6) -> Path:
    """A tiny SynthGRID corpus made with the recognition recipe's prepare.py."""
    r = subprocess.run(
        [sys.executable, str(SYNTHGRID / "avsr" / "prepare.py"), "--out", str(out), "--train", str(train),
         "--valid", str(valid), "--test", str(test), "--processes", "1", "--quiet"],
        env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    for name in ("train.csv", "valid.csv", "test.csv", "tokenizer.json"):
        assert (out / name).is_file()
    return out


def overrides(data: Path, out: Path, **changes) -> list[str]:
    """SpeechBrain ``--key value`` overrides of a tiny, fast run (``changes`` replace or add keys)."""
    opts = {
        "data_folder": data, "output_folder": out, "number_of_epochs": 1, "batch_seconds": 6,
        "valid_batch_seconds": 20, "noise_bank_seconds": 2, "noise_bank_variants": 1, "num_threads": 1,
        "ckpt_interval_minutes": 0, **changes,
    }
    args = ["--noprogressbar"]
    for key, value in opts.items():
        if value is True:
            args.append(f"--{key}")
        elif value is not None:
            args += [f"--{key}", str(value)]
    return args


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(os.fspath(path))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k].float(), b[k].float()
        if not torch.allclose(x, y, rtol=1e-5, atol=1e-6):
            pytest.fail(f"{k} differs: max |diff| {(x - y).abs().max().item():.3g}")


def trace(out: Path, rank: int = 0) -> list[dict]:
    with open(out / "trace" / f"batches.rank{rank}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def train_ids(data: Path) -> list[str]:
    with open(data / "train.csv", newline="", encoding="utf-8") as f:
        return [row["id"] for row in csv.DictReader(f)]


def checkpoints(save: Path) -> list[tuple[Path, dict]]:
    """Checkpoints in place (AtomicCheckpointer renames complete ones into ``CKPT+*``), oldest first.

    The meta gets ``counter`` (epoch) and ``brain`` (SpeechBrain's step counters) from the checkpoint's files.
    """
    found = []
    for meta_file in save.glob("CKPT+*/CKPT.yaml"):
        folder = meta_file.parent
        try:  # a running job may delete an old checkpoint while we look
            meta = yaml.safe_load(meta_file.read_text(encoding="utf-8"))
            meta["counter"] = int((folder / "counter.ckpt").read_text())
            meta["brain"] = yaml.safe_load((folder / "brain.ckpt").read_text())
        except FileNotFoundError:
            continue
        found.append((folder, meta))
    return sorted(found, key=lambda c: c[1]["unixtime"])


def kill_when(cmd: list[str], save: Path, ready: Callable[[dict], bool], log_file: Path, timeout: float = 300) -> str:
    """Start ``cmd`` and SIGKILL it as soon as a checkpoint under ``save`` satisfies ``ready(meta)``.

    Returns:
        the killed run's stderr (the test fails if it ended before it could be killed).
    """
    log = open(log_file, "w+", encoding="utf-8")
    proc = subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    killed = False
    try:
        deadline = time.monotonic() + timeout
        while not killed and proc.poll() is None and time.monotonic() < deadline:
            for _, meta in checkpoints(save):
                if ready(meta):
                    proc.send_signal(signal.SIGKILL)
                    killed = True
                    break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and not killed:
            proc.kill()
        proc.wait(timeout=60)
        log.seek(0)
        stderr = log.read()
        log.close()
    assert killed and proc.returncode == -signal.SIGKILL, f"not killed (rc {proc.returncode}): {stderr[-2000:]}"
    return stderr


def assert_resumed_like_uninterrupted(full: list[dict], before: list[dict], after: list[dict], saved: dict) -> None:
    """The killed-and-resumed run applied exactly the uninterrupted run's batches, in its order.

    Args:
        full: the uninterrupted run's batch trace.
        before: the killed run's trace up to the kill.
        after: the rerun's trace.
        saved: SpeechBrain's step counters of the checkpoint the rerun recovered.
    """
    # the rerun starts at the batch after the checkpoint: the batches between it and the kill are redone,
    # none is skipped and none is applied twice to the final weights
    assert (after[0]["epoch"], after[0]["step"]) == (before[saved["optimizer_step"] - 1]["epoch"], saved["step"] + 1)
    applied = before[: saved["optimizer_step"]] + after
    assert [x["optimizer_step"] for x in applied] == list(range(1, len(full) + 1))
    assert [(x["epoch"], x["step"], x["ids"]) for x in applied] == [(x["epoch"], x["step"], x["ids"]) for x in full]


def assert_one_error_line(r: subprocess.CompletedProcess, prog: str, *fragments: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stderr[-3000:])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr[-3000:]
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in r.stdout + r.stderr
