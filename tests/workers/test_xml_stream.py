"""workers/xml_stream.py: hostile XML fed to expat so that a long token costs linear time."""

from __future__ import annotations

from typing import Any

import pytest
from defusedxml import DTDForbidden, EntitiesForbidden

from workers.xml_stream import CHUNK, HeldBackFeed, TokenTooLarge, guarded_parser

LONG_ATTRIBUTE = 16 * 1024 * 1024


class Recording:
    """A guarded parser, recording how much it is given at each call."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parser", guarded_parser())
        object.__setattr__(self, "calls", [])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._parser, name, value)

    def Parse(self, data: bytes, final: bool) -> int:  # expat's name
        self.calls.append(len(data))
        return int(self._parser.Parse(data, final))


def long_attribute_document(size: int) -> bytes:
    return b'<doc><p x="' + b"y" * size + b'"/></doc>'


def test_an_unfinished_token_is_not_scanned_again_for_every_chunk() -> None:
    # expat 2.5 scans an unfinished token again on every call (CVE-2023-52425). Fed as a zip
    # gives it, 64 KiB at a time, a 16 MiB attribute was scanned 256 times from its start.
    data = long_attribute_document(LONG_ATTRIBUTE)
    parser = Recording()
    held = HeldBackFeed(parser, max_token=2 * LONG_ATTRIBUTE)
    for start in range(0, len(data), CHUNK):
        held.feed(data[start : start + CHUNK])
    held.close()
    calls: list[int] = parser.calls
    assert sum(calls) == len(data) == held.fed
    # Each call scans the unfinished token again: at most the bytes given so far.
    scanned = sum(sum(calls[: index + 1]) for index in range(len(calls)))
    assert scanned <= 4 * len(data), calls


def test_a_token_longer_than_the_bound_ends_the_reading_before_expat_holds_it() -> None:
    data = long_attribute_document(LONG_ATTRIBUTE)
    parser = Recording()
    held = HeldBackFeed(parser, max_token=4 * 1024 * 1024)
    with pytest.raises(TokenTooLarge):
        for start in range(0, len(data), CHUNK):
            held.feed(data[start : start + CHUNK])
    assert held.fed <= 4 * 1024 * 1024


def test_markup_is_handed_on_in_chunks_as_it_comes() -> None:
    # Short tokens: nothing waits for more than one chunk, so the handlers see the document
    # as it is read (the font readers stop looking for East Asian text once they found some).
    data = b"<doc>" + b"<p>x</p>" * (CHUNK // 2) + b"</doc>"
    parser = Recording()
    held = HeldBackFeed(parser, max_token=CHUNK)
    for start in range(0, len(data), 1024):
        held.feed(data[start : start + 1024])
    held.close()
    assert len(parser.calls) >= len(data) // (2 * CHUNK)
    assert max(parser.calls) <= 2 * CHUNK


@pytest.mark.parametrize(
    ("document", "refusal"),
    [
        (b'<!DOCTYPE d [<!ENTITY e "x">]><d>&e;</d>', DTDForbidden),
        (b'<?xml version="1.0"?><!DOCTYPE d SYSTEM "file:///etc/passwd"><d/>', DTDForbidden),
    ],
)
def test_the_guarded_parser_refuses_declarations(document: bytes, refusal: type) -> None:
    parser = guarded_parser()
    with pytest.raises(refusal):
        parser.Parse(document, True)


def test_entity_declarations_are_refused_even_without_a_doctype_handler() -> None:
    parser = guarded_parser()
    parser.StartDoctypeDeclHandler = None  # a reader that only wants entities refused
    with pytest.raises(EntitiesForbidden):
        parser.Parse(b'<!DOCTYPE d [<!ENTITY e "x">]><d>&e;</d>', True)
