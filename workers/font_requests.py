"""What a document asks for, as the font report compares it (``workers.fonts``): the families,
each with the slots it is asked in, read from the document by one reader per kind of document.

The readers share this record (and read XML through ``workers.xml_stream``), and never import
``workers.fonts`` (it imports them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

Key = TypeVar("Key")
Style = TypeVar("Style")

MAX_REQUESTED = 64  # Word's own font tables rarely list more than 30
MAX_NAME = 64  # a font family name is at most 31 characters in Word's UI
# The slots a family is asked in. "eastAsia" renders East Asian text, and a family asked for
# there is matched for the document's East Asian language; the others are judged as they are.
SLOTS = ("ascii", "hAnsi", "eastAsia", "cs")
# Han, kana, Hangul, CJK punctuation and full-width forms: text the East Asian slot renders.
EAST_ASIAN = re.compile(
    "[\u1100-\u11ff\u2e80-\u9fff\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\uff00-\uffef]"
)


class DocumentTooLarge(Exception):
    """A part expands past the bound while a reader reads it."""


def clean_family(family: str | None) -> str:
    """A family name as fontconfig is asked for it: no control characters, bounded, trimmed."""
    if not family:
        return ""
    return "".join(ch for ch in family if ch.isprintable())[:MAX_NAME].strip()


@dataclass
class Requested:
    """Families the document asks for, each with the slots it is asked in."""

    slots: dict[str, set[str]] = field(default_factory=dict)
    east_asian_language: str | None = None
    east_asian_text: bool = False

    def add(self, family: str | None, slot: str) -> None:
        name = clean_family(family)
        if not name:
            return
        known = self.slots.get(name)
        if known is None:
            if len(self.slots) >= MAX_REQUESTED:
                return
            known = self.slots[name] = set()
        known.add(slot)


def along_style_chains(
    used: Iterable[Key], styles: Mapping[Key, Style], parent: Callable[[Key, Style], Key | None]
) -> Iterator[tuple[Key, Style]]:
    """Each style of ``used``, in order, each followed by the styles it is based on (nearest
    first); every style once, so a style based on itself or a loop ends, and a name no style
    has is passed over."""
    pending = list(used)
    pending.reverse()
    seen: set[Key] = set()
    while pending:
        key = pending.pop()
        style = styles.get(key)
        if key in seen or style is None:
            continue
        seen.add(key)
        yield key, style
        base = parent(key, style)
        if base is not None:
            pending.append(base)
