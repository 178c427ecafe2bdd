"""The font report (workers/fonts.py) and the fonts an operator adds (QUIRE_FONTS_DIR).

What the document asks for is read from test documents built here; what was used comes from
real LibreOffice conversions and the machine's real fontconfig (the fonts infra/bootstrap.sh
installs: Carlito for Calibri, Noto CJK for Chinese and Japanese, DejaVu as the fallback).
"""

from __future__ import annotations

import io
import os
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from pypdf import PdfReader, PdfWriter
from pypdf.generic import DictionaryObject, NameObject

from app.config import Settings, get_settings
from app.db import session_scope
from app.jobs import get_job_view
from app.models import FileStatus, JobStatus
from app.status import status_document
from app.storage import get_store
from tests.conftest import Backend, SentTasks
from tests.docx_factory import make_zip
from tests.font_docs import ADDED_FAMILY, ADDED_POSTSCRIPT, Run, added_font, fonts_docx, latin
from tests.plugins.libreoffice import MakeUnoConverter
from tests.workers.helpers import run_to_the_end, submit
from workers import file_conversion, font_requests, fonts, formats
from workers.libreoffice import Converter
from workers.libreoffice.uno import UnoConverter
from workers.validation import content_type_of, content_types

NOBODY = "Nobody Has This Typeface"
CHINESE = "你好世界。这是一段中文文本。"


@pytest.fixture(scope="module")
def converter(module_converter: UnoConverter) -> Converter:
    return module_converter


def convert(converter: Converter, docx: bytes, folder: Path) -> tuple[Path, Path]:
    source, target = folder / "input.docx", folder / "output.pdf"
    source.write_bytes(docx)
    converter.convert(source, target, 60)
    return source, target


def report_of(converter: Converter, docx: bytes, folder: Path) -> dict[str, Any]:
    source, target = convert(converter, docx, folder)
    return report_for(source, target)


def report_for(source: Path, target: Path, settings: Settings | None = None) -> dict[str, Any]:
    """The report of a kind that has a reader (a DOCX, here): never None."""
    made = fonts.font_report(source, target, settings or get_settings())
    assert made is not None
    return made


def embedded(pdf: Path) -> set[str]:
    """The PDF's fonts, read here without workers/fonts.py: BaseFont less its subset prefix."""
    names = set()
    for page in PdfReader(pdf).pages:
        resources: Any = page["/Resources"]
        for font in resources.get_object()["/Font"].values():
            names.add(str(font.get_object()["/BaseFont"]).lstrip("/").split("+", 1)[-1])
    return names


# -- real documents, real conversions ---------------------------------------------------------


def test_calibri_is_substituted_by_carlito_which_keeps_the_layout(
    converter: Converter, tmp_path: Path
) -> None:
    report = report_of(converter, fonts_docx(latin("Calibri", "Text in Calibri")), tmp_path)
    assert report == {
        "substituted": {"Calibri": {"used": "Carlito", "metric_compatible": True}},
        "missing": [],
    }


def test_a_font_nobody_has_is_missing(converter: Converter, tmp_path: Path) -> None:
    source, target = convert(converter, fonts_docx(latin(NOBODY, "Text")), tmp_path)
    report = report_for(source, target)
    assert report == {"substituted": {}, "missing": [NOBODY]}
    # What was drawn instead is fontconfig's generic fallback, the one the report compares with.
    fallback = fonts.fontconfig_for(get_settings()).fallback
    assert fonts.normalised(fallback) in {fonts.normalised(name) for name in embedded(target)}


def test_chinese_text_in_a_missing_chinese_font_is_drawn_by_a_cjk_font(
    converter: Converter, tmp_path: Path
) -> None:
    # As Word writes a Chinese run: SimSun in every slot, the text's language on the run.
    run = Run(
        CHINESE,
        {"ascii": "SimSun", "hAnsi": "SimSun", "eastAsia": "SimSun"},
        east_asian_language="zh-CN",
    )
    source, target = convert(converter, fonts_docx(run), tmp_path)
    report = report_for(source, target)
    assert report["missing"] == []
    used = report["substituted"]["SimSun"]
    assert used["metric_compatible"] is False
    # The family LibreOffice drew the Chinese text with (Noto Serif CJK, for a serif font).
    assert used["used"].startswith("Noto Serif CJK")
    assert fonts.normalised(used["used"]) in {fonts.normalised(name) for name in embedded(target)}


