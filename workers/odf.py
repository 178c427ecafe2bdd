"""An OpenDocument text (``.odt``): checked, bounded, and cleaned of links to the worker's files.

An ODT is a zip package whose first entry, ``mimetype``, names its kind; only
``application/vnd.oasis.opendocument.text`` is converted (a spreadsheet or a presentation is
refused by name). Every entry is decompressed here and counted against
QUIRE_MAX_PART_EXPANDED_BYTES and QUIRE_MAX_PACKAGE_EXPANDED_BYTES, as for a DOCX. A package
whose manifest declares encryption is refused as password-protected.

ODF links with ``xlink:href``: a linked picture (``draw:image``), a linked section
(``text:section-source``, Word's INCLUDETEXT), a linked object, a fill image in the styles.
A relative reference is resolved against the package, and one that climbs out of it
(``../secret.png``) or names a scheme (``file:///etc/hostname``) reaches the worker's disk. In
every XML part, each ``href`` (any namespace), ``image-data`` and ``src`` attribute is kept only
when it is a reference inside the package, an anchor, or a web or mail address
(``workers.sanitize.EXTERNAL_ALLOWED``, harmless: LibreOffice has no network); anything else
becomes ``workers.sanitize.NOWHERE``. Script event bindings (``vnd.sun.star.script:``) are
removed that way too. Pictures and nested packages go through the DOCX sanitizer's rules (SVG
references, nested OPC packages).
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from pathlib import Path
from urllib.parse import unquote
from xml.etree.ElementTree import Element, ParseError, tostring

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from app.config import get_settings
from workers.sanitize import (
    EXTERNAL_ALLOWED,
    NOWHERE,
    Rewrites,
    copy_with,
    never_climbs_out,
    rewritten_content,
)
from workers.validation import CHUNK, InvalidDocument

ODT_MIMETYPE = b"application/vnd.oasis.opendocument.text"
OTHER_ODF = {
    b"application/vnd.oasis.opendocument.spreadsheet": "spreadsheet (.ods)",
    b"application/vnd.oasis.opendocument.presentation": "presentation (.odp)",
    b"application/vnd.oasis.opendocument.graphics": "drawing (.odg)",
    b"application/vnd.oasis.opendocument.text-master": "master document (.odm)",
    b"application/vnd.oasis.opendocument.text-template": "text template (.ott)",
}
LINK_ATTRIBUTES = {"href", "image-data", "src"}
MAX_XML_PART = 64 * 1024 * 1024  # content.xml of a long book is a few MB


def _refuse_damaged(what: str) -> InvalidDocument:
    return InvalidDocument(f"The file is a damaged or truncated OpenDocument text (.odt): {what}.")


def _package_too_large() -> InvalidDocument:
    return InvalidDocument(
        "The OpenDocument text expands to more than QUIRE_MAX_PACKAGE_EXPANDED_BYTES allows in "
        "all: a compressed bomb; refused."
    )


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def _inside_package(reference: str) -> bool:
    """Whether a relative reference stays inside the package, as written and decoded."""
    for text in (reference, unquote(reference)):
        if not text or ":" in text or "\\" in text or text.startswith("/"):
            return False
        if any(ord(character) < 0x20 or character == "\x7f" for character in text):
            return False
        if not never_climbs_out(text):
            return False
    return True


def safe_reference(value: str) -> bool:
    reference = value.strip()
    if reference.startswith("#"):
        return True
    return EXTERNAL_ALLOWED.fullmatch(value) is not None or _inside_package(value)


def _rewritten_xml(name: str, data: bytes) -> bytes | None:
    """The part with every link outside the package replaced; None when it has none."""
    try:
        root: Element = fromstring(data)
    except (ParseError, DefusedXmlException):
        raise InvalidDocument(
            f"The OpenDocument text's {name} is not well-formed XML, or declares entities."
        ) from None
    changed = False
    for element in root.iter():
        for attribute, value in element.attrib.items():
            if _local(attribute) in LINK_ATTRIBUTES and not safe_reference(value):
                element.set(attribute, NOWHERE)
                changed = True
    return bytes(tostring(root, encoding="UTF-8", xml_declaration=True)) if changed else None


def _read_all(package: zipfile.ZipFile, info: zipfile.ZipInfo, budget: list[int]) -> bytes:
    """The entry's bytes, read to the end (zipfile checks the CRC there), counted against the
    part limit and the package's remaining ``budget``; only XML parts are kept."""
    max_part = get_settings().max_part_expanded_bytes
    keep = info.filename.lower().endswith(".xml")
    kept: list[bytes] = []
    size = 0
    try:
        with package.open(info) as handle:
            while chunk := handle.read(CHUNK):
                size += len(chunk)
                budget[0] -= len(chunk)
                if size > max_part or (keep and size > MAX_XML_PART):
                    raise InvalidDocument(
                        f"The OpenDocument text's part {info.filename} expands to more than "
                        "QUIRE_MAX_PART_EXPANDED_BYTES allows: a compressed bomb; refused."
                    )
                if budget[0] < 0:
                    raise _package_too_large()
                if keep:
                    kept.append(chunk)
    except NotImplementedError:
        raise InvalidDocument(
            "The OpenDocument text uses a zip compression method LibreOffice does not write; "
            "save it again."
        ) from None
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError):
        raise _refuse_damaged(f"its {info.filename} cannot be read") from None
    return b"".join(kept)


