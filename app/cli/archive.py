"""What ``quire convert`` uploads: a zip as it is, or a folder (or one DOCX) zipped on the fly."""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.cli.errors import CliError


def docx_files(folder: Path) -> list[tuple[Path, str]]:
    """Every ``.docx`` under ``folder`` with its path inside the zip (``/``-separated, relative).

    Word's ``~$`` lock files are left out (the server would ignore them anyway); symbolic links
    to folders are not followed, so a link loop cannot make the walk endless. Sorted, so the
    same folder always gives the same zip.
    """
    found: list[tuple[Path, str]] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            path = Path(root, name)
            if name.lower().endswith(".docx") and not name.startswith("~$") and path.is_file():
                found.append((path, path.relative_to(folder).as_posix()))
    return found


def write_zip(entries: list[tuple[Path, str]], target: Path) -> None:
    # Stored, not deflated: a DOCX is already a deflated zip, so compressing it again costs
    # CPU time for a few percent. zipfile copies each file in chunks: nothing is held whole.
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for path, name in entries:
            archive.write(path, name)


@contextmanager
def upload_source(source: Path) -> Iterator[tuple[Path, int]]:
    """The zip to upload for ``source`` and its count of DOCX files (0 when not known).

    A zip is used as it is; a folder or a single ``.docx`` is zipped into a temporary file
    that is removed afterwards.
    """
    if not source.exists():
        raise CliError(f"{source} does not exist")
    if source.is_dir():
        entries = docx_files(source)
        if not entries:
            raise CliError(f"{source} holds no .docx file")
    elif source.suffix.lower() == ".docx":
        entries = [(source, source.name)]
    elif zipfile.is_zipfile(source):
        yield source, 0
        return
    else:
        raise CliError(f"{source} is neither a folder, a zip nor a .docx file")
    with tempfile.TemporaryDirectory(prefix="quire-") as scratch:
        target = Path(scratch, "upload.zip")
        try:
            write_zip(entries, target)
        except OSError as exc:
            raise CliError(f"could not zip {source}: {exc}") from None
        yield target, len(entries)
