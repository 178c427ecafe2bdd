"""The font report of a converted file: which fonts the document asked for that were replaced,
and which had nothing suitable in their place (issue 18).

Three sources, compared per requested family:

- **What the document asks for**, read from the DOCX itself (other kinds: ``READERS``), in
  the validator's one read (``DocxReading``: the parts are chosen by content type and by the
  main part's relationships, and streamed as they are decompressed): the document defaults,
  the styles the text uses (and the styles they are based on, and the default paragraph
  style), every run's ``w:rFonts`` in the body, headers, footers, footnotes and endnotes, and
  the theme's major and minor fonts where one of those names them (``asciiTheme="minorHAnsi"`` ...).
  ``word/fontTable.xml`` is not read: Word lists fonts there that no text uses.
  In a document with East Asian text, a family named in the East Asian slot (``w:eastAsia``)
  is matched for the document's East Asian language (``w:lang w:eastAsia``; Japanese when none
  is given, which is what LibreOffice 7.4 draws such text with here).
- **What fontconfig chooses**: whether a family is installed from one ``fc-list`` per fonts
  folder, and ``fc-match`` for each other family, with the same configuration
  LibreOffice sees (``QUIRE_FONTS_DIR`` included), and fontconfig's own metric aliases
  (the ``binding="same"`` aliases of ``30-metric-aliases.conf``: Calibri ~ Carlito, Arial ~
  Liberation Sans ...) for whether the layout holds.
- **What the PDF holds**: the ``/BaseFont`` names of the fonts LibreOffice embedded, the
  subset prefix (``ABCDEF+``), style suffix (``-Bold``, ``,Bold``) and PostScript suffix
  (``MT``, ``PS``) taken away; a family is there only under its whole name ("ArialNarrow" is
  not Arial).

A family fontconfig has, or that is embedded in the PDF under its own name, is installed and
in neither list. Otherwise fontconfig's choice is reported as ``used`` (or, when the PDF holds
a metric-compatible family of the requested one and not fontconfig's choice, that one:
LibreOffice's own replacement table chose it). It is ``missing`` when that choice is
fontconfig's generic fallback, the family it gives for a name no font and no rule knows, and
no metric alias applies; a family fontconfig knows something about (Georgia is a serif, SimSun
a Chinese serif) is ``substituted`` with ``metric_compatible`` false.

The document is hostile: its parts are read as a stream (no tree is built), each once and at
most QUIRE_MAX_PART_EXPANDED_BYTES, all together at most QUIRE_MAX_PACKAGE_EXPANDED_BYTES, by
expat with defusedxml's guards (no DTD, no entity declarations, nothing external), fed so that
an unfinished token is not scanned again for every chunk (``workers.xml_stream``); a failure
there loses the report, never the file. At most ``MAX_REQUESTED`` families and ``MAX_NAME``
characters a name are judged, with at most ``MAX_FC_RUNS`` fc-match runs in
``FC_REPORT_SECONDS`` a report.
The PDF is read with pypdf, at most ``MAX_PDF_PAGES`` pages. fontconfig's answers are kept
per process, and it is never run under the process-wide lock.
"""

from __future__ import annotations

import os
import posixpath
import re
import subprocess
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from pypdf import PdfReader
from pypdf.generic import DictionaryObject

from app.config import Settings, get_settings
from app.logs import get_logger
from workers import doc_fonts, odf_fonts, rtf_fonts
from workers.font_requests import (
    EAST_ASIAN,
    SLOTS,
    DocumentTooLarge,
    Requested,
)
from workers.validation import ChunkConsumer, content_type_of, content_types
from workers.xml_stream import HeldBackFeed, TokenTooLarge, guarded_parser

log = get_logger("quire.fonts")

