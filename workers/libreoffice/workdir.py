"""The one folder with a document in it that a LibreOffice process may read.

The sandbox's rules are fixed when LibreOffice starts, so a warm instance cannot be given a new
folder per document: each document is put into the instance's work folder under a fixed name,
converted there, its PDF moved out and the folder emptied. The command-line converter does the
same in a folder of its own per run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path


def stage_document(source: Path, work_dir: Path) -> Path:
    """Put ``source`` into ``work_dir`` under a fixed name (never the uploaded one) and return
    its path there. A hard link costs nothing on the same file system; a copy elsewhere."""
    staged = work_dir / ("document" + source.suffix.lower())
    staged.unlink(missing_ok=True)
    try:
        os.link(source, staged)
    except OSError:
        shutil.copyfile(source, staged)
    return staged


def move_file(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
    except OSError:  # another file system
        shutil.move(source, target)


def empty_folder(folder: Path) -> None:
    """Remove what a conversion left in ``folder`` (the document, its PDF, a lock file)."""
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
