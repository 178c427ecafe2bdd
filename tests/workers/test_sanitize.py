"""Links to local files are rewritten before LibreOffice sees the package; nothing else is."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import pytest
from defusedxml import ElementTree

from tests.docx_factory import bad_documents, make_docx
from workers.sanitize import EMPTY_SVG, MAX_RELS_BYTES, NOWHERE, prepare_docx, strip_local_links
from workers.validation import InvalidDocument, validate_docx

IMAGE = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/image"
LINK = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/hyperlink"


def with_extra_parts(*parts: dict[str, bytes]) -> bytes:
    """A valid DOCX with more parts (a name may come twice, from two dicts)."""
    source = zipfile.ZipFile(io.BytesIO(make_docx("linked things")))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as package:
        for info in source.infolist():
            package.writestr(info, source.read(info))
        for more in parts:
            for name, data in more.items():
                package.writestr(name, data)
    return buffer.getvalue()


def with_relationships_bytes(rels: bytes) -> bytes:
    return with_extra_parts({"word/_rels/document.xml.rels": rels})


def with_relationships(relationships: str) -> bytes:
    """A valid DOCX whose document part has the given relationships."""
    return with_relationships_bytes(
        (
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.'
            f'openxmlformats.org/package/2006/relationships">{relationships}</Relationships>'
        ).encode()
    )


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


# -- issue 12: what the sanitizer missed, closed in general --------------------------------------


def relationships_part(path: Path, name: str = "word/_rels/document.xml.rels") -> bytes:
    with zipfile.ZipFile(path) as package:
        return package.read(name)


def rewritten_targets(rels: bytes) -> list[str]:
    """The targets of the part, decoded however it is encoded."""
    root = ElementTree.fromstring(rels)
    return [relation.get("Target", "") for relation in root]


def test_a_utf16_relationship_part_is_read_and_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "utf16.docx"
    text = (
        '<?xml version="1.0" encoding="UTF-16"?><Relationships xmlns="http://schemas.'
        'openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="r1" Type="{IMAGE}" Target="file:///etc/secret.png" '
        'TargetMode="External"/></Relationships>'
    )
    path.write_bytes(with_relationships_bytes(text.encode("utf-16")))
    assert prepare_docx(path) == 1
    assert rewritten_targets(relationships_part(path)) == [NOWHERE]


@pytest.mark.parametrize("mode", ["Bogus", "external", " External", "INTERNAL", ""])
def test_every_target_mode_but_internal_is_external(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "mode.docx"
    path.write_bytes(
        with_relationships(
            f'<Relationship Id="r1" Type="{IMAGE}" Target="/etc/secret.png" TargetMode="{mode}"/>'
        )
    )
    assert prepare_docx(path) == 1
    assert rewritten_targets(relationships_part(path)) == [NOWHERE]


@pytest.mark.parametrize(
    "target",
    [
        "h&#9;ttp:/../../../../tmp/x.png",  # urlsplit drops the tab and sees http
        "ht&#10;tp://example.org/x.png",
        "http:/../../tmp/x.png",  # no authority: not a web address
        "https://example.org\\..\\x.png",
        "http://exa mple.org/x.png",
        " http://example.org/x.png",
        "FILE:///tmp/x.png",
        "file:%2F%2F%2Ftmp/x.png",
        "\\\\localhost\\tmp\\x.png",
        "smb://host/x.png",
        "vnd.sun.star.pkg://x",
        "x.png",
    ],
)
def test_an_external_target_is_judged_as_written(tmp_path: Path, target: str) -> None:
    path = tmp_path / "target.docx"
    path.write_bytes(
        with_relationships(
            f'<Relationship Id="r1" Type="{IMAGE}" Target="{target}" TargetMode="External"/>'
        )
    )
    assert prepare_docx(path) == 1
    assert rewritten_targets(relationships_part(path)) == [NOWHERE]


@pytest.mark.parametrize(
    "target",
    ["http://example.org/a.png", "HTTPS://example.org/a?b=c&amp;d=%20#x", "mailto:a@example.org"],
)
def test_web_and_mail_addresses_are_kept(tmp_path: Path, target: str) -> None:
    path = tmp_path / "web.docx"
    path.write_bytes(
        with_relationships(
            f'<Relationship Id="r1" Type="{LINK}" Target="{target}" TargetMode="External"/>'
        )
    )
    assert prepare_docx(path) == 0


@pytest.mark.parametrize(
    ("target", "kept"),
    [
        ("media/image1.png", True),
        ("/word/media/image1.png", True),
        ("../customXml/item1.xml", True),  # from word/ up to the package's root: still inside
        ("media/image%201.png", True),
        ("../../secret.png", False),  # above the package's root
        ("%2e%2e/%2e%2e/secret.png", False),
        ("/../secret.png", False),
        ("file:///tmp/secret.png", False),
        ("media\\..\\..\\secret.png", False),
    ],
)
def test_an_internal_target_must_stay_inside_the_package(
    tmp_path: Path, target: str, kept: bool
) -> None:
    path = tmp_path / "internal.docx"
    path.write_bytes(
        with_relationships(f'<Relationship Id="r1" Type="{IMAGE}" Target="{target}"/>')
    )
    assert prepare_docx(path) == (0 if kept else 1)
    if not kept:
        assert rewritten_targets(relationships_part(path)) == [NOWHERE]


def test_a_relationship_part_named_in_capitals_is_read(tmp_path: Path) -> None:
    path = tmp_path / "capitals.docx"
    data = with_relationships("")
    with zipfile.ZipFile(path, "w") as package:
        for info in zipfile.ZipFile(io.BytesIO(data)).infolist():
            package.writestr(info, zipfile.ZipFile(io.BytesIO(data)).read(info))
        package.writestr(
            "word/_rels/header1.xml.RELS",
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="r1" Type="{IMAGE}" Target="/x.png" TargetMode="External"/>'
            "</Relationships>",
        )
    assert prepare_docx(path) == 1


def test_two_parts_of_one_name_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "twice.docx"
    with pytest.warns(UserWarning, match="Duplicate name"):  # zipfile warns, and writes both
        path.write_bytes(with_extra_parts({"word/media/a.png": b"1"}, {"word/media/a.png": b"2"}))
    with pytest.raises(InvalidDocument, match="two parts of the same name"):
        prepare_docx(path)


# -- SVG and packages inside the package ----------------------------------------------------------

SVG_OPEN = (
    '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
    'width="10" height="10">'
)
RASTER = "data:image/png;base64,iVBORw0KGgo="


def sanitized_part(tmp_path: Path, name: str, data: bytes) -> bytes:
    path = tmp_path / "svg.docx"
    path.write_bytes(with_extra_parts({name: data}))
    prepare_docx(path)
    with zipfile.ZipFile(path) as package:
        return package.read(name)


@pytest.mark.parametrize(
    "hostile",
    [
        '<image xlink:href="file:///tmp/secret.png"/>',
        '<image href="/tmp/secret.png"/>',
        '<image xlink:href="FiLe:///tmp/%73ecret.png"/>',
        '<image xlink:href="h&#9;ttp:/../../tmp/secret.png"/>',
        '<use xlink:href="file:///tmp/other.svg#a"/>',
        '<filter id="f"><feImage xlink:href="../../tmp/secret.png"/></filter>',
        '<rect style="fill: url(file:///tmp/secret.png)"/>',
        "<rect fill=\"url('/tmp/secret.png')\"/>",
        "<style>@import url(file:///tmp/x.css); rect { fill: url(/tmp/secret.png) }</style>",
        '<image xlink:href="data:image/svg+xml;base64,PHN2Zy8+"/>',  # could link files itself
        '<a xlink:href="file:///tmp/x"><text>link</text></a>',
    ],
)
def test_an_svg_loses_every_reference_outside_itself(tmp_path: Path, hostile: str) -> None:
    svg = f'{SVG_OPEN}{hostile}<rect fill="url(#g)"/><image xlink:href="{RASTER}"/></svg>'
    cleaned = sanitized_part(tmp_path, "word/media/image1.svg", svg.encode())
    text = cleaned.decode()
    for marker in ("/tmp/", "svg+xml", "@import", "ttp:/.."):
        assert marker not in text
    root = ElementTree.fromstring(cleaned)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"  # still an SVG, in its namespace
    assert 'fill="url(#g)"' in text and RASTER in text  # references inside itself stay


def test_an_svg_is_found_by_its_content_in_any_encoding(tmp_path: Path) -> None:
    svg = f'{SVG_OPEN}<image xlink:href="file:///tmp/secret.png"/></svg>'
    for name, data in [
        ("word/media/image1.png", svg.encode()),
        (
            "word/media/image2.bin",
            ('<?xml version="1.0" encoding="UTF-16"?>' + svg).encode("utf-16"),
        ),
        ("word/media/image3.svgz", gzip.compress(svg.encode())),
    ]:
        assert b"secret" not in sanitized_part(tmp_path, name, data), name


def test_an_svg_with_a_stylesheet_instruction_or_entities_is_neutralised(tmp_path: Path) -> None:
    stylesheet = f'<?xml-stylesheet href="file:///tmp/x.css"?>{SVG_OPEN}<rect/></svg>'
    assert b"xml-stylesheet" not in sanitized_part(tmp_path, "a.svg", stylesheet.encode())
    entities = (
        '<!DOCTYPE svg [<!ENTITY e SYSTEM "file:///tmp/secret.png">]>'
        f'{SVG_OPEN}<image xlink:href="&e;"/></svg>'
    )
    assert sanitized_part(tmp_path, "b.svg", entities.encode()) == EMPTY_SVG


def test_an_svg_too_deep_to_clean_is_refused_not_a_crash(tmp_path: Path) -> None:
    """The cleaned SVG is written back by ElementTree, which recurses once per level: one
    nested past Python's recursion limit raised RecursionError, a generic failure that
    restarted LibreOffice."""
    levels = 50_000
    svg = SVG_OPEN + "<g>" * levels + '<image xlink:href="file:///tmp/secret.png"/>'
    svg += "</g>" * levels + "</svg>"
    path = tmp_path / "deep.docx"
    path.write_bytes(with_extra_parts({"word/media/image1.svg": svg.encode()}))
    with pytest.raises(InvalidDocument, match="nested too deeply or too large to be checked"):
        prepare_docx(path)


def test_a_package_inside_the_package_is_sanitized(tmp_path: Path) -> None:
    inner = with_relationships(
        f'<Relationship Id="r1" Type="{IMAGE}" Target="file:///tmp/secret.png" '
        'TargetMode="External"/>'
    )
    cleaned = sanitized_part(tmp_path, "word/chunk.docx", inner)
    with zipfile.ZipFile(io.BytesIO(cleaned)) as nested:
        assert rewritten_targets(nested.read("word/_rels/document.xml.rels")) == [NOWHERE]
    # A zip that is no OPC package (an ODF object, say) is emptied.
    odf = io.BytesIO()
    with zipfile.ZipFile(odf, "w") as archive:
        archive.writestr("content.xml", '<draw:image xlink:href="file:///tmp/secret.png"/>')
    assert sanitized_part(tmp_path, "word/embeddings/object.odt", odf.getvalue()) == b""
