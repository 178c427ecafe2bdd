"""Links to local files are rewritten before LibreOffice sees the package; nothing else is."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from tests.docx_factory import bad_documents, make_docx
from workers.sanitize import MAX_RELS_BYTES, NOWHERE, prepare_docx, strip_local_links
from workers.validation import InvalidDocument, validate_docx

IMAGE = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/image"
LINK = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/hyperlink"


def with_relationships(relationships: str) -> bytes:
    """A valid DOCX whose document part has the given relationships."""
    source = zipfile.ZipFile(io.BytesIO(make_docx("linked things")))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as package:
        for info in source.infolist():
            package.writestr(info, source.read(info))
        package.writestr(
            "word/_rels/document.xml.rels",
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.'
            f'openxmlformats.org/package/2006/relationships">{relationships}</Relationships>',
        )
    return buffer.getvalue()


def test_local_picture_links_are_rewritten_and_the_rest_kept(tmp_path: Path) -> None:
    path = tmp_path / "links.docx"
    path.write_bytes(
        with_relationships(
            f'<Relationship Id="r1" Type="{IMAGE}" Target="file:///etc/secret.png" '
            'TargetMode="External"/>'
            f'<Relationship Id="r2" Type="{IMAGE}" Target="../../secret.png" '
            'TargetMode="External"/>'
            f'<Relationship Id="r3" Type="{IMAGE}" Target="https://example.org/a.png" '
            'TargetMode="External"/>'
            f'<Relationship Id="r4" Type="{LINK}" Target="file:///C:/docs/x.docx" '
            'TargetMode="External"/>'
            f'<Relationship Id="r5" Type="{IMAGE}" Target="media/inside.png"/>'
        )
    )
    assert strip_local_links(path) == 1
    validate_docx(path)  # still a valid package
    with zipfile.ZipFile(path) as package:
        rels = package.read("word/_rels/document.xml.rels")
        assert package.read("word/document.xml")  # the other parts are untouched
    assert b"secret.png" not in rels
    # LibreOffice loads a linked picture whatever type its relationship claims: hyperlinks too.
    assert b"file:///C:/docs/x.docx" not in rels
    assert rels.count(NOWHERE.encode()) == 3
    assert b"https://example.org/a.png" in rels  # the profile keeps LibreOffice off the web
    assert b'Target="media/inside.png"' in rels


def test_tricks_in_how_attributes_are_written_do_not_hide_a_link(tmp_path: Path) -> None:
    path = tmp_path / "tricks.docx"
    path.write_bytes(
        with_relationships(
            f'<Relationship Id="r1" Type="{IMAGE}" Target="file:///a.png" '
            'TargetMode="&#69;xternal"/>'
            f'<Relationship Id="r2" x-y="a>b" Type="{IMAGE}" Target="../b.png" '
            'TargetMode="External"/>'
            f'<Relationship xmlns:x="urn:x" Id="r3" Type="{IMAGE}" Target="c.png" '
            'TargetMode="External" x:Target="http://decoy/"/>'
        )
    )
    assert strip_local_links(path) == 1
    with zipfile.ZipFile(path) as package:
        rels = package.read("word/_rels/document.xml.rels")
    assert rels.count(NOWHERE.encode()) == 3
    for local in (b"file:///a.png", b"../b.png", b'"c.png"'):
        assert local not in rels


def test_a_relationship_part_that_is_not_xml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.docx"
    # No end: not well formed (and it names an external target, so it must be read).
    path.write_bytes(with_relationships('<Relationship TargetMode="External" ' * 1000))
    with pytest.raises(InvalidDocument, match="not well-formed"):
        strip_local_links(path)


def test_a_package_without_local_links_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "plain.docx"
    data = make_docx("nothing linked")
    path.write_bytes(data)
    assert strip_local_links(path) == 0
    assert path.read_bytes() == data


# -- prepare_docx: what the worker runs, validation and rewriting in one read ------------------


def test_prepare_rewrites_local_links_of_a_valid_package(tmp_path: Path) -> None:
    path = tmp_path / "links.docx"
    path.write_bytes(
        with_relationships(
            f'<Relationship Id="r1" Type="{IMAGE}" Target="file:///etc/secret.png" '
            'TargetMode="External"/>'
            f'<Relationship Id="r2" Type="{LINK}" Target="https://example.org/" '
            'TargetMode="External"/>'
        )
    )
    assert prepare_docx(path) == 1
    with zipfile.ZipFile(path) as package:
        rels = package.read("word/_rels/document.xml.rels")
    assert b"secret.png" not in rels
    assert rels.count(NOWHERE.encode()) == 1
    assert b"https://example.org/" in rels
    assert prepare_docx(path) == 0  # the rewritten package is valid and has nothing left


def test_prepare_refuses_what_validation_refuses_with_the_same_message(tmp_path: Path) -> None:
    for name, data in bad_documents().items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InvalidDocument) as validated:
            validate_docx(path)
        with pytest.raises(InvalidDocument) as prepared:
            prepare_docx(path)
        assert str(prepared.value) == str(validated.value)
        assert path.read_bytes() == data  # a refused file is left as it was


def test_prepare_refuses_a_damaged_relationship_part(tmp_path: Path) -> None:
    data = bytearray(with_relationships("<!-- padding -->" * 2000))
    # Flip bytes inside the compressed relationship part: its CRC (or inflate) fails.
    name = b"word/_rels/document.xml.rels"
    local = data.find(b"PK\x03\x04")
    while local >= 0:
        name_length = int.from_bytes(data[local + 26 : local + 28], "little")
        extra_length = int.from_bytes(data[local + 28 : local + 30], "little")
        if data[local + 30 : local + 30 + name_length] == name:
            start = local + 30 + name_length + extra_length
            data[start + 20 : start + 28] = b"\xff" * 8
            break
        local = data.find(b"PK\x03\x04", local + 4)
    assert local >= 0
    path = tmp_path / "damaged-rels.docx"
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidDocument, match="damaged"):
        prepare_docx(path)


def test_prepare_refuses_an_implausibly_large_relationship_part(tmp_path: Path) -> None:
    path = tmp_path / "huge-rels.docx"
    path.write_bytes(with_relationships(" " * (MAX_RELS_BYTES + 1)))
    with pytest.raises(InvalidDocument, match="implausibly large"):
        prepare_docx(path)
