"""What a file IS, decided by its content, and the check and clean-up for each kind.

Quire converts four kinds of word-processing document: DOCX (and DOCM), DOC, RTF and ODT. The
name a file arrived under says what its sender thinks it is; its bytes say what LibreOffice
will read, so the bytes decide:

- a zip with ``[Content_Types].xml``: an OOXML package, checked and cleaned as a DOCX
  (``workers.sanitize``), whatever its name: a ``.docx`` saved as ``.doc`` converts as what it
  is;
- a zip whose first entry is ``mimetype``: an ODF package, a text document only
  (``workers.odf``);
- an OLE2 compound file: a Word 97-2003 document when its root holds a ``WordDocument`` stream
  whose file information block says it is not encrypted; an encrypted OOXML document when it
  holds ``EncryptionInfo`` and ``EncryptedPackage`` (what Office writes for a ``.docx`` with a
  password); anything else is refused, each with its own message (``workers.ole2`` reads it);
- ``{\\rtf``: an RTF document (``workers.rtf``).

The name matters only for the message when the bytes are none of these: a person who sent
``notes.doc`` is told the file is not a Word 97-2003 document.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path

from app.config import get_settings
from workers import odf, rtf
from workers.font_requests import Requested
from workers.fonts import DocxReading
from workers.ole2 import word_document_problem
from workers.sanitize import prepare_docx
from workers.validation import OLE2_MAGIC, ZIP_MAGIC, InvalidDocument, open_package

FIRST_NAME_AT = 30  # a zip's first entry name starts after its local header (30 bytes)


class Format(enum.Enum):
    DOCX = ".docx"
    DOC = ".doc"
    RTF = ".rtf"
    ODT = ".odt"


# What each accepted name claims to be, for the message when the bytes are none of the kinds.
CLAIMED = {
    ".docx": "a DOCX document",
    ".docm": "a DOCX document",
    ".doc": "a Word 97-2003 document (.doc)",
    ".rtf": "an RTF document",
    ".odt": "an OpenDocument text (.odt)",
}


def _claimed(filename: str) -> str:
    return CLAIMED.get(os.path.splitext(filename)[1].lower(), "a DOCX document")


def _describe_unknown(head: bytes, filename: str) -> str:
    claimed = _claimed(filename)
    if head.startswith(b"%PDF"):
        return f"The file is already a PDF, not {claimed}."
    if claimed == "a DOCX document":  # the messages DOCX users have always had
        return (
            "The file is not a DOCX document: it is not a zip package "
            "(it may be plain text or binary data)."
        )
    return (
        f"The file is not {claimed}: it is neither a Word document (DOCX or DOC), an RTF nor an "
        "OpenDocument text (it may be plain text or binary data)."
    )


def detect(path: Path, filename: str = "") -> Format:
    """The kind of document at ``path``, from its bytes; InvalidDocument, with a message for a
    person, when it is none Quire converts (``filename`` only words that message)."""
    with open(path, "rb") as handle:
        head = handle.read(FIRST_NAME_AT + 9)
    if not head:
        raise InvalidDocument("The file is empty (0 bytes).")
    if head.startswith(OLE2_MAGIC):
        problem = word_document_problem(path)
        if problem is not None:
            raise InvalidDocument(problem)
        return Format.DOC
    if head.startswith(b"{\\rtf"):
        return Format.RTF
    if head.startswith(ZIP_MAGIC):
        first_entry = head[FIRST_NAME_AT:]
        if first_entry.startswith(b"mimetype"):
            return Format.ODT
        if first_entry.startswith(b"[Content_"):
            return Format.DOCX  # how Word and LibreOffice write it: no second reading needed
        with open_package(path) as package:
            names = set(package.namelist())
        if "[Content_Types].xml" in names or "mimetype" not in names:
            return Format.DOCX  # the DOCX check says what is wrong with a zip that is neither
        return Format.ODT  # a mimetype entry that is not first: the ODF check refuses it
    raise InvalidDocument(_describe_unknown(head, filename))


@dataclass(frozen=True)
class Prepared:
    """A checked document: where it lies, and what it asks for of fonts when that was read on
    the way (a DOCX's, from the validator's one read; ``fonts_read`` with ``requested`` None:
    the reading failed, logged, and the file converts without a report)."""

    path: Path
    fonts_read: bool = False
    requested: Requested | None = None


def prepare_document(path: Path, filename: str = "") -> Path:
    """``prepare``, for a caller that wants the path only."""
    return prepare(path, filename, read_fonts=False).path


def prepare(path: Path, filename: str = "", *, read_fonts: bool = True) -> Prepared:
    """Check the document at ``path`` by what it is and remove what could make LibreOffice read
    a file of the worker's; return where it now lies, its suffix naming its kind (LibreOffice
    picks its import filter by content and suffix together), and, for a DOCX with
    ``read_fonts``, the fonts it asks for (``workers.fonts.DocxReading``), read from the
    chunks the validation decompresses: the package is decompressed once.

    DOC is binary and is not rewritten: its links (linked pictures, INCLUDETEXT fields, OLE
    links) are left to the sandbox, which lets LibreOffice read nothing outside its document's
    folder (docs/security.md).
    """
    kind = detect(path, filename)
    reading: DocxReading | None = None
    if kind is Format.DOCX:
        if read_fonts:
            settings = get_settings()
            reading = DocxReading(
                settings.max_part_expanded_bytes, settings.max_package_expanded_bytes
            )
        prepare_docx(path, reading.observe if reading is not None else None)
    elif kind is Format.ODT:
        odf.prepare_odt(path)
    elif kind is Format.RTF:
        rtf.prepare_rtf(path)
    target = path.with_suffix(kind.value)
    if target != path:
        os.replace(path, target)
    if reading is None:
        return Prepared(target)
    return Prepared(target, fonts_read=True, requested=reading.result())
