"""The font report of .odt and .rtf files: what the document asks for, read by
workers/odf_fonts.py and workers/rtf_fonts.py, judged by workers/fonts.py.

The real documents are DOCX files written here and saved as .odt and .rtf by LibreOffice
itself, then prepared as the worker prepares them, converted by a real LibreOffice and reported
on with the machine's real fontconfig. The hostile ones are written here byte by byte.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
from defusedxml import DTDForbidden

from app.config import get_settings
from app.db import session_scope
from app.jobs import get_job_view
from app.models import FileStatus
from app.status import status_document
from app.storage import get_store
from tests.conftest import Backend, SentTasks
from tests.docx_factory import make_zip
from tests.font_docs import CHINESE, NOBODY, fonts_docx, latin, report_documents
from tests.saved_documents import saved_by_libreoffice
from tests.workers.helpers import files_by_name, run_to_the_end, submit
from workers import fonts, odf_fonts, rtf_fonts, xml_stream
from workers.font_requests import MAX_NAME, MAX_REQUESTED, DocumentTooLarge, Requested
from workers.formats import prepare_document
from workers.libreoffice import Converter
from workers.libreoffice.uno import UnoConverter

UNUSED = "Declared Only Typeface"  # no font has it either: reported, it would be missing
CALIBRI = {"Calibri": {"used": "Carlito", "metric_compatible": True}}
UNUSED_STYLE = (
    '<w:style w:type="paragraph" w:styleId="Unused"><w:name w:val="Unused"/>'
    f'<w:rPr><w:rFonts w:ascii="{UNUSED}" w:hAnsi="{UNUSED}"/></w:rPr></w:style>'
)
DOCUMENTS = {
    **report_documents(),
    "unused": fonts_docx(latin("Liberation Sans", "Text"), styles=UNUSED_STYLE),
}
KINDS = ("odt", "rtf")
READERS = {"odt": odf_fonts.requested_fonts, "rtf": rtf_fonts.requested_fonts}
LIMIT = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """By kind, then by name: DOCUMENTS as LibreOffice saves them."""
    folder = tmp_path_factory.mktemp("saved")
    return {kind: saved_by_libreoffice(DOCUMENTS, kind, folder / kind) for kind in KINDS}


@pytest.fixture(scope="module")
def converter(module_converter: UnoConverter) -> Converter:
    return module_converter


def prepared(document: Path, folder: Path) -> Path:
    """The document as the worker has it before LibreOffice: checked and cleaned."""
    source = folder / "input"
    shutil.copyfile(document, source)
    return prepare_document(source, document.name)


def report_of(converter: Converter, document: Path, folder: Path) -> dict[str, Any] | None:
    source, target = prepared(document, folder), folder / "output.pdf"
    converter.convert(source, target, 60)
    return fonts.font_report(source, target, get_settings())


# -- documents made by LibreOffice, converted by LibreOffice ----------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_the_worker_has_a_reader_for_odt_and_rtf(
    saved: dict[str, dict[str, Path]], tmp_path: Path, kind: str
) -> None:
    source = prepared(saved[kind]["calibri"], tmp_path)
    assert source.suffix == f".{kind}"
    assert fonts.reader_for(source) is READERS[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_calibri_is_substituted_by_carlito_which_keeps_the_layout(
    converter: Converter, saved: dict[str, dict[str, Path]], tmp_path: Path, kind: str
) -> None:
    assert report_of(converter, saved[kind]["calibri"], tmp_path) == {
        "substituted": CALIBRI,
        "missing": [],
    }


@pytest.mark.parametrize("kind", KINDS)
def test_a_font_nobody_has_is_missing(
    converter: Converter, saved: dict[str, dict[str, Path]], tmp_path: Path, kind: str
) -> None:
    report = report_of(converter, saved[kind]["nobody"], tmp_path)
    assert report is not None
    assert report["missing"] == [NOBODY]
    assert NOBODY not in report["substituted"]


@pytest.mark.parametrize("kind", KINDS)
def test_chinese_text_in_a_missing_chinese_font_is_drawn_by_a_cjk_font(
    converter: Converter, saved: dict[str, dict[str, Path]], tmp_path: Path, kind: str
) -> None:
    document = saved[kind]["chinese"]
    requested = READERS[kind](document, LIMIT)
    assert "eastAsia" in requested.slots["SimSun"]
    assert requested.east_asian_text
    assert requested.east_asian_language == "zh-CN"
    report = report_of(converter, document, tmp_path)
    assert report is not None
    assert report["missing"] == []
    used = report["substituted"]["SimSun"]
    assert used["metric_compatible"] is False
    # The family LibreOffice drew the Chinese text with (Noto Serif CJK, for a serif font).
    assert used["used"].startswith("Noto Serif CJK")
    assert fonts.normalised(used["used"]) in fonts.pdf_fonts(tmp_path / "output.pdf")


@pytest.mark.parametrize("kind", KINDS)
def test_a_declared_face_that_no_text_uses_is_not_reported(
    converter: Converter, saved: dict[str, dict[str, Path]], tmp_path: Path, kind: str
) -> None:
    document = saved[kind]["unused"]
    # LibreOffice declares it (a font face, a font table entry) for the style no text uses.
    if kind == "odt":
        with zipfile.ZipFile(document) as package:
            assert f'style:name="{UNUSED}"'.encode() in package.read("styles.xml")
    else:
        assert f" {UNUSED};".encode() in document.read_bytes()
    assert UNUSED not in READERS[kind](document, LIMIT).slots
    report = report_of(converter, document, tmp_path)
    assert report is not None
    assert report["missing"] == []
    assert UNUSED not in report["substituted"]


def test_the_pipeline_stores_reports_and_leaves_out_one_it_cannot_make(
    backend: Backend, sent: SentTasks, converter: Converter, saved: dict[str, dict[str, Path]]
) -> None:
    # Groups nested past the reader's bound: LibreOffice converts it, the report is left out.
    depth = rtf_fonts.MAX_DEPTH + 10
    deep = (
        rb"{\rtf1\ansi{\fonttbl{\f0 Calibri;}}\f0 " + b"{" * depth + b"deep" + b"}" * depth + b"}"
    )
    entries = {
        "calibri.odt": saved["odt"]["calibri"].read_bytes(),
        "nobody.rtf": saved["rtf"]["nobody"].read_bytes(),
        "deep.rtf": deep,
    }
    job_id = submit(make_zip(entries))
    run_to_the_end(job_id, sent, converter)
    files = files_by_name(job_id)
    assert {name: file.status for name, file in files.items()} == dict.fromkeys(
        entries, FileStatus.COMPLETED
    )
    with session_scope() as session:
        view = get_job_view(session, job_id)
        assert view is not None
        body = status_document(view, "http://test", get_store(), 60).model_dump(mode="json")
    reports = {file["filename"]: file["fonts"] for file in body["files"]}
    assert reports["calibri.odt"] == {"substituted": CALIBRI, "missing": []}
    assert reports["nobody.rtf"] is not None and reports["nobody.rtf"]["missing"] == [NOBODY]
    assert reports["deep.rtf"] is None
    assert body["fonts"] == {"files_with_substitutions": 2, "files_with_missing_fonts": 1}


# -- ODT: what is read, and hostile packages --------------------------------------------------

ODF_NAMESPACES = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
    'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
    'xmlns:fo="urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0" '
    'xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0"'
)


def odt(content: str, styles: str = "", *, doctype: str = "") -> bytes:
    """An ODT whose content.xml holds ``content`` inside office:document-content (and
    styles.xml ``styles`` inside office:document-styles)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr("mimetype", "application/vnd.oasis.opendocument.text", zipfile.ZIP_STORED)
        package.writestr(
            "content.xml",
            f'<?xml version="1.0"?>{doctype}<office:document-content {ODF_NAMESPACES}>'
            f"{content}</office:document-content>",
        )
        package.writestr(
            "styles.xml",
            f'<?xml version="1.0"?><office:document-styles {ODF_NAMESPACES}>{styles}'
            "</office:document-styles>",
        )
    return buffer.getvalue()


