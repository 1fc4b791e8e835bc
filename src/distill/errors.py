"""Errors a user can cause and fix. The CLI prints them as one line and exits with their code."""


class DistillError(Exception):
    """A user-facing problem: bad input, a missing file, a mismatch. Printed without a traceback."""

    exit_code = 2


class ConfigError(DistillError):
    """A config value or key is wrong; the message names the key."""


class TrainingDiverged(DistillError):
    """The loss became NaN or infinite; the message names the step. The last good checkpoint is kept."""

    exit_code = 1
