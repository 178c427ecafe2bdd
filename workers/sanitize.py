"""What LibreOffice must not see of a valid package: links to local files.

A part may point outside the package (``TargetMode="External"``). Links to the web are
harmless: the instance's profile keeps LibreOffice from following them (see
``workers.conversion.PROFILE_SETTINGS``). But LibreOffice 7.4 reads a picture linked to a local
file (``file://`` or a relative path) from the worker's disk whatever its settings say, and it
does not care what type the relationship claims to be. So every external target that is not a
web address is rewritten to a URL nothing serves, before conversion; the picture is missing
from the PDF, as it would be anyway on a machine that is not its author's.

The relationship parts are read with a real XML parser (defusedxml: no DTD, no entities), so
what is rewritten is exactly what LibreOffice will read, however the attributes are written.
"""

from __future__ import annotations

import functools
import os
import shutil
import zipfile
from pathlib import Path
from urllib.parse import urlsplit
from xml.etree.ElementTree import ParseError, register_namespace, tostring

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from workers.validation import InvalidDocument, check_package, open_package

RELATIONSHIPS_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
# Targets LibreOffice cannot reach: no content provider serves these schemes in its profile.
REMOTE_SCHEMES = {"http", "https", "ftp", "mailto"}
NOWHERE = "http://quire.invalid/local-link-removed"
MAX_RELS_BYTES = 4 * 1024 * 1024  # relationship parts are a few KB; a huge one is an attack

register_namespace("", RELATIONSHIPS_NS)  # keep the default namespace when writing parts back


def _rewritten(name: str, xml: bytes) -> bytes | None:
    lowered = xml.lower()
    if b"xternal" not in lowered and b"&#" not in lowered:
        # No external target, however spelled (a character reference could hide the word):
        # nothing to rewrite, and no need to parse (most parts of most documents).
        return None
    try:
        root = fromstring(xml)
    except (ParseError, DefusedXmlException):
        raise InvalidDocument(f"The DOCX package's {name} is not well-formed XML.") from None
    changed = False
    for relation in root.iter(f"{{{RELATIONSHIPS_NS}}}Relationship"):
        if relation.get("TargetMode", "").strip().lower() != "external":
            continue
        scheme = urlsplit(relation.get("Target", "").strip()).scheme.lower()
        if scheme not in REMOTE_SCHEMES:
            relation.set("Target", NOWHERE)
            changed = True
    return tostring(root, encoding="UTF-8", xml_declaration=True) if changed else None


def prepare_docx(path: Path) -> int:
    """Validate the package at ``path`` (``workers.validation``) and rewrite its local links,
    reading it once; return how many relationship parts changed (almost always 0, and then
    the file is left untouched)."""
    rewrites: dict[str, bytes] = {}
    with open_package(path) as package:
        check_package(package, functools.partial(_collect, rewrites), MAX_RELS_BYTES)
        if rewrites:
            _write_sanitized(package, path, rewrites)
    if rewrites:
        os.replace(_partial(path), path)
    return len(rewrites)


def strip_local_links(path: Path) -> int:
    """Rewrite the package at ``path`` so that no part links a local file; return how many
    relationship parts changed. For a package that is known to be valid; the worker uses
    ``prepare_docx``, which validates in the same read."""
    rewrites: dict[str, bytes] = {}
    with zipfile.ZipFile(path) as package:
        for info in package.infolist():
            if not info.filename.endswith(".rels"):
                continue
            if info.file_size > MAX_RELS_BYTES:
                raise InvalidDocument(f"The DOCX package's {info.filename} is implausibly large.")
            _collect(rewrites, info, package.read(info))
        if rewrites:
            _write_sanitized(package, path, rewrites)
    if rewrites:
        os.replace(_partial(path), path)
    return len(rewrites)


def _collect(rewrites: dict[str, bytes], info: zipfile.ZipInfo, xml: bytes) -> None:
    new = _rewritten(info.filename, xml)
    if new is not None:
        rewrites[info.filename] = new


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".sanitized")


def _write_sanitized(package: zipfile.ZipFile, path: Path, rewrites: dict[str, bytes]) -> None:
    """A copy of ``package`` beside ``path``, with the rewritten relationship parts."""
    with zipfile.ZipFile(_partial(path), "w", zipfile.ZIP_DEFLATED) as clean:
        for info in package.infolist():
            if info.filename in rewrites:
                clean.writestr(info, rewrites[info.filename])
            else:
                with package.open(info) as source, clean.open(info, "w") as target:
                    shutil.copyfileobj(source, target)
