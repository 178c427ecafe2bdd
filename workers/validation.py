"""Is this file a Word document LibreOffice should convert? Checked before converting.

LibreOffice turns almost anything into a PDF (random bytes and plain text become pages of
garbage, an empty file a blank page), so only a well-formed DOCX package is let through.
A DOCX is an OPC package: a zip with ``[Content_Types].xml`` whose root relationship of type
``.../officeDocument`` points at the main part, which is usually ``word/document.xml`` but not
always, so the relationship is followed rather than the path assumed.

Every part is decompressed here, before LibreOffice sees the file, and its bytes are counted as
they come out: a part, or the whole package, that expands past QUIRE_MAX_PART_EXPANDED_BYTES or
QUIRE_MAX_PACKAGE_EXPANDED_BYTES is refused (a zip bomb), whatever its headers claim.
"""

from __future__ import annotations

import posixpath
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from app.config import get_settings
from workers.ole2 import word_document_problem

OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ZIP_MAGIC = b"PK\x03\x04"
OFFICE_DOCUMENT = "/officeDocument"  # transitional and ISO Strict relationship types both end so
WORD_CONTENT_TYPES = ("wordprocessingml", "ms-word")
MAX_PART_XML = 4 * 1024 * 1024  # [Content_Types].xml and _rels/.rels are a few KB in practice
CHUNK = 1024 * 1024
MiB = 1024 * 1024
UNSUPPORTED_COMPRESSION = (
    "The DOCX package uses a zip compression method (such as Deflate64) that Word does not "
    "write and Quire cannot read; save it again from Word."
)


class InvalidDocument(Exception):
    """The file is not a convertible DOCX; the message tells a person why."""


