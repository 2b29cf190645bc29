"""`avsr lips` and tools/extract_lips.py on real (tiny) video files."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from avsr.io import write_av
from avsr.vision import load_mouths
from vision_fixtures import load_extract_lips, talking_face

ROOT = Path(__file__).resolve().parents[2]


def video_without_frames(path: Path) -> None:
    """A Matroska file with an (empty) video stream next to a short audio stream."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 64, 64, "yuv420p"
        a = c.add_stream("aac", rate=16000)
        a.layout = "mono"
        tone = (0.3 * np.sin(np.arange(8000) / 10.0)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 16000, 0, Fraction(1, 16000)
        c.mux(a.encode(frame))
        c.mux(a.encode(None))
        c.mux(v.encode(None))


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Good and bad inputs, made once."""
    d = tmp_path_factory.mktemp("media")
    names = ["good.mp4", "empty.mp4", "text.mp4", "truncated.mp4", "audio_only.m4a", "no_frames.mkv", "no_face.mp4"]
    files = {name: d / name for name in names}
    write_av(files["good.mp4"], talking_face(40, (256, 224), turn=5, scale=0.6, sway=15), 30.0)
    files["empty.mp4"].write_bytes(b"")
    files["text.mp4"].write_text("this is not a video\n")
    raw = files["good.mp4"].read_bytes()
    files["truncated.mp4"].write_bytes(raw[: len(raw) // 2])
    write_av(files["audio_only.m4a"], None, 25.0, audio=(0.3 * np.sin(np.arange(16000) / 10.0)).astype(np.float32))
    video_without_frames(files["no_frames.mkv"])
    noise = np.random.default_rng(0).integers(0, 256, (15, 96, 128, 3), dtype=np.uint8)
    write_av(files["no_face.mp4"], noise, 25.0)
    files["missing.mp4"] = d / "missing.mp4"
    return files


def run_cli(*args: str | os.PathLike) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("AVSR_DEBUG", None)
    command = [sys.executable, "-m", "avsr", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def test_avsr_lips_writes_mouth_crops(media, tmp_path) -> None:
    out = tmp_path / "lips" / "good.npz"
    preview = tmp_path / "lips" / "good.png"
    r = run_cli("lips", media["good.mp4"], "-o", out, "--preview", preview)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # mediapipe's native logging is kept quiet
    with np.load(out) as z:
        assert sorted(z.files) == ["found", "fps", "mouths", "preset"] and str(z["preset"]) == "avsr"
        mouths, found, fps = z["mouths"], z["found"], float(z["fps"])
    n = round(40 / 30.0 * 25)  # 40 frames at 30 fps -> 25 fps
    assert mouths.shape == (n, 96, 96) and mouths.dtype == np.uint8
    assert found.dtype == bool and found.all() and fps == 25.0
    assert 30 < mouths.mean() < 225 and mouths.std() > 10  # an image, not a blank
    sheet = cv2.imread(str(preview))
    tiles = min(n, 50)
    assert sheet.shape == (-(-tiles // 10) * 100, 1000, 3)  # 96 px tiles + 2 px borders, 10 per row
    assert tuple(sheet[0, 50]) == (0, 170, 0)  # green border: face found


@pytest.mark.parametrize(
    "name, problem",
    [
        ("missing.mp4", "no such file"),
        ("empty.mp4", "empty"),
        ("text.mp4", "not a readable media file"),
        ("truncated.mp4", ""),
        ("audio_only.m4a", "no video stream"),
        ("no_frames.mkv", "no video frames"),
        ("no_face.mp4", "no face found in any frame"),
    ],
)
def test_avsr_lips_bad_input_is_one_line(media, tmp_path, name: str, problem: str) -> None:
    out = tmp_path / "out.npz"
    r = run_cli("lips", media[name], "-o", out)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert str(media[name]) in lines[0] and problem in lines[0]
    assert "Traceback" not in r.stderr and not out.exists()


# ------------------------------------------------------------------ extract_lips
def test_extract_lips_over_a_folder_resumes_and_reports_failures(media, tmp_path, capsys) -> None:
    tool = load_extract_lips()
    corpus, out = tmp_path / "corpus", tmp_path / "lips"
    (corpus / "spk1").mkdir(parents=True)
    (corpus / "spk1" / "a.mp4").write_bytes(media["good.mp4"].read_bytes())
    (corpus / "b.mp4").write_bytes(media["good.mp4"].read_bytes())
    (corpus / "spk1" / "bad.mp4").write_text("not a video")
    (corpus / "notes.txt").write_text("ignored")

    assert tool.main([str(corpus), "-o", str(out), "--jobs", "2"]) == 1
    err = capsys.readouterr().err
    assert "done 2, skipped 0, failed 1" in err and "bad.mp4" in err
    a, b = out / "spk1" / "a.npz", out / "b.npz"
    assert load_mouths(a).mouths.shape[1:] == (96, 96) and load_mouths(b).found.all()
    assert not (out / "spk1" / "bad.npz").exists()
    with open(out / "failures.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["video"]).name for r in rows] == ["bad.mp4"] and rows[0]["error"]

    stamp = a.stat().st_mtime_ns
    assert tool.main([str(corpus), "-o", str(out), "--jobs", "1"]) == 1  # resume: only the bad one is retried
    assert "2 already done, 1 to process" in capsys.readouterr().err
    assert a.stat().st_mtime_ns == stamp

    (corpus / "spk1" / "bad.mp4").unlink()
    b.write_bytes(b"half-written junk")  # an unreadable output is redone
    assert tool.main([str(corpus), "-o", str(out), "--jobs", "1"]) == 0
    assert "done 1, skipped 1, failed 0" in capsys.readouterr().err
    assert load_mouths(b).found.all() and not (out / "failures.csv").exists()


def test_extract_lips_manifest_with_ids(media, tmp_path, capsys) -> None:
    tool = load_extract_lips()
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"id,video\nspk/utt1,{media['good.mp4']}\n")
    assert tool.main([str(manifest), "-o", str(tmp_path / "out"), "--jobs", "1"]) == 0
    assert load_mouths(tmp_path / "out" / "spk" / "utt1.npz").fps == 25.0
    assert tool.main([str(tmp_path / "nowhere"), "-o", str(tmp_path / "out")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
