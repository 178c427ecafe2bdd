"""What an RTF document asks for, as the font report compares it (``workers.fonts``): the
families its text is set in, read from the font table and what refers to it.

What is read, in one linear pass over the tokens:

- **The font table** (``{\\fonttbl ...}``): each entry's number (``\\fN``), ``\\fcharsetN``
  and name, the text before its ``;`` (``{\\*\\panose ...}`` and ``{\\*\\falt ...}`` groups
  left out), decoded with the code page of its character set.
- **The default font** (``\\deffN``), when some text of the body is read with no ``\\fN`` (or
  ``\\loch\\afN``) in effect (an RTF writer repeats a style's formatting in the body, so most
  text has one).
- **The style sheet** (``{\\stylesheet ...}``): each paragraph (``\\sN``), character
  (``\\*\\csN``), section and table style's fonts and ``\\sbasedonN``.
- **The body**: every ``\\fN`` and ``\\afN``, and the styles it uses (``\\sN``, ``\\csN``
  ...), with the styles they are based on (each once: a loop ends). Groups that are not text
  are left out: ``{\\*\\...}`` destinations (field instructions, list tables, the
  generator...), ``\\info``, ``\\colortbl``, ``\\pict``, and list numbers and bullets
  (``\\listtext``, ``\\pntext``: the DOCX reader leaves numbering fonts out too).

Only those fonts are reported: LibreOffice and Word list fonts in the table that no text uses.

Slots, kept simple: ``\\fN`` is asked in ``ascii`` and ``hAnsi``, and in ``eastAsia`` too
when font N's ``\\fcharset`` is a double-byte one (128 Shift-JIS, 129 Hangul, 134 GB2312,
136 Big5). ``\\afN`` takes the slot the last ``\\loch`` (ascii), ``\\hich`` (hAnsi),
``\\dbch`` (eastAsia) or ``\\rtlch`` (cs) chose; after none of those, or after ``\\ltrch``,
it is the associated complex-script font (cs), as Word writes it. East Asian text is a
``\\uN`` in ``font_requests.EAST_ASIAN``, or a ``\\'hh`` byte of 0x81 or more in a double-byte
font; its language is the ``\\langfeN`` in effect there (a Windows LCID: 2052 zh-CN, 1041
ja ...), else ``\\deflangfeN``.

The file is hostile even after ``workers.rtf`` checked it: it is read only when at most
``max_part_bytes`` long, groups nested deeper than ``MAX_DEPTH`` or more than ``MAX_TOKENS``
tokens stop the reading (``DocumentTooLarge``: no report, the PDF stands), ``\\binN`` data is
skipped unread, a name is cut to ``font_requests.MAX_NAME`` characters, and at most
``MAX_FONTS`` fonts, ``MAX_STYLES`` styles and ``MAX_REFERENCES`` distinct font and style
references are kept. The tokenizer is this module's own: ``workers.rtf`` exports only a scan
for braces and field instructions, which does not name control words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from workers.font_requests import (
    EAST_ASIAN,
    MAX_NAME,
    DocumentTooLarge,
    Requested,
    along_style_chains,
)

# A control word (its letters, its number), \'hh, a control symbol, a brace, or text.
TOKEN = re.compile(
    rb"\\([A-Za-z]{1,32})(-?\d{1,10})? ?|\\'([0-9a-fA-F]{2})|\\([^A-Za-z'])|([{}])|[^\\{}]+",
    re.DOTALL,
)
MAX_DEPTH = 512  # LibreOffice's own documents nest a few levels; a table in a table, a dozen
MAX_TOKENS = 4_000_000  # a 300-page text is about a million; pictures' hex is one token a line
MAX_FONTS = 4_096
MAX_STYLES = 10_000
MAX_REFERENCES = 1_024  # distinct (slot, font) and style references of the body kept
DOUBLE_BYTE = {128: "cp932", 129: "cp949", 134: "gbk", 136: "cp950"}
CODE_PAGES = {
    **DOUBLE_BYTE,
    161: "cp1253",
    162: "cp1254",
    177: "cp1255",
    178: "cp1256",
    186: "cp1257",
    204: "cp1251",
    222: "cp874",
    238: "cp1250",
}
# The East Asian languages fontconfig is asked for, by Windows LCID (\langfe).
LANGUAGES = {
    1041: "ja",
    2052: "zh-CN",
    1028: "zh-TW",
    3076: "zh-HK",
    4100: "zh-SG",
    5124: "zh-MO",
    1042: "ko",
}
# Groups of the body that hold no text drawn in the document's fonts.
NOT_TEXT = frozenset(
    {b"info", b"colortbl", b"pict", b"listtable", b"listoverridetable", b"revtbl", b"fldinst"}
    | {b"listtext", b"pntext", b"pn", b"objdata"}
)
STYLE_WORDS = {b"s": "s", b"cs": "cs", b"ds": "ds", b"ts": "ts"}
MODES = {
    b"loch": "ascii",
    b"hich": "hAnsi",
    b"dbch": "eastAsia",
    b"rtlch": "cs",
    # Back to the associated font: Word writes \ltrch\fcs0 \af0 for left-to-right text.
    b"ltrch": "cs",
    b"fcs0": "cs",
    b"fcs1": "cs",
}

# The control words this reader acts on; the others are passed over.
READ_WORDS = frozenset(
    {b"f", b"fcharset", b"af", b"plain", b"langfe", b"deflangfe", b"uc", b"sbasedon", b"deff"}
    | set(MODES)
    | set(STYLE_WORDS)
)

# Where a group's tokens go.
BODY, FONT_TABLE, STYLE_SHEET, STYLE, SKIP = range(5)

Reference = tuple[str, int]  # (slot, or "f" for \f whose slots depend on the font; number)
StyleKey = tuple[str, int]  # (s, cs, ds or ts; number)


@dataclass
class _Font:
    charset: int = 0
    name: str = ""
    done: bool = False  # its ';' was read


@dataclass
class _Style:
    references: list[Reference] = field(default_factory=list)
    based_on: int | None = None


class _State:
    """What a group inherits from the one around it and takes back when it closes. Mutable,
    copied when a group opens: most control words change it, few groups open."""

    __slots__ = ("dbcs", "destination", "font_set", "language", "mode", "skip_after_unicode")

    def __init__(self) -> None:
        self.destination = BODY
        self.mode = "cs"  # the slot of \af
        self.dbcs = False  # the font of the text is a double-byte one
        self.font_set = False  # a \fN is in effect: text is not in the default font
        self.language: int | None = None  # \langfe
        self.skip_after_unicode = 1  # \uc

    def copy(self) -> _State:
        inner = _State.__new__(_State)
        inner.destination, inner.mode, inner.dbcs = self.destination, self.mode, self.dbcs
        inner.font_set = self.font_set
        inner.language, inner.skip_after_unicode = self.language, self.skip_after_unicode
        return inner


class _Reader:
    def __init__(self) -> None:
        self.fonts: dict[int, _Font] = {}
        self.styles: dict[StyleKey, _Style] = {}
        self.default_font: int | None = None
        self.default_font_used = False  # text was read with no \fN in effect
        self.references: dict[Reference, None] = {}
        self.used_styles: dict[StyleKey, None] = {}
        self.default_language: int | None = None
        self.east_asian_text = False
        self.east_asian_language: int | None = None
        self.font_entry: _Font | None = None  # the font table's entry being read
        self._name_bytes = bytearray()  # its name's \'hh bytes not decoded yet
        self.style_entry: _Style | None = None  # the style sheet's entry being read

    # -- the font table --------------------------------------------------------------------

    def flush_name_bytes(self) -> None:
        if self.font_entry is not None and self._name_bytes:
            code_page = CODE_PAGES.get(self.font_entry.charset, "cp1252")
            self.font_entry.name += self._name_bytes.decode(code_page, "replace")
        self._name_bytes.clear()

    def font_text(self, text: str) -> None:
        font = self.font_entry
        if font is None or font.done:
            return
        self.flush_name_bytes()
        before, semicolon, _ = text.partition(";")
        if len(font.name) < 4 * MAX_NAME:
            font.name += before[: 4 * MAX_NAME]
        font.done = bool(semicolon)

    def font_byte(self, value: int) -> None:
        if (
            self.font_entry is not None
            and not self.font_entry.done
            and len(self._name_bytes) < MAX_NAME
        ):
            self._name_bytes.append(value)

    def start_font(self, number: int) -> None:
        self.flush_name_bytes()
        if number in self.fonts or len(self.fonts) < MAX_FONTS:
            self.font_entry = self.fonts[number] = _Font()
        else:
            self.font_entry = None

    # -- the style sheet -------------------------------------------------------------------

    def start_style(self, key: StyleKey) -> None:
        if key in self.styles or len(self.styles) < MAX_STYLES:
            self.style_entry = self.styles.setdefault(key, _Style())
        else:
            self.style_entry = None  # past the bound: its fonts are not kept

    def end_style(self) -> None:
        self.style_entry = None

    # -- references ------------------------------------------------------------------------

    def refer(self, state: _State, reference: Reference) -> None:
        if state.destination == STYLE:
            if self.style_entry is not None and len(self.style_entry.references) < MAX_REFERENCES:
                self.style_entry.references.append(reference)
        elif len(self.references) < MAX_REFERENCES:
            self.references[reference] = None

    def use_style(self, key: StyleKey) -> None:
        if len(self.used_styles) < MAX_REFERENCES:
            self.used_styles[key] = None

    def text_read(self, state: _State) -> None:
        if not state.font_set:
            self.default_font_used = True

    def text_is_east_asian(self, state: _State) -> None:
        if not self.east_asian_text:
            self.east_asian_text = True
            self.east_asian_language = state.language

    def is_double_byte(self, number: int) -> bool:
        font = self.fonts.get(number)
        return font is not None and font.charset in DOUBLE_BYTE


def _read(data: bytes) -> _Reader:
    reader = _Reader()
    stack: list[_State] = []
    state = _State()
    new_group = False  # the next token is the group's first: a destination's name
    starred = False  # the group began with \*
    unicode_skip = 0  # characters after \uN that stand in for it
    position, tokens, size = 0, 0, len(data)
    while position < size:
        match = TOKEN.match(data, position)
        if match is None:  # a lone backslash at the end
            break
        position = match.end()
        tokens += 1
        if tokens > MAX_TOKENS:
            raise DocumentTooLarge("the RTF document has more tokens than the report reads")
        word, number, hexa, symbol, brace = match.groups()
        if brace is not None:
            if brace == b"{":
                if len(stack) >= MAX_DEPTH:
                    raise DocumentTooLarge("the RTF document's groups nest too deeply")
                stack.append(state)
                state = state.copy()
                new_group, starred = True, False
                if state.destination == STYLE_SHEET:
                    state.destination = STYLE
            else:
                if state.destination == STYLE and stack and stack[-1].destination == STYLE_SHEET:
                    reader.end_style()
                if state.destination == FONT_TABLE and reader.font_entry is not None:
                    reader.flush_name_bytes()
                if not stack:
                    break  # the document's group closed: LibreOffice ignores what follows
                state = stack.pop()
                new_group = False
            continue
        first, new_group = new_group, False
        if symbol is not None:
            if symbol == b"*" and first:
                starred, new_group = True, True
            continue
        if state.destination == SKIP:
            continue
        if word is not None:
            name = word
            value = int(number) if number is not None else None
            if name == b"bin" and value is not None:
                position += max(0, value)  # raw bytes, braces or not
                continue
            if starred and first:
                # {\*\cs20 ...} in the style sheet is a character style; any other starred
                # group is a destination a reader that does not know it skips.
                if state.destination == STYLE and name in STYLE_WORDS and value is not None:
                    reader.start_style((STYLE_WORDS[name], value))
                else:
                    state.destination = SKIP
                continue
            if first and state.destination == BODY:
                if name == b"fonttbl":
                    state.destination = FONT_TABLE
                    continue
                if name == b"stylesheet":
                    state.destination = STYLE_SHEET
                    continue
                if name in NOT_TEXT:
                    state.destination = SKIP
                    continue
            if name == b"u" and value is not None:
                character = chr(value % 0x10000)  # negative above 32767
                if state.destination == BODY:
                    reader.text_read(state)
                    if EAST_ASIAN.match(character):
                        reader.text_is_east_asian(state)
                elif state.destination == FONT_TABLE:
                    reader.font_text(character)
                unicode_skip = state.skip_after_unicode
                continue
            _control_word(reader, state, name, value)
            continue
        if hexa is not None:
            if unicode_skip:
                unicode_skip -= 1
                continue
            byte = int(hexa, 16)
            if state.destination == FONT_TABLE:
                reader.font_byte(byte)
            elif state.destination == BODY:
                reader.text_read(state)
                if state.dbcs and byte >= 0x81:
                    reader.text_is_east_asian(state)
            continue
        # Text.
        if unicode_skip:
            dropped = min(unicode_skip, position - match.start())
            unicode_skip -= dropped
            if dropped == position - match.start():
                continue
            text_start = match.start() + dropped
        else:
            text_start = match.start()
        if state.destination == FONT_TABLE:
            reader.font_text(data[text_start:position].decode("cp1252", "replace"))
        elif (
            state.destination == BODY
            and not state.font_set
            and data[text_start:position].strip()  # line breaks between tokens are no text
        ):
            reader.text_read(state)
    return reader


def _control_word(reader: _Reader, state: _State, name: bytes, value: int | None) -> None:
    """One control word of the body, the font table or a style: what it refers to, and the
    group's state it changes."""
    if name not in READ_WORDS:
        return  # most of a document's control words: sizes, spacing, colours, languages...
    destination = state.destination
    if destination == FONT_TABLE:
        if name == b"f" and value is not None:
            reader.start_font(value)
        elif name == b"fcharset" and value is not None and reader.font_entry is not None:
            reader.font_entry.charset = value
    elif destination == STYLE_SHEET:
        return
    elif name in MODES:
        state.mode = MODES[name]
    elif name == b"plain":
        state.dbcs, state.font_set, state.language = False, False, reader.default_language
    elif value is None:
        return
    elif name == b"f":
        reader.refer(state, ("f", value))
        state.dbcs, state.font_set = reader.is_double_byte(value), True
    elif name == b"af":
        reader.refer(state, (state.mode, value))
        if state.mode == "eastAsia":
            state.dbcs = reader.is_double_byte(value)
        elif state.mode == "ascii":
            state.font_set = True  # \loch\afN: the font of the text's low ANSI characters
    elif name == b"langfe":
        state.language = value
    elif name == b"uc":
        state.skip_after_unicode = max(0, min(value, 16))
    elif destination == STYLE:
        if name in STYLE_WORDS:
            reader.start_style((STYLE_WORDS[name], value))
        elif name == b"sbasedon" and reader.style_entry is not None:
            reader.style_entry.based_on = value
    elif destination != BODY:
        return
    elif name in STYLE_WORDS:
        reader.use_style((STYLE_WORDS[name], value))
    elif name == b"deff":
        reader.default_font = value
    elif name == b"deflangfe":
        reader.default_language = state.language = value


def requested_fonts(path: Path, max_part_bytes: int) -> Requested:
    """The font families the RTF's text asks for (see the module's docstring)."""
    if path.stat().st_size > max_part_bytes:
        raise DocumentTooLarge(path.name)
    reader = _read(path.read_bytes())
    references: list[Reference] = list(reader.references)
    if reader.default_font_used and reader.default_font is not None:
        references.append(("f", reader.default_font))
    for _, style in along_style_chains(
        reader.used_styles,
        reader.styles,
        lambda key, style: (key[0], style.based_on) if style.based_on is not None else None,
    ):
        references.extend(style.references)
    language = reader.east_asian_language or reader.default_language
    requested = Requested(
        east_asian_text=reader.east_asian_text,
        east_asian_language=LANGUAGES.get(language) if language is not None else None,
    )
    for slot, number in references:
        font = reader.fonts.get(number)
        if font is None:
            continue  # LibreOffice refers to fonts its own table does not list (\dbch\af12)
        if slot != "f":
            requested.add(font.name, slot)
            continue
        requested.add(font.name, "ascii")
        requested.add(font.name, "hAnsi")
        if font.charset in DOUBLE_BYTE:
            requested.add(font.name, "eastAsia")
    return requested
