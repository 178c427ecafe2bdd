"""The one exception the CLI shows as a one-line message instead of a traceback."""

from __future__ import annotations

# Exit codes, also listed in ``quire --help``.
EXIT_OK = 0
EXIT_FILES_FAILED = 1  # the job ran, and some file (or the whole job) failed
EXIT_USAGE = 2  # argparse's own code for a bad command line
EXIT_ERROR = 3  # nothing to report on: the server was unreachable, refused, or a local error
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An expected failure: printed as ``quire: error: <message>``, exit code ``EXIT_ERROR``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
