""".doc, .rtf and .odt inputs: told apart by their bytes, checked, cleaned, converted.

The documents are written by LibreOffice itself from a corpus DOCX (``legacy_documents``);
damaged and encrypted ones are made from those.
"""

from __future__ import annotations

import base64
import io
import random
import re
import shutil
import struct
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from pypdf import PdfReader

from app.config import get_settings
from tests.conftest import CORPUS
from tests.docx_factory import make_docx
from tests.hostile_docs import (
    SECRET_PNG,
    VISIBLE,
    dde_link,
    hostile_odts,
    inline_svg_picture,
    leaks,
    odt,
    odt_content,
    odt_content_xml,
    odt_frame,
    odt_manifest,
    pdf_text,
    write_secrets,
)
from tests.pdf import pdf_pages
from tests.plugins.libreoffice import MakeUnoConverter
from workers import rtf
from workers.formats import Format, detect, prepare_document
from workers.libreoffice import profile
from workers.libreoffice.uno import UnoConverter
from workers.odf import prepare_odt, safe_reference
from workers.ole2 import ENCRYPTED_DOC, ENCRYPTED_OOXML, CompoundFile, word_document_problem
from workers.rtf import instruction_text, neutralised, prepare_rtf
from workers.sanitize import EMPTY_SVG, NOWHERE, prepare_docx
from workers.validation import InvalidDocument, validate_docx

SECRET = "quire-secret-7f3a"


def copy(source: Path, folder: Path, name: str) -> Path:
    target = folder / name
    shutil.copyfile(source, target)
    return target


def words(pdf: Path) -> list[str]:
    """The PDF's words; list bullets left out (each format draws its own glyph)."""
    text = " ".join(pdf_pages(pdf.read_bytes()))
    return [word for word in text.split() if any(char.isalnum() for char in word)]


@pytest.mark.parametrize("suffix", ["docx", "doc", "rtf", "odt"])
def test_each_kind_is_known_by_its_bytes_not_its_name(
    legacy_documents: dict[str, Path], tmp_path: Path, suffix: str
) -> None:
    # Under a name that says nothing, and under another kind's name.
    for name in ("input", "misnamed.docx" if suffix != "docx" else "misnamed.doc"):
        path = copy(legacy_documents[suffix], tmp_path, name)
        assert detect(path, name) is Format(f".{suffix}")


@pytest.mark.parametrize("suffix", ["doc", "rtf", "odt"])
def test_libreoffice_documents_convert_with_the_docx_text(
    legacy_documents: dict[str, Path],
    module_converter: UnoConverter,
    tmp_path: Path,
    suffix: str,
) -> None:
    docx = prepare_document(copy(legacy_documents["docx"], tmp_path, "a"), "a.docx")
    module_converter.convert(docx, tmp_path / "docx.pdf", 60)
    source = prepare_document(copy(legacy_documents[suffix], tmp_path, "input"), f"x.{suffix}")
    assert source.name == f"input.{suffix}"  # LibreOffice is given the kind as its suffix
    module_converter.convert(source, tmp_path / "out.pdf", 60)
    expected = words(tmp_path / "docx.pdf")
    assert len(expected) > 20
    assert words(tmp_path / "out.pdf") == expected


def test_a_docx_saved_as_doc_converts_as_a_docx(
    legacy_documents: dict[str, Path], tmp_path: Path
) -> None:
    path = prepare_document(copy(legacy_documents["docx"], tmp_path, "input"), "letter.doc")
    assert path.suffix == ".docx"


def test_an_encrypted_doc_is_told_apart(legacy_documents: dict[str, Path], tmp_path: Path) -> None:
    path = copy(legacy_documents["encrypted-doc"], tmp_path, "input")
    with pytest.raises(InvalidDocument) as caught:
        prepare_document(path, "secret.doc")
    assert str(caught.value) == ENCRYPTED_DOC


