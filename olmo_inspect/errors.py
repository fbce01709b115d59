"""The one exception family of olmo-inspect.

Every message names the file or directory, what is wrong and what to do, in one line.
The CLI prints ``str(error)`` and exits with ``error.exit_code``; it shows a traceback only
under ``--debug``.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class InspectError(Exception):
    """Base class: an error the user can act on, reported without a traceback."""

    exit_code = EXIT_INVALID


class CheckpointNotFound(InspectError):
    """The path does not exist, or contains no checkpoint of any known kind."""


class UnsupportedFormat(InspectError):
    """The directory or file is of a kind or version this tool cannot read."""


class CorruptFile(InspectError):
    """A file is truncated, malformed or lies about its own structure."""


class IncompleteCheckpoint(InspectError):
    """Files the checkpoint needs are missing or shorter than its metadata states."""


class UnsafePickle(InspectError):
    """A pickle requests an operation the restricted unpickler rejects."""


class ConversionError(InspectError):
    """A conversion cannot be planned, run or verified."""


class UsageError(InspectError):
    """The command line is invalid: an unknown option, a bad value or a wrong path kind."""

    exit_code = EXIT_USAGE
