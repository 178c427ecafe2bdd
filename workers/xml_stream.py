"""Hostile XML read as a stream: expat with defusedxml's guards, fed so that a long token costs
time in proportion to its length. Every reader of an upload's XML that builds no tree (the font
readers, the ODT sanitizer) reads through these.

expat 2.5 (Debian 12's) scans an unfinished token (an attribute value, a comment, a name) again
from its start on every call (CVE-2023-52425): a 16 MiB attribute fed 64 KiB at a time cost
1.3 s of CPU, and at 256 MiB it would hold a worker for minutes. ``HeldBackFeed`` keeps the
data back until there is at least as much of it as the unfinished token expat would scan again
(``CurrentByteIndex`` is where that token starts), as expat 2.6's own reparse deferral does.
That bounds the rescans to a constant per byte only up to pyexpat's own slicing (it hands
expat 1 MiB at a time whatever it is given, measured: 16 MiB 0.29 s, 32 MiB 1.1 s), so a token
longer than a reader's ``max_token`` ends the reading: expat holds it whole anyway, and no
word processor writes one (a VML shape's ``o:gfxdata`` picture, the largest Word writes, is
some hundreds of KB).
"""

from __future__ import annotations

from typing import Any
from xml.parsers import expat

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden

CHUNK = 64 * 1024  # the least handed to expat at once (fewer, larger calls cost less)


class TokenTooLarge(Exception):
    """One token is still unfinished past the reader's bound (its size in bytes, so far)."""


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


class HeldBackFeed:
    """Hands one part's chunks to ``parser``, held back while they are fewer bytes than the
    unfinished token expat would scan again (see the module's docstring); TokenTooLarge when a
    token outgrows ``max_token`` bytes."""

    def __init__(self, parser: Any, max_token: int) -> None:
        self.parser = parser
        self.max_token = max_token
        self.fed = 0  # bytes handed to expat
        self._pending: list[bytes] = []
        self._pending_size = 0

    def feed(self, chunk: bytes) -> bool:
        """Whether expat was called (a caller may change its handlers after a call)."""
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        unfinished = self.fed - max(self.parser.CurrentByteIndex, 0)
        if unfinished + self._pending_size > self.max_token:
            raise TokenTooLarge(unfinished + self._pending_size)
        if self._pending_size < max(unfinished, CHUNK):
            return False
        self._parse(False)
        return True

    def close(self) -> None:
        self._parse(True)

    def _parse(self, final: bool) -> None:
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        self.parser.Parse(data, final)
        self.fed += len(data)
