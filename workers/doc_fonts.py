"""What a Word 97-2003 ``.doc`` asks for, for the font report (``workers.fonts``), read from
the binary document itself (MS-DOC) as the DOCX reader reads the XML:

- the **FIB** (the WordDocument stream's header): which table stream (0Table or 1Table) holds
  the tables, and where in it the font table, the stylesheet and the two PLCs of formatting
  pages are; its counts (csw, cslw, cbRgFcLcb) are checked before anything is indexed;
- the **font table** (SttbfFfn): the FFN records a font number (ftc) names; nothing else of
  it is reported, since Word and LibreOffice list fonts there that no text uses;
- the **stylesheet** (STSH): the document's default fonts (ftcAsci, ftcFE, ftcOther, ftcBi)
  and, for each style, the fonts of its character properties and the style it is based on;
- the **runs**: every character FKP (512-byte pages of the WordDocument stream that
  PlcBteChpx points at), each run's sprms naming a font (sprmCRgFtc0 for ``ascii``,
  sprmCRgFtc1 for ``eastAsia``, sprmCRgFtc2 for ``hAnsi``, sprmCFtcBi for ``cs``), its
  character style (sprmCIstd) and its East Asian language (sprmCRgLid1);
- the **paragraphs' styles**: every paragraph FKP (PlcBtePapx), each paragraph's istd.

What is reported: the default fonts, the fonts of the styles the text uses (paragraph and
character styles, and the Normal style, istd 0), of the styles those are based on, and of the
runs; the same reach as the DOCX reader's. ``east_asian_text`` comes from the text itself: the
piece table (the CLX's PlcPcd) locates the text, and its Unicode pieces are searched for East
Asian characters (a piece stored as 8-bit text cannot hold any). The East Asian language is the
first Chinese, Japanese or Korean one a run names (sprmCRgLid1), else one a used style names.

A Word 6 or 95 file (its FIB is another layout) is not read: the reader raises
``UnreadableDoc`` and the file gets no report (``fonts`` null) rather than an empty one, which
would say every font it asks for is installed.

The document is hostile. Each stream is read whole only if it is at most the part bound
(QUIRE_MAX_PART_EXPANDED_BYTES, else ``DocumentTooLarge``); every offset and length is checked
against its stream before it is used; every count is bounded by the bytes that hold it (a page
is read once however often the PLCs name it, a style chain is walked once per style, the text
searched is at most the stream's size). Anything that does not hold raises ``UnreadableDoc``:
the report is then not made (the PDF is good either way), never a worker crash or a hang.
The work is linear in the streams' sizes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from workers.font_requests import EAST_ASIAN, DocumentTooLarge, Requested
from workers.ole2 import (
    F_ENCRYPTED,
    F_OBFUSCATED,
    F_WHICH_TABLE,
    WORD_IDENTIFIER,
    CompoundFile,
    DamagedCompound,
)

U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
FIB_FLAGS = 0x0A
FIB_CSW = 32  # after the 32-byte FibBase: csw, then fibRgW
FIRST_WORD97_NFIB = 0x00C1  # Word 97; Word 6 and 95 wrote 101-104 and another FIB layout
# FibRgFcLcb97: (fc, lcb) pairs by index; 93 pairs in Word 97's FIB.
FC_LCB_97 = 93
STSHF, PLCF_BTE_CHPX, PLCF_BTE_PAPX, STTBF_FFN, CLX = 1, 12, 13, 15, 33
PAGE = 512  # an FKP
FFN_NAME = 39  # xszFfn, after cbFfnM1's byte: flags, wWeight, chs, ixchSzAlt, panose, fs
MAX_STYLES = 0x0FFF  # istd is 12 bits (0x0FFF names no style)
PIECE = 8  # a Pcd
F_COMPRESSED = 0x40000000

# The character sprms that name a font, by the slot each fills (MS-DOC 2.6.1).
FONT_SPRMS = {0x4A4F: "ascii", 0x4A50: "eastAsia", 0x4A51: "hAnsi", 0x4A5E: "cs"}
SPRM_CISTD = 0x4A30
EAST_ASIAN_LANGUAGE_SPRMS = {0x486E, 0x4874}  # sprmCRgLid1_80, sprmCRgLid1
# An operand's size by the sprm's spra (its top three bits); 6 is variable (a size byte first).
OPERAND_SIZES = (1, 1, 2, 4, 2, 2, -1, 3)
# East Asian language identifiers (LCIDs) as fontconfig's language tags.
EAST_ASIAN_LANGUAGES = {
    0x0411: "ja",
    0x0412: "ko",
    0x0404: "zh-tw",
    0x0804: "zh-cn",
    0x0C04: "zh-hk",
    0x1004: "zh-sg",
    0x1404: "zh-mo",
}


class UnreadableDoc(Exception):
    """A structure of the .doc cannot be read (or is Word 6/95's): no report is made."""


def _u16(data: bytes, at: int) -> int:
    if at < 0 or at + 2 > len(data):
        raise UnreadableDoc("a structure runs past the end of its stream")
    value: int = U16.unpack_from(data, at)[0]
    return value


def _u32(data: bytes, at: int) -> int:
    if at < 0 or at + 4 > len(data):
        raise UnreadableDoc("a structure runs past the end of its stream")
    value: int = U32.unpack_from(data, at)[0]
    return value


def _within(data: bytes, at: int, length: int, what: str) -> bytes:
    if at < 0 or length < 0 or at + length > len(data):
        raise UnreadableDoc(f"its {what} lies outside its stream")
    return data[at : at + length]


@dataclass
class _Fib:
    table_stream: str
    pairs: list[tuple[int, int]]  # FibRgFcLcb97's (fc, lcb), by index


def _fib(word: bytes) -> _Fib:
    identifier, nfib = _u16(word, 0), _u16(word, 2)
    if identifier != WORD_IDENTIFIER or nfib < FIRST_WORD97_NFIB:
        raise UnreadableDoc("a Word 6 or 95 document: its font table is not read")
    flags = _u16(word, FIB_FLAGS)
    if flags & (F_ENCRYPTED | F_OBFUSCATED):
        raise UnreadableDoc("an encrypted document")
    csw = _u16(word, FIB_CSW)
    at = FIB_CSW + 2 + 2 * csw
    cslw = _u16(word, at)
    at += 2 + 4 * cslw
    count = _u16(word, at)
    at += 2
    if count < FC_LCB_97:
        raise UnreadableDoc("its FIB holds fewer locations than Word 97's")
    blob = _within(word, at, 8 * FC_LCB_97, "FIB")
    pairs = list(struct.iter_unpack("<II", blob))
    return _Fib("1Table" if flags & F_WHICH_TABLE else "0Table", pairs)


def _located(table: bytes, fib: _Fib, index: int, what: str) -> bytes:
    fc, lcb = fib.pairs[index]
    return _within(table, fc, lcb, what)


# -- the font table ----------------------------------------------------------------------------


def _font_table(data: bytes) -> list[str]:
    """The families by font number (ftc): SttbfFfn's FFN records, each preceded by its size."""
    if not data:
        return []
    count = _u16(data, 0)
    at = 4  # cData, then cbExtra
    names: list[str] = []
    for _ in range(count):  # at most 65,535, and each record takes a byte at least
        size = data[at] if at < len(data) else -1
        record = _within(data, at + 1, size, "font table")
        at += 1 + size
        name = record[FFN_NAME:]
        text = name[: len(name) // 2 * 2].decode("utf-16-le", "replace")
        names.append(text.split("\0", 1)[0])
    return names


# -- properties --------------------------------------------------------------------------------


@dataclass
class _Properties:
    """What a run's or a style's character properties say about fonts."""

    fonts: dict[str, int] = field(default_factory=dict)  # slot -> ftc
    style: int | None = None  # sprmCIstd: the run's character style
    language: str | None = None  # the East Asian language, when Chinese, Japanese or Korean


def _sprms(grpprl: bytes) -> Iterator[tuple[int, bytes]]:
    """Each (sprm, operand) of a property list; a list cut short ends where its bytes do."""
    at = 0
    while at + 2 <= len(grpprl):
        sprm = _u16(grpprl, at)
        at += 2
        size = OPERAND_SIZES[sprm >> 13]
        if size < 0:
            if at >= len(grpprl):
                return
            size = grpprl[at]
            at += 1
        if at + size > len(grpprl):
            return
        yield sprm, grpprl[at : at + size]
        at += size


def _properties(grpprl: bytes) -> _Properties:
    found = _Properties()
    for sprm, operand in _sprms(grpprl):
        if sprm in FONT_SPRMS:
            found.fonts[FONT_SPRMS[sprm]] = _u16(operand, 0)
        elif sprm == SPRM_CISTD:
            found.style = _u16(operand, 0)
        elif sprm in EAST_ASIAN_LANGUAGE_SPRMS:
            found.language = EAST_ASIAN_LANGUAGES.get(_u16(operand, 0)) or found.language
    return found


# -- the stylesheet ----------------------------------------------------------------------------


@dataclass
class _Style:
    base: int
    properties: _Properties


@dataclass
class _Stylesheet:
    defaults: dict[str, int] = field(default_factory=dict)
    styles: dict[int, _Style] = field(default_factory=dict)


def _style(std: bytes, base_size: int) -> _Style | None:
    """One STD: its istdBase and the character properties of its UPXs (None: no such style)."""
    if base_size < 10 or len(std) < base_size:
        return None
    kind_and_base = _u16(std, 2)
    kind, base = kind_and_base & 0x000F, kind_and_base >> 4
    upx_count = _u16(std, 4) & 0x000F
    # Which UPX holds the character properties: paragraph styles have (PAPX, CHPX), character
    # styles (CHPX), table styles (TAPX, PAPX, CHPX); numbering styles have none.
    chpx_index = {1: 1, 2: 0, 3: 2}.get(kind)
    at = base_size
    at += 2 + 2 * _u16(std, at) + 2  # the name: cch, its characters, a terminating zero
    grpprl = b""
    for index in range(upx_count):
        size = _u16(std, at)
        upx = _within(std, at + 2, size, "stylesheet")
        at += 2 + size + (size & 1)  # each UPX is padded to an even length
        if index == chpx_index:
            grpprl = upx
    return _Style(base, _properties(grpprl))


def _stylesheet(data: bytes) -> _Stylesheet:
    sheet = _Stylesheet()
    if not data:
        return sheet
    header_size = _u16(data, 0)
    header = _within(data, 2, header_size, "stylesheet")
    count, base_size = _u16(header, 0), _u16(header, 2)
    # Stshif's rgftcStandardChpStsh, then (after Stshif) ftcBi.
    defaults = {"ascii": 12, "eastAsia": 14, "hAnsi": 16, "cs": 18}
    for slot, offset in defaults.items():
        if offset + 2 <= len(header):
            sheet.defaults[slot] = _u16(header, offset)
    at = 2 + header_size
    for istd in range(min(count, MAX_STYLES)):
        size = _u16(data, at)
        std = _within(data, at + 2, size, "stylesheet")
        at += 2 + size
        if size:
            style = _style(std, base_size)
            if style is not None:
                sheet.styles[istd] = style
    return sheet


class _Resolver:
    """A style's character properties as the text sees them: its own, then those of the
    styles it is based on for what it does not set. Each style is resolved once (a chain
    that loops ends where it would repeat)."""

    def __init__(self, sheet: _Stylesheet) -> None:
        self.styles = sheet.styles
        self.known: dict[int, _Properties] = {}

    def __call__(self, istd: int) -> _Properties:
        chain: list[int] = []
        on_chain: set[int] = set()
        while istd in self.styles and istd not in self.known and istd not in on_chain:
            chain.append(istd)
            on_chain.add(istd)
            istd = self.styles[istd].base
        found = self.known.get(istd, _Properties())
        for one in reversed(chain):
            own = self.styles[one].properties
            found = _Properties({**found.fonts, **own.fonts}, None, own.language or found.language)
            self.known[one] = found
        return found


# -- the formatting pages ----------------------------------------------------------------------


def _pages(plc: bytes) -> list[int]:
    """The distinct page numbers of a PlcBteChpx or PlcBtePapx: (n + 1) FCs, then n PNs."""
    if len(plc) < 4 or (len(plc) - 4) % 8:
        raise UnreadableDoc("a table of formatting pages has an impossible size")
    count = (len(plc) - 4) // 8
    numbers = struct.unpack_from(f"<{count}I", plc, 4 * (count + 1))
    return list(dict.fromkeys(number & 0x3FFFFF for number in numbers))


def _page(word: bytes, number: int) -> bytes:
    return _within(word, number * PAGE, PAGE, "formatting page")


def _run_properties(word: bytes, numbers: list[int]) -> Iterator[_Properties]:
    """Each distinct CHPX of the character FKPs (ChpxFkp: crun at the end, the runs' FCs, then a
    byte per run locating its CHPX in words)."""
    seen: set[bytes] = set()
    for number in numbers:
        page = _page(word, number)
        runs = page[PAGE - 1]
        offsets = 4 * (runs + 1)
        if offsets + runs > PAGE - 1:
            raise UnreadableDoc("a character formatting page counts more runs than it holds")
        for where in page[offsets : offsets + runs]:
            if where == 0:
                continue  # the run has no properties of its own
            size = page[2 * where]
            grpprl = _within(page[: PAGE - 1], 2 * where + 1, size, "character properties")
            if grpprl not in seen:
                seen.add(grpprl)
                yield _properties(grpprl)


def _paragraph_styles(word: bytes, numbers: list[int]) -> set[int]:
    """The istd of every paragraph of the paragraph FKPs (PapxFkp: cpara at the end, the FCs,
    then 13-byte BxPap records whose first byte locates a PapxInFkp in words)."""
    styles: set[int] = set()
    for number in numbers:
        whole = _page(word, number)
        paragraphs, page = whole[PAGE - 1], whole[: PAGE - 1]
        records = 4 * (paragraphs + 1)
        if records + 13 * paragraphs > PAGE - 1:
            raise UnreadableDoc("a paragraph formatting page counts more paragraphs than it holds")
        # Paragraphs of the same properties share their PapxInFkp: each is read once.
        for where in {2 * page[records + 13 * index] for index in range(paragraphs)}:
            if where == 0:  # at most 510: inside the page
                continue
            if page[where]:
                size, start = 2 * page[where] - 1, where + 1
            else:  # cb 0: the size, in words, is in the next byte
                size = 2 * page[where + 1] if where + 1 < len(page) else 0
                start = where + 2
            if size >= 2:
                styles.add(_u16(_within(page, start, size, "paragraph properties"), 0))
    return styles


# -- the text ----------------------------------------------------------------------------------


def _has_east_asian_text(word: bytes, clx: bytes) -> bool:
    """Whether the text holds East Asian characters: the CLX's piece table says where each
    piece of text lies in the WordDocument stream, and whether it is 8-bit or UTF-16."""
    at = 0
    while at < len(clx) and clx[at] == 1:  # Prc: property lists of a fast save, skipped
        at += 3 + _u16(clx, at + 1)
    if at >= len(clx) or clx[at] != 2:
        raise UnreadableDoc("its piece table cannot be found")
    plc = _within(clx, at + 5, _u32(clx, at + 1), "piece table")
    if len(plc) < 4 or (len(plc) - 4) % (4 + PIECE):
        raise UnreadableDoc("its piece table has an impossible size")
    count = (len(plc) - 4) // (4 + PIECE)
    positions = struct.unpack_from(f"<{count + 1}I", plc)
    budget = len(word)  # pieces never hold more text than the stream: overlaps end the search
    for index in range(count):
        characters = positions[index + 1] - positions[index]
        location = _u32(plc, 4 * (count + 1) + PIECE * index + 2)
        if characters <= 0 or location & F_COMPRESSED:
            continue  # an 8-bit piece holds no East Asian character
        budget -= 2 * characters
        if budget < 0:
            return False
        text = _within(word, location, 2 * characters, "text")
        if EAST_ASIAN.search(text.decode("utf-16-le", "replace")):
            return True
    return False


# -- the reader --------------------------------------------------------------------------------


def _stream(compound: CompoundFile, name: str, max_part_bytes: int) -> bytes:
    entry = compound.entries.get(name)
    if entry is None:
        raise UnreadableDoc(f"its {name} stream is missing")
    if entry.size > max_part_bytes:
        raise DocumentTooLarge(name)
    return compound.read_stream(name, entry.size)


def requested_fonts(path: Path, max_part_bytes: int) -> Requested:
    """The font families the document's text asks for (see the module's docstring)."""
    try:
        with open(path, "rb") as handle:
            compound = CompoundFile(handle)
            word = _stream(compound, "WordDocument", max_part_bytes)
            table = _stream(compound, _fib(word).table_stream, max_part_bytes)
    except (DamagedCompound, struct.error) as damage:
        raise UnreadableDoc(f"its OLE2 structure cannot be read: {damage}") from damage
    return requested_in(word, table)


def requested_in(word: bytes, table: bytes) -> Requested:
    """What the WordDocument stream ``word`` and its table stream ``table`` ask for."""
    fib = _fib(word)
    families = _font_table(_located(table, fib, STTBF_FFN, "font table"))
    sheet = _stylesheet(_located(table, fib, STSHF, "stylesheet"))
    runs = list(_run_properties(word, _pages(_located(table, fib, PLCF_BTE_CHPX, "runs"))))
    paragraph_styles = _paragraph_styles(
        word, _pages(_located(table, fib, PLCF_BTE_PAPX, "paragraphs"))
    )
    resolved = _Resolver(sheet)
    chosen: list[tuple[str, int]] = []
    languages = [run.language for run in runs if run.language]
    for run in runs:
        chosen.extend(run.fonts.items())
        if run.style is not None:
            style = resolved(run.style)  # only the slots it sets: it sits on the paragraph's
            chosen.extend(style.fonts.items())
            languages += [style.language] if style.language else []
    # Each paragraph style the text uses (and Normal, istd 0, the style of a paragraph that
    # names none): a slot neither it nor a style it is based on sets takes the default font.
    for istd in sorted({0, *paragraph_styles}):
        style = resolved(istd)
        chosen.extend({**sheet.defaults, **style.fonts}.items())
        languages += [style.language] if style.language else []
    requested = Requested()
    for slot, ftc in chosen:
        if ftc < len(families):
            requested.add(families[ftc], slot)
    requested.east_asian_language = languages[0] if languages else None
    requested.east_asian_text = _has_east_asian_text(word, _located(table, fib, CLX, "text"))
    return requested
