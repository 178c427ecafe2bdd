"""What a job asks of its PDFs, and how that reaches LibreOffice's PDF export."""

from __future__ import annotations

import json
from dataclasses import dataclass

from app.models import PdfA

# writer_pdf_Export's SelectPdfVersion for each PDF/A level (0 is a plain PDF).
PDF_A_VERSIONS = {PdfA.PDF_A_1B: 1, PdfA.PDF_A_2B: 2, PdfA.PDF_A_3B: 3}


@dataclass(frozen=True)
class PdfOptions:
    """What a job asks of its PDFs, applied through LibreOffice's PDF export options.

    LibreOffice 7.4 tags every PDF/A it writes whatever UseTaggedPDF says, and marks PDF/A-1
    as conformance level A (a superset of 1b); tests/workers/test_pdf_options.py measures it.
    """

    pdf_a: PdfA | None = None
    tagged: bool = False

    def filter_data(self) -> dict[str, int | bool]:
        """writer_pdf_Export's FilterData. Both keys are always given, so a plain PDF is asked
        for explicitly rather than taken from whatever the profile's PDF defaults are."""
        version = PDF_A_VERSIONS[self.pdf_a] if self.pdf_a is not None else 0
        return {"SelectPdfVersion": version, "UseTaggedPDF": self.tagged}

    def convert_to(self) -> str:
        """The ``soffice --convert-to`` argument: the filter with its options as JSON, which
        LibreOffice 7.4 reads (each value typed, as UNO needs it)."""
        typed = {
            name: (
                {"type": "boolean", "value": str(value).lower()}
                if isinstance(value, bool)
                else {"type": "long", "value": str(value)}
            )
            for name, value in self.filter_data().items()
        }
        return "pdf:writer_pdf_Export:" + json.dumps(typed, separators=(",", ":"))


PLAIN_PDF = PdfOptions()
