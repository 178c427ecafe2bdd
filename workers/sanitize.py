"""What LibreOffice must not see of a valid package: links to local files.

A part may point outside the package (``TargetMode="External"``). Links to the web are
harmless: the instance's profile keeps LibreOffice from following them (see
``workers.conversion.PROFILE_SETTINGS``). But LibreOffice 7.4 reads a picture linked to a local
file (``file://`` or a relative path) from the worker's disk whatever its settings say, so a
document could copy the worker's files into its PDF. Such targets are rewritten to a URL that
nothing serves before conversion; the picture is missing from the PDF, as it would be anyway
on a machine that is not its author's.
"""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from pathlib import Path
from urllib.parse import urlsplit
from xml.sax.saxutils import unescape

# Targets LibreOffice cannot reach: no content provider serves these schemes in its profile.
REMOTE_SCHEMES = {"http", "https", "ftp", "mailto"}
NOWHERE = b"http://quire.invalid/local-link-removed"
RELATIONSHIP = re.compile(rb"<Relationship\b[^>]*>")
ATTRIBUTE = re.compile(rb'\b(Target|TargetMode|Type)\s*=\s*("[^"]*"|\'[^\']*\')')


def _local_target(element: bytes) -> bytes | None:
    """The raw Target of a relationship that links a local file and is loaded, else None."""
    attributes = {name: value[1:-1] for name, value in ATTRIBUTE.findall(element)}
    if attributes.get(b"TargetMode", b"").lower() != b"external":
        return None
    if attributes.get(b"Type", b"").endswith(b"/hyperlink"):
        return None  # a link for the reader to click, never loaded
    target = attributes.get(b"Target", b"")
    scheme = urlsplit(unescape(target.decode("utf-8", "replace"))).scheme.lower()
    return None if scheme in REMOTE_SCHEMES else target


def _rewritten(xml: bytes) -> bytes | None:
    changed = False

    def neutralize(match: re.Match[bytes]) -> bytes:
        nonlocal changed
        element = match.group(0)
        target = _local_target(element)
        if target is None:
            return element
        changed = True
        return element.replace(b'"' + target + b'"', b'"' + NOWHERE + b'"').replace(
            b"'" + target + b"'", b"'" + NOWHERE + b"'"
        )

    result = RELATIONSHIP.sub(neutralize, xml)
    return result if changed else None


def strip_local_links(path: Path) -> int:
    """Rewrite the package at ``path`` so that no part links a local file; return how many
    relationship parts changed (0: the file is left untouched, as almost every file is)."""
    with zipfile.ZipFile(path) as package:
        rewrites = {}
        for info in package.infolist():
            if info.filename.endswith(".rels"):
                new = _rewritten(package.read(info))
                if new is not None:
                    rewrites[info.filename] = new
        if not rewrites:
            return 0
        partial = path.with_name(path.name + ".sanitized")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as clean:
            for info in package.infolist():
                if info.filename in rewrites:
                    clean.writestr(info, rewrites[info.filename])
                else:
                    with package.open(info) as source, clean.open(info, "w") as target:
                        shutil.copyfileobj(source, target)
    os.replace(partial, path)
    return len(rewrites)