def prepare_odt(path: Path) -> int:
    """Check the ODT at ``path`` and rewrite its links outside the package; return how many
    parts changed (the file is left untouched when none did)."""
    settings = get_settings()
    try:
        package = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise _refuse_damaged("its zip structure cannot be read") from None
    rewrites: Rewrites = {}
    with package:
        infos = package.infolist()
        names = [info.filename for info in infos]
        if len(set(names)) != len(names):
            raise InvalidDocument("The OpenDocument text has two parts of the same name; refused.")
        if not infos or infos[0].filename != "mimetype":
            raise InvalidDocument(
                "The file is a zip but not an OpenDocument package: its first entry is not "
                "'mimetype'."
            )
        if any(info.flag_bits & 0x1 for info in infos):
            raise InvalidDocument("The OpenDocument text contains zip-encrypted parts.")
        if infos[0].file_size > 256:
            raise InvalidDocument("The OpenDocument package's mimetype is implausibly large.")
        budget = [settings.max_package_expanded_bytes]
        if sum(info.file_size for info in infos) > budget[0]:
            raise _package_too_large()
        try:
            mimetype = package.read(infos[0]).strip()
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError):
            raise _refuse_damaged("its mimetype cannot be read") from None
        if mimetype != ODT_MIMETYPE:
            kind = OTHER_ODF.get(mimetype)
            raise InvalidDocument(
                f"The file is an OpenDocument {kind}, not a text document; only text documents "
                "(.odt) are converted."
                if kind
                else "The file is not an OpenDocument text: its mimetype is "
                f"{mimetype[:80].decode('ascii', 'replace')!r}."
            )
        if "content.xml" not in names:
            raise _refuse_damaged("its content.xml is missing")
        for info in infos:
            if info.is_dir():
                continue
            data = _read_all(package, info, budget)
            lowered = info.filename.lower()
            if lowered == "meta-inf/manifest.xml" and b"encryption-data" in data:
                raise InvalidDocument(
                    "The file is a password-protected (encrypted) OpenDocument text. Remove "
                    "the password (File > Properties in LibreOffice), save it, then upload it "
                    "again."
                )
            if lowered.endswith(".xml"):
                new = _rewritten_xml(info.filename, data)
            elif info.filename == "mimetype":
                new = None
            else:
                new = rewritten_content(package, info)
            if new is not None:
                rewrites[info.filename] = new
        if rewrites:
            buffer = io.BytesIO()
            copy_with(package, buffer, rewrites)
    if rewrites:
        partial = path.with_name(path.name + ".sanitized")
        partial.write_bytes(buffer.getvalue())
        os.replace(partial, path)
    return len(rewrites)