def _describe_non_zip(path: Path, head: bytes) -> str:
    if head.startswith(OLE2_MAGIC):
        # An encrypted .docx, or a Word 97-2003 .doc (which workers.formats converts as one).
        return word_document_problem(path) or (
            "The file is a Word 97-2003 document (.doc), not a DOCX package."
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


def _read_part(package: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        return package.read(info)
    except NotImplementedError:
        raise InvalidDocument(UNSUPPORTED_COMPRESSION) from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError):
        raise InvalidDocument(
            f"The DOCX package is damaged: its {info.filename} cannot be read."
        ) from None


def _parse_xml(name: str, data: bytes) -> Element:
    try:
        # defusedxml: entity expansion and external entities are refused, not resolved.
        return fromstring(data)  # type: ignore[no-any-return]
    except (ParseError, DefusedXmlException):
        raise InvalidDocument(f"The DOCX package's {name} is not well-formed XML.") from None


def _small_part(package: zipfile.ZipFile, name: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = package.getinfo(name)
    if info.file_size > MAX_PART_XML:
        raise InvalidDocument(f"The DOCX package's {name} is implausibly large.")
    return info, _read_part(package, info)


def _main_part(root_rels: bytes, names: set[str]) -> str:
    for relation in _parse_xml("_rels/.rels", root_rels):
        if relation.get("Type", "").endswith(OFFICE_DOCUMENT):
            target = relation.get("Target", "")
            part = posixpath.normpath(target.lstrip("/")) if target else ""
            if part not in names:
                raise InvalidDocument(
                    f"The DOCX package is incomplete: its main document part {target!r} is missing."
                )
            return part
    raise InvalidDocument("The file is not a Word document: its package has no main document.")


# [Content_Types].xml: the default content type by extension, and each override by part name.
ContentTypes = tuple[dict[str, str], dict[str, str]]


def content_types(data: bytes) -> ContentTypes:
    defaults, overrides = {}, {}
    for element in _parse_xml("[Content_Types].xml", data):
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "Default":
            defaults[element.get("Extension", "").lower()] = element.get("ContentType", "")
        elif tag == "Override":
            overrides[element.get("PartName", "").lstrip("/")] = element.get("ContentType", "")
    return defaults, overrides


def content_type_of(types: ContentTypes, part: str) -> str:
    defaults, overrides = types
    return overrides.get(part) or defaults.get(posixpath.splitext(part)[1][1:].lower(), "")


def open_package(path: Path) -> zipfile.ZipFile:
    """The file as a zip, or InvalidDocument saying what it is instead."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        with open(path, "rb") as handle:
            head = handle.read(8)
        if not head:
            raise InvalidDocument("The file is empty (0 bytes).") from None
        raise InvalidDocument(_describe_non_zip(path, head)) from None


# Called with each relationship part (``*.rels``) and its bytes, as the check reads them.
RelationshipsSeen = Callable[[zipfile.ZipInfo, bytes], None]
# Called with each part's name, its content type and the main part's name before the check
# reads it; returns what to hand each of its decompressed chunks to, or None. The consumer must
# not raise (whatever it fails at is its own business, not the document's validity): the
# font report reads its parts so, from the one decompression the check makes.
ChunkConsumer = Callable[[bytes], None]
PartObserver = Callable[[str, str, str], ChunkConsumer | None]


def _size(count: int) -> str:
    return f"{count / MiB:g} MiB"


def part_too_large(name: str, limit: int) -> InvalidDocument:
    return InvalidDocument(
        f"The DOCX package's part {name} expands to more than {_size(limit)} "
        "(QUIRE_MAX_PART_EXPANDED_BYTES): a compressed bomb, or far larger than any document "
        "Word writes; refused."
    )


def package_too_large(limit: int) -> InvalidDocument:
    return InvalidDocument(
        f"The DOCX package expands to more than {_size(limit)} in all "
        "(QUIRE_MAX_PACKAGE_EXPANDED_BYTES): a compressed bomb, or far larger than any document "
        "Word writes; refused."
    )


def validate_docx(path: Path) -> None:
    with open_package(path) as package:
        check_package(package)


def check_package(
    package: zipfile.ZipFile,
    relationships: RelationshipsSeen | None = None,
    max_relationships_bytes: int = MAX_PART_XML,
    *,
    max_part_bytes: int | None = None,
    max_package_bytes: int | None = None,
    observer: PartObserver | None = None,
) -> None:
    """Refuse anything but a readable Word package, decompressing each part once.

    Every part is read to its end, so zipfile checks its CRC (what ``testzip`` does); on the
    way the main part is searched for a DOCTYPE, and each relationship part over at most
    ``max_relationships_bytes`` is handed to ``relationships``: the link sanitiser needs
    exactly those bytes, and reading the package a second time for it cost as much again.
    The expanded bytes are counted against ``max_part_bytes`` and ``max_package_bytes``
    (default: the settings) as they are read. ``observer`` sees the other parts' chunks as
    they come out (the two read whole first are not offered).
    """
    settings = get_settings()
    max_part = max_part_bytes or settings.max_part_expanded_bytes
    max_package = max_package_bytes or settings.max_package_expanded_bytes
    infos = package.infolist()
    names = {info.filename for info in infos}
    if "[Content_Types].xml" not in names:
        raise InvalidDocument(
            "The file is not a DOCX document: the zip has no [Content_Types].xml."
        )
    # What the headers claim, refused before anything is decompressed; what they do not
    # claim is caught by counting below.
    for info in infos:
        if info.file_size > max_part:
            raise part_too_large(info.filename, max_part)
    if sum(info.file_size for info in infos) > max_package:
        raise package_too_large(max_package)
    if any(info.flag_bits & 0x1 for info in infos):
        raise InvalidDocument("The DOCX package contains encrypted parts.")
    if "_rels/.rels" not in names:
        raise InvalidDocument("The file is not a Word document: its package has no _rels/.rels.")
    rels_info, root_rels = _small_part(package, "_rels/.rels")
    part = _main_part(root_rels, names)
    types_info, content_types_xml = _small_part(package, "[Content_Types].xml")
    types = content_types(content_types_xml)
    content_type = content_type_of(types, part)
    if not any(marker in content_type for marker in WORD_CONTENT_TYPES):
        raise InvalidDocument(
            "The file is an Office package but not a Word document "
            f"(its main part is {content_type or 'of unknown type'})."
        )
    if relationships is not None:
        for info in infos:
            if info.filename.endswith(".rels") and info.file_size > max_relationships_bytes:
                raise InvalidDocument(f"The DOCX package's {info.filename} is implausibly large.")
        relationships(rels_info, root_rels)

    doctype = False
    expanded = len(root_rels) + len(content_types_xml)
    for info in infos:
        if info is rels_info or info is types_info:
            continue  # read whole above, so their CRC was checked then
        wanted = relationships is not None and info.filename.endswith(".rels")
        scan = DoctypeScan() if info.filename == part else None
        consume = (
            observer(info.filename, content_type_of(types, info.filename), part)
            if observer is not None
            else None
        )
        kept: list[bytes] = []
        size = 0
        try:
            with package.open(info) as handle:
                while chunk := handle.read(CHUNK):  # to the end: zipfile checks the CRC there
                    size += len(chunk)
                    expanded += len(chunk)
                    if size > max_part:
                        raise part_too_large(info.filename, max_part)
                    if expanded > max_package:
                        raise package_too_large(max_package)
                    if scan is not None:
                        scan.feed(chunk)
                    if wanted:
                        kept.append(chunk)
                    if consume is not None:
                        consume(chunk)
        except NotImplementedError:
            raise InvalidDocument(UNSUPPORTED_COMPRESSION) from None
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError):
            raise InvalidDocument(
                "The DOCX package is damaged: some of its parts cannot be read."
            ) from None
        if relationships is not None and wanted:
            relationships(info, b"".join(kept))
        doctype = doctype or (scan is not None and scan.found)
    if doctype:
        raise InvalidDocument(
            "The document's XML declares a DOCTYPE (entities), which Word never writes; refused."
        )


class DoctypeScan:
    """Word never writes a DOCTYPE; one in the main part can only declare entities."""

    def __init__(self) -> None:
        self.found = False
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        if self.found:
            return
        window = (self._tail + chunk).upper()
        self.found = b"<!DOCTYPE" in window
        self._tail = window[-16:]  # a marker split across two chunks is still seen
