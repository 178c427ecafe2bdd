"""What a document asks for, as the font report compares it (``workers.fonts``): the families,
each with the slots it is asked in, read from the document by one reader per kind of document.

The readers share this record and the guarded XML parser, and never import ``workers.fonts``
(it imports them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from xml.parsers import expat

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden

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


def _refuse_doctype(name: str, sysid: str | None, pubid: str | None, internal: bool) -> None:
    raise DTDForbidden(name, sysid, pubid)


def _refuse_entity(name: str, parameter: bool, value: str | None, *rest: str | None) -> None:
    base, sysid, pubid, notation = rest
    raise EntitiesForbidden(name, value, base, sysid, pubid, notation)


def _refuse_unparsed_entity(name: str, *rest: str | None) -> None:
    base, sysid, pubid, notation = rest
    raise EntitiesForbidden(name, None, base, sysid, pubid, notation)


def _refuse_external(context: str, base: str | None, sysid: str | None, pubid: str | None) -> int:
    raise ExternalReferenceForbidden(context, base, sysid, pubid)


def guarded_parser() -> Any:
    """A bare expat parser with defusedxml's guards: no DTD, no entity declarations, nothing
    external; names come as "namespace local". (defusedxml's own SAX reader cost three times
    as much CPU, for the same guards: most of it in building each element's SAX attributes.)
    The caller sets the element and character handlers."""
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.EntityDeclHandler = _refuse_entity
    parser.UnparsedEntityDeclHandler = _refuse_unparsed_entity
    parser.ExternalEntityRefHandler = _refuse_external
    return parser
