"""An RTF document: checked for balanced groups, and its file-reading fields neutralised.

A field's instruction (``{\\*\\fldinst INCLUDEPICTURE "file:///etc/hostname"}``) can make
LibreOffice read a file of the worker's: INCLUDEPICTURE, INCLUDETEXT, IMPORT, LINK, DDE. Every
field whose instruction is not one of the harmless kinds (``SAFE_FIELDS``: page numbers,
dates, references inside the document, hyperlinks...) or that names a file-reading kind
anywhere has its instruction emptied; the field then shows the result its author's word
processor stored (``\\fldrslt``), as it would on a machine without the linked file. The
instruction is read as LibreOffice reads it: ``\\'hh`` and ``\\uN`` escapes decoded, control
words and ``{\\*\\...}`` destinations left out, so a keyword cannot hide behind them; one that
does not read as a known harmless kind is emptied.

What this does not rewrite (linked OLE objects, a picture's ``pibName`` property) is left to the
sandbox: LibreOffice may read no file outside its document's folder (docs/security.md).

The scan stops only at braces, ``\\bin`` (whose raw bytes are skipped) and ``\\fldinst``, so
a document of pictures in hex costs a few regular-expression searches.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from app.config import get_settings
from workers.validation import InvalidDocument

TOKENS = re.compile(rb"[{}]|\\(?:bin(-?\d{1,10}) ?|fldinst(?![A-Za-z])|[{}\\])")
EMPTY_INSTRUCTION = b"{\\*\\fldinst }"
SAFE_FIELDS = frozenset(
    [
        "PAGE",
        "NUMPAGES",
        "SECTIONPAGES",
        "SECTION",
        "DATE",
        "TIME",
        "CREATEDATE",
        "SAVEDATE",
        "PRINTDATE",
        "EDITTIME",
        "HYPERLINK",
        "TOC",
        "TOA",
        "TA",
        "TC",
        "XE",
        "INDEX",
        "PAGEREF",
        "REF",
        "NOTEREF",
        "SEQ",
        "STYLEREF",
        "SYMBOL",
        "EQ",
        "FORMTEXT",
        "FORMCHECKBOX",
        "FORMDROPDOWN",
        "MERGEFIELD",
        "AUTHOR",
        "TITLE",
        "SUBJECT",
        "KEYWORDS",
        "COMMENTS",
        "NUMWORDS",
        "NUMCHARS",
        "DOCPROPERTY",
        "FILLIN",
        "ASK",
        "IF",
        "QUOTE",
        "SET",
        "LISTNUM",
        "ADVANCE",
        "USERNAME",
        "USERINITIALS",
        "USERADDRESS",
        "LASTSAVEDBY",
        "REVNUM",
        "BIDIOUTLINE",
    ]
)
FILE_FIELDS = frozenset(
    ["INCLUDEPICTURE", "INCLUDETEXT", "INCLUDE", "IMPORT", "LINK", "DDE", "DDEAUTO"]
)
WORD = re.compile(r"[A-Za-z]+")
INSTRUCTION_TOKENS = re.compile(
    rb"\\'([0-9a-fA-F]{2})|\\u(-?\d{1,6}) ?|\\uc(\d{1,2}) ?|\\[A-Za-z]{1,32}(?:-?\d{1,10})? ?"
    rb"|\\(.)|(\{\\\*)|([{}])|([^\\{}]+)",
    re.DOTALL,
)


def instruction_text(group: bytes) -> str:
    """The text of a ``\\fldinst`` group as LibreOffice assembles it."""
    out: list[str] = []
    skip_depth = 0  # inside a {\\* ...} destination, which readers leave out
    depth = 0
    # \\ucN: characters after \\uN that stand in for it. A group's \\uc ends with the group,
    # as in LibreOffice's reader: one that outlived its group would make this reading skip
    # letters LibreOffice keeps.
    fallbacks = [1]
    to_skip = 0
    for match in INSTRUCTION_TOKENS.finditer(group):
        hexa, unicode, uc, symbol, star, brace, text = match.groups()
        if star is not None or brace == b"{":
            depth += 1
            fallbacks.append(fallbacks[-1])
            if star is not None and skip_depth == 0 and depth > 1:
                skip_depth = depth
            continue
        if brace == b"}":
            if skip_depth == depth:
                skip_depth = 0
            depth -= 1
            if len(fallbacks) > 1:
                fallbacks.pop()
            continue
        if skip_depth:
            continue
        if uc is not None:
            fallbacks[-1] = int(uc)
        elif unicode is not None:
            out.append(chr(int(unicode) % 0x10000))
            to_skip = fallbacks[-1]
        elif hexa is not None:
            if to_skip:
                to_skip -= 1
            else:
                out.append(bytes.fromhex(hexa.decode()).decode("cp1252", "replace"))
        elif text is not None or symbol is not None:
            chars = (text or symbol or b"").decode("cp1252", "replace")
            if to_skip:
                dropped = min(to_skip, len(chars))
                chars, to_skip = chars[dropped:], to_skip - dropped
            out.append(chars)
    return "".join(out)


def harmless(instruction: str) -> bool:
    words = [word.upper() for word in WORD.findall(instruction)]
    first = instruction.strip().split(None, 1)
    return (
        bool(first)
        and first[0].upper() in SAFE_FIELDS
        and not any(word in FILE_FIELDS for word in words)
    )


def neutralised(data: bytes) -> tuple[bytes, int]:
    """``data`` with the instruction of every field that could read a file emptied, and how
    many; InvalidDocument when its groups do not balance (damage or truncation)."""
    starts: list[int] = []  # of the groups open
    spans: list[tuple[int, int]] = []
    # The outermost \\fldinst group open (how many groups were open with it), and whether it
    # must be emptied without being read: one holding another \\fldinst group (reading each
    # nested group again made the check quadratic: 72 KB took 7 s) or raw \\bin data (which
    # LibreOffice skips and the reading below would take for text, so a keyword split by it
    # would pass).
    instruction_depth: int | None = None
    unreadable = False
    position = 0
    while match := TOKENS.search(data, position):
        token = match.group(0)
        position = match.end()
        if token == b"{":
            starts.append(match.start())
        elif token == b"}":
            if not starts:
                break  # the document's group closed: LibreOffice ignores what follows
            depth = len(starts)
            start = starts.pop()
            if depth == instruction_depth:
                if unreadable or not harmless(instruction_text(data[start:position])):
                    spans.append((start, position))
                instruction_depth, unreadable = None, False
            if not starts:
                break
        elif match.group(1) is not None:
            position += max(0, int(match.group(1)))  # \\binN: N raw bytes, braces or not
            unreadable = unreadable or instruction_depth is not None
        elif token.startswith(b"\\fldinst") and starts:
            if instruction_depth is None:
                instruction_depth = len(starts)
            elif len(starts) != instruction_depth:
                unreadable = True
    if starts:
        raise InvalidDocument(
            "The file is a damaged or truncated RTF document: its groups do not close."
        )
    if not spans:
        return data, 0
    # Outermost spans only: an emptied group takes its inner fields with it.
    kept: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if kept and start < kept[-1][1]:
            continue
        kept.append((start, end))
    pieces, last = [], 0
    for start, end in kept:
        pieces += [data[last:start], EMPTY_INSTRUCTION]
        last = end
    pieces.append(data[last:])
    return b"".join(pieces), len(kept)


def prepare_rtf(path: Path) -> int:
    """Check the RTF at ``path`` and empty its file-reading fields in place; return how many."""
    limit = get_settings().max_part_expanded_bytes
    if path.stat().st_size > limit:
        raise InvalidDocument(
            "The RTF document is larger than QUIRE_MAX_PART_EXPANDED_BYTES allows; refused."
        )
    data = path.read_bytes()
    if not data.startswith(b"{\\rtf"):
        raise InvalidDocument("The file is not an RTF document: it does not start with {\\rtf.")
    cleaned, count = neutralised(data)
    if count:
        partial = path.with_name(path.name + ".sanitized")
        partial.write_bytes(cleaned)
        os.replace(partial, path)
    return count
