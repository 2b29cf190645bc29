"""Exceptions that the CLI turns into one clear line and a non-zero exit."""

from __future__ import annotations

import os
import sys
from typing import Callable


class AVSRError(Exception):
    """Base class of errors meant for the user: the message is the whole story."""


class InputError(AVSRError):
    """A bad input file or argument.

    Args:
        path: the offending file (or ``None`` for a bad argument).
        problem: what is wrong with it, in a few words.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class NoFaceError(InputError):
    """A video (or a time range of it) in which no face was found on any frame.

    Callers that can fall back to audio catch this one and let other input
    errors (an unreadable file, no video stream) through.
    """


def run_reporting(name: str, fn: Callable[[], int | None], *, error_code: int = 1,
                  interrupted: str = "interrupted", internal_errors: bool = False) -> int:
    """Run a command's body and return its exit code, the way every avsr command ends.

    An :class:`AVSRError` becomes one line ``NAME: error: ...`` on stderr and
    ``error_code``; Ctrl-C becomes ``NAME: <interrupted>`` and 130. With
    ``internal_errors`` any other exception is also one line (and 1), never a
    traceback. ``AVSR_DEBUG=1`` lets the errors through with their tracebacks.
    """
    debug = bool(os.environ.get("AVSR_DEBUG"))
    try:
        return int(fn() or 0)
    except AVSRError as e:
        if debug:
            raise
        print(f"{name}: error: {e}", file=sys.stderr)
        return error_code
    except KeyboardInterrupt:
        print(f"{name}: {interrupted}", file=sys.stderr)
        return 130
    except Exception as e:
        if debug or not internal_errors:
            raise
        print(f"{name}: internal error: {type(e).__name__}: {e} (set AVSR_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 1
