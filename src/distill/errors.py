"""Errors a user can cause and fix. The CLI prints them as one line and exits with their code.

Anything else that escapes a command (out of memory, an error inside torch or a library, a bug of ours) is
not one of these: the CLI reports it as an internal failure, exit code 1, with the traceback on request.
"""

from __future__ import annotations

import re


class DistillError(Exception):
    """A user-facing problem: bad input, a missing file, a mismatch. Printed without a traceback.

    One raised in a DataLoader worker (an image file that will not decode) reaches the training process
    raised again with the worker's traceback as its text; its own line, the last, is kept."""

    exit_code = 2

    def __init__(self, message: str = ""):
        if message.startswith("Caught ") and "Original Traceback" in message:
            message = message.rstrip().splitlines()[-1].partition(f"{type(self).__name__}: ")[2] or message
        super().__init__(message)


class ConfigError(DistillError):
    """A config value or key is wrong; the message names the key."""


class TrainingDiverged(DistillError):
    """The loss became NaN or infinite; the message names the step. The last good checkpoint is kept."""

    exit_code = 1


def first_line(error: BaseException, *, typed: bool = False) -> str:
    """The first line of an exception's text, without terminal colour codes ("Type: line" when `typed`); its
    type name when it has none (an EOFError). Library errors span many lines; ours are one."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
    if not text:
        return type(error).__name__
    return f"{type(error).__name__}: {text.splitlines()[0]}" if typed else text.splitlines()[0]
