"""An OpenDocument text (``.odt``): checked, bounded, and cleaned of links to the worker's files.

An ODT is a zip package whose first entry, ``mimetype``, names its kind; only
``application/vnd.oasis.opendocument.text`` is converted (a spreadsheet or a presentation is
refused by name). Every entry is decompressed here and counted against
QUIRE_MAX_PART_EXPANDED_BYTES and QUIRE_MAX_PACKAGE_EXPANDED_BYTES, as for a DOCX. A package
whose manifest declares encryption (a ``manifest:encryption-data`` element, read by the XML
parser in whatever encoding the manifest is written) is refused as password-protected.

ODF links with ``xlink:href``: a linked picture (``draw:image``), a linked section
(``text:section-source``, Word's INCLUDETEXT), a linked object, a fill image in the styles.
A relative reference is resolved against the package, and one that climbs out of it
(``../secret.png``) or names a scheme (``file:///etc/hostname``) reaches the worker's disk. In
every XML part, each ``href`` (any namespace), ``image-data`` and ``src`` attribute is kept only
when it is a reference inside the package, an anchor, or a web or mail address
(``workers.sanitize.EXTERNAL_ALLOWED``, harmless: LibreOffice has no network); anything else
becomes ``workers.sanitize.NOWHERE``. Script event bindings (``vnd.sun.star.script:``) are
removed that way too. A DDE link (``text:dde-connection-decl``, ``office:dde-source``) loses its
application, topic and item: it names a program and a document to read (for LibreOffice's own
name, "soffice", a file). Stock LibreOffice 7.4 did not update such a link while converting,
even with the document asking for updates (measured), so this is belt and braces. A picture
written inline (``office:binary-data``, base64) is kept only when it starts like a raster
picture or a metafile; anything else (an SVG, which may link files of its own, an embedded
object) becomes an empty SVG, which draws nothing. Pictures and nested packages in the package
go through the DOCX sanitizer's rules (SVG references, nested OPC packages).

Every XML part is read once by a streaming parser (expat, with defusedxml's guards), which
keeps nothing of the part but the byte offsets of what must change, and refuses elements nested
deeper than MAX_NESTING. Only a part with something to change is read a second time, and the
values found are replaced in its bytes: everything else, namespace declarations used only
inside attribute values (``table:formula="of:=..."``) included, stays byte for byte. (A part
written in UTF-16 with something to change is refused: LibreOffice writes UTF-8.) The cleaned
package is written straight to a file beside the upload, never held in memory.
"""

from __future__ import annotations

import base64
import binascii
import copy
import os
import re
import shutil
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote
from xml.parsers import expat

from defusedxml import DefusedXmlException

from app.config import get_settings
from workers.sanitize import (
    EMPTY_SVG,
    EXTERNAL_ALLOWED,
    NOWHERE,
    SNIFF_BYTES,
    never_climbs_out,
    rewritten_content,
)
from workers.validation import InvalidDocument
from workers.xml_stream import HeldBackFeed, TokenTooLarge, guarded_parser

