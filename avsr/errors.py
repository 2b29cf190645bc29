"""Exceptions that the CLI turns into one clear line and a non-zero exit."""

from __future__ import annotations

import os


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