W_NS = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
A_NS = "http://schemas.openxmlformats.org/drawingml/2006/main"
W = W_NS + " "  # expat's names: "namespace local"
W_RFONTS, W_STYLE, W_BASED_ON, W_LANG, W_VAL = (
    W + name for name in ("rFonts", "style", "basedOn", "lang", "val")
)
W_STYLE_REFERENCES = {W + "pStyle", W + "rStyle", W + "tblStyle"}
A_THEME_GROUPS = {f"{A_NS} majorFont": "major", f"{A_NS} minorFont": "minor"}
A_THEME_SCRIPTS = {f"{A_NS} {script}": script for script in ("latin", "ea", "cs")}
# The parts read, by content type: each kind is also the last word of the relationship type
# by which the main part uses such a part. The main part itself and these four hold runs.
WML = "application/vnd.openxmlformats-officedocument.wordprocessingml."
PART_KINDS = {
    WML + "styles+xml": "styles",
    "application/vnd.openxmlformats-officedocument.theme+xml": "theme",
    **{f"{WML}{kind}+xml": kind for kind in ("header", "footer", "footnotes", "endnotes")},
}
TEXT_KINDS = {"main", "header", "footer", "footnotes", "endnotes"}
MAX_TEXT_PARTS = 64  # of each kind: Word writes at most three headers and footers a section
MAX_NESTED_PARTS = 4  # styles parts, theme parts: one each, and a glossary document's
MAX_STYLES = 10_000
MAX_RUN_FONTS = 1_024  # distinct (slot, family or theme reference) pairs of the runs kept
# Styles, style references and run fonts kept for one document, all its parts' readers
# together: each part is read into a reader of its own, and 257 text parts each keeping
# MAX_STYLES style names would hold hundreds of MB.
MAX_KEPT = 20_000
MAX_VALUE = 256  # characters of an attribute value kept (a name, a style id)
MAX_PDF_PAGES = 2_000
MAX_RELS_BYTES = 4 * 1024 * 1024
CHUNK = 1024 * 1024  # as the validator reads: fewer calls into expat
# Bytes in one unfinished token, held back ones too (workers/xml_stream.py): a run's font name
# is 31 characters, and a reading stopped here loses the report, not the file.
MAX_UNFINISHED = 4 * 1024 * 1024
FC_TIMEOUT = 10.0
MAX_FC_RUNS = 48  # fc-match processes one report may start (answers kept cost none)
FC_REPORT_SECONDS = 30.0  # and the time they may take together
# What a PostScript name appends to its family's name with no separator (normalised).
POSTSCRIPT_SUFFIXES = ("psmt", "mt", "ps")
NO_SUCH_FONT = "quire no such font family"  # fontconfig's generic fallback answers for it
DEFAULT_EAST_ASIAN_LANGUAGE = "ja"
EAST_ASIAN_LANGUAGES = ("ja", "zh-cn", "zh-tw", "zh-hk", "ko")
METRIC_ALIASES = "*metric-aliases*.conf"
SYSTEM_FONTS_CONF = Path("/etc/fonts/fonts.conf")
SYSTEM_CONF_D = Path("/etc/fonts/conf.d")
MAX_CACHE = 4096

# rFonts slots, and the theme font each *Theme value names: (major|minor, latin|ea|cs).
THEME_SLOTS = {
    "ascii": "asciiTheme",
    "hAnsi": "hAnsiTheme",
    "eastAsia": "eastAsiaTheme",
    "cs": "cstheme",
}
THEME_FONTS = {
    "majorAscii": ("major", "latin"),
    "majorHAnsi": ("major", "latin"),
    "majorEastAsia": ("major", "ea"),
    "majorBidi": ("major", "cs"),
    "minorAscii": ("minor", "latin"),
    "minorHAnsi": ("minor", "latin"),
    "minorEastAsia": ("minor", "ea"),
    "minorBidi": ("minor", "cs"),
}


class FontconfigUnavailable(Exception):
    """fc-match cannot be run or answers nothing: no report can be made."""


# -- what the document asks for ---------------------------------------------------------------


@dataclass
class _Fonts:
    """One w:rFonts: its explicit families and its theme references, per slot."""

    families: dict[str, str] = field(default_factory=dict)
    themes: dict[str, str] = field(default_factory=dict)

    def read(self, attrs: dict[str, str]) -> None:
        for slot in SLOTS:
            theme = attrs.get(W + THEME_SLOTS[slot])
            if theme:
                self.themes[slot] = theme[:MAX_VALUE]  # Word ignores the explicit family then
                self.families.pop(slot, None)
                continue
            value = attrs.get(W + slot)
            if value:
                self.families[slot] = value[:MAX_VALUE]

    def pairs(self) -> Iterator[tuple[str, str, bool]]:
        """(slot, family or theme reference, whether it is a theme reference)."""
        for slot, family in self.families.items():
            yield slot, family, False
        for slot, reference in self.themes.items():
            yield slot, reference, True


@dataclass
class _Style:
    fonts: _Fonts = field(default_factory=_Fonts)
    based_on: str | None = None


