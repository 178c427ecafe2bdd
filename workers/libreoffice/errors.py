"""What can go wrong when LibreOffice converts a document, as exceptions.

The tree::

    ConversionError             this document was not converted; the message is for people and
     │                          becomes the file's error_message (the file FAILS)
     ├── ConversionTimeout      it took longer than its timeout; the instance was killed whole
     ├── ConverterCrashed       the instance died under it
     └── ConverterMisconfigured the instance runs without the profile's security settings or
                                outside its sandbox: retrying cannot help, so files FAIL at once
    ConverterUnavailable        LibreOffice cannot be started at all: the worker's trouble, not
                                the document's, so the task is retried later

A timeout or a crash may come from the instance rather than the document, so
``workers.file_conversion`` tries those once more on a fresh instance before the file FAILS.

``workers.libreoffice.sandbox.SandboxError`` (the kernel refuses the sandbox) never leaves the
converters: they turn it into ConverterMisconfigured with ``sandbox_refusal``. It is defined in
the sandbox module, which runs as a script with the standard library alone.

``workers.metrics`` counts failures by these classes, most specific first.
"""

from __future__ import annotations

from app.logs import get_logger

# The logger's name predates the package (workers/conversion.py); kept so logs read the same.
log = get_logger("quire.conversion")


class ConversionError(Exception):
    """LibreOffice could not turn the document into a PDF; the message is for people."""


class ConversionTimeout(ConversionError):
    """The conversion exceeded its timeout; the instance and everything it started were killed."""


class ConverterCrashed(ConversionError):
    """The converter process died; a fresh instance may well succeed."""


class ConverterMisconfigured(ConversionError):
    """LibreOffice runs without the settings that keep documents from fetching anything: an
    installation problem that retrying cannot fix, so files fail at once, saying so."""


class ConverterUnavailable(Exception):
    """LibreOffice cannot be started: the worker's trouble, not the document's, so the task is
    retried later instead of failing the file."""


def sandbox_refusal(reason: str) -> ConverterMisconfigured:
    """Fail closed: an instance that cannot be sandboxed converts nothing (docs/security.md)."""
    log.error("libreoffice.sandbox_unavailable", reason=reason)
    return ConverterMisconfigured(
        f"LibreOffice's sandbox cannot be set up on this worker ({reason}), so it converts "
        "nothing. The kernel or the container must allow Landlock and seccomp; QUIRE_SANDBOX=off "
        "turns the sandbox off."
    )


def crash_message(memory_mb: int | None) -> str:
    if not memory_mb:
        return "LibreOffice crashed while converting this document."
    # A document that needs more than the limit makes allocations fail, and where LibreOffice
    # does not recover (it drops a picture it cannot decode, for one) it aborts.
    return (
        "LibreOffice crashed while converting this document; it may have needed more than its "
        f"memory limit of {memory_mb} MiB (QUIRE_LIBREOFFICE_MEMORY_MB)."
    )
