"""run_reporting: how every avsr command turns its errors into one line and an exit code."""

from __future__ import annotations

import pytest

from avsr.errors import InputError, run_reporting


def _raise(exc: BaseException):
    def fn():
        raise exc
    return fn


def test_returns_the_body_s_code():
    assert run_reporting("tool", lambda: None) == 0
    assert run_reporting("tool", lambda: 3) == 3


def test_user_error_is_one_line_and_the_error_code(capsys, monkeypatch):
    monkeypatch.delenv("AVSR_DEBUG", raising=False)
    assert run_reporting("tool", _raise(InputError("a.csv", "no such file"))) == 1
    assert run_reporting("tool", _raise(InputError(None, "bad")), error_code=2) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["tool: error: a.csv: no such file", "tool: error: bad"]


def test_interrupt_is_130_with_the_given_words(capsys):
    assert run_reporting("tool", _raise(KeyboardInterrupt()), interrupted="stopped, run again") == 130
    assert capsys.readouterr().err == "tool: stopped, run again\n"


def test_internal_errors_only_when_asked(capsys, monkeypatch):
    monkeypatch.delenv("AVSR_DEBUG", raising=False)
    with pytest.raises(ZeroDivisionError):
        run_reporting("tool", _raise(ZeroDivisionError("x")))
    assert run_reporting("tool", _raise(ZeroDivisionError("x")), internal_errors=True) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tool: internal error: ZeroDivisionError: x")


def test_debug_lets_errors_through(monkeypatch):
    monkeypatch.setenv("AVSR_DEBUG", "1")
    with pytest.raises(InputError):
        run_reporting("tool", _raise(InputError(None, "bad")))
    with pytest.raises(ZeroDivisionError):
        run_reporting("tool", _raise(ZeroDivisionError("x")), internal_errors=True)