class _PartReader:
    """Streams parts, keeping only what the report needs (no tree is built). Element and
    attribute names come from expat as "namespace local"."""

    def __init__(self, *, nested: bool = False, kept: list[int] | None = None) -> None:
        self.nested = nested  # styles and theme: what an element is inside of matters
        self._kept = kept if kept is not None else [0]  # shared by a document's readers
        # What the document defaults and the runs ask for: distinct pairs, at most
        # MAX_RUN_FONTS (a document of a million runs asks for a few fonts a million times).
        self.runs: dict[tuple[str, str, bool], None] = {}
        self.styles: dict[str, _Style] = {}
        self.default_style: str | None = None
        self.used_styles: set[str] = set()
        self.languages: list[str] = []
        self.theme: dict[tuple[str, str], str] = {}
        self.east_asian_text = False
        self._style: _Style | None = None
        self._theme_group: str | None = None

    def _keep(self) -> bool:
        """Room for one more thing kept, in the document's MAX_KEPT."""
        if self._kept[0] >= MAX_KEPT:
            return False
        self._kept[0] += 1
        return True

    def characters(self, content: str) -> None:
        if not self.east_asian_text and EAST_ASIAN.search(content):
            self.east_asian_text = True

    def start(self, name: str, attrs: dict[str, str]) -> None:
        if name == W_RFONTS:
            if self._style is not None:
                self._style.fonts.read(attrs)
                return
            fonts = _Fonts()
            fonts.read(attrs)
            for pair in fonts.pairs():
                if pair not in self.runs and len(self.runs) < MAX_RUN_FONTS and self._keep():
                    self.runs[pair] = None
        elif name in W_STYLE_REFERENCES:
            value = (attrs.get(W_VAL) or "")[:MAX_VALUE]
            if (
                value
                and value not in self.used_styles
                and len(self.used_styles) < MAX_STYLES
                and self._keep()
            ):
                self.used_styles.add(value)
        elif name == W_LANG:
            language = attrs.get(W + "eastAsia")
            if language and not self.languages:
                self.languages.append(language[:MAX_VALUE])
        elif not self.nested:
            return
        elif name == W_STYLE:
            style_id = attrs.get(W + "styleId", "")[:MAX_VALUE]
            style = self.styles.get(style_id)
            if style is None and len(self.styles) < MAX_STYLES and self._keep():
                style = self.styles[style_id] = _Style()
            if style is not None:
                self._style = style
                if attrs.get(W + "default") in ("1", "true", "on") and (
                    attrs.get(W + "type") == "paragraph"
                ):
                    self.default_style = style_id
        elif name == W_BASED_ON and self._style is not None:
            self._style.based_on = (attrs.get(W_VAL) or "")[:MAX_VALUE] or None
        elif name in A_THEME_GROUPS:
            self._theme_group = A_THEME_GROUPS[name]
        elif name in A_THEME_SCRIPTS and self._theme_group is not None:
            typeface = attrs.get("typeface")
            if typeface:
                where = (self._theme_group, A_THEME_SCRIPTS[name])
                self.theme.setdefault(where, typeface[:MAX_VALUE])

    def end(self, name: str) -> None:
        if name == W_STYLE:
            self._style = None
        elif name in A_THEME_GROUPS:
            self._theme_group = None


def _parser(reader: _PartReader) -> Any:
    parser = guarded_parser()
    parser.StartElementHandler = reader.start
    if reader.nested:
        parser.EndElementHandler = reader.end
    else:
        parser.CharacterDataHandler = reader.characters
    return parser


