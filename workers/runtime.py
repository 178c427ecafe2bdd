"""What each worker process owns: its converter (one warm LibreOffice) and its store client."""

from __future__ import annotations

import atexit
import os

from app.config import Settings, get_settings
from workers.libreoffice import CliConverter, Converter, FakeConverter

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