def test_an_encrypted_docx_is_told_apart_from_a_doc(tmp_path: Path) -> None:
    for source in sorted((CORPUS / "encrypted").glob("*_password.docx")):
        path = copy(source, tmp_path, "input")
        with pytest.raises(InvalidDocument) as caught:
            prepare_document(path, source.name)
        assert str(caught.value) == ENCRYPTED_OOXML
        with pytest.raises(InvalidDocument) as caught:
            validate_docx(source)  # the DOCX check says the same, not "or a legacy .doc"
        assert str(caught.value) == ENCRYPTED_OOXML


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        ("doc", "damaged or truncated Word 97-2003 document (.doc)"),
        ("rtf", "damaged or truncated RTF document"),
        ("odt", "damaged or truncated OpenDocument text (.odt)"),
    ],
)
def test_truncated_documents_are_damage(
    legacy_documents: dict[str, Path], tmp_path: Path, suffix: str, message: str
) -> None:
    data = legacy_documents[suffix].read_bytes()
    path = tmp_path / "input"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidDocument, match=re.escape(message)):
        prepare_document(path, f"cut.{suffix}")


def test_a_loop_in_the_directory_chain_is_damage_not_a_hang(
    legacy_documents: dict[str, Path], tmp_path: Path
) -> None:
    path = copy(legacy_documents["doc"], tmp_path, "input")
    data = bytearray(path.read_bytes())
    first_fat, directory = (
        struct.unpack_from("<L", data, 76)[0],
        struct.unpack_from("<L", data, 48)[0],
    )
    # The FAT's entry for the directory's first sector points back at that sector.
    struct.pack_into("<L", data, (first_fat + 1) * 512 + 4 * directory, directory)
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidDocument, match="chain of sectors is broken or loops"):
        prepare_document(path, "loop.doc")


def test_the_difat_is_read_only_as_far_as_the_fat_needs(
    legacy_documents: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header may count the whole file as DIFAT; reading only the sectors that locate the FAT
    keeps the cost to the FAT's own (listing every entry first took ten times the file's size in
    memory)."""
    path = copy(legacy_documents["doc"], tmp_path, "input")
    data = bytearray(path.read_bytes())
    assert struct.unpack_from("<L", data, 44)[0] <= 109  # the header itself locates the FAT
    struct.pack_into("<LL", data, 68, 0, len(data) // 512 - 1)  # DIFAT: sector 0 onwards, all
    path.write_bytes(bytes(data))
    read: list[int] = []
    sector = CompoundFile._sector
    monkeypatch.setattr(CompoundFile, "_sector", lambda self, n: read.append(n) or sector(self, n))
    assert word_document_problem(path) is None
    assert len(read) < 16  # the FAT, the directory and the streams read: no DIFAT walk


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (30, 10, "impossible sector size"),  # a 1 KiB sector: version 3 has 512 bytes
        (44, 0x7FFFFFFF, "counts more sectors than the file holds"),  # FAT sectors
        (72, 0x7FFFFFFF, "counts more sectors than the file holds"),  # DIFAT sectors
        (48, 0x7FFFFFF0, "chain of sectors is broken"),  # the directory past the end
    ],
)
def test_a_header_that_lies_is_damage(
    legacy_documents: dict[str, Path], tmp_path: Path, offset: int, value: int, message: str
) -> None:
    data = bytearray(legacy_documents["doc"].read_bytes())
    struct.pack_into("<H" if offset == 30 else "<L", data, offset, value)
    path = tmp_path / "input"
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidDocument, match=message):
        prepare_document(path, "lying.doc")


def test_names_only_word_the_message_for_what_is_no_document(tmp_path: Path) -> None:
    path = tmp_path / "input"
    path.write_bytes(b"just some notes\n")
    with pytest.raises(InvalidDocument, match=r"^The file is not a Word 97-2003 document \(.doc\)"):
        detect(path, "notes.doc")
    with pytest.raises(InvalidDocument, match="not a DOCX document: it is not a zip package"):
        detect(path, "notes.docx")
    path.write_bytes(b"")
    with pytest.raises(InvalidDocument, match="empty"):
        detect(path, "empty.rtf")


def test_references_outside_the_package() -> None:
    for kept in ("Pictures/a.png", "./Object 1", "#bookmark", "https://example.com/x"):
        assert safe_reference(kept), kept
    for removed in (
        "../secret.png",
        "Pictures/../../x",
        "file:///etc/hostname",
        "/etc/hostname",
        "%2e%2e/x",
        "vnd.sun.star.script:Standard.Module1.Run?language=Basic",
    ):
        assert not safe_reference(removed), removed


def linking_odt(secret_text: Path, picture: Path) -> bytes:
    """An ODT that links a text file (a linked section) and a picture on the worker's disk."""
    return odt(
        "<text:p>visible text</text:p>"
        '<text:section text:name="linked"><text:section-source xlink:type="simple" '
        f'xlink:href="file://{secret_text}"/><text:p>cached copy</text:p></text:section>'
        '<text:p><draw:frame svg:width="2cm" svg:height="2cm"><draw:image xlink:type="simple" '
        f'xlink:href="file://{picture}"/></draw:frame></text:p>'
    )


