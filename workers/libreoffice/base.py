"""The converter interface: the one part of the pipeline that is swapped, passed in where it is
used (``workers.runtime`` builds this process's one).

Three implementations: ``workers.libreoffice.uno.UnoConverter`` (a warm instance, the real
one), ``workers.libreoffice.cli.CliConverter`` (one cold ``soffice --convert-to`` per file,
where ``import uno`` fails) and ``workers.libreoffice.fake.FakeConverter`` (no LibreOffice, for
unit tests of the pipeline).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from workers.libreoffice.options import PLAIN_PDF, PdfOptions


class Converter(Protocol):
    restarts: int

    def convert(
        self, source: Path, target: Path, timeout: float, options: PdfOptions = PLAIN_PDF
    ) -> None:
        """Write ``target`` as a PDF of ``source`` with ``options``, or raise ConversionError."""
        ...

    def close(self) -> None: ...
