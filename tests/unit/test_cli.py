"""The command line front door: help, version, dispatch and error style."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from avsr import cli
from avsr.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_existing_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in cli._COMMANDS:
        assert name in out
    assert "lips" in cli._COMMANDS


def test_python_dash_m_runs_and_no_command_prints_help():
    r = subprocess.run([sys.executable, "-m", "avsr"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "usage: avsr" in r.stdout


def test_user_errors_become_one_line(monkeypatch, capsys):
    def boom(args):
        raise InputError("talk.mp4", "no video stream")

    monkeypatch.setitem(cli._COMMANDS, "lips", (*cli._COMMANDS["lips"][:2], boom))
    code = cli.main(["lips", "talk.mp4", "-o", "x.npz"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip() == "avsr lips: error: talk.mp4: no video stream"


def test_unexpected_errors_are_one_line_too(monkeypatch, capsys):
    def boom(args):
        raise ValueError("bad thing")

    monkeypatch.setitem(cli._COMMANDS, "lips", (*cli._COMMANDS["lips"][:2], boom))
    assert cli.main(["lips", "a.mp4", "-o", "x.npz"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ValueError: bad thing" in err[0]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, flags=re.S)
    assert len(blocks) >= 2, "README must open with the set-up and the test commands"
    test_cmd = blocks[1].strip()
    assert test_cmd in ci
    assert "tools/install.sh" in blocks[0] and "tools/install.sh" in ci