def linking_rtf(secret_text: Path, picture: Path) -> bytes:
    """An RTF whose fields include a text file and a picture from the worker's disk."""
    return rtf_with_field(
        f'INCLUDETEXT "{secret_text}"}}{{\\fldrslt cached}}}}'
        f'{{\\field{{\\*\\fldinst INCLUDEPICTURE "{picture}" \\\\d'.encode()
    )


LINKING = {"odt": linking_odt, "rtf": linking_rtf}


def secrets(folder: Path) -> tuple[Path, Path]:
    text, picture = folder / "secret.txt", folder / "secret.png"
    text.write_text(f"{SECRET}\n")
    picture.write_bytes(SECRET_PNG)
    return text, picture


def images(pdf: Path) -> int:
    return sum(len(page.images) for page in PdfReader(pdf).pages)


@pytest.mark.parametrize("suffix", sorted(LINKING))
def test_a_document_linking_local_files_converts_without_them(
    module_converter: UnoConverter, tmp_path: Path, suffix: str
) -> None:
    text, picture = secrets(tmp_path)
    path = tmp_path / "input"
    path.write_bytes(LINKING[suffix](text, picture))
    source = prepare_document(path, f"linked.{suffix}")
    cleaned = source.read_bytes()
    if suffix == "odt":
        with zipfile.ZipFile(source) as package:
            assert package.namelist()[0] == "mimetype"  # still first, still stored
            assert package.getinfo("mimetype").compress_type == zipfile.ZIP_STORED
            cleaned = package.read("content.xml")
            assert cleaned.count(NOWHERE.encode()) == 2
        assert prepare_odt(source) == 0  # nothing left to rewrite
    else:
        assert b"INCLUDE" not in cleaned
        assert b"{\\*\\fldinst PAGE}" in cleaned  # a harmless field is kept
    assert str(text).encode() not in cleaned and str(picture).encode() not in cleaned
    module_converter.convert(source, tmp_path / "out.pdf", 60)
    assert "visible text" in " ".join(pdf_pages((tmp_path / "out.pdf").read_bytes()))
    assert SECRET not in " ".join(pdf_pages((tmp_path / "out.pdf").read_bytes()))
    assert images(tmp_path / "out.pdf") == 0


@pytest.mark.parametrize("suffix", sorted(LINKING))
def test_control_stock_libreoffice_draws_the_linked_picture(
    make_uno_converter: MakeUnoConverter,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    suffix: str,
) -> None:
    """Without the sanitizer, the sandbox and the profile's settings, the same document does
    bring the worker's picture into the PDF: the test above's "no picture" is a real finding."""
    monkeypatch.setattr(profile, "PROFILE_SETTINGS", ())
    monkeypatch.setattr(profile, "NETWORK_PROVIDERS", {})
    monkeypatch.setattr(profile, "OTHER_NETWORK_SCHEMES", ())
    instance = make_uno_converter(sandbox="off")
    text, picture = secrets(tmp_path)
    source = tmp_path / f"input.{suffix}"
    source.write_bytes(LINKING[suffix](text, picture))
    instance.convert(source, tmp_path / "out.pdf", 60)
    assert images(tmp_path / "out.pdf") == 1