def read_odt(tmp_path: Path, data: bytes, limit: int = LIMIT) -> Requested:
    path = tmp_path / "input.odt"
    path.write_bytes(data)
    return odf_fonts.requested_fonts(path, limit)


def style(name: str, family: str, properties: str, parent: str | None = None) -> str:
    parent_attribute = f' style:parent-style-name="{parent}"' if parent else ""
    return (
        f'<style:style style:name="{name}" style:family="{family}"{parent_attribute}>'
        f"<style:text-properties {properties}/></style:style>"
    )


def body(inside: str) -> str:
    return f"<office:body><office:text>{inside}</office:text></office:body>"


def test_odt_fonts_come_from_the_used_styles_their_parents_the_default_and_the_faces(
    tmp_path: Path,
) -> None:
    styles = (
        '<office:font-face-decls><style:font-face style:name="Face1" '
        "svg:font-family=\"'Face Family'\"/>"
        '<style:font-face style:name="Unused Face" svg:font-family="Unused Family"/>'
        # LibreOffice's face for a slot the document left empty: it asks for nothing.
        '<style:font-face style:name="F" svg:font-family=""/>'
        "</office:font-face-decls><office:styles>"
        '<style:default-style style:family="paragraph"><style:text-properties '
        'style:font-name-complex="Face1" style:language-asian="ja"/></style:default-style>'
        + style("Body", "paragraph", "fo:font-family=\"'Family A', serif\"")
        + style("Unused", "paragraph", 'style:font-name="Unused Face"')
        + style("Cell", "table-cell", 'style:font-family-asian="Cell Family"')
        + '</office:styles><office:master-styles><style:master-page style:name="Standard">'
        '<style:header><text:p text:style-name="Header">Header</text:p></style:header>'
        "</style:master-page></office:master-styles>"
    )
    content = (
        "<office:automatic-styles>"
        + style("P1", "paragraph", 'style:font-name="Face1"', parent="Body")
        + style("Header", "paragraph", 'style:font-name-asian="Header Family"')
        + style("T1", "text", 'style:font-name="Not A Declared Face" style:font-name-complex="F"')
        + "</office:automatic-styles>"
        + body(
            '<text:p text:style-name="P1">A <text:span text:style-name="T1">span</text:span>'
            '</text:p><table:table><table:table-row><table:table-cell table:style-name="Cell">'
            "<text:p>cell</text:p></table:table-cell></table:table-row></table:table>"
        )
    )
    requested = read_odt(tmp_path, odt(content, styles))
    assert requested.slots == {
        "Face Family": {"ascii", "hAnsi", "cs"},
        "Family A": {"ascii", "hAnsi"},
        "Not A Declared Face": {"ascii", "hAnsi"},  # a face not declared is its own family
        "Header Family": {"eastAsia"},
        "Cell Family": {"eastAsia"},
    }
    assert requested.east_asian_language == "ja"
    assert not requested.east_asian_text


