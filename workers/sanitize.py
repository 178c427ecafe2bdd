"""What LibreOffice must not see of a valid package: references to files on the worker's disk.

LibreOffice 7.4 reads a picture from the worker's disk when a document points at one in a way
its profile settings do not block (a DrawingML shape filled with a linked picture, an SVG
``<image>``), and anything it can decode as a picture then lands in the PDF: PNG, JPEG, SVG, or
another job's PDF (issue 12; measured in tests/workers/test_hostile_corpus.py). The sandbox is
the first line (LibreOffice cannot open what lies outside its document's folder); this is the
second, so each rule judges the text LibreOffice will read, not a normalised form of it:

- Every relationship part (``*.rels``, any case) is parsed, whatever its encoding: the XML
  parser decodes it by byte order mark and declaration, as LibreOffice's does. A part that does
  not parse is refused: Word never writes one.
- A relationship is internal only when its ``TargetMode`` is absent or exactly ``Internal``;
  LibreOffice treats any other value as external. An external target is kept only when it is,
  as written, a plain web or mail address (``EXTERNAL_ALLOWED``); anything else (a path, a
  ``file:`` URL in any case or encoding, a control character inside the scheme, which a URL
  parser drops and LibreOffice does not) is rewritten to ``NOWHERE``. Links to the web are
  harmless: the profile removes LibreOffice's network providers
  (``workers.libreoffice.profile``).
- An internal target must name a part inside the package: one with a scheme, a backslash, a
  control character or a ``..`` that climbs out of the package is rewritten to ``NOWHERE`` too.
  (LibreOffice 7.4 resolves internal targets inside the package only; this is belt and braces.)
- Every part LibreOffice would import as SVG (found by its content, as LibreOffice finds it, as
  well as by name; gzip-compressed too) loses every reference that is not inside the picture
  (``#id``) or an inline raster ``data:`` URI: ``href`` of any namespace, CSS ``url()`` and
  ``@import`` in attributes and ``<style>``, processing instructions (``xml-stylesheet``). A
  nested ``data:image/svg+xml`` is dropped, since it could hold references of its own. An SVG
  that cannot be parsed safely (entities, malformed) is replaced by an empty picture.
- A macro-enabled document's VBA project (``vbaProject.bin``, ``vbaData.xml``, any part a
  ``.../vbaProject`` relationship points at) is emptied and unlinked: macros never run
  (LibreOffice is told so twice), and this way a ``.docm`` carries none to LibreOffice at all.
- A package inside the package (an altChunk or embedded object that is itself a DOCX, XLSX...)
  is sanitised the same way, to a bounded depth; LibreOffice renders an altChunk DOCX, shapes
  and all. A nested zip that is no OPC package (an ODF object, say) is emptied: its preview
  picture still shows.

Rewriting is preferred to refusing: the picture is missing from the PDF, as it would be on any
machine but its author's, and the document still converts. Package structure Word never writes
(an unparseable relationship part, two parts of one name, an oversized part) is refused.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import posixpath
import re
import shutil
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO
from urllib.parse import unquote
from xml.etree.ElementTree import Element, ParseError, TreeBuilder, register_namespace, tostring

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from workers.validation import InvalidDocument, PartObserver, check_package, open_package

RELATIONSHIPS_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
NOWHERE = "http://quire.invalid/local-link-removed"
MAX_RELS_BYTES = 4 * 1024 * 1024  # relationship parts are a few KB; a huge one is an attack
MAX_SVG_BYTES = 32 * 1024 * 1024  # an SVG (also once decompressed) larger than this is refused
MAX_NESTED_BYTES = 64 * 1024 * 1024  # a package inside the package is read into memory
MAX_DEPTH = 3  # packages inside packages inside packages: deeper is refused
SNIFF_BYTES = 8192  # LibreOffice's format detection looks for "<svg" within the first 2 KiB
# A .docm's macros: the VBA project (and its data), emptied and unlinked (its relationship
# removed). LibreOffice runs no macro anyway (MacroExecutionMode NEVER_EXECUTE, the profile's
# DisableMacrosExecution); this way there is none to run.
MACRO_RELATIONSHIP = "/vbaProject"
MACRO_PARTS = {"vbaproject.bin", "vbadata.xml"}

# As written, not as a URL parser would read it: scheme, then printable ASCII only, without
# spaces, controls or backslashes (which LibreOffice may turn into a path separator).
EXTERNAL_ALLOWED = re.compile(r"(?i:https?://|mailto:)[!-\[\]-~]+")
# Picture data an SVG may carry inline: raster formats only (a nested SVG could link files).
INLINE_DATA = re.compile(r"data:image/(?:png|jpe?g|gif|bmp|webp|tiff?)[;,]", re.IGNORECASE)
CSS_URL = re.compile(r"url\s*\(\s*(['\"]?)(.*?)\1\s*\)", re.IGNORECASE | re.DOTALL)
CSS_IMPORT = re.compile(r"@import[^;]*;?", re.IGNORECASE)
CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f\\]")  # raw: a part name has none of them
CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")  # decoded: %20 is a space, allowed
EMPTY_SVG = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'
)

register_namespace("xlink", XLINK_NS)  # the usual prefix when an SVG is written back


def _parse(data: bytes) -> tuple[Element, list[str]]:
    """The XML as a tree (the parser decodes it by BOM and declaration; no DTD entities, no
    external anything) and the targets of its processing instructions."""
    instructions: list[str] = []

    class Builder(TreeBuilder):
        def pi(self, target: str, text: str | None = None) -> Element:
            instructions.append(target)  # also those before the root, which the tree drops
            return super().pi(target, text)

    parser = DefusedXMLParser(target=Builder())
    parser.feed(data)
    return parser.close(), instructions


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _serialise(root: Element) -> bytes:
    """The tree as UTF-8 XML, its root's namespace the default one (a prefix such as ns0:
    would be valid XML, but not what readers of SVG expect)."""
    if root.tag.startswith("{"):
        namespace = root.tag[1:].split("}", 1)[0]
        prefix = f"{{{namespace}}}"
        for element in root.iter():
            if isinstance(element.tag, str) and element.tag.startswith(prefix):
                element.tag = element.tag[len(prefix) :]
        root.set("xmlns", namespace)
    return bytes(tostring(root, encoding="UTF-8", xml_declaration=True))


# -- relationship parts --------------------------------------------------------------------------


def _source_folder(rels_name: str) -> str:
    """The folder a relationship part's internal targets are relative to: ``word/`` for
    ``word/_rels/document.xml.rels``, the root for ``_rels/.rels``."""
    folder = posixpath.dirname(rels_name)  # .../_rels
    return posixpath.dirname(folder)


def _internal_target_ok(rels_name: str, target: str) -> bool:
    if not target or CONTROL_OR_SPACE.search(target) or ":" in target:
        return False
    path = unquote(target)
    if CONTROL.search(path) or ":" in path:
        return False
    joined = path if path.startswith("/") else posixpath.join("/", _source_folder(rels_name), path)
    return never_climbs_out(joined)


def never_climbs_out(path: str) -> bool:
    """Whether a ``/``-separated path never goes above the folder it starts from, read segment
    by segment: one that does could leave the package if resolved against the file system.
    (normpath would silently stop at "/", so the levels are counted instead.)"""
    depth = 0
    for segment in path.split("/"):
        if segment == "..":
            depth -= 1
            if depth < 0:
                return False
        elif segment not in ("", "."):
            depth += 1
    return True


def _rewritten_relationships(name: str, xml: bytes) -> bytes | None:
    try:
        root, _ = _parse(xml)
    except (ParseError, DefusedXmlException):
        raise InvalidDocument(f"The DOCX package's {name} is not well-formed XML.") from None
    changed = False
    parents = {child: parent for parent in root.iter() for child in parent}
    for relation in list(root.iter()):
        if _local(relation.tag) != "Relationship":  # whatever namespace it claims
            continue
        target = relation.get("Target", "")
        mode = relation.get("TargetMode")
        if relation.get("Type", "").endswith(MACRO_RELATIONSHIP) and relation in parents:
            # A .docm's VBA project: unlinked, so no macro of it can ever load. Removed, not
            # pointed at NOWHERE: LibreOffice 7.4 crashes on a vbaProject relationship with an
            # external target (tests/workers/test_vba_macros.py).
            parents[relation].remove(relation)
            changed = True
            continue
        if relation.get("Type", "").endswith(MACRO_RELATIONSHIP):
            safe = False  # the root element itself: nothing to remove it from
        elif mode is None or mode == "Internal":
            safe = _internal_target_ok(name, target)
        else:
            safe = EXTERNAL_ALLOWED.fullmatch(target) is not None
        if not safe:
            relation.set("Target", NOWHERE)
            relation.set("TargetMode", "External")
            changed = True
    return _serialise(root) if changed else None


# -- SVG -----------------------------------------------------------------------------------------


def _inline(reference: str) -> bool:
    reference = reference.strip()
    return reference.startswith("#") or INLINE_DATA.match(reference) is not None


def _clean_css(css: str) -> str:
    css = CSS_IMPORT.sub("", css)
    return CSS_URL.sub(lambda m: m.group(0) if _inline(m.group(2)) else "none", css)


def _clean_svg(data: bytes) -> bytes | None:
    """The SVG without references outside itself; None if it had none; EMPTY_SVG if it cannot
    be read safely."""
    try:
        root, instructions = _parse(data)
    except (ParseError, DefusedXmlException):
        return EMPTY_SVG
    if _local(root.tag).lower() != "svg":
        return None  # XML that only mentions svg: LibreOffice does not read it as a picture
    changed = bool(instructions)  # written back without them: an xml-stylesheet could link
    for element in root.iter():
        for attribute, value in list(element.attrib.items()):
            local = _local(attribute).lower()
            if local in ("href", "src") and not _inline(value):
                del element.attrib[attribute]
                changed = True
            elif "url(" in value.lower() or "@import" in value.lower():
                cleaned = _clean_css(value)
                if cleaned != value:
                    element.set(attribute, cleaned)
                    changed = True
        if isinstance(element.tag, str) and _local(element.tag).lower() == "style" and element.text:
            cleaned = _clean_css(element.text)
            if cleaned != element.text:
                element.text = cleaned
                changed = True
    if not changed:
        return None
    return _serialise(root)


def _looks_like_svg(name: str, head: bytes) -> bool:
    if name.lower().endswith((".svg", ".svgz")):
        return True
    lowered = head.lower()
    # In UTF-8 (or any ASCII-compatible encoding) and in UTF-16 of either byte order.
    return b"<svg" in lowered or b"<\x00s\x00v\x00g" in lowered


# -- packages ------------------------------------------------------------------------------------

Rewrites = dict[str, bytes]


def _read_bounded(package: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    if info.file_size > limit:
        raise InvalidDocument(f"The DOCX package's {info.filename} is implausibly large.")
    try:
        return package.read(info)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError):
        raise InvalidDocument(
            f"The DOCX package is damaged: its {info.filename} cannot be read."
        ) from None


def _gunzip(name: str, data: bytes) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            inflated = stream.read(MAX_SVG_BYTES + 1)
    except (OSError, EOFError, zlib.error):
        return b""  # not gzip after all: LibreOffice cannot inflate it either
    if len(inflated) > MAX_SVG_BYTES:
        raise InvalidDocument(f"The DOCX package's {name} expands to an implausibly large picture.")
    return inflated


def _content(package: zipfile.ZipFile, info: zipfile.ZipInfo, depth: int) -> bytes | None:
    """What a part other than a relationship part must become, or None to keep it."""
    try:
        with package.open(info) as handle:
            head = handle.read(SNIFF_BYTES)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError):
        raise InvalidDocument(
            f"The DOCX package is damaged: its {info.filename} cannot be read."
        ) from None
    if head.startswith(b"PK\x03\x04"):
        return _nested(info.filename, _read_bounded(package, info, MAX_NESTED_BYTES), depth)
    if head.startswith(b"\x1f\x8b"):  # gzip: LibreOffice reads SVGZ (and EMZ/WMZ)
        inflated = _gunzip(info.filename, _read_bounded(package, info, MAX_SVG_BYTES))
        if _looks_like_svg(info.filename, inflated[:SNIFF_BYTES]):
            return _clean_svg(inflated)
        return None
    if _looks_like_svg(info.filename, head):
        return _clean_svg(_read_bounded(package, info, MAX_SVG_BYTES))
    return None


def _nested(name: str, data: bytes, depth: int) -> bytes | None:
    """A package inside the package, sanitised; emptied when it is not an OPC package."""
    if depth >= MAX_DEPTH:
        raise InvalidDocument(f"The DOCX package nests packages too deeply (at {name}); refused.")
    try:
        package = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return b""  # LibreOffice cannot open it either; nothing of it must reach the PDF
    with package:
        if "[Content_Types].xml" not in package.namelist():
            return b""
        if sum(info.file_size for info in package.infolist()) > MAX_NESTED_BYTES:
            raise InvalidDocument(f"The DOCX package's {name} expands to an implausible size.")
        rewrites: Rewrites = {}
        _check_names(package)
        for info in package.infolist():
            if info.filename.lower().endswith(".rels"):
                _collect(rewrites, info, _read_bounded(package, info, MAX_RELS_BYTES))
        _collect_contents(package, rewrites, depth + 1)
        if not rewrites:
            return None
        buffer = io.BytesIO()
        _copy_with(package, buffer, rewrites)
        return buffer.getvalue()


def _check_names(package: zipfile.ZipFile) -> None:
    """Two entries of one name: which one LibreOffice reads is not ours to guess."""
    names = package.namelist()
    if len(set(names)) != len(names):
        raise InvalidDocument("The DOCX package has two parts of the same name; refused.")


def _collect(rewrites: Rewrites, info: zipfile.ZipInfo, xml: bytes) -> None:
    if not info.filename.lower().endswith(".rels"):
        return
    new = _rewritten_relationships(info.filename, xml)
    if new is not None:
        rewrites[info.filename] = new


def _collect_contents(package: zipfile.ZipFile, rewrites: Rewrites, depth: int = 0) -> None:
    for info in package.infolist():
        if info.is_dir() or info.filename.lower().endswith(".rels"):
            continue
        if posixpath.basename(info.filename).lower() in MACRO_PARTS:
            rewrites[info.filename] = b""  # the VBA code itself, also where no relation says so
            continue
        new = _content(package, info, depth)
        if new is not None:
            rewrites[info.filename] = new


def _sanitize(path: Path, check: Callable[[zipfile.ZipFile, Rewrites], None]) -> int:
    rewrites: Rewrites = {}
    with open_package(path) as package:
        check(package, rewrites)
        _check_names(package)
        _collect_contents(package, rewrites)
        if rewrites:
            with open(_partial(path), "wb") as target:
                _copy_with(package, target, rewrites)
    if rewrites:
        os.replace(_partial(path), path)
    return len(rewrites)


def prepare_docx(path: Path, observer: PartObserver | None = None) -> int:
    """Validate the package at ``path`` (``workers.validation``) and rewrite what could make
    LibreOffice read a local file; return how many parts changed (almost always 0, and then
    the file is left untouched). ``observer`` sees the parts as the validation decompresses
    them (the font report reads the document so, in the same read)."""

    def validate(package: zipfile.ZipFile, rewrites: Rewrites) -> None:
        check_package(
            package, functools.partial(_collect, rewrites), MAX_RELS_BYTES, observer=observer
        )
        for info in package.infolist():  # the check hands over "*.rels" only, not "*.RELS"
            if info.filename.lower().endswith(".rels") and not info.filename.endswith(".rels"):
                _collect(rewrites, info, _read_bounded(package, info, MAX_RELS_BYTES))

    try:
        return _sanitize(path, validate)
    except (RecursionError, MemoryError):
        # A picture's SVG is cleaned as a tree and written back by ElementTree, which recurses
        # once per level: one nested past Python's recursion limit (or a part too large to
        # hold) is refused, not a generic failure that would restart LibreOffice.
        raise InvalidDocument(
            "The DOCX is nested too deeply or too large to be checked; refused."
        ) from None


def strip_local_links(path: Path) -> int:
    """Rewrite the package at ``path`` so that nothing in it references a local file; return
    how many parts changed. For a package that is known to be valid; the worker uses
    ``prepare_docx``, which validates in the same read."""

    def relationships(package: zipfile.ZipFile, rewrites: Rewrites) -> None:
        for info in package.infolist():
            if info.filename.lower().endswith(".rels"):
                _collect(rewrites, info, _read_bounded(package, info, MAX_RELS_BYTES))

    return _sanitize(path, relationships)


def rewritten_content(package: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes | None:
    """What a part of another kind of package (an ODT's picture or embedded package) must
    become under the rules above, or None to keep it."""
    if posixpath.basename(info.filename).lower() in MACRO_PARTS:
        return b""
    return _content(package, info, 0)


def copy_with(package: zipfile.ZipFile, target: IO[bytes], rewrites: Rewrites) -> None:
    """A copy of ``package`` into ``target`` with the rewritten parts, each entry keeping its
    own compression (an ODT's ``mimetype`` stays first and stored)."""
    _copy_with(package, target, rewrites)


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".sanitized")


def _copy_with(package: zipfile.ZipFile, target: IO[bytes], rewrites: Rewrites) -> None:
    """A copy of ``package`` into ``target``, with the rewritten parts."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as clean:
        for info in package.infolist():
            if info.filename in rewrites:
                clean.writestr(info, rewrites[info.filename])
            else:
                with package.open(info) as source, clean.open(info, "w") as copy:
                    shutil.copyfileobj(source, copy)