def test_odf_kinds_other_than_text_and_encrypted_odts_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "input"
    path.write_bytes(odt("", "application/vnd.oasis.opendocument.spreadsheet"))
    with pytest.raises(InvalidDocument, match=r"OpenDocument spreadsheet \(.ods\)"):
        prepare_document(path, "sheet.odt")
    path.write_bytes(odt("<text:p>x</text:p>", manifest_extra="<manifest:encryption-data/>"))
    with pytest.raises(InvalidDocument, match="password-protected"):
        prepare_document(path, "locked.odt")


def rtf_with_field(instruction: bytes) -> bytes:
    return (
        b"{\\rtf1\\ansi{\\fonttbl{\\f0 Liberation Serif;}}\\f0 visible text\\par "
        b"{\\field{\\*\\fldinst " + instruction + b"}{\\fldrslt cached result}}\\par"
        b"{\\field{\\*\\fldinst PAGE}{\\fldrslt 1}}\\par}"
    )


@pytest.mark.parametrize(
    "instruction",
    [
        b'INCLUDEPICTURE "file:///etc/hostname"',
        b'{\\rtlch INCLUDE}{PICTURE} "x.png"',  # split across groups
        b'INCLUDE\\\'50ICTURE "x.png"',  # a hex escape inside the keyword
        b'\\u73 ?NCLUDETEXT "x"',  # a Unicode escape for its first letter
        b'{\\*\\junk PAGE }IMPORT "x"',  # a skipped destination before it
        b'PAGE {\\v INCLUDETEXT "x"}',  # a harmless kind naming a file-reading one
        b'UNKNOWNFIELD "x"',  # not known to be harmless
        b'\\bin5 PAGE INCLUDETEXT\\bin1 X "x"',  # raw \\bin bytes LibreOffice skips
        # A \\uc that ends with its group: read as if it did not, this was the harmless IF.
        b'{\\uc29 }\\u73 ?NCLUDETEXT "/etc/hostname"  F',
        b'PAGE {\\*\\fldinst INCLUDETEXT "x"}',  # an instruction inside an instruction
    ],
)
def test_disguised_file_fields_are_emptied(instruction: bytes) -> None:
    cleaned, count = neutralised(rtf_with_field(instruction))
    assert count == 1
    assert b"cached result" in cleaned and instruction not in cleaned


def test_instruction_text_reads_escapes_as_libreoffice_does() -> None:
    assert instruction_text(b"{\\*\\fldinst INCLUDE\\'50ICTURE x}").strip() == "INCLUDEPICTURE x"
    assert instruction_text(b"{\\*\\fldinst {\\*\\skip PAGE}REF a}").strip() == "REF a"