def test_odt_east_asian_language_is_the_text_s_before_the_default_s(tmp_path: Path) -> None:
    styles = (
        '<office:styles><style:default-style style:family="paragraph"><style:text-properties '
        'style:language-asian="zh" style:country-asian="CN"/></style:default-style>'
        "</office:styles>"
    )
    content = (
        "<office:automatic-styles>"
        + style("P1", "paragraph", 'fo:font-family="Plain"')
        + style("T1", "text", 'style:font-name-asian="MS Mincho" style:language-asian="ja"')
        + "</office:automatic-styles>"
        + body(
            '<text:p text:style-name="P1"><text:span text:style-name="T1">日本語</text:span>'
            "</text:p>"
        )
    )
    requested = read_odt(tmp_path, odt(content, styles))
    assert requested.slots["MS Mincho"] == {"eastAsia"}
    assert requested.east_asian_text
    assert requested.east_asian_language == "ja"


def test_odt_a_loop_of_parent_styles_ends(tmp_path: Path) -> None:
    content = (
        "<office:automatic-styles>"
        + style("A", "paragraph", 'fo:font-family="Family A"', parent="B")
        + style("B", "paragraph", 'fo:font-family="Family B"', parent="A")
        + "</office:automatic-styles>"
        + body('<text:p text:style-name="A">loop</text:p>')
    )
    assert set(read_odt(tmp_path, odt(content)).slots) == {"Family A", "Family B"}


def test_odt_deep_nesting_is_read_without_recursion(tmp_path: Path) -> None:
    depth = 100_000
    spans = '<text:span text:style-name="T1">' * depth + "deep" + "</text:span>" * depth
    content = (
        "<office:automatic-styles>"
        + style("T1", "text", 'fo:font-family="Deep Family"')
        + "</office:automatic-styles>"
        + body(f"<text:p>{spans}</text:p>")
    )
    assert read_odt(tmp_path, odt(content)).slots == {"Deep Family": {"ascii", "hAnsi"}}


