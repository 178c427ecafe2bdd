"""The CLI's exit codes, and its one exception of its own.

Every ``quire_client.QuireError`` is shown as ``quire: error: <message>`` with ``EXIT_ERROR``;
``CliError`` is for what only the command line can get wrong (an output path, say).
"""

from __future__ import annotations

from quire_client.errors import QuireError

# Exit codes, also listed in ``quire --help``.
EXIT_OK = 0
EXIT_FILES_FAILED = 1  # the job ran, and some file (or the whole job) failed
EXIT_USAGE = 2  # argparse's own code for a bad command line
EXIT_ERROR = 3  # nothing to report on: the server was unreachable, refused, or a local error
EXIT_INTERRUPTED = 130


class CliError(QuireError):
    """An expected failure of the command line itself: printed as one line, ``EXIT_ERROR``."""