class _Feed:
    """One part, fed to expat as it comes (``xml_stream.HeldBackFeed``), at most ``limit``
    bytes; a token unfinished past MAX_UNFINISHED bytes ends the reading (no report)."""

    def __init__(self, name: str, reader: _PartReader, limit: int) -> None:
        self.name = name
        self.reader = reader
        self.limit = limit
        self.size = 0  # bytes of the part seen
        self._held = HeldBackFeed(_parser(reader), MAX_UNFINISHED)

    @property
    def fed(self) -> int:
        """Bytes handed to expat."""
        return self._held.fed

    def __call__(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise DocumentTooLarge(self.name)
        try:
            called = self._held.feed(chunk)
        except TokenTooLarge:
            raise DocumentTooLarge(
                f"{self.name}: a token unfinished past {MAX_UNFINISHED} bytes"
            ) from None
        if called and self.reader.east_asian_text and not self.reader.nested:
            self._held.parser.CharacterDataHandler = None  # found: the rest is not needed

    def close(self) -> None:
        self._held.close()


class DocxReading:
    """What a DOCX asks for, read from its parts as they are decompressed: the validator's one
    read (``workers.validation.check_package`` calls ``observe`` for each part), or
    ``requested_fonts``'s own.

    The parts are chosen by content type ([Content_Types].xml), each read into its own reader,
    since a part may come before the relationships that say whether the main part uses it
    (Word writes ``word/document.xml`` before ``word/_rels/document.xml.rels``). The main
    part's relationships, kept as they pass, then choose among them: its styles, its theme,
    and its headers, footers, footnotes and endnotes, each part once (a glossary document's
    styles are not the document's). All of them count against one budget."""

    def __init__(self, max_part_bytes: int, max_package_bytes: int) -> None:
        self.max_part_bytes = max_part_bytes
        self.max_package_bytes = max_package_bytes
        self.main: str | None = None
        self.feeds: dict[str, _Feed] = {}
        self.kinds: dict[str, str] = {}  # part name: its kind (main, styles, theme, header ...)
        self.relationships: list[bytes] | None = None  # the main part's, as they pass
        self._relationships_size = 0
        self.read = 0  # bytes of every part read, against max_package_bytes
        self.kept = [0]  # things its readers keep, against MAX_KEPT
        self.error: BaseException | None = None

    # -- the parts, as they come --

    def part(self, name: str, content_type: str, main: str) -> ChunkConsumer | None:
        """What to hand ``name``'s chunks to, or None when the report does not need it."""
        self.main = main
        if name == _relationships_name(main):
            if self.relationships is not None:
                return None  # a second entry of one name: the sanitiser refuses the package
            self.relationships = []
            return self._keep_relationships
        kind = "main" if name == main else PART_KINDS.get(content_type.strip().lower())
        if kind is None or name in self.feeds:
            return None
        nested = kind in ("styles", "theme")
        if sum(1 for one in self.kinds.values() if one == kind) >= (
            MAX_NESTED_PARTS if nested else MAX_TEXT_PARTS
        ):
            return None
        reader = _PartReader(nested=nested, kept=self.kept)
        feed = self.feeds[name] = _Feed(name, reader, self.max_part_bytes)
        self.kinds[name] = kind

        def consume(chunk: bytes) -> None:
            self.read += len(chunk)
            if self.read > self.max_package_bytes:
                raise DocumentTooLarge("the package")
            feed(chunk)

        return consume

    def _keep_relationships(self, chunk: bytes) -> None:
        self._relationships_size += len(chunk)
        if self.relationships is None or self._relationships_size > MAX_RELS_BYTES:
            self.relationships = None  # implausibly large: the main part alone is read
            return
        self.relationships.append(chunk)

    def observe(self, name: str, content_type: str, main: str) -> ChunkConsumer | None:
        """``part`` for the validator: whatever fails here loses the report, never the file
        (a real refusal, a zip bomb, is the validator's own); a soft time limit still stops
        the task."""
        if self.error is not None:
            return None
        try:
            consumer = self.part(name, content_type, main)
        except Exception as error:  # noqa: BLE001 - see the docstring
            self._fail(error)
            return None
        if consumer is None:
            return None
        chosen = consumer

        def guarded(chunk: bytes) -> None:
            if self.error is not None:
                return
            try:
                chosen(chunk)
            except SoftTimeLimitExceeded:
                raise
            except Exception as error:  # noqa: BLE001 - see the docstring
                self._fail(error)

        return guarded

    def _fail(self, error: BaseException) -> None:
        self.error = error
        self.feeds.clear()  # what was read is of no use now: its memory goes

    # -- what the document asks for --

    def requested(self) -> Requested:
        """The families the document asks for (see the module's docstring); raises what the
        reading met."""
        if self.error is not None:
            raise self.error
        if self.main is None:
            return Requested()
        chosen = self._chosen()
        for name in chosen:
            self.feeds[name].close()
        styles = next((self.feeds[n].reader for n in chosen if self.kinds[n] == "styles"), None)
        theme = next((self.feeds[n].reader for n in chosen if self.kinds[n] == "theme"), None)
        styles = styles or _PartReader(nested=True)
        theme = theme or _PartReader(nested=True)
        bodies = [self.feeds[n].reader for n in chosen if self.kinds[n] in TEXT_KINDS]
        return _requested(styles, theme, bodies)

    def result(self) -> Requested | None:
        """``requested``, or None, logged, when the reading failed: the file converts anyway."""
        try:
            return self.requested()
        except SoftTimeLimitExceeded:
            raise
        except Exception as error:  # noqa: BLE001 - a report is not worth failing a file for
            log.warning("fonts.read_failed", error=f"{type(error).__name__}: {error}")
            return None

    def _chosen(self) -> list[str]:
        """The parts read that the main part uses, each once: itself, then its styles, theme
        and text parts in its relationships' order."""
        assert self.main is not None
        chosen = [self.main] if self.main in self.feeds else []
        if not self.relationships:
            return chosen
        folder = posixpath.dirname(self.main)
        for relation in fromstring(b"".join(self.relationships)):
            if relation.get("TargetMode", "Internal") != "Internal":
                continue
            target = relation.get("Target", "")
            kind = relation.get("Type", "").rsplit("/", 1)[-1]
            path = (
                target.lstrip("/")
                if target.startswith("/")
                else posixpath.normpath(posixpath.join(folder, target))
            )
            if path in chosen or self.kinds.get(path) != kind:
                continue
            if kind in ("styles", "theme") and any(self.kinds[n] == kind for n in chosen):
                continue  # the first of each, as Word reads it
            chosen.append(path)
        return chosen


def _relationships_name(part: str) -> str:
    folder, name = posixpath.split(part)
    return posixpath.join(folder, "_rels", name + ".rels")


def _requested(styles: _PartReader, theme: _PartReader, bodies: list[_PartReader]) -> Requested:
    requested = Requested()
    runs: dict[tuple[str, str, bool], None] = {}
    used_styles: set[str] = set()
    languages = list(styles.languages)
    for body in bodies:
        for pair in body.runs:
            if len(runs) < MAX_RUN_FONTS:
                runs[pair] = None
        used_styles |= body.used_styles
        languages += body.languages
    pairs = [*styles.runs, *runs]  # the document defaults, then the runs
    # The styles the text uses, the default paragraph style, and what each is based on.
    pending = list(used_styles) + ([styles.default_style] if styles.default_style else [])
    seen: set[str] = set()
    while pending:
        style_id = pending.pop()
        if style_id in seen or style_id not in styles.styles:
            continue
        seen.add(style_id)
        style = styles.styles[style_id]
        pairs.extend(style.fonts.pairs())
        if style.based_on:
            pending.append(style.based_on)
    for slot, value, is_theme in pairs:
        if not is_theme:
            requested.add(value, slot)
        elif (where := THEME_FONTS.get(value)) is not None:
            requested.add(theme.theme.get(where), slot)
    requested.east_asian_language = languages[0] if languages else None
    requested.east_asian_text = any(body.east_asian_text for body in bodies)
    return requested


def _main_part(package: zipfile.ZipFile) -> str:
    try:
        info = package.getinfo("_rels/.rels")
    except KeyError:
        return "word/document.xml"
    if info.file_size <= MAX_RELS_BYTES:
        for relation in fromstring(package.read(info)):
            if relation.get("Type", "").endswith("/officeDocument"):
                return posixpath.normpath(str(relation.get("Target", "")).lstrip("/"))
    return "word/document.xml"


def requested_fonts(
    docx: Path, max_part_bytes: int, max_package_bytes: int | None = None
) -> Requested:
    """The font families the document's text asks for (see the module's docstring), read
    from the file; the worker has them from the validator's read instead (``DocxReading``).
    ``max_package_bytes`` bounds all the parts read together (default: the settings')."""
    budget = max_package_bytes or get_settings().max_package_expanded_bytes
    reading = DocxReading(max_part_bytes, budget)
    with zipfile.ZipFile(docx) as package:
        main = _main_part(package)
        try:
            info = package.getinfo("[Content_Types].xml")
        except KeyError:
            return Requested()
        if info.file_size > MAX_RELS_BYTES:
            return Requested()
        types = content_types(package.read(info))
        for info in package.infolist():
            consume = reading.part(info.filename, content_type_of(types, info.filename), main)
            if consume is None:
                continue
            with package.open(info) as handle:
                while chunk := handle.read(CHUNK):
                    consume(chunk)
    return reading.requested()


# -- what the PDF holds -----------------------------------------------------------------------


def normalised(family: str) -> str:
    """A family or PostScript name reduced for comparison: "Liberation Sans" and
    "LiberationSans-Bold" and "ABCDEF+LiberationSans" all give "liberationsans"."""
    if len(family) > 7 and family[6] == "+" and family[:6].isupper():
        family = family[7:]
    family = re.split(r"[-,]", family, maxsplit=1)[0]
    return re.sub(r"[^0-9a-z]", "", family.lower())


def _resources(reader: PdfReader) -> Iterator[DictionaryObject]:
    """Every resource dictionary of the first MAX_PDF_PAGES pages and their forms, once."""
    pending: list[Any] = []
    for number, page in enumerate(reader.pages):
        if number >= MAX_PDF_PAGES:
            break
        pending.append(page.get("/Resources"))
    seen: set[int] = set()
    while pending:
        resources = pending.pop()
        if resources is None:
            continue
        resources = resources.get_object()
        if not isinstance(resources, DictionaryObject) or id(resources) in seen:
            continue
        seen.add(id(resources))
        yield resources
        xobjects = resources.get("/XObject")
        if xobjects is None:
            continue
        for xobject in xobjects.get_object().values():
            xobject = xobject.get_object()
            if xobject.get("/Subtype") == "/Form" and len(seen) < 10 * MAX_PDF_PAGES:
                pending.append(xobject.get("/Resources"))


def pdf_fonts(pdf: Path) -> set[str]:
    """The embedded fonts' names, normalised; empty when the PDF cannot be read."""
    names: set[str] = set()
    try:
        reader = PdfReader(pdf)
        for resources in _resources(reader):
            fonts = resources.get("/Font")
            if fonts is None:
                continue
            for font in fonts.get_object().values():
                base = font.get_object().get("/BaseFont")
                if base is not None:
                    names.add(normalised(str(base).lstrip("/")))
    except Exception as error:  # noqa: BLE001 - the PDF is evidence, not a requirement
        log.warning("fonts.pdf_unreadable", error=type(error).__name__)
    return names


# -- what fontconfig chooses ------------------------------------------------------------------


def fontconfig_file_text(fonts_dir: Path) -> str:
    """A fontconfig configuration: the system's, plus the operator's folder."""
    folder = str(fonts_dir.resolve()).replace("&", "&amp;").replace("<", "&lt;")
    return (
        '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">\n'
        f'<fontconfig>\n  <include ignore_missing="yes">{SYSTEM_FONTS_CONF}</include>\n'
        f"  <dir>{folder}</dir>\n</fontconfig>\n"
    )


def fontconfig_environment(folder: Path, fonts_dir: Path | None) -> dict[str, str]:
    """FONTCONFIG_FILE for a process that must see ``fonts_dir`` (LibreOffice, fc-match),
    written into ``folder``; empty when there is no such folder (the system's configuration)."""
    if fonts_dir is None:
        return {}
    path = folder / "quire-fonts.conf"
    text = fontconfig_file_text(fonts_dir)
    try:
        current = path.read_text(encoding="utf-8")
    except OSError:
        current = None
    if current != text:
        folder.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed over it: a LibreOffice or fc-match of another thread may be
        # reading it, and must find the old file or the new one, never half of one.
        partial = folder / f".quire-fonts.conf.{os.getpid()}.{threading.get_native_id()}"
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    return {"FONTCONFIG_FILE": str(path)}


def _metric_groups(conf_d: Path) -> tuple[dict[str, int], dict[str, str]]:
    """Each family of fontconfig's metric aliases, by normalised name, and its group: the
    families a ``binding="same"`` alias ties together, directly or through others; and each
    one's spelling."""
    parent: dict[str, str] = {}
    spelling: dict[str, str] = {}

    def find(name: str) -> str:
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    for conf in sorted(conf_d.glob(METRIC_ALIASES)):
        try:
            root = fromstring(conf.read_bytes()[:MAX_RELS_BYTES])
        except (OSError, DefusedXmlException, SyntaxError):
            continue
        for alias in root.iter("alias"):
            if alias.get("binding") != "same":
                continue
            names = []
            for family in alias.iter("family"):
                if family.text and family.text.strip():
                    name = normalised(family.text)
                    spelling.setdefault(name, family.text.strip())
                    names.append(name)
            for other in names[1:]:
                parent[find(other)] = find(names[0])
    roots: dict[str, int] = {}
    groups = {name: roots.setdefault(find(name), len(roots)) for name in list(parent)}
    return groups, spelling


class FcBudget:
    """The fc-match runs one report may start, and the time they may take: a document asking
    for 64 families, each matched for five East Asian languages, would otherwise start 384
    processes of up to FC_TIMEOUT each. Answers kept from earlier reports cost nothing."""

    def __init__(self, runs: int = MAX_FC_RUNS, seconds: float = FC_REPORT_SECONDS) -> None:
        self.runs = runs
        self.deadline = time.monotonic() + seconds

    def spend(self) -> float:
        """One run more; the seconds it may take. FontconfigUnavailable when none is left."""
        remaining = self.deadline - time.monotonic()
        if self.runs <= 0 or remaining <= 0:
            raise FontconfigUnavailable(
                "the report would run fc-match more often, or longer, than a report may"
            )
        self.runs -= 1
        return min(FC_TIMEOUT, remaining)


class Fontconfig:
    """fc-match and fc-list with LibreOffice's configuration, their answers kept for this
    process. Nothing is run until asked: the process-wide lock that finds this object is
    never held while fontconfig runs."""

    def __init__(self, environment: dict[str, str], conf_d: Path = SYSTEM_CONF_D) -> None:
        self.environment = {**os.environ, **environment}
        self.groups, self.spelling = _metric_groups(conf_d)
        self._answers: dict[tuple[str, str | None], list[str]] = {}
        self._lock = threading.Lock()
        self._installed: frozenset[str] | None = None
        self._listing = threading.Lock()  # one fc-list at a time; the others wait for it
        self._fallback: str | None = None

    @property
    def fallback(self) -> str:
        """fontconfig's generic fallback: its answer for a family no font and no rule knows."""
        if self._fallback is None:
            self._fallback = self.match(NO_SUCH_FONT, None)[0]
        return self._fallback

    def installed(self) -> frozenset[str]:
        """Every installed family, normalised: one ``fc-list`` for this configuration (the
        operator's folder included), instead of one fc-match per family asked for."""
        with self._listing:
            if self._installed is None:
                try:
                    listing = subprocess.run(
                        ["fc-list", "--format", "%{family}\\n"],
                        capture_output=True,
                        text=True,
                        timeout=FC_TIMEOUT,
                        env=self.environment,
                        check=False,
                    ).stdout
                except (OSError, subprocess.TimeoutExpired) as error:
                    raise FontconfigUnavailable(f"fc-list did not answer: {error}") from error
                names = {
                    normalised(name)
                    for line in listing.splitlines()
                    for name in line.split(",")
                    if name.strip()
                }
                if not names:
                    raise FontconfigUnavailable("fc-list lists no font")
                self._installed = frozenset(names)
            return self._installed

    def match(self, family: str, language: str | None, budget: FcBudget | None = None) -> list[str]:
        """The family names of fontconfig's best match (first: its preferred name)."""
        key = (family, language)
        with self._lock:
            known = self._answers.get(key)
        if known is not None:
            return known
        timeout = budget.spend() if budget is not None else FC_TIMEOUT
        # Escaped as a fontconfig pattern: "-", ":", "," and "\" are its syntax, and a name
        # starting with "-" would be an option.
        pattern = re.sub(r"([\\\-:,=])", r"\\\1", family)
        if language:
            pattern += ":lang=" + re.sub(r"[^A-Za-z0-9-]", "", language)[:16]
        # fc-match is fontconfig's, a dependency of libreoffice-core: wherever LibreOffice is.
        try:
            answer = subprocess.run(
                ["fc-match", "-f", "%{family}", pattern],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self.environment,
                check=False,
            ).stdout
        except (OSError, subprocess.TimeoutExpired) as error:
            raise FontconfigUnavailable(f"fc-match did not answer: {error}") from error
        names = [name.strip() for name in answer.split(",") if name.strip()]
        if not names:
            # Without an answer every font would look like the fallback, and so missing (and
            # strict_fonts would fail every file): no report is better than a wrong one.
            raise FontconfigUnavailable(f"fc-match found no font for {family!r}")
        with self._lock:
            if len(self._answers) >= MAX_CACHE:
                self._answers.clear()
            self._answers[key] = names
        return names

    def metric_compatible(self, requested: str, used: str) -> bool:
        group = self.groups.get(normalised(requested))
        return group is not None and group == self.groups.get(normalised(used))

    def metric_family_in(self, requested: str, present: set[str]) -> str | None:
        """A family metric-compatible with ``requested`` among the normalised ``present``."""
        group = self.groups.get(normalised(requested))
        if group is None:
            return None
        for name, other in self.groups.items():
            if other == group and name in present and name != normalised(requested):
                return self.spelling[name]
        return None


_fontconfigs: dict[str, Fontconfig] = {}
_fontconfigs_lock = threading.Lock()


def fontconfig_for(settings: Settings) -> Fontconfig:
    """This process's Fontconfig for the settings' fonts folder."""
    folder = settings.resolved_scratch_dir
    environment = fontconfig_environment(folder, settings.fonts_dir)
    key = environment.get("FONTCONFIG_FILE", "")
    if settings.fonts_dir is not None:
        # A font added to the folder changes its mtime: fontconfig's answers are asked again.
        try:
            key += f"@{settings.fonts_dir.stat().st_mtime_ns}"
        except OSError:
            key += "@missing"
    with _fontconfigs_lock:
        found = _fontconfigs.get(key)
        if found is None:
            if len(_fontconfigs) >= 8:
                _fontconfigs.clear()
            found = _fontconfigs[key] = Fontconfig(environment)
        return found


# -- the report -------------------------------------------------------------------------------

# What a document asks for, read by one reader per kind of document: the key is the suffix
# workers.formats.prepare_document gives the prepared file (its kind, decided by its bytes).
# A reader takes (path, the most bytes a part may expand to) and returns a Requested; it never
# imports this module. A kind without a reader here gets no report. One line per reader.
Reader = Callable[[Path, int], Requested]
READERS: dict[str, Reader] = {
    ".docx": requested_fonts,
    ".doc": doc_fonts.requested_fonts,
    ".odt": odf_fonts.requested_fonts,
    ".rtf": rtf_fonts.requested_fonts,
}


def reader_for(document: Path) -> Reader | None:
    """The reader of what ``document`` asks for, by its kind; None when there is none."""
    return READERS.get(document.suffix.lower())


def _pdf_family(name: str) -> str:
    """A PDF font's normalised name less what a PostScript name adds to its family's without
    a separator: "ArialMT", "TimesNewRomanPS-BoldMT" (``normalised`` took "-BoldMT" away)."""
    for suffix in POSTSCRIPT_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _in_pdf(family: str, present: set[str]) -> bool:
    """Whether the PDF holds ``family`` itself: the same name, not one that starts with it
    (Arial is not Arial Narrow)."""
    name = normalised(family)
    return bool(name) and any(one == name or _pdf_family(one) == name for one in present)


def judge(requested: Requested, present: set[str], fontconfig: Fontconfig) -> dict[str, Any]:
    """The report: ``{"substituted": {family: {"used": ..., "metric_compatible": ...}},
    "missing": [family, ...]}``."""
    substituted: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    budget = FcBudget()
    installed = fontconfig.installed()
    east_asian = requested.east_asian_language or DEFAULT_EAST_ASIAN_LANGUAGE
    for family, slots in requested.slots.items():
        # The East Asian slot renders only East Asian text: a family asked for there, in a
        # document that has some, is matched for that language (a Chinese font's Latin
        # fallback would say nothing of how the Chinese text was drawn).
        language = east_asian if requested.east_asian_text and "eastAsia" in slots else None
        wanted = normalised(family)
        if wanted in installed or _in_pdf(family, present):
            continue  # installed
        names = fontconfig.match(family, language, budget)
        if any(normalised(name) == wanted for name in names):
            continue  # installed under another of its names
        used = names[0]
        if language is not None and not _in_pdf(used, present):
            # LibreOffice may draw the text for another East Asian language than the one the
            # document declares (Japanese, here, for text marked Chinese): the PDF says which.
            for other in EAST_ASIAN_LANGUAGES:
                candidate = fontconfig.match(family, other, budget)[0]
                if _in_pdf(candidate, present):
                    used = candidate
                    break
        if used and not _in_pdf(used, present):
            # LibreOffice's own replacement table may have chosen a metric-compatible family
            # fontconfig did not put first: the PDF says which.
            used = fontconfig.metric_family_in(family, present) or used
        compatible = fontconfig.metric_compatible(family, used)
        if not compatible and used == fontconfig.fallback:
            missing.append(family)
        else:
            substituted[family] = {"used": used, "metric_compatible": compatible}
    return {"substituted": substituted, "missing": sorted(missing)}


def font_report(document: Path, pdf: Path, settings: Settings) -> dict[str, Any] | None:
    """The font report of one converted file (see the module's docstring); None when its kind
    has no reader in READERS."""
    reader = reader_for(document)
    if reader is None:
        return None
    return report_of(reader(document, settings.max_part_expanded_bytes), pdf, settings)


def report_of(requested: Requested, pdf: Path, settings: Settings) -> dict[str, Any]:
    """The font report of a converted file whose requested fonts were read already."""
    if not requested.slots:
        return {"substituted": {}, "missing": []}
    return judge(requested, pdf_fonts(pdf), fontconfig_for(settings))


STRICT_FONTS_UNCHECKED = (
    "The fonts this document asks for could not be checked (its font report could not be "
    "made; the worker's log says why), so strict_fonts cannot tell that none is missing. "
    "Convert without strict_fonts, or retry."
)


def strict_fonts_message(missing: list[str]) -> str:
    return (
        "The document asks for fonts that are not installed, and nothing suitable was found in "
        f"their place: {', '.join(missing)} (strict_fonts). Add them to QUIRE_FONTS_DIR, or "
        "convert without strict_fonts."
    )
