"""What a submission uploads: a zip as it is, or a folder or documents zipped on the fly."""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from quire_client.errors import InputError

# The documents the server converts (.docx, .docm, .doc, .rtf, .odt; app/zipinput.py): the
# server decides from each file's bytes what it is, so the name only chooses what is sent.
DOCUMENT_SUFFIXES = (".docx", ".docm", ".doc", ".rtf", ".odt")
KINDS = ".docx, .docm, .doc, .rtf or .odt"


def docx_files(folder: Path) -> list[tuple[Path, str]]:
    """Every document (DOCUMENT_SUFFIXES) under ``folder`` with its path inside the zip
    (``/``-separated, relative).

    Word's ``~$`` lock files are left out (the server would ignore them anyway); symbolic links
    to folders are not followed, so a link loop cannot make the walk endless. Sorted, so the
    same folder always gives the same zip.
    """
    found: list[tuple[Path, str]] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            path = Path(root, name)
            if (
                name.lower().endswith(DOCUMENT_SUFFIXES)
                and not name.startswith("~$")
                and path.is_file()
            ):
                found.append((path, path.relative_to(folder).as_posix()))
    return found


def write_zip(entries: list[tuple[Path, str]], target: Path) -> None:
    # Stored, not deflated: a DOCX is already a deflated zip, so compressing it again costs
    # CPU time for a few percent. zipfile copies each file in chunks: nothing is held whole.
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for path, name in entries:
            archive.write(path, name)


Source = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def _entries(source: Path) -> list[tuple[Path, str]] | None:
    """The documents ``source`` stands for with their names in the zip; None for a zip."""
    if not source.exists():
        raise InputError(f"{source} does not exist")
    if source.is_dir():
        entries = docx_files(source)
        if not entries:
            raise InputError(f"{source} holds no {KINDS} file")
        return entries
    if source.suffix.lower() in DOCUMENT_SUFFIXES:
        return [(source, source.name)]
    if zipfile.is_zipfile(source):
        return None
    raise InputError(f"{source} is neither a folder, a zip nor a {KINDS} file")


def _several(paths: list[Path]) -> list[tuple[Path, str]]:
    entries: list[tuple[Path, str]] = []
    for path in paths:
        if not path.is_file() or path.suffix.lower() not in DOCUMENT_SUFFIXES:
            raise InputError(f"{path} is not a {KINDS} file (several sources must all be)")
        entries.append((path, path.name))
    names = [name for _, name in entries]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        # Each file is named by its own name in the job; two of one name would be one PDF.
        raise InputError(f"more than one file is named {', '.join(twice)}")
    return entries


@contextmanager
def upload_source(source: Source) -> Iterator[tuple[Path, int]]:
    """The zip to upload for ``source`` and its count of DOCX files (0 when not known).

    A zip is used as it is; a folder (its .docx files, with their paths relative to it), one
    .docx, or a list of .docx files (by their own names) is zipped into a temporary file that
    is removed afterwards.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        entries = _entries(path)
        if entries is None:
            yield path, 0
            return
    else:
        path = Path("the files given")
        entries = _several([Path(item) for item in source])
        if not entries:
            raise InputError("no file given")
    with tempfile.TemporaryDirectory(prefix="quire-") as scratch:
        target = Path(scratch, "upload.zip")
        try:
            write_zip(entries, target)
        except OSError as exc:
            raise InputError(f"could not zip {path}: {exc}") from None
        yield target, len(entries)
