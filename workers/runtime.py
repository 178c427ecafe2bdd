"""What each worker process owns: its converter (one warm LibreOffice) and its store client."""

from __future__ import annotations

import atexit
import os

from app.config import Settings, get_settings
from app.logs import get_logger
from workers.libreoffice import CliConverter, Converter, FakeConverter, sandbox

log = get_logger("quire.libreoffice")

_converter: Converter | None = None
_owner_pid: int | None = None


def build_converter(settings: Settings) -> Converter:
    profile_root = settings.libreoffice_profiles_dir
    if settings.converter == "fake":
        return FakeConverter()
    if settings.converter == "uno":
        try:
            # The only import of uno: it fails where python3-uno is missing.
            from workers.libreoffice.uno import UnoConverter

            return UnoConverter(
                soffice=settings.soffice_path,
                profile_root=profile_root,
                start_timeout=settings.libreoffice_start_timeout,
                restart_after=settings.libreoffice_restart_after,
            )
        except ImportError:
            pass  # python3-uno is missing: fall back to one soffice run per file
    return CliConverter(settings.soffice_path, settings.resolved_scratch_dir)


def announce_sandbox(settings: Settings) -> None:
    """Say at worker start whether LibreOffice can be sandboxed here (docs/security.md).

    Every instance checks again when it starts and refuses to convert where the sandbox cannot
    be set up, so this changes no outcome: it only lets an operator read the refusal, or the
    warning that QUIRE_SANDBOX=off was chosen, in a worker's first lines rather than when its
    first document fails. A container engine whose seccomp profile blocks Landlock is the
    usual cause, and is best found before a batch is sent."""
    if settings.converter == "fake":
        return
    if settings.sandbox == "off":
        log.warning("libreoffice.sandbox_off", "QUIRE_SANDBOX=off: documents are not confined")
        return
    try:
        sandbox.check()
    except sandbox.SandboxError as error:
        log.error(
            "libreoffice.sandbox_unavailable",
            "this worker converts nothing; QUIRE_SANDBOX=off turns the sandbox off",
            reason=str(error),
        )
    else:
        log.info("libreoffice.sandbox_ready")


def get_converter() -> Converter:
    """This process's converter, started lazily: a forked child must not share its parent's."""
    global _converter, _owner_pid
    if _converter is None or _owner_pid != os.getpid():
        _converter = build_converter(get_settings())
        _owner_pid = os.getpid()
    return _converter


@atexit.register
def close_converter() -> None:
    global _converter
    if _converter is not None and _owner_pid == os.getpid():
        _converter.close()
    _converter = None