ODT_MIMETYPE = b"application/vnd.oasis.opendocument.text"
OTHER_ODF = {
    b"application/vnd.oasis.opendocument.spreadsheet": "spreadsheet (.ods)",
    b"application/vnd.oasis.opendocument.presentation": "presentation (.odp)",
    b"application/vnd.oasis.opendocument.graphics": "drawing (.odg)",
    b"application/vnd.oasis.opendocument.text-master": "master document (.odm)",
    b"application/vnd.oasis.opendocument.text-template": "text template (.ott)",
}
MANIFEST = "META-INF/manifest.xml"
LINK_ATTRIBUTES = {"href", "image-data", "src"}
# A DDE link names a program, a document (the topic) and a place in it; emptied, it names none.
DDE_ATTRIBUTES = {"dde-application", "dde-topic", "dde-item"}
# content.xml of a long book is a few MB. Read as a stream, a part costs no memory past its
# pieces, only time: 60 MiB of empty elements, the worst case per byte, took 15 s of one core.
MAX_XML_PART = 64 * 1024 * 1024
# A document a person wrote nests a few dozen levels (a table in a list in a frame...).
# LibreOffice 7.4 itself reads 100,000 nested spans (measured), so this bound is ours: it keeps
# what any reader of the part that recurses (a tree written back once took one Python frame per
# level) far from its limit.
MAX_NESTING = 1000
# One token (an attribute value, a comment, a name): the longest a writer makes is a drawing's
# path data, some hundreds of KB.
MAX_TOKEN = 16 * 1024 * 1024
MAX_EDITS = 100_000  # links to change in one part: a document has a handful
# How inline picture data starts, decoded: raster pictures and metafiles, which link nothing.
INLINE_PICTURES = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
    b"\xd7\xcd\xc6\x9a",  # placeable WMF
    b"\x01\x00\x09\x00",  # WMF
    b"VCLMTF",  # LibreOffice's own metafile
)
EMF_SIGNATURE = (40, b" EMF")
# Read and written in pieces this size: what the sanitizer holds of a part at once.
CHUNK = 64 * 1024
# What an emptied inline picture becomes: an empty SVG, which draws nothing (empty data makes
# LibreOffice draw its "missing picture" icon), and is kept when the part is read again.
EMPTY_PICTURE = base64.b64encode(EMPTY_SVG).decode()
# Characters of base64 read: SNIFF_BYTES decoded, the window LibreOffice's format detection
# looks for "<svg" in (a weak signature such as BMP's "BM" that fails its checks falls through
# to the next format, SVG among them), and enough to tell the empty picture.
SNIFF_BASE64 = max(-(-SNIFF_BYTES // 3) * 4, len(EMPTY_PICTURE) + 1)
TAG = re.compile(rb"<[^\s/>]+(?:\s+[^\s=/>]+\s*=\s*(?:\"[^\"]*\"|'[^']*'))*\s*/?>")
ATTRIBUTE = re.compile(rb"(\s+)([^\s=/>]+)(\s*=\s*)(\"[^\"]*\"|'[^']*')")


def _refuse_damaged(what: str) -> InvalidDocument:
    return InvalidDocument(f"The file is a damaged or truncated OpenDocument text (.odt): {what}.")


def _package_too_large() -> InvalidDocument:
    return InvalidDocument(
        "The OpenDocument text expands to more than QUIRE_MAX_PACKAGE_EXPANDED_BYTES allows in "
        "all: a compressed bomb; refused."
    )


def _local(name: str) -> str:
    """An element or attribute name without its namespace (the parser gives "namespace
    local"): one in another namespace than ODF's is judged by its local name all the same."""
    return name.rsplit(" ", 1)[-1]


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


def _inline_picture_kept(base64_head: str) -> bool:
    """Whether inline picture data starting with ``base64_head`` (whitespace removed) is a
    raster picture, a metafile or the empty picture; anything else, undecodable data
    included, is emptied."""
    if base64_head == EMPTY_PICTURE:
        return True
    usable = len(base64_head) - len(base64_head) % 4
    try:
        head = binascii.a2b_base64(base64_head[:usable])
    except (binascii.Error, ValueError):
        return False
    lowered = head.lower()
    if b"<svg" in lowered or b"<\x00s\x00v\x00g" in lowered:
        return False  # whatever it starts like, LibreOffice might read it as SVG
    at, signature = EMF_SIGNATURE
    return head.startswith(INLINE_PICTURES) or head[at : at + len(signature)] == signature


@dataclass(frozen=True, slots=True)
class Edit:
    """A change to one start tag of a part: ``offset`` is where its ``<`` lies; the attributes
    of each local name in ``attributes`` get the value it maps to (``NOWHERE``, or empty for
    DDE); when ``content_end`` is set, the element's content up to that offset is replaced by
    ``content``."""

    offset: int
    attributes: dict[bytes, bytes] = field(default_factory=dict)
    content_end: int | None = None
    content: bytes = b""


class _Scan:
    """One streaming read of an XML part: what must change in it, and whether it declares
    encryption. Nothing of the part is kept."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.edits: list[Edit] = []
        self.encrypted = False
        self._depth = 0
        self._inline: int | None = None  # where an open binary-data element starts
        self._inline_head: list[str] = []
        self._inline_chars = 0
        self._parser: Any = guarded_parser()
        self._parser.ordered_attributes = True
        self._parser.StartElementHandler = self._start
        self._parser.EndElementHandler = self._end
        self._parser.CharacterDataHandler = self._characters
        self._held = HeldBackFeed(self._parser, MAX_TOKEN)

    def feed(self, chunk: bytes, final: bool = False) -> None:
        """Hand ``chunk`` on (``xml_stream.HeldBackFeed``: a long token costs linear time); a
        token past MAX_TOKEN is refused: expat holds it whole, and no writer makes one."""
        try:
            self._held.feed(chunk)
            if final:
                self._held.close()
        except TokenTooLarge:
            raise InvalidDocument(
                f"The OpenDocument text's {self.name} holds one attribute, comment or name of "
                f"more than {MAX_TOKEN // 2**20} MiB; no word processor writes that, so it is "
                "refused."
            ) from None
        except (expat.ExpatError, DefusedXmlException):
            raise InvalidDocument(
                f"The OpenDocument text's {self.name} is not well-formed XML, or declares entities."
            ) from None

    def _add(self, edit: Edit) -> None:
        if len(self.edits) >= MAX_EDITS:
            raise InvalidDocument(
                f"The OpenDocument text's {self.name} links to more than {MAX_EDITS:,} places "
                "outside the package; refused."
            )
        self.edits.append(edit)

    def _start(self, name: str, attributes: list[str]) -> None:
        self._depth += 1
        if self._depth > MAX_NESTING:
            raise InvalidDocument(
                f"The OpenDocument text's {self.name} nests elements more than {MAX_NESTING:,} "
                "levels deep; no word processor writes that, so it is refused."
            )
        if self._inline is not None:
            raise InvalidDocument(
                f"The OpenDocument text's {self.name} has an element inside inline picture "
                "data (office:binary-data); refused."
            )
        local = _local(name)
        changed: dict[bytes, bytes] = {}
        for index in range(0, len(attributes), 2):
            attribute, value = attributes[index], attributes[index + 1]
            kind = _local(attribute)
            if kind in LINK_ATTRIBUTES and not safe_reference(value):
                changed[kind.encode()] = NOWHERE.encode()
            elif kind in DDE_ATTRIBUTES and value:
                changed[kind.encode()] = b""
        if changed:
            self._add(Edit(self._parser.CurrentByteIndex, changed))
        if local == "binary-data":
            self._inline = self._parser.CurrentByteIndex
            self._inline_head, self._inline_chars = [], 0
        elif local == "encryption-data" and self.name == MANIFEST:
            self.encrypted = True

    def _characters(self, text: str) -> None:
        if self._inline is None or self._inline_chars >= SNIFF_BASE64:
            return
        compact = "".join(text.split())
        self._inline_head.append(compact)
        self._inline_chars += len(compact)

    def _end(self, name: str) -> None:
        if self._inline is not None:
            offset, self._inline = self._inline, None
            head = "".join(self._inline_head)
            if head and not _inline_picture_kept(head[:SNIFF_BASE64]):
                end = self._parser.CurrentByteIndex
                if self.edits and self.edits[-1].offset == offset:
                    previous = self.edits.pop()
                    self._add(Edit(offset, previous.attributes, end, EMPTY_PICTURE.encode()))
                else:
                    self._add(Edit(offset, {}, end, EMPTY_PICTURE.encode()))
        self._depth -= 1


def _chunks(package: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """The entry's bytes in chunks, read to the end (zipfile checks the CRC there)."""
    try:
        with package.open(info) as handle:
            while chunk := handle.read(CHUNK):
                yield chunk
    except NotImplementedError:
        raise InvalidDocument(
            "The OpenDocument text uses a zip compression method LibreOffice does not write; "
            "save it again."
        ) from None
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, RuntimeError):
        raise _refuse_damaged(f"its {info.filename} cannot be read") from None


def _read_all(package: zipfile.ZipFile, info: zipfile.ZipInfo, budget: list[int]) -> _Scan | None:
    """Read the entry to the end, counted against the part limit and the package's remaining
    ``budget``; an XML part is scanned on the way (its scan returned), nothing else kept."""
    max_part = get_settings().max_part_expanded_bytes
    scan = _Scan(info.filename) if info.filename.lower().endswith(".xml") else None
    size = 0
    for chunk in _chunks(package, info):
        size += len(chunk)
        budget[0] -= len(chunk)
        if size > max_part or (scan is not None and size > MAX_XML_PART):
            raise InvalidDocument(
                f"The OpenDocument text's part {info.filename} expands to more than "
                "QUIRE_MAX_PART_EXPANDED_BYTES allows: a compressed bomb; refused."
            )
        if budget[0] < 0:
            raise _package_too_large()
        if scan is not None:
            scan.feed(chunk)
    if scan is not None:
        scan.feed(b"", final=True)
    return scan


def _spliced(chunks: Iterator[bytes], edits: list[Edit]) -> Iterator[bytes]:
    """The part's bytes with ``edits`` made; everything else as it was. Only the chunk at hand
    and the start tag being changed are held."""
    buffer, base = bytearray(), 0  # base: the part's offset of buffer[0]

    def more() -> bool:
        chunk = next(chunks, b"")
        buffer.extend(chunk)
        return bool(chunk)

    def changed_by_another_reader() -> InvalidDocument:
        return InvalidDocument("The OpenDocument text changed while it was read; refused.")

    for edit in edits:
        while base + len(buffer) <= edit.offset:
            yield bytes(buffer)  # wholly before the tag: as it was
            base += len(buffer)
            buffer.clear()
            if not more():
                raise changed_by_another_reader()
        start = edit.offset - base
        yield bytes(buffer[:start])
        del buffer[:start]
        base = edit.offset
        # The start tag, whole: read on until it closes (as much again each time, so a long
        # tag costs linear time).
        while (tag := TAG.match(buffer)) is None:
            wanted, before = max(2 * len(buffer), CHUNK), len(buffer)
            while len(buffer) < wanted and more():
                pass
            if len(buffer) == before:
                raise changed_by_another_reader()
        yield _with_values(tag.group(0), edit.attributes)
        del buffer[: tag.end()]
        base += tag.end()
        if edit.content_end is not None:
            while base + len(buffer) < edit.content_end:
                base += len(buffer)  # the content removed
                buffer.clear()
                if not more():
                    raise changed_by_another_reader()
            skip = edit.content_end - base
            del buffer[:skip]
            base += skip
            yield edit.content
    yield bytes(buffer)
    yield from chunks


def _with_values(tag: bytes, values: dict[bytes, bytes]) -> bytes:
    """The start tag with the value of each attribute whose local name is in ``values``
    replaced (every such attribute: one of that name in another namespace too, which is safe;
    namespace declarations are left alone)."""

    found: set[bytes] = set()

    def replaced(match: re.Match[bytes]) -> bytes:
        name = match.group(2)
        local = name.rsplit(b":", 1)[-1]
        if local not in values or name == b"xmlns" or name.startswith(b"xmlns:"):
            return match.group(0)
        found.add(local)
        return match.group(1) + match.group(2) + match.group(3) + b'"' + values[local] + b'"'

    cleaned = ATTRIBUTE.sub(replaced, tag)
    if found != values.keys():
        # The parser saw an attribute this reading of the bytes did not: never pass it on.
        raise InvalidDocument("The OpenDocument text has a start tag Quire cannot clean; refused.")
    return cleaned


def _utf16(package: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    """Whether the part is written in UTF-16, whose bytes the edits cannot be made in."""
    head = next(_chunks(package, info), b"")[:4]
    return head[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in head


def _write_cleaned(
    package: zipfile.ZipFile,
    target: IO[bytes],
    edits: dict[str, list[Edit]],
    rewrites: dict[str, bytes],
) -> None:
    """A copy of ``package`` into ``target``, each entry keeping its own compression (the
    ``mimetype`` stays first and stored), with the edits made and the parts rewritten."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as clean:
        for info in package.infolist():
            # Writing fills in the entry's offset and sizes: a copy, so the source's own
            # record still says where to read it.
            written = copy.copy(info)
            if info.filename in rewrites:
                clean.writestr(written, rewrites[info.filename])
                continue
            with clean.open(written, "w") as out:
                if info.filename in edits:
                    for piece in _spliced(_chunks(package, info), edits[info.filename]):
                        out.write(piece)
                else:
                    with package.open(info) as source:
                        shutil.copyfileobj(source, out)


def prepare_odt(path: Path) -> int:
    """Check the ODT at ``path`` and rewrite its links outside the package; return how many
    parts changed (the file is left untouched when none did)."""
    try:
        return _prepare(path)
    except (RecursionError, MemoryError):
        # A picture's SVG is still read into a tree (workers.sanitize): one nested past
        # Python's recursion limit, or a part too large to hold, is refused, not a crash that
        # would restart LibreOffice.
        raise InvalidDocument(
            "The OpenDocument text is nested too deeply or too large to be checked; refused."
        ) from None


def _prepare(path: Path) -> int:
    settings = get_settings()
    try:
        package = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise _refuse_damaged("its zip structure cannot be read") from None
    edits: dict[str, list[Edit]] = {}
    rewrites: dict[str, bytes] = {}
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
        # The manifest first, wherever it lies (LibreOffice writes it last): an encrypted
        # package's other parts are not XML, and the person should hear about the password.
        ordered = sorted(infos[1:], key=lambda info: info.filename != MANIFEST)
        for info in ordered:
            if info.is_dir():
                continue
            scan = _read_all(package, info, budget)
            if scan is not None and scan.encrypted:
                raise InvalidDocument(
                    "The file is a password-protected (encrypted) OpenDocument text. Remove "
                    "the password (File > Properties in LibreOffice), save it, then upload it "
                    "again."
                )
            if scan is None:
                new = rewritten_content(package, info)
                if new is not None:
                    rewrites[info.filename] = new
            elif scan.edits:
                if _utf16(package, info):
                    raise InvalidDocument(
                        f"The OpenDocument text's {info.filename} is written in UTF-16 and "
                        "links outside the package; LibreOffice writes UTF-8: save it again."
                    )
                edits[info.filename] = scan.edits
        if edits or rewrites:
            partial = path.with_name(path.name + ".sanitized")
            with open(partial, "wb") as target:
                _write_cleaned(package, target, edits, rewrites)
    if edits or rewrites:
        os.replace(partial, path)
    return len(edits) + len(rewrites)
