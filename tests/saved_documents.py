"""Documents made by LibreOffice itself: DOCX files written here, saved as .odt or .rtf by a
cold ``soffice --convert-to`` (the filters of tests/plugins/libreoffice.py's
``legacy_documents``), for the font report's readers of those kinds."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.plugins.libreoffice import LEGACY_FILTERS


def saved_by_libreoffice(docx: dict[str, bytes], suffix: str, folder: Path) -> dict[str, Path]:
    """Each DOCX (by its name, without suffix) saved by LibreOffice as ``suffix`` ("odt",
    "rtf", "doc") in ``folder``, all in one soffice run with a profile of its own."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for name, data in docx.items():
        source = folder / f"{name}.docx"
        source.write_bytes(data)
        sources.append(str(source))
    subprocess.run(
        [
            "soffice",
            f"-env:UserInstallation=file://{folder}/profile",
            "--headless",
            "--convert-to",
            LEGACY_FILTERS[suffix],
            "--outdir",
            str(folder),
            *sources,
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    made = {name: folder / f"{name}.{suffix}" for name in docx}
    for name, path in made.items():
        if not path.is_file() or path.stat().st_size == 0:
            raise RuntimeError(f"LibreOffice did not save {name}.docx as .{suffix}")
    return made