def test_installed_fonts_are_in_neither_list(converter: Converter, tmp_path: Path) -> None:
    docx = fonts_docx(latin("Liberation Sans", "Sans"), latin("DejaVu Serif", "Serif"))
    assert report_of(converter, docx, tmp_path) == {"substituted": {}, "missing": []}


def test_a_known_font_without_a_metric_alias_is_substituted_not_missing(
    converter: Converter, tmp_path: Path
) -> None:
    # fontconfig knows Georgia is a serif (45-latin.conf) but has no metric-compatible font.
    report = report_of(converter, fonts_docx(latin("Georgia", "Serif text")), tmp_path)
    assert report["missing"] == []
    assert report["substituted"]["Georgia"]["metric_compatible"] is False
    assert report["substituted"]["Georgia"]["used"] != fonts.fontconfig_for(get_settings()).fallback


# -- fonts an operator adds -------------------------------------------------------------------


def test_a_font_in_quire_fonts_dir_is_embedded_and_not_reported(
    make_uno_converter: MakeUnoConverter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docx = fonts_docx(latin(ADDED_FAMILY, "Text in the operator's font"))
    settings = get_settings()
    monkeypatch.setattr(settings, "scratch_dir", tmp_path / "scratch")

    # Without the folder: no package has it.
    before = tmp_path / "before"
    before.mkdir()
    source, target = convert(make_uno_converter("without"), docx, before)
    assert ADDED_POSTSCRIPT not in embedded(target)
    assert report_for(source, target, settings)["missing"] == [ADDED_FAMILY]

    # With it, LibreOffice, sandboxed (the default), reads it and embeds it.
    monkeypatch.setattr(settings, "fonts_dir", added_font(tmp_path / "fonts"))
    instance = make_uno_converter("with")
    assert instance.sandboxed
    after = tmp_path / "after"
    after.mkdir()
    source, target = convert(instance, docx, after)
    assert ADDED_POSTSCRIPT in embedded(target)
    assert report_for(source, target, settings) == {"substituted": {}, "missing": []}


def test_the_fontconfig_file_adds_the_folder_to_the_system_configuration(tmp_path: Path) -> None:
    environment = fonts.fontconfig_environment(tmp_path / "conf", added_font(tmp_path / "fonts"))
    found = subprocess.run(
        ["fc-match", "-f", "%{family}", ADDED_FAMILY],
        capture_output=True,
        text=True,
        check=True,
        env=environment,
    ).stdout
    assert found == ADDED_FAMILY
    assert fonts.fontconfig_environment(tmp_path / "conf", None) == {}


# -- what the document asks for ---------------------------------------------------------------

STYLES = (
    "<w:docDefaults><w:rPrDefault><w:rPr>"
    '<w:rFonts w:asciiTheme="minorHAnsi" w:hAnsiTheme="minorHAnsi" w:eastAsiaTheme="minorEastAsia"'
    ' w:cstheme="minorBidi"/></w:rPr></w:rPrDefault></w:docDefaults>'
    '<w:style w:type="paragraph" w:default="1" w:styleId="Normal">'
    '<w:rPr><w:rFonts w:ascii="Garamond" w:hAnsi="Garamond"/></w:rPr></w:style>'
    '<w:style w:type="paragraph" w:styleId="Base"><w:rPr><w:rFonts w:cs="Arial"/></w:rPr>'
    "</w:style>"
    '<w:style w:type="paragraph" w:styleId="Heading1"><w:basedOn w:val="Base"/>'
    '<w:rPr><w:rFonts w:ascii="Ignored" w:asciiTheme="majorHAnsi"/></w:rPr></w:style>'
    '<w:style w:type="paragraph" w:styleId="Unused">'
    '<w:rPr><w:rFonts w:ascii="Unused Style Font"/></w:rPr></w:style>'
)


def test_requested_fonts_come_from_defaults_used_styles_runs_and_the_theme(
    tmp_path: Path,
) -> None:
    docx = tmp_path / "styled.docx"
    docx.write_bytes(
        fonts_docx(
            Run("Heading", {"eastAsia": "MS Mincho"}, style="Heading1"),
            latin("Courier New", "Code"),
            styles=STYLES,
            theme={"minor_latin": "Calibri", "major_latin": "Cambria", "minor_ea": ""},
            font_table=["Font Table Only"],
        )
    )
    requested = fonts.requested_fonts(docx, get_settings().max_part_expanded_bytes)
    assert requested.slots == {
        "Calibri": {"ascii", "hAnsi"},  # the defaults, through the theme's minor font
        "Garamond": {"ascii", "hAnsi"},  # the default paragraph style
        "Cambria": {"ascii"},  # Heading1, through the theme's major font ("Ignored" is)
        "Arial": {"cs"},  # the style Heading1 is based on
        "MS Mincho": {"eastAsia"},  # a run
        "Courier New": {"ascii", "hAnsi"},  # a run
    }
    assert not requested.east_asian_text


def test_the_report_reads_a_bounded_number_of_families(tmp_path: Path) -> None:
    runs = [latin(f"Family {number}", "x") for number in range(font_requests.MAX_REQUESTED + 50)]
    docx = tmp_path / "many.docx"
    docx.write_bytes(fonts_docx(*runs))
    requested = fonts.requested_fonts(docx, get_settings().max_part_expanded_bytes)
    assert len(requested.slots) == font_requests.MAX_REQUESTED


def test_the_runs_kept_are_bounded_however_many_there_are() -> None:
    reader = fonts._PartReader()
    parser = fonts._parser(reader)
    parser.Parse(f'<w:body xmlns:w="{fonts.W_NS}">'.encode(), False)
    for number in range(fonts.MAX_RUN_FONTS + 500):
        parser.Parse(f'<w:r><w:rPr><w:rFonts w:ascii="F{number}"/></w:rPr></w:r>'.encode(), False)
    parser.Parse(b"</w:body>", True)
    assert len(reader.runs) == fonts.MAX_RUN_FONTS
    assert ("ascii", "F0", False) in reader.runs


def test_a_part_larger_than_the_bound_is_not_read_whole(tmp_path: Path) -> None:
    docx = tmp_path / "large.docx"
    docx.write_bytes(fonts_docx(latin("Calibri", "x" * 200_000)))
    with pytest.raises(font_requests.DocumentTooLarge):
        fonts.requested_fonts(docx, 100_000)


def test_a_part_with_a_dtd_is_refused(tmp_path: Path) -> None:
    source = fonts_docx(latin("Calibri", "x"))
    docx = tmp_path / "entities.docx"
    with (
        zipfile.ZipFile(io.BytesIO(source)) as original,
        zipfile.ZipFile(docx, "w") as copy,
    ):
        for name in original.namelist():
            data = original.read(name)
            if name == "word/document.xml":
                data = data.replace(
                    b"?><w:document",
                    b'?><!DOCTYPE d [<!ENTITY e "Calibri">]><w:document',
                )
            copy.writestr(name, data)
    with pytest.raises(Exception, match="DTD"):
        fonts.requested_fonts(docx, get_settings().max_part_expanded_bytes)


def test_a_family_name_is_a_name_to_fontconfig_not_a_pattern(tmp_path: Path) -> None:
    # Unescaped, ":lang=..." and "-..." would be fontconfig pattern syntax or an option, and
    # "Liberation Sans:weight=bold" would match Liberation Sans.
    config = fonts.fontconfig_for(get_settings())
    for name in ("Liberation Sans:weight=bold", "-v", "Liberation Sans,DejaVu Sans"):
        assert config.match(name, None)[0] == config.fallback, name


def test_without_fc_match_there_is_no_report_rather_than_every_font_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docx, pdf = tmp_path / "a.docx", tmp_path / "a.pdf"
    docx.write_bytes(fonts_docx(latin("Calibri", "x")))
    pdf.write_bytes(b"%PDF-1.4")
    fonts._fontconfigs.clear()
    monkeypatch.setenv("PATH", str(tmp_path))  # no fc-match on it
    with pytest.raises(fonts.FontconfigUnavailable):
        fonts.font_report(docx, pdf, get_settings())
    fonts._fontconfigs.clear()


def test_metric_compatibility_comes_from_fontconfig_s_aliases() -> None:
    config = fonts.fontconfig_for(get_settings())
    assert config.metric_compatible("Calibri", "Carlito")
    assert config.metric_compatible("Cambria", "Caladea")
    assert config.metric_compatible("Arial", "Liberation Sans")
    assert config.metric_compatible("Times New Roman", "Liberation Serif")
    assert not config.metric_compatible("Arial", "Liberation Serif")
    assert not config.metric_compatible("Georgia", "DejaVu Serif")


# -- the pipeline: the report stored with the file, and strict_fonts ---------------------------


def test_the_report_is_stored_with_each_completed_file_and_counted_in_the_job(
    backend: Backend, sent: SentTasks, converter: Converter
) -> None:
    entries = {
        "calibri.docx": fonts_docx(latin("Calibri", "Calibri")),
        "nobody.docx": fonts_docx(latin(NOBODY, "Nobody")),
        "plain.docx": fonts_docx(latin("Liberation Serif", "Plain")),
    }
    job_id = submit(make_zip(entries))
    run_to_the_end(job_id, sent, converter)
    with session_scope() as session:
        view = get_job_view(session, job_id)
        assert view is not None
        document = status_document(view, "http://test", get_store(), 60)
    assert document.status == JobStatus.COMPLETED
    by_name = {file.filename: file for file in document.files}
    assert all(file.status == FileStatus.COMPLETED for file in document.files)
    body = document.model_dump(mode="json")
    reports = {file["filename"]: file["fonts"] for file in body["files"]}
    assert reports == {
        "calibri.docx": {
            "substituted": {"Calibri": {"used": "Carlito", "metric_compatible": True}},
            "missing": [],
        },
        "nobody.docx": {"substituted": {}, "missing": [NOBODY]},
        "plain.docx": {"substituted": {}, "missing": []},
    }
    assert body["fonts"] == {"files_with_substitutions": 1, "files_with_missing_fonts": 1}
    assert by_name["nobody.docx"].error_message is None


def test_strict_fonts_fails_a_file_with_a_missing_font_naming_it(
    backend: Backend, sent: SentTasks, converter: Converter
) -> None:
    entries = {
        "calibri.docx": fonts_docx(latin("Calibri", "Calibri")),
        "nobody.docx": fonts_docx(latin(NOBODY, "Nobody"), latin("Georgia", "Georgia")),
    }
    job_id = submit(make_zip(entries), strict_fonts=True)
    run_to_the_end(job_id, sent, converter)
    with session_scope() as session:
        view = get_job_view(session, job_id)
        assert view is not None
        files = {file.filename: file for file in view.files}
        assert view.job.status == JobStatus.COMPLETED
    # A substitution is not a missing font: that file converts.
    assert files["calibri.docx"].status == FileStatus.COMPLETED
    assert files["nobody.docx"].status == FileStatus.FAILED
    message = files["nobody.docx"].error_message or ""
    assert NOBODY in message and "strict_fonts" in message
    assert "Georgia" not in message


def test_a_kind_without_a_reader_gets_no_report_and_one_with_a_reader_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pdf = tmp_path / "a.pdf"
    pdf.write_bytes(b"%PDF-1.4")
    document = tmp_path / "a.quire-test"
    document.write_bytes(b"anything")
    assert fonts.font_report(document, pdf, get_settings()) is None
    # The report asks READERS, by the prepared file's suffix, what the document asks for.
    seen: list[tuple[Path, int]] = []

    def reader(path: Path, max_part_bytes: int) -> font_requests.Requested:
        seen.append((path, max_part_bytes))
        return font_requests.Requested()

    monkeypatch.setitem(fonts.READERS, ".quire-test", reader)
    assert fonts.font_report(document, pdf, get_settings()) == {"substituted": {}, "missing": []}
    assert seen == [(document, get_settings().max_part_expanded_bytes)]


# -- one read: the fonts come from the validator's decompression -------------------------------

HEADER_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.header+xml"
STYLES_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.styles+xml"
RELATIONSHIP = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"


def rebuilt(
    docx: bytes,
    changes: dict[str, bytes],
    *,
    first: tuple[str, ...] = (),
    overrides: dict[str, str] | None = None,
) -> bytes:
    """``docx`` with parts replaced or added (``changes``), the entries named in ``first``
    written before the others, and content type overrides added."""
    with zipfile.ZipFile(io.BytesIO(docx)) as original:
        parts = {name: original.read(name) for name in original.namelist()}
    parts.update(changes)
    if overrides:
        extra = "".join(
            f'<Override PartName="/{name}" ContentType="{kind}"/>'
            for name, kind in overrides.items()
        )
        parts["[Content_Types].xml"] = parts["[Content_Types].xml"].replace(
            b"</Types>", extra.encode() + b"</Types>"
        )
    order = [*first, *(name for name in parts if name not in first)]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as package:
        for name in order:
            package.writestr(name, parts[name])
    return buffer.getvalue()


def relationships_xml(*relations: tuple[str, str]) -> bytes:
    return (
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        + "".join(
            f'<Relationship Id="rId{n}" Type="{RELATIONSHIP}/{kind}" Target="{target}"/>'
            for n, (kind, target) in enumerate(relations, start=1)
        )
        + "</Relationships>"
    ).encode()


def header_xml(family: str) -> bytes:
    return (
        f'<w:hdr xmlns:w="{fonts.W_NS}"><w:p><w:r><w:rPr><w:rFonts w:ascii="{family}"/>'
        "</w:rPr><w:t>Header</w:t></w:r></w:p></w:hdr>"
    ).encode()


def styled_docx() -> bytes:
    return fonts_docx(
        Run("Heading", {"eastAsia": "MS Mincho"}, style="Heading1"),
        latin("Courier New", "Code"),
        styles=STYLES,
        theme={"minor_latin": "Calibri", "major_latin": "Cambria", "minor_ea": ""},
    )


def opened_parts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the zip entries opened from now on, once per opening."""
    opened: list[str] = []
    original = zipfile.ZipFile.open

    def counting(self: zipfile.ZipFile, name: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(name.filename if isinstance(name, zipfile.ZipInfo) else name)
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", counting)
    return opened


def test_the_worker_reads_the_fonts_in_the_validators_read_opening_no_part_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docx = styled_docx()
    expected = tmp_path / "expected.docx"
    expected.write_bytes(docx)
    requested = fonts.requested_fonts(expected, get_settings().max_part_expanded_bytes)
    assert "Garamond" in requested.slots  # the document asks for something to compare

    without, with_fonts = tmp_path / "without", tmp_path / "with"
    without.write_bytes(docx)
    with_fonts.write_bytes(docx)
    opened = opened_parts(monkeypatch)
    assert formats.prepare(without, "a.docx", read_fonts=False).requested is None
    opened_without = sorted(opened)
    opened.clear()
    prepared = formats.prepare(with_fonts, "a.docx")
    assert sorted(opened) == opened_without  # not one part more
    assert prepared.fonts_read
    assert prepared.requested == requested


@pytest.mark.parametrize("relationships_first", [True, False])
def test_the_parts_are_chosen_by_the_main_parts_relationships_in_any_entry_order(
    tmp_path: Path, relationships_first: bool
) -> None:
    # A glossary document's styles part, of the same content type, comes first and asks for a
    # font of its own: it is not the document's.
    glossary_styles = (
        f'<w:styles xmlns:w="{fonts.W_NS}"><w:style w:type="paragraph" w:default="1" '
        'w:styleId="Normal"><w:rPr><w:rFonts w:ascii="Glossary Font"/></w:rPr></w:style>'
        "</w:styles>"
    ).encode()
    docx = rebuilt(
        styled_docx(),
        {"word/glossary/styles.xml": glossary_styles},
        first=(
            "[Content_Types].xml",
            "word/glossary/styles.xml",
            *(["word/_rels/document.xml.rels"] if relationships_first else []),
        ),
        overrides={"word/glossary/styles.xml": STYLES_TYPE},
    )
    path = tmp_path / "input"
    path.write_bytes(docx)
    prepared = formats.prepare(path, "a.docx")
    assert prepared.requested is not None
    assert prepared.requested.slots == {
        "Calibri": {"ascii", "hAnsi"},
        "Garamond": {"ascii", "hAnsi"},
        "Cambria": {"ascii"},
        "Arial": {"cs"},
        "MS Mincho": {"eastAsia"},
        "Courier New": {"ascii", "hAnsi"},
    }


def test_a_part_named_by_many_relationships_is_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    relations = [("header", "header1.xml")] * 200
    docx = rebuilt(
        fonts_docx(latin("Calibri", "x")),
        {
            "word/header1.xml": header_xml("Header Font"),
            "word/_rels/document.xml.rels": relationships_xml(*relations),
        },
        overrides={"word/header1.xml": HEADER_TYPE},
    )
    path = tmp_path / "headers.docx"
    path.write_bytes(docx)
    opened = opened_parts(monkeypatch)
    requested = fonts.requested_fonts(path, get_settings().max_part_expanded_bytes)
    assert set(requested.slots) == {"Calibri", "Header Font"}
    assert opened.count("word/header1.xml") == 1


def test_all_the_parts_read_share_one_budget(tmp_path: Path) -> None:
    # Three headers of 60 KB: each under the bound of a part, together over the package's.
    filler = b"<!--" + b"x" * 60_000 + b"-->"
    changes = {f"word/header{n}.xml": filler + header_xml(f"Header {n}") for n in range(1, 4)}
    changes["word/_rels/document.xml.rels"] = relationships_xml(
        *(("header", f"header{n}.xml") for n in range(1, 4))
    )
    docx = rebuilt(
        fonts_docx(latin("Calibri", "x")),
        changes,
        overrides={f"word/header{n}.xml": HEADER_TYPE for n in range(1, 4)},
    )
    path = tmp_path / "budget.docx"
    path.write_bytes(docx)
    assert len(fonts.requested_fonts(path, 100_000, 1_000_000).slots) == 4
    with pytest.raises(font_requests.DocumentTooLarge):
        fonts.requested_fonts(path, 100_000, 150_000)


@pytest.mark.parametrize(
    "styles",
    [
        b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY e "Calibri">]><w:styles/>',
        b"<w:styles><not-closed></w:styles>",
    ],
    ids=["entities", "malformed"],
)
def test_a_failure_to_read_the_fonts_loses_the_report_not_the_file(
    tmp_path: Path, styles: bytes
) -> None:
    path = tmp_path / "input"
    path.write_bytes(rebuilt(styled_docx(), {"word/styles.xml": styles}))
    prepared = formats.prepare(path, "a.docx")  # no InvalidDocument: the package is valid
    assert prepared.path.suffix == ".docx"
    assert prepared.fonts_read and prepared.requested is None


def test_a_soft_time_limit_in_the_report_stops_the_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_time(*args: Any) -> dict[str, Any]:
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(fonts, "report_of", out_of_time)
    prepared = formats.Prepared(tmp_path / "a.docx", True, font_requests.Requested())
    with pytest.raises(SoftTimeLimitExceeded):
        file_conversion._font_report(prepared, tmp_path / "a.pdf", get_settings())
    # Any other failure only loses the report.
    monkeypatch.setattr(fonts, "report_of", lambda *args: 1 / 0)
    assert file_conversion._font_report(prepared, tmp_path / "a.pdf", get_settings()) is None


def test_strict_fonts_fails_a_file_whose_fonts_could_not_be_checked(
    backend: Backend, sent: SentTasks, converter: Converter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Reading what one document asks for fails (whatever the reason: the reading's own tests
    # above show such failures lose the report, not the file).
    real = fonts._requested

    def failing(styles: Any, theme: Any, bodies: list[Any]) -> font_requests.Requested:
        if any(pair[1] == "Unreadable Font" for body in bodies for pair in body.runs):
            raise RuntimeError("unreadable")
        return real(styles, theme, bodies)

    monkeypatch.setattr(fonts, "_requested", failing)
    entries = {
        "unreadable.docx": fonts_docx(latin("Unreadable Font", "x")),
        "calibri.docx": fonts_docx(latin("Calibri", "x")),
    }
    strict = submit(make_zip(entries), strict_fonts=True)
    lenient = submit(make_zip(entries))
    run_to_the_end(strict, sent, converter)
    run_to_the_end(lenient, sent, converter)
    with session_scope() as session:
        views = {job_id: get_job_view(session, job_id) for job_id in (strict, lenient)}
        files = {
            (job_id, file.filename): (file.status, file.error_message, file.fonts)
            for job_id, view in views.items()
            if view is not None
            for file in view.files
        }
    assert files[(strict, "unreadable.docx")] == (
        FileStatus.FAILED,
        fonts.STRICT_FONTS_UNCHECKED,
        None,
    )
    assert files[(strict, "calibri.docx")][0] == FileStatus.COMPLETED
    # Without strict_fonts it converts, without a report.
    assert files[(lenient, "unreadable.docx")] == (FileStatus.COMPLETED, None, None)


# -- fontconfig's runs, bounded ----------------------------------------------------------------


def fc_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The fontconfig programs run from now on, by name."""
    runs: list[str] = []
    real = subprocess.run

    def counting(command: Any, *args: Any, **kwargs: Any) -> Any:
        runs.append(command[0])
        return real(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", counting)
    return runs


def fresh_fontconfig() -> fonts.Fontconfig:
    return fonts.Fontconfig(fonts.fontconfig_environment(Path("/nonexistent"), None))


def test_finding_a_fontconfig_runs_nothing_under_the_process_wide_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = fc_runs(monkeypatch)
    fonts._fontconfigs.clear()
    config = fonts.fontconfig_for(get_settings())
    assert runs == []  # fontconfig runs when a report asks, outside _fontconfigs_lock
    assert config.fallback
    assert runs == ["fc-match"]


def test_installed_families_come_from_one_listing_not_one_match_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = fresh_fontconfig()
    runs = fc_runs(monkeypatch)
    requested = font_requests.Requested()
    for family in ("DejaVu Serif", "DejaVu Sans", "Liberation Sans", "Liberation Serif"):
        requested.add(family, "ascii")
    assert fonts.judge(requested, set(), config) == {"substituted": {}, "missing": []}
    assert runs == ["fc-list"]


def test_a_report_starts_a_bounded_number_of_fc_match_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = fresh_fontconfig()
    assert config.fallback  # kept, as in a worker that has made a report before
    runs = fc_runs(monkeypatch)
    requested = font_requests.Requested()
    requested.east_asian_text = True
    for number in range(font_requests.MAX_REQUESTED):
        requested.add(f"Nobody's East Asian Font {number}", "eastAsia")
    with pytest.raises(fonts.FontconfigUnavailable, match="more often"):
        fonts.judge(requested, set(), config)
    assert runs.count("fc-match") == fonts.MAX_FC_RUNS


def test_the_fontconfig_file_is_replaced_whole_never_rewritten_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "conf"
    fonts.fontconfig_environment(folder, tmp_path / "one")
    replaced: list[tuple[str, str]] = []
    real = os.replace

    def recording(source: Any, target: Any) -> None:
        # What a reader of the file finds at this moment: the old file, whole.
        assert "one" in Path(target).read_text(encoding="utf-8")
        replaced.append((Path(source).parent.name, Path(target).name))
        real(source, target)

    monkeypatch.setattr(os, "replace", recording)
    environment = fonts.fontconfig_environment(folder, tmp_path / "two")
    assert replaced == [("conf", "quire-fonts.conf")]
    assert str(tmp_path / "two") in Path(environment["FONTCONFIG_FILE"]).read_text("utf-8")
    assert sorted(path.name for path in folder.iterdir()) == ["quire-fonts.conf"]


# -- the PDF's names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_fonts", "holds_arial"),
    [
        (["ABCDEF+ArialNarrow", "ABCDEG+ArialNarrow-Bold", "ArialUnicodeMS"], False),
        (["ABCDEF+ArialMT"], True),
        (["ABCDEF+Arial-BoldMT"], True),
        (["Arial,Bold"], True),
        (["ABCDEF+Arial-BoldItalicMT"], True),
    ],
)
def test_a_font_in_the_pdf_is_the_requested_one_only_by_its_whole_name(
    base_fonts: list[str], holds_arial: bool
) -> None:
    present = {fonts.normalised(name) for name in base_fonts}
    assert fonts._in_pdf("Arial", present) is holds_arial
    assert fonts._in_pdf("Times New Roman", {fonts.normalised("TimesNewRomanPS-BoldMT")})


def pdf_with_fonts(path: Path, *base_fonts: str) -> Path:
    """A one-page PDF whose page resources name fonts by ``base_fonts`` (no glyphs drawn)."""
    writer = PdfWriter()
    page = writer.add_blank_page(100, 100)
    page[NameObject("/Resources")] = DictionaryObject(
        {
            NameObject("/Font"): DictionaryObject(
                {
                    NameObject(f"/F{number}"): DictionaryObject(
                        {
                            NameObject("/Type"): NameObject("/Font"),
                            NameObject("/Subtype"): NameObject("/TrueType"),
                            NameObject("/BaseFont"): NameObject(f"/{name}"),
                        }
                    )
                    for number, name in enumerate(base_fonts)
                }
            )
        }
    )
    writer.write(path)
    return path


def test_arial_narrow_in_the_pdf_does_not_make_arial_installed(tmp_path: Path) -> None:
    requested = font_requests.Requested()
    requested.add("Arial", "ascii")
    config = fonts.fontconfig_for(get_settings())
    assert "arial" not in config.installed()  # this machine has Liberation Sans in its place
    narrow = pdf_with_fonts(
        tmp_path / "narrow.pdf", "ABCDEF+ArialNarrow", "ABCDEG+ArialNarrow-Bold"
    )
    report = fonts.judge(requested, fonts.pdf_fonts(narrow), config)
    assert report == {
        "substituted": {"Arial": {"used": "Liberation Sans", "metric_compatible": True}},
        "missing": [],
    }
    arial = pdf_with_fonts(tmp_path / "arial.pdf", "ABCDEF+Arial-BoldMT")
    assert fonts.judge(requested, fonts.pdf_fonts(arial), config) == {
        "substituted": {},
        "missing": [],
    }


def test_what_the_readers_keep_is_bounded_for_the_document_not_per_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each part has a reader of its own; what they keep together is bounded (MAX_KEPT), or
    # hundreds of headers naming thousands of styles each would hold hundreds of MB.
    monkeypatch.setattr(fonts, "MAX_KEPT", 100)
    headers = {
        f"word/header{n}.xml": (
            f'<w:hdr xmlns:w="{fonts.W_NS}">'
            + "".join(f'<w:p><w:pPr><w:pStyle w:val="S{n}-{k}"/></w:pPr></w:p>' for k in range(80))
            + "</w:hdr>"
        ).encode()
        for n in range(1, 4)
    }
    relations = relationships_xml(*(("header", f"header{n}.xml") for n in range(1, 4)))
    docx = rebuilt(
        fonts_docx(latin("Calibri", "x")),
        {**headers, "word/_rels/document.xml.rels": relations},
        overrides={name: HEADER_TYPE for name in headers},
    )
    with zipfile.ZipFile(io.BytesIO(docx)) as package:
        types = content_types(package.read("[Content_Types].xml"))
        reading = fonts.DocxReading(10**8, 10**9)
        for info in package.infolist():
            name = info.filename
            consume = reading.part(name, content_type_of(types, name), "word/document.xml")
            if consume is not None:
                consume(package.read(info))
    assert reading.requested().slots == {"Calibri": {"ascii", "hAnsi"}}
    kept = sum(
        len(feed.reader.used_styles) + len(feed.reader.runs) for feed in reading.feeds.values()
    )
    assert kept == 100


def test_a_token_longer_than_the_bound_ends_the_reading() -> None:
    # expat holds an unfinished token whole: past MAX_UNFINISHED there is no report, rather
    # than a part's worth of one attribute (up to QUIRE_MAX_PART_EXPANDED_BYTES) in memory.
    data = f'<w:document xmlns:w="{fonts.W_NS}"><w:body><w:p w:x="'.encode()
    data += b"y" * (fonts.MAX_UNFINISHED + 2 * fonts.CHUNK)
    feed = fonts._Feed("word/document.xml", fonts._PartReader(), 10 * fonts.MAX_UNFINISHED)
    with pytest.raises(font_requests.DocumentTooLarge, match="token"):
        for start in range(0, len(data), fonts.CHUNK):
            feed(data[start : start + fonts.CHUNK])
    assert feed.fed <= fonts.MAX_UNFINISHED + 2 * fonts.CHUNK