def huge_attribute_odt(length: int) -> bytes:
    content = (
        "<office:automatic-styles>"
        + style("T1", "text", f'fo:font-family="{"A" * length}"')
        + "</office:automatic-styles>"
        + body('<text:p><text:span text:style-name="T1">x</text:span></text:p>')
    )
    return odt(content)


def test_odt_a_long_attribute_is_cut_to_a_name(tmp_path: Path) -> None:
    requested = read_odt(tmp_path, huge_attribute_odt(1024 * 1024))
    assert list(requested.slots) == ["A" * MAX_NAME]


class CountingParser:
    """The guarded parser, counting the bytes handed to it and the calls."""

    def __init__(self, calls: list[int]) -> None:
        object.__setattr__(self, "_parser", xml_stream.guarded_parser())
        object.__setattr__(self, "_calls", calls)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._parser, name, value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)

    def Parse(self, data: bytes, final: bool) -> int:  # expat's name
        self._calls.append(len(data))
        return int(self._parser.Parse(data, final))


@pytest.mark.parametrize(
    "huge",
    [
        pytest.param(huge_attribute_odt(16 * 1024 * 1024), id="attribute"),
        # A comment may hold "<": no scan for markup would see where it ends.
        pytest.param(odt("<!-- " + "<a> " * (4 * 1024 * 1024) + "-->" + body("")), id="comment"),
    ],
)
def test_odt_a_token_past_the_bound_stops_the_reading_before_expat_rescans_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, huge: bytes
) -> None:
    # expat 2.5 scans an unfinished token again on every call (CVE-2023-52425): fed as it
    # comes, a 16 MiB token would be scanned 256 times, each time from its start.
    calls: list[int] = []
    monkeypatch.setattr(odf_fonts, "guarded_parser", lambda: CountingParser(calls))
    with pytest.raises(DocumentTooLarge):
        read_odt(tmp_path, huge)
    # The data waited for the token to double each call, and the reading stopped past the
    # bound: a few calls, a few MiB (styles.xml's few hundred bytes besides).
    assert len(calls) <= 16
    assert sum(calls) <= 2 * odf_fonts.MAX_UNFINISHED + odf_fonts.CHUNK


def test_odt_styles_kept_are_bounded_however_many_there_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(odf_fonts, "MAX_STYLES", 10)
    count = 50
    content = (
        "<office:automatic-styles>"
        + "".join(style(f"T{n}", "text", f'fo:font-family="Family {n}"') for n in range(count))
        + "</office:automatic-styles>"
        + body(
            "<text:p>"
            + "".join(f'<text:span text:style-name="T{n}">x</text:span>' for n in range(count))
            + "</text:p>"
        )
    )
    # The first ten styles are kept; the others, used or not, are not read.
    assert set(read_odt(tmp_path, odt(content)).slots) == {f"Family {n}" for n in range(10)}


def test_odt_families_reported_are_bounded(tmp_path: Path) -> None:
    count = 20_000
    content = (
        "<office:automatic-styles>"
        + "".join(style(f"T{n}", "text", f'fo:font-family="Family {n}"') for n in range(count))
        + "</office:automatic-styles>"
        + body(
            "<text:p>"
            + "".join(f'<text:span text:style-name="T{n}">x</text:span>' for n in range(count))
            + "</text:p>"
        )
    )
    assert len(read_odt(tmp_path, odt(content)).slots) == MAX_REQUESTED


def test_odt_a_part_larger_than_the_bound_is_not_read_whole(tmp_path: Path) -> None:
    content = body("<text:p>" + "x" * (2 * 1024 * 1024) + "</text:p>")
    with pytest.raises(DocumentTooLarge):
        read_odt(tmp_path, odt(content), limit=1024 * 1024)


def test_odt_a_dtd_is_refused(tmp_path: Path) -> None:
    # The worker logs the reader's failure and makes no report; the PDF stands.
    data = odt(body("<text:p>x</text:p>"), doctype='<!DOCTYPE x [<!ENTITY a "aaaa">]>')
    with pytest.raises(DTDForbidden):
        read_odt(tmp_path, data)


# -- RTF: what is read, and hostile files ------------------------------------------------------


