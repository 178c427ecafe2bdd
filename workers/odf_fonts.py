"""What an OpenDocument text (``.odt``) asks for, as the font report compares it
(``workers.fonts``): the families the text is set in, read from its styles.

What is read, from ``styles.xml`` and then ``content.xml``:

- **Font faces** (``office:font-face-decls``): each ``style:font-face``'s ``style:name`` (what
  styles refer to) and its ``svg:font-family`` (the family, its quotes taken off).
- **Styles** (``office:styles``, ``office:automatic-styles`` of both parts): each
  ``style:style``'s ``style:text-properties``: ``style:font-name`` (a face) or
  ``fo:font-family`` (a family) for Latin text, the same with ``-asian`` and ``-complex`` for
  East Asian and complex (right-to-left, Indic) text, and ``style:language-asian`` with
  ``style:country-asian`` (or ``fo:``) for the East Asian language; ``style:parent-style-name``;
  and the paragraph family's ``style:default-style``, which every paragraph inherits.
- **The styles the text uses**: ``text:style-name`` on paragraphs, headings, spans, links
  and ruby text, ``table:style-name`` on table cells, in the body and in the master
  pages' headers and footers, not in comments or a tracked change's deleted text (the PDF
  shows neither); each with its parents (each once: a loop ends) and the default paragraph
  style.

Only those fonts are reported: LibreOffice declares font faces that no text uses (the
document's defaults for other scripts, faces a style left behind), as Word lists fonts in its
font table; reporting those would call a document's font missing when nothing is drawn in it.
List styles' bullet fonts and drawing styles are not read (the DOCX reader leaves the
numbering part out too).

Slots: ``font-name`` is asked in ``ascii`` and ``hAnsi``, ``-asian`` in ``eastAsia``,
``-complex`` in ``cs``. East Asian text (``font_requests.EAST_ASIAN``) is looked for in the
character data.

The package is hostile even after ``workers.odf`` checked it: each part is streamed through
expat with defusedxml's guards (no tree is built), at most ``max_part_bytes`` as the zip
actually decompresses it and at most ``MAX_UNFINISHED`` bytes in one token
(``DocumentTooLarge`` past either: no report, the PDF stands); attribute values are cut to
``MAX_VALUE`` characters, and at most ``MAX_STYLES`` faces, styles and style references are
kept.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.font_requests import EAST_ASIAN, DocumentTooLarge, Requested, along_style_chains
from workers.xml_stream import CHUNK, HeldBackFeed, TokenTooLarge, guarded_parser

OFFICE = "urn:oasis:names:tc:opendocument:xmlns:office:1.0 "
STYLE = "urn:oasis:names:tc:opendocument:xmlns:style:1.0 "
TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0 "
TABLE = "urn:oasis:names:tc:opendocument:xmlns:table:1.0 "
FO = "urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0 "
SVG = "urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0 "

PARTS = ("styles.xml", "content.xml")  # styles first: content's automatic styles have parents
MAX_STYLES = 10_000  # faces, styles and style references each (a long book has a few hundred)
MAX_VALUE = 256  # characters of an attribute value kept (a name, a family)
# Bytes expat may hold in one unfinished token (workers/xml_stream.py): a font name is 31
# characters, a paragraph of LibreOffice's a few KB between two events.
MAX_UNFINISHED = 4 * 1024 * 1024
DEFAULT_STYLE = ""  # the key of the paragraph family's style:default-style (no name)
# Elements whose text:style-name is the style of their text, by the style's family (a list's
# names a list style, a section's a section style: neither sets fonts here).
STYLED_ELEMENTS = {
    TEXT + "p": "paragraph",
    TEXT + "h": "paragraph",
    TEXT + "span": "text",
    TEXT + "a": "text",
    TEXT + "ruby-text": "text",
}
# style:text-properties attributes: (a face name, a family name) per slot group.
FONT_ATTRIBUTES = (
    (STYLE + "font-name", FO + "font-family", ("ascii", "hAnsi")),
    (STYLE + "font-name-asian", STYLE + "font-family-asian", ("eastAsia",)),
    (STYLE + "font-name-complex", STYLE + "font-family-complex", ("cs",)),
)
# Text the PDF does not show: comments, and the deleted text a tracked change keeps.
NOT_SHOWN = {OFFICE + "annotation", TEXT + "tracked-changes"}
ASIAN_LANGUAGE = (STYLE + "language-asian", FO + "language-asian")
ASIAN_COUNTRY = (STYLE + "country-asian", FO + "country-asian")

StyleKey = tuple[str, str]  # (style:family, style:name)


@dataclass
class _Style:
    # slot group -> (whether the value is a face name, the value)
    fonts: list[tuple[tuple[str, ...], bool, str]] = field(default_factory=list)
    parent: str | None = None
    language: str | None = None


def family_name(value: str) -> str:
    """The first family of an ``svg:font-family`` or ``fo:font-family`` value, unquoted:
    ``'DejaVu Sans', sans-serif`` gives ``DejaVu Sans``."""
    first = value.split(",", 1)[0].strip()
    if len(first) >= 2 and first[0] == first[-1] and first[0] in "'\"":
        first = first[1:-1]
    return first.strip()


def _language(attrs: dict[str, str]) -> str | None:
    language = next((attrs[name] for name in ASIAN_LANGUAGE if name in attrs), "")[:16]
    if not language or language == "none":
        return None
    country = next((attrs[name] for name in ASIAN_COUNTRY if name in attrs), "")[:16]
    return f"{language}-{country}" if country and country != "none" else language


class _Reader:
    """One pass over the parts, keeping only what the report needs."""

    def __init__(self) -> None:
        self.faces: dict[str, str] = {}
        self.styles: dict[StyleKey, _Style] = {}
        self.used: dict[StyleKey, None] = {}  # in the order the text uses them
        self.east_asian_text = False
        self._style: _Style | None = None
        self._not_shown = 0  # depth inside elements whose text the PDF does not show

    def characters(self, content: str) -> None:
        if not self._not_shown and not self.east_asian_text and EAST_ASIAN.search(content):
            self.east_asian_text = True

    def _use(self, family: str, name: str | None) -> None:
        if name and len(self.used) < MAX_STYLES:
            self.used[(family, name[:MAX_VALUE])] = None

    def start(self, name: str, attrs: dict[str, str]) -> None:
        if name == STYLE + "text-properties":
            if self._style is not None:
                self._read_text_properties(attrs)
        elif name == STYLE + "style" or name == STYLE + "default-style":
            self._start_style(name, attrs)
        elif name == STYLE + "font-face":
            face = attrs.get(STYLE + "name")
            family = attrs.get(SVG + "font-family")
            # An empty family is a face LibreOffice writes for a slot the document leaves
            # empty ("F"): it asks for no font.
            if face and family is not None and len(self.faces) < MAX_STYLES:
                self.faces.setdefault(face[:MAX_VALUE], family_name(family[:MAX_VALUE]))
        elif name == TABLE + "table-cell":
            self._use("table-cell", attrs.get(TABLE + "style-name"))
        elif name in NOT_SHOWN:
            self._not_shown += 1
        elif self._not_shown:
            return
        elif (family := STYLED_ELEMENTS.get(name)) is not None:
            self._use(family, attrs.get(TEXT + "style-name"))
            if family == "paragraph":
                self._use(family, attrs.get(TEXT + "cond-style-name"))

    def _start_style(self, name: str, attrs: dict[str, str]) -> None:
        family = attrs.get(STYLE + "family", "")[:MAX_VALUE]
        if name == STYLE + "default-style":
            if family != "paragraph":
                return  # graphic, table ... defaults: no text of the body inherits them
            key: StyleKey = ("paragraph", DEFAULT_STYLE)
        else:
            key = (family, attrs.get(STYLE + "name", "")[:MAX_VALUE])
        if key not in self.styles and len(self.styles) >= MAX_STYLES:
            return
        self._style = self.styles.setdefault(key, _Style())
        parent = attrs.get(STYLE + "parent-style-name")
        if parent:
            self._style.parent = parent[:MAX_VALUE]

    def _read_text_properties(self, attrs: dict[str, str]) -> None:
        assert self._style is not None
        for face_attribute, family_attribute, slots in FONT_ATTRIBUTES:
            face = attrs.get(face_attribute)
            if face:
                self._style.fonts.append((slots, True, face[:MAX_VALUE]))
            elif family := attrs.get(family_attribute):
                self._style.fonts.append((slots, False, family[:MAX_VALUE]))
        language = _language(attrs)
        if language:
            self._style.language = language

    def end(self, name: str) -> None:
        if name == STYLE + "style" or name == STYLE + "default-style":
            self._style = None
        elif name in NOT_SHOWN:
            self._not_shown -= 1


def _stream(package: zipfile.ZipFile, part: str, reader: _Reader, limit: int) -> None:
    """One part, fed to expat as the zip decompresses it (``xml_stream.HeldBackFeed``), at most
    ``limit`` bytes as counted then (not as the zip's directory claims), and at most
    ``MAX_UNFINISHED`` bytes in one token (an attribute, a comment, text without markup)."""
    try:
        info = package.getinfo(part)
    except KeyError:
        return
    parser: Any = guarded_parser()
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.characters
    held = HeldBackFeed(parser, MAX_UNFINISHED)
    size = 0
    with package.open(info) as handle:
        while chunk := handle.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise DocumentTooLarge(part)
            try:
                called = held.feed(chunk)
            except TokenTooLarge:
                raise DocumentTooLarge(
                    f"{part}: a token of more than {MAX_UNFINISHED} bytes"
                ) from None
            if called and reader.east_asian_text:
                parser.CharacterDataHandler = None  # found: the rest of the text is not needed
    held.close()


def requested_fonts(path: Path, max_part_bytes: int) -> Requested:
    """The font families the ODT's text asks for (see the module's docstring)."""
    reader = _Reader()
    with zipfile.ZipFile(path) as package:
        for part in PARTS:
            _stream(package, part, reader, max_part_bytes)
    requested = Requested(east_asian_text=reader.east_asian_text)
    # The East Asian language of the styles the text uses, the nearest first; the default
    # style's (LibreOffice writes its locale's there) only when none says one.
    languages: list[str] = []
    default_language: str | None = None
    # The styles the text uses, in order, then the default every paragraph inherits; each with
    # its parents (a style without one inherits the default too).
    for key, style in along_style_chains(
        [*reader.used, ("paragraph", DEFAULT_STYLE)],
        reader.styles,
        lambda key, style: (key[0], style.parent) if style.parent else None,
    ):
        for slots, is_face, value in style.fonts:
            family = reader.faces.get(value, value) if is_face else family_name(value)
            for slot in slots:
                requested.add(family, slot)
        if key == ("paragraph", DEFAULT_STYLE):
            default_language = style.language
        elif style.language:
            languages.append(style.language)
    requested.east_asian_language = languages[0] if languages else default_language
    return requested
