"""Documents made by LibreOffice itself: files saved by a cold ``soffice --convert-to`` with a
profile of its own (no sandbox, no sanitizer), for the tests of the .doc, .rtf and .odt inputs,
their font readers and the hostile-input suite."""

from __future__ import annotations

import subprocess
from pathlib import Path

# The formats LibreOffice writes a DOCX into, with the filter names of soffice --convert-to.
LEGACY_FILTERS = {"doc": "doc:MS Word 97", "rtf": "rtf:Rich Text Format", "odt": "odt:writer8"}


def soffice_saved(sources: list[Path], target_filter: str, folder: Path) -> list[Path]:
    """Each of ``sources`` saved into ``folder`` under ``target_filter`` (e.g. ``doc:MS Word
    97``), all in one soffice run; the files it wrote, in the same order."""
    subprocess.run(
        [
            "soffice",
            f"-env:UserInstallation=file://{folder}/profile",
            "--headless",
            "--convert-to",
            target_filter,
            "--outdir",
            str(folder),
            *map(str, sources),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    suffix = target_filter.split(":", 1)[0]
    made = [folder / f"{source.stem}.{suffix}" for source in sources]
    for path in made:
        if not path.is_file() or path.stat().st_size == 0:
            raise RuntimeError(f"LibreOffice did not save {path.stem} as .{suffix}")
    return made


def saved_by_libreoffice(docx: dict[str, bytes], suffix: str, folder: Path) -> dict[str, Path]:
    """Each DOCX (by its name, without suffix) saved by LibreOffice as ``suffix`` ("odt",
    "rtf", "doc") in ``folder``, all in one soffice run."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for name, data in docx.items():
        source = folder / f"{name}.docx"
        source.write_bytes(data)
        sources.append(source)
    made = soffice_saved(sources, LEGACY_FILTERS[suffix], folder)
    return dict(zip(docx, made, strict=True))