def read_rtf(tmp_path: Path, data: bytes, limit: int = LIMIT) -> Requested:
    path = tmp_path / "input.rtf"
    path.write_bytes(data)
    return rtf_fonts.requested_fonts(path, limit)


FONT_TABLE = (
    rb"{\fonttbl{\f0\froman\fcharset0 Default Font;}"
    rb"{\f1\fswiss\fcharset0 Body Font{\*\panose 020b0604020202020204}{\*\falt Alt Font};}"
    rb"{\f2\fcharset0 Style Font;}{\f3\fcharset0 Based Font;}{\f4\fcharset0 Unused Style Font;}"
    rb"{\f5\fnil\fcharset134 East Font;}{\f6\fcharset0 Complex Font;}"
    rb"{\f7\fcharset0 Field Font;}{\f8\fcharset0 Table Only Font;}{\f9\fcharset0 Char Font;}}"
)
STYLE_SHEET = (
    rb"{\stylesheet{\s0\f0 Normal;}{\s1\sbasedon2\f2 Heading;}{\s2\f3 Base;}"
    rb"{\s3\f4 Unused;}{\*\cs10\rtlch\af6 Emphasis;}}"
)


def test_rtf_fonts_come_from_the_defaults_used_styles_and_the_body(tmp_path: Path) -> None:
    data = (
        rb"{\rtf1\ansi\deff0" + FONT_TABLE + STYLE_SHEET + rb"{\info{\title \f8 x}}"
        rb"\pard\plain\s1 Heading\par"
        rb"\pard\plain\s0{\f1 Body }{\cs10 stressed}{\dbch\af5 x}"
        rb"{\field{\*\fldinst {\f7 PAGE}}{\fldrslt 1}}\par}"
    )
    assert read_rtf(tmp_path, data).slots == {
        "Default Font": {"ascii", "hAnsi"},
        "Style Font": {"ascii", "hAnsi"},
        "Based Font": {"ascii", "hAnsi"},
        "Body Font": {"ascii", "hAnsi"},
        "Complex Font": {"cs"},
        "East Font": {"eastAsia"},
    }


def test_rtf_east_asian_text_from_unicode_and_its_language(tmp_path: Path) -> None:
    data = (
        rb"{\rtf1\ansi\deff0\deflangfe2052" + FONT_TABLE + rb"\pard\plain"
        rb"{\langfe1041\loch\f1\dbch\af5 \u26085\'3f\u26412\'3f}\par}"
    )
    requested = read_rtf(tmp_path, data)
    assert requested.east_asian_text
    assert requested.east_asian_language == "ja"
    assert requested.slots["East Font"] == {"eastAsia"}
    # \'3f after each \u is its stand-in, not text.
    assert not read_rtf(
        tmp_path, data.replace(rb"\u26085", b"").replace(rb"\u26412", b"")
    ).east_asian_text


def test_rtf_double_byte_font_text_and_a_shift_jis_name(tmp_path: Path) -> None:
    # MS Mincho's Japanese name (full-width MS, space, 明朝) in Shift-JIS, as Word writes it.
    data = (
        rb"{\rtf1\ansi\deff0{\fonttbl{\f0\fcharset0 Default Font;}"
        rb"{\f1\fnil\fcharset128 \'82\'6c\'82\'72 \'96\'be\'92\'a9;}}"
        rb"\pard\plain\langfe1041{\f1 \'93\'fa\'96\'7b}\par}"
    )
    requested = read_rtf(tmp_path, data)
    assert requested.slots["\uff2d\uff33 明朝"] == {"ascii", "hAnsi", "eastAsia"}
    assert requested.east_asian_text
    assert requested.east_asian_language == "ja"


def test_rtf_bin_data_is_skipped_braces_and_all(tmp_path: Path) -> None:
    data = rb"{\rtf1\ansi\deff0" + FONT_TABLE + rb"{\bin6 }}}\f7}\f1 after\par}"
    assert set(read_rtf(tmp_path, data).slots) == {"Body Font"}


def test_rtf_deep_groups_stop_the_reading(tmp_path: Path) -> None:
    depth = rtf_fonts.MAX_DEPTH + 1
    data = rb"{\rtf1\ansi" + b"{" * depth + b"x" + b"}" * depth + b"}"
    with pytest.raises(DocumentTooLarge):
        read_rtf(tmp_path, data)


