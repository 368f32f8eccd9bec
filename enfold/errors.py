"""User-facing errors.

Every problem a user can fix (a bad config key, an unreadable folder, a missing optional library)
is raised as :class:`EnfoldError`; the CLI prints its message without a traceback.
"""

from __future__ import annotations


class EnfoldError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""


class ConfigError(EnfoldError):
    """An invalid configuration: unknown key, wrong type or value out of range."""


class NonFiniteLossError(EnfoldError):
    """Training produced a NaN or infinite loss; the last good checkpoint is left untouched."""


class LimitError(EnfoldError):
    """An input above a work limit (pixels, tiles, aspect ratio); ``limit`` names the limit."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


class OutputExistsError(EnfoldError):
    """An output file a command would write already exists and ``--overwrite`` was not given."""


class OutputWriteError(EnfoldError):
    """One output could not be written (a folder in its place, no space, no permission)."""


class RunLockedError(EnfoldError):
    """Another process is training in the same run folder (it holds ``OUT/.lock``)."""


class NonFiniteWeightsError(EnfoldError):
    """A checkpoint or artifact holds NaN or infinite weights: it cannot give answers."""


class NonFiniteOutputError(EnfoldError):
    """The model produced NaN or infinite values; no answer is given. ``rows``: the positions
    in the batch whose outputs were not finite."""

    def __init__(self, message: str, rows: list[int] | None = None) -> None:
        super().__init__(message)
        self.rows = rows or []


class SidecarError(EnfoldError):
    """An artifact's JSON sidecar is missing, unreadable, or holds a field that is unknown,
    missing or impossible."""