def test_rtf_fields_are_read_once_however_deeply_nested(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each byte of a document is read as an instruction at most once: reading every nested
    \\fldinst group again made the check quadratic (72 KB took 7 s)."""
    read: list[int] = []
    real = rtf.instruction_text
    monkeypatch.setattr(
        rtf, "instruction_text", lambda group: read.append(len(group)) or real(group)
    )
    nested = b"{\\*\\fldinst PAGE " * 2_000 + b"}" * 2_000
    document = b"{\\rtf1 {\\field" + nested + b"{\\fldrslt 1}} " + rtf_with_field(b"PAGE")[6:]
    cleaned, count = neutralised(document)
    assert count == 1 and b"fldinst PAGE {" not in cleaned
    assert sum(read) <= len(document)


def test_rtf_bin_data_may_hold_braces(tmp_path: Path) -> None:
    path = tmp_path / "input.rtf"
    path.write_bytes(b"{\\rtf1 {\\pict\\bin4 }}}{}text}")
    assert prepare_rtf(path) == 0
    path.write_bytes(b"{\\rtf1 {\\pict text}")
    with pytest.raises(InvalidDocument, match="groups do not close"):
        prepare_rtf(path)


def test_a_docm_loses_its_vba_project(tmp_path: Path) -> None:
    buffer = io.BytesIO(make_docx("macro document"))
    with zipfile.ZipFile(buffer, "a") as package:
        package.writestr("word/vbaProject.bin", b"\xd0\xcf\x11\xe0 Sub AutoOpen() ...")
        package.writestr(
            "word/_rels/document.xml.rels",
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.'
            'openxmlformats.org/package/2006/relationships"><Relationship Id="rVba" '
            'Type="http://schemas.microsoft.com/office/2006/relationships/vbaProject" '
            'Target="vbaProject.bin"/></Relationships>',
        )
    path = tmp_path / "input.docx"
    path.write_bytes(buffer.getvalue())
    assert prepare_docx(path) == 2
    with zipfile.ZipFile(path) as package:
        assert package.read("word/vbaProject.bin") == b""
        rels = package.read("word/_rels/document.xml.rels").decode()
    # The relationship removed, not pointed elsewhere: LibreOffice 7.4 crashes on a vbaProject
    # relationship with an external target (tests/workers/test_vba_macros.py).
    assert "vbaProject" not in rels


# -- the ODT sanitizer: streaming, byte for byte, every kind of link ------------------------------

FILE_LINK = '<draw:image xlink:type="simple" xlink:href="file:///etc/hostname"/>'
SVG_LINKING = (
    b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">'
    b'<image xlink:href="file:///etc/hostname.png" width="9" height="9"/></svg>'
)


def written(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "input.odt"
    path.write_bytes(data)
    return path


def test_a_rewrite_changes_the_link_and_nothing_else(tmp_path: Path) -> None:
    """Namespaces used only inside attribute values (of:, ooow:) keep their declarations: a
    tree written back dropped them, and LibreOffice then misread the formula and condition."""
    content = odt_content_xml(
        '<table:table table:name="T"><table:table-row><table:table-cell '
        'table:formula="of:=1+1" office:value-type="float"/></table:table-row></table:table>'
        '<text:p text:condition="ooow:1 EQ 1">  spaced  &amp; kept </text:p>'
        f"{odt_frame(FILE_LINK)}"
        # Written as XML allows and no writer does: the link is found all the same.
        + odt_frame(
            "<draw:image draw:name='a>b' xlink:href\n =\t'file:///etc/hostname' "
            'xlink:type="simple"/>'
        )
    )
    path = written(tmp_path, odt("", content=content))
    assert prepare_odt(path) == 1
    expected = content.replace(b"'file:///etc/hostname'", f'"{NOWHERE}"'.encode())
    expected = expected.replace(b"file:///etc/hostname", NOWHERE.encode())
    assert odt_content(path) == expected
    assert b'xmlns:of="urn:oasis:names:tc:opendocument:xmlns:of:1.2"' in expected


def test_dde_links_lose_their_source(tmp_path: Path) -> None:
    path = written(tmp_path, odt(dde_link(Path("/etc/hostname"))))
    assert prepare_odt(path) == 1
    content = odt_content(path)
    assert b"/etc/hostname" not in content and b"soffice" not in content
    assert b'office:dde-application=""' in content and b'office:dde-topic=""' in content
    assert b">cached</text:dde-connection>" in content  # the last value it showed stays


def test_inline_pictures_other_than_raster_ones_are_emptied(tmp_path: Path) -> None:
    png = base64.b64encode(SECRET_PNG).decode()
    kept = odt_frame(
        f"<draw:image><office:binary-data>\n{png[:40]}\n{png[40:]}</office:binary-data></draw:image>"
    )
    # Starts like a BMP: LibreOffice's detection falls through a failed BMP check to SVG.
    disguised = base64.b64encode(b"BM" + bytes(60) + SVG_LINKING).decode()
    disguised_svg = odt_frame(
        f"<draw:image><office:binary-data>{disguised}</office:binary-data></draw:image>"
    )
    path = written(
        tmp_path, odt(inline_svg_picture(Path("/etc/hostname.png")) + kept + disguised_svg)
    )
    assert prepare_odt(path) == 1
    content = odt_content(path)
    empty = base64.b64encode(EMPTY_SVG)
    assert content.count(b"<office:binary-data>" + empty + b"</office:binary-data>") == 2
    assert png[40:].encode() in content  # the PNG, as it was
    assert prepare_odt(path) == 0  # the empty picture is kept when read again


def test_deep_nesting_is_refused_with_a_reason(tmp_path: Path) -> None:
    """50,000 nested elements and a link: writing the tree back recursed once per level and
    the RecursionError escaped as a generic failure that restarted LibreOffice."""
    levels = 50_000
    deep = odt("<text:span>" * levels + FILE_LINK + "</text:span>" * levels)
    with pytest.raises(InvalidDocument, match="nests elements more than 1,000 levels deep"):
        prepare_odt(written(tmp_path, deep))
    fine = odt("<text:span>" * 900 + FILE_LINK + "</text:span>" * 900)
    assert prepare_odt(written(tmp_path, fine)) == 1


def test_a_part_is_read_in_bounded_memory_whatever_its_size(tmp_path: Path) -> None:
    """A part was a whole ElementTree (~50 times its size: 8 MiB of <a/> took 427 MiB), and
    the cleaned package was built in memory, pictures and all."""
    picture = random.Random(7).randbytes(4 * 1024 * 1024)  # does not compress
    body = "<text:p/>" * 500_000 + odt_frame(FILE_LINK)
    path = written(tmp_path, odt(body, parts={"Pictures/big.png": b"\x89PNG" + picture}))
    tracemalloc.start()
    try:
        assert prepare_odt(path) == 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024, peak
    with zipfile.ZipFile(path) as package:
        assert package.read("Pictures/big.png")[4:] == picture


def test_encryption_is_read_from_the_manifest_in_any_encoding(tmp_path: Path) -> None:
    """Encrypted parts are not XML, and LibreOffice writes the manifest last: the manifest is
    read first, as XML, so a UTF-16 one is understood too."""
    manifest = odt_manifest(extra="<manifest:encryption-data/>").replace('"UTF-8"', '"UTF-16"')
    locked = odt("", content=b"\x8a\x07 encrypted bytes", manifest=manifest.encode("utf-16"))
    with pytest.raises(InvalidDocument, match="password-protected"):
        prepare_odt(written(tmp_path, locked))


# -- the OLE2 reader ---------------------------------------------------------------------------


def renamed_entry(doc: Path, old: str, new: str) -> bytes:
    """The .doc with its directory entry ``old`` named ``new``."""
    data = bytearray(doc.read_bytes())
    at = data.find(old.encode("utf-16-le") + b"\0\0")
    assert at > 0 and at % 128 == 0, old  # a directory entry starts with its name
    data[at : at + 64] = new.encode("utf-16-le").ljust(64, b"\0")
    struct.pack_into("<H", data, at + 64, 2 * (len(new) + 1))
    return bytes(data)


def test_entry_names_are_compared_without_regard_to_case(
    legacy_documents: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "input"
    path.write_bytes(renamed_entry(legacy_documents["doc"], "WordDocument", "WORDDOCUMENT"))
    assert word_document_problem(path) is None
    with open(path, "rb") as handle:
        assert "worddocument" in CompoundFile(handle).entries


def test_two_entries_of_one_name_are_damage(
    legacy_documents: dict[str, Path], tmp_path: Path
) -> None:
    """A later duplicate silently replaced the earlier one: which one LibreOffice reads is not
    ours to guess."""
    path = tmp_path / "input"
    path.write_bytes(renamed_entry(legacy_documents["doc"], "\x01Ole", "1table"))
    problem = word_document_problem(path)
    assert problem is not None and re.search("names .1(t|T)able. twice", problem), problem


def test_a_doc_larger_than_a_part_may_be_is_refused(
    legacy_documents: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = copy(legacy_documents["doc"], tmp_path, "input")
    monkeypatch.setenv("QUIRE_MAX_PART_EXPANDED_BYTES", str(path.stat().st_size - 1))
    get_settings.cache_clear()
    try:
        with pytest.raises(InvalidDocument, match="larger than QUIRE_MAX_PART_EXPANDED_BYTES"):
            prepare_document(path, "big.doc")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert prepare_document(path, "big.doc").suffix == ".doc"


def test_hostile_odts_leak_nothing_with_the_sanitizer_alone(
    make_uno_converter: MakeUnoConverter, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Stock LibreOffice (no sandbox, none of the profile's settings) given each hostile ODT as
    the sanitizer leaves it: nothing of the secrets reaches the PDF. Unsanitized, the inline
    SVG does bring the secret picture in (the control), so its "nothing" is the sanitizer's."""
    monkeypatch.setattr(profile, "PROFILE_SETTINGS", ())
    monkeypatch.setattr(profile, "NETWORK_PROVIDERS", {})
    monkeypatch.setattr(profile, "OTHER_NETWORK_SCHEMES", ())
    instance = make_uno_converter(sandbox="off")
    documents = hostile_odts(write_secrets(tmp_path / "secrets"))
    found: dict[str, list[str]] = {}
    for carrier, data in documents.items():
        source = tmp_path / f"{carrier}.odt"
        source.write_bytes(data)
        prepare_document(source, source.name)
        instance.convert(source, tmp_path / f"{carrier}.pdf", 60)
        pdf = (tmp_path / f"{carrier}.pdf").read_bytes()
        assert VISIBLE in pdf_text(pdf), carrier
        found[carrier] = leaks(pdf)
    assert found == {carrier: [] for carrier in documents}
    control = tmp_path / "control.odt"
    control.write_bytes(documents["binary-data-svg"])
    instance.convert(control, tmp_path / "control.pdf", 60)
    assert leaks((tmp_path / "control.pdf").read_bytes()) == ["picture"]


def test_a_picture_too_deep_to_clean_is_refused_not_a_crash(tmp_path: Path) -> None:
    """A picture's SVG is still cleaned as a tree (workers.sanitize): one nested past Python's
    recursion limit raised RecursionError, a generic failure that restarted LibreOffice."""
    levels = 50_000
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">'
        + "<g>" * levels
        + '<image xlink:href="file:///etc/hostname"/>'
        + "</g>" * levels
        + "</svg>"
    )
    path = written(tmp_path, odt("<text:p/>", parts={"Pictures/deep.svg": svg.encode()}))
    with pytest.raises(InvalidDocument, match="nested too deeply or too large to be checked"):
        prepare_odt(path)