def test_rtf_a_huge_font_table_keeps_a_bounded_number_of_fonts(tmp_path: Path) -> None:
    count = rtf_fonts.MAX_FONTS + 100
    table = b"".join(rb"{\f%d\fcharset0 Font %d;}" % (n, n) for n in range(count))
    data = (
        rb"{\rtf1\ansi{\fonttbl" + table + b"}"
        rb"\f1 kept\f%d past the bound\par}" % (count - 1)
    )
    assert set(read_rtf(tmp_path, data).slots) == {"Font 1"}


def test_rtf_a_long_font_name_is_cut(tmp_path: Path) -> None:
    data = rb"{\rtf1\ansi{\fonttbl{\f0 " + b"N" * 100_000 + rb";}}\f0 x\par}"
    assert list(read_rtf(tmp_path, data).slots) == ["N" * MAX_NAME]


def test_rtf_tokens_read_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rtf_fonts, "MAX_TOKENS", 1_000)
    data = rb"{\rtf1\ansi" + rb"\b x\b0 " * 1_000 + b"}"
    with pytest.raises(DocumentTooLarge):
        read_rtf(tmp_path, data)


def test_rtf_a_file_larger_than_the_bound_is_not_read(tmp_path: Path) -> None:
    with pytest.raises(DocumentTooLarge):
        read_rtf(tmp_path, rb"{\rtf1 " + b"x" * 2048 + b"}", limit=1024)


def test_rtf_styles_kept_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rtf_fonts, "MAX_STYLES", 1)
    data = rb"{\rtf1\ansi\deff0" + FONT_TABLE + STYLE_SHEET + rb"\pard\plain\s1 Heading\par}"
    # Style 0 is kept; style 1 and the style it is based on are past the bound.
    assert set(read_rtf(tmp_path, data).slots) == {"Default Font"}


def test_rtf_the_default_font_only_when_text_has_no_font_of_its_own(tmp_path: Path) -> None:
    # A bullet's number text (\listtext) is left out, as the DOCX reader leaves numbering out.
    data = (
        rb"{\rtf1\ansi\deff0" + FONT_TABLE + rb"{\listtext\pard\plain \f8 \'b7\tab}"
        rb"\pard\plain\f1 Body\par}"
    )
    assert set(read_rtf(tmp_path, data).slots) == {"Body Font"}
    after_plain = data.replace(rb"\f1 Body\par}", rb"\f1 Body\par\pard\plain Default\par}")
    assert set(read_rtf(tmp_path, after_plain).slots) == {"Body Font", "Default Font"}
    # \loch\afN names the font of the text's ASCII characters, as \fN does.
    low_ansi = data.replace(rb"\f1 Body", rb"\loch\af1 Body")
    assert read_rtf(tmp_path, low_ansi).slots == {"Body Font": {"ascii"}}


def test_odt_a_list_s_style_name_is_not_a_text_style(tmp_path: Path) -> None:
    # Style names are per family: the list's "L1" is a list style, not the text style "L1".
    content = (
        "<office:automatic-styles>"
        + style("L1", "text", 'fo:font-family="Text Style Family"')
        + style("P1", "paragraph", 'fo:font-family="Item Family"')
        + "</office:automatic-styles>"
        + body(
            '<text:list text:style-name="L1"><text:list-item>'
            '<text:p text:style-name="P1">item</text:p></text:list-item></text:list>'
        )
    )
    assert set(read_odt(tmp_path, odt(content)).slots) == {"Item Family"}


def test_odt_comments_and_deleted_text_are_not_read(tmp_path: Path) -> None:
    content = (
        "<office:automatic-styles>"
        + style("P1", "paragraph", 'fo:font-family="Shown Family"')
        + style("P2", "paragraph", 'fo:font-family="Comment Family"')
        + style("P3", "paragraph", 'fo:font-family="Deleted Family"')
        + "</office:automatic-styles>"
        + body(
            '<text:tracked-changes><text:changed-region text:id="c1"><text:deletion>'
            f'<text:p text:style-name="P3">{CHINESE}</text:p>'
            "</text:deletion></text:changed-region></text:tracked-changes>"
            '<text:p text:style-name="P1">shown<office:annotation>'
            '<text:p text:style-name="P2">a comment</text:p></office:annotation></text:p>'
        )
    )
    requested = read_odt(tmp_path, odt(content))
    assert set(requested.slots) == {"Shown Family"}
    assert not requested.east_asian_text
