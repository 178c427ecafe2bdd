"""Is this file a Word document LibreOffice should convert? Checked before converting.

LibreOffice turns almost anything into a PDF (random bytes and plain text become pages of
garbage, an empty file a blank page), so only a well-formed DOCX package is let through.
A DOCX is an OPC package: a zip with ``[Content_Types].xml`` whose root relationship of type
``.../officeDocument`` points at the main part, which is usually ``word/document.xml`` but not
always, so the relationship is followed rather than the path assumed.
"""

from __future__ import annotations

import posixpath
import zipfile
import zlib
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ZIP_MAGIC = b"PK\x03\x04"
OFFICE_DOCUMENT = "/officeDocument"  # transitional and ISO Strict relationship types both end so
WORD_CONTENT_TYPES = ("wordprocessingml", "ms-word")
MAX_PART_XML = 4 * 1024 * 1024  # [Content_Types].xml and _rels/.rels are a few KB in practice
MAX_EXPANDED = 2 * 1024 * 1024 * 1024  # a package that claims to unpack to more is refused
UNSUPPORTED_COMPRESSION = (
    "The DOCX package uses a zip compression method (such as Deflate64) that Word does not "
    "write and Quire cannot read; save it again from Word."
)


class InvalidDocument(Exception):
    """The file is not a convertible DOCX; the message tells a person why."""


def _describe_non_zip(head: bytes) -> str:
    if head.startswith(OLE2_MAGIC):
        return (
            "The file is a password-protected DOCX or a legacy Word .doc (an OLE2 container), "
            "not a DOCX package. Remove the password or save it as .docx, then upload it again."
        )
    if head.startswith(b"%PDF"):
        return "The file is already a PDF, not a DOCX document."
    if head.startswith(b"{\\rtf"):
        return "The file is an RTF document renamed to .docx, not a DOCX package."
    if head.startswith(ZIP_MAGIC):
        return "The file is a damaged or truncated DOCX: its zip structure cannot be read."
    return (
        "The file is not a DOCX document: it is not a zip package "
        "(it may be plain text or binary data)."
    )


def _read_xml(package: zipfile.ZipFile, name: str) -> Element:
    info = package.getinfo(name)
    if info.file_size > MAX_PART_XML:
        raise InvalidDocument(f"The DOCX package's {name} is implausibly large.")
    try:
        data = package.read(info)
    except NotImplementedError:
        raise InvalidDocument(UNSUPPORTED_COMPRESSION) from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError):
        raise InvalidDocument(f"The DOCX package is damaged: its {name} cannot be read.") from None
    try:
        # defusedxml: entity expansion and external entities are refused, not resolved.
        return fromstring(data)  # type: ignore[no-any-return]
    except (ParseError, DefusedXmlException):
        raise InvalidDocument(f"The DOCX package's {name} is not well-formed XML.") from None


def _main_part(package: zipfile.ZipFile, names: set[str]) -> str:
    if "_rels/.rels" not in names:
        raise InvalidDocument("The file is not a Word document: its package has no _rels/.rels.")
    for relation in _read_xml(package, "_rels/.rels"):
        if relation.get("Type", "").endswith(OFFICE_DOCUMENT):
            target = relation.get("Target", "")
            part = posixpath.normpath(target.lstrip("/")) if target else ""
            if part not in names:
                raise InvalidDocument(
                    f"The DOCX package is incomplete: its main document part {target!r} is missing."
                )
            return part
    raise InvalidDocument("The file is not a Word document: its package has no main document.")


def _content_type(package: zipfile.ZipFile, part: str) -> str:
    defaults, overrides = {}, {}
    for element in _read_xml(package, "[Content_Types].xml"):
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "Default":
            defaults[element.get("Extension", "").lower()] = element.get("ContentType", "")
        elif tag == "Override":
            overrides[element.get("PartName", "").lstrip("/")] = element.get("ContentType", "")
    return overrides.get(part) or defaults.get(posixpath.splitext(part)[1][1:].lower(), "")


def validate_docx(path: Path) -> None:
    size = path.stat().st_size
    if size == 0:
        raise InvalidDocument("The file is empty (0 bytes).")
    with open(path, "rb") as handle:
        head = handle.read(8)
    try:
        package = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise InvalidDocument(_describe_non_zip(head)) from None
    with package:
        infos = package.infolist()
        names = {info.filename for info in infos}
        if "[Content_Types].xml" not in names:
            raise InvalidDocument(
                "The file is not a DOCX document: the zip has no [Content_Types].xml."
            )
        if sum(info.file_size for info in infos) > MAX_EXPANDED:
            raise InvalidDocument("The DOCX package expands to more than 2 GiB; refused.")
        if any(info.flag_bits & 0x1 for info in infos):
            raise InvalidDocument("The DOCX package contains encrypted parts.")
        part = _main_part(package, names)
        content_type = _content_type(package, part)
        if not any(marker in content_type for marker in WORD_CONTENT_TYPES):
            raise InvalidDocument(
                "The file is an Office package but not a Word document "
                f"(its main part is {content_type or 'of unknown type'})."
            )
        try:
            damaged = package.testzip()
        except NotImplementedError:
            raise InvalidDocument(UNSUPPORTED_COMPRESSION) from None
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError):
            damaged = "?"
        if damaged is not None:
            raise InvalidDocument("The DOCX package is damaged: some of its parts cannot be read.")
        _refuse_doctype(package, part)


def _refuse_doctype(package: zipfile.ZipFile, part: str) -> None:
    """Word never writes a DOCTYPE; one in the main part can only declare entities."""
    found, tail = False, b""
    with package.open(part) as handle:
        while not found and (chunk := handle.read(1024 * 1024)):
            window = (tail + chunk).upper()
            found = b"<!DOCTYPE" in window
            tail = window[-16:]  # a marker split across two chunks is still seen
    if found:
        raise InvalidDocument(
            "The document's XML declares a DOCTYPE (entities), which Word never writes; refused."
        )