def test_a_utf16_part_with_a_link_to_change_is_refused(tmp_path: Path) -> None:
    """The values are replaced in the part's bytes, which only an ASCII-compatible encoding
    allows; LibreOffice writes UTF-8, so a UTF-16 part that would need a change is refused."""
    content = odt_content_xml(odt_frame(FILE_LINK)).replace(b'"UTF-8"', b'"UTF-16"')
    utf16 = written(tmp_path, odt("", content=content.decode().encode("utf-16")))
    with pytest.raises(InvalidDocument, match="written in UTF-16"):
        prepare_odt(utf16)
    plain = odt_content_xml("<text:p>nothing to change</text:p>").replace(b'"UTF-8"', b'"UTF-16"')
    assert prepare_odt(written(tmp_path, odt("", content=plain.decode().encode("utf-16")))) == 0


def test_one_token_larger_than_any_writer_makes_is_refused(tmp_path: Path) -> None:
    """expat 2.5 scans an unfinished token again on every call (CVE-2023-52425): fed as it came,
    a 16 MiB attribute took 1.3 s and a 64 MiB one would take some 20 s. Held back until the
    token could end, then refused past 16 MiB; text of any length is not one token."""
    huge_attribute = odt(f'<text:p text:style-name="{"A" * (17 * 2**20)}">x</text:p>')
    with pytest.raises(InvalidDocument, match="one attribute, comment or name of more than 16 MiB"):
        prepare_odt(written(tmp_path, huge_attribute))
    long_text = odt(f"<text:p>{'x' * (20 * 2**20)}</text:p>" + odt_frame(FILE_LINK))
    assert prepare_odt(written(tmp_path, long_text)) == 1
