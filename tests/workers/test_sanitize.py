"""Links to local files are rewritten before LibreOffice sees the package; nothing else is."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from tests.docx_factory import make_docx
from workers.sanitize import NOWHERE, strip_local_links
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
