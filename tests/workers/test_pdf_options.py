"""PDF/A and tagged PDF, measured on what the real LibreOffice writes.

What LibreOffice 7.4 does with each option, as these tests hold it:
- PDF/A-1b, 2b and 3b: XMP metadata with pdfaid:part 1, 2 or 3, an output intent (sRGB), and a
  tagged PDF whatever UseTaggedPDF says. Because it tags PDF/A-1, it declares PDF/A-1
  conformance level A (which includes every requirement of 1b); 2 and 3 are declared level B.
- PDF/A-1 flattens transparency (no soft masks left); PDF/A-2 and 3 keep it.
- tagged alone: /MarkInfo /Marked true and a structure tree, no PDF/A metadata.
- neither: no PDF/A metadata, no tags.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader
from pypdf.generic import BooleanObject, DictionaryObject
from sqlalchemy import update

from app.db import session_scope
from app.models import FileStatus, Job, PdfA
from tests.conftest import Backend, SentTasks
from tests.docx_factory import CONTENT_TYPES, W_NS, WORD_MAIN, make_docx, make_zip, root_rels
from tests.pdf import pdf_pages
from tests.workers.helpers import files_by_name, result_members, run_to_the_end, submit
from workers.libreoffice import (
    PLAIN_PDF,
    CliConverter,
    Converter,
    FakeConverter,
    PdfOptions,
    minimal_pdf,
)
from workers.libreoffice.uno import UnoConverter

TABLES = "test__docx__tables.docx"  # three fonts, tables, several pages of text
# An Open XML SDK test document whose diagram shapes have alpha: soft masks in a plain PDF.
TRANSPARENT = (
    "test__DocumentFormat.OpenXml.Tests.Assets__assets__TestDataStorage__O14ISOStrict__"
    "Graphics__AlphaMod - Parent Cont - Enum tree.docx"
)


@dataclass(frozen=True)
class PdfFacts:
    header: str  # "%PDF-1.6"
    pdfa_part: str | None
    pdfa_conformance: str | None
    marked: bool
    structure_tree: bool
    output_intent: str | None  # the colour space the file declares it was made for


def facts(pdf: bytes) -> PdfFacts:
    reader = PdfReader(io.BytesIO(pdf))
    root = reader.root_object
    xmp = reader.xmp_metadata
    mark_info = root.get("/MarkInfo")
    intents: Any = root.get("/OutputIntents")
    return PdfFacts(
        header=reader.pdf_header,
        pdfa_part=xmp.pdfaid_part if xmp is not None else None,
        pdfa_conformance=xmp.pdfaid_conformance if xmp is not None else None,
        # A BooleanObject is always truthy, so it is compared with one.
        marked=mark_info is not None
        and mark_info.get_object().get("/Marked") == BooleanObject(True),
        structure_tree="/StructTreeRoot" in root,
        output_intent=(
            str(intents.get_object()[0].get_object()["/OutputConditionIdentifier"])
            if intents is not None
            else None
        ),
    )


def structure_roles(pdf: bytes) -> set[str]:
    """The standard roles of the structure tree's elements (LibreOffice names a paragraph by
    its style, /Standard, and maps the style to /P in the role map)."""
    tree: Any = PdfReader(io.BytesIO(pdf)).root_object["/StructTreeRoot"].get_object()
    role_map = tree.get("/RoleMap", DictionaryObject()).get_object()
    roles: set[str] = set()
    pending: list[Any] = [tree.get("/K")]
    while pending:
        kids = pending.pop()
        kids = kids.get_object() if kids is not None else None
        if isinstance(kids, list):
            pending.extend(kids)
        elif isinstance(kids, dict) and "/S" in kids:  # an element, not a marked-content ref
            roles.add(str(role_map.get(kids["/S"], kids["/S"])))
            pending.append(kids.get("/K"))
    return roles


def _resources(reader: PdfReader) -> Iterator[DictionaryObject]:
    """Every resource dictionary of the pages and of the form XObjects they draw, once."""
    pending: list[Any] = [page.get("/Resources") for page in reader.pages]
    seen: set[int] = set()
    while pending:
        resources = pending.pop()
        if resources is None:
            continue
        resources = resources.get_object()
        if id(resources) in seen:
            continue
        seen.add(id(resources))
        yield resources
        for xobject in resources.get("/XObject", DictionaryObject()).get_object().values():
            xobject = xobject.get_object()
            if xobject.get("/Subtype") == "/Form":
                pending.append(xobject.get("/Resources"))


def unembedded_fonts(pdf: bytes) -> list[str]:
    """Fonts drawn without their font program in the file (Type 3 glyphs are the file's own)."""
    missing = []
    for resources in _resources(PdfReader(io.BytesIO(pdf))):
        for font in resources.get("/Font", DictionaryObject()).get_object().values():
            font = font.get_object()
            if font.get("/Subtype") == "/Type3":
                continue
            described = font
            if font.get("/Subtype") == "/Type0":
                described = font["/DescendantFonts"][0].get_object()
            descriptor = described.get("/FontDescriptor")
            descriptor = descriptor.get_object() if descriptor is not None else {}
            if not {"/FontFile", "/FontFile2", "/FontFile3"} & set(descriptor):
                missing.append(str(font.get("/BaseFont")))
    return missing


def soft_masks(pdf: bytes) -> int:
    """Images and graphics states carrying a soft mask: transparency."""
    count = 0
    for resources in _resources(PdfReader(io.BytesIO(pdf))):
        for xobject in resources.get("/XObject", DictionaryObject()).get_object().values():
            if "/SMask" in xobject.get_object():
                count += 1
        for state in resources.get("/ExtGState", DictionaryObject()).get_object().values():
            if state.get_object().get("/SMask", "/None") != "/None":
                count += 1
    return count


def standard_fonts_docx() -> bytes:
    """A document naming the PDF standard fonts, the ones a PDF may leave unembedded."""
    names = ["Helvetica", "Times", "Courier", "Symbol", "ZapfDingbats", "Arial"]
    paragraphs = "".join(
        f'<w:p><w:r><w:rPr><w:rFonts w:ascii="{name}" w:hAnsi="{name}"/></w:rPr>'
        f"<w:t>Text in {name}</w:t></w:r></w:p>"
        for name in names
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as package:
        package.writestr(
            "[Content_Types].xml",
            CONTENT_TYPES.format(main="word/document.xml", content_type=WORD_MAIN),
        )
        package.writestr("_rels/.rels", root_rels("word/document.xml"))
        package.writestr(
            "word/document.xml",
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            f'<w:document xmlns:w="{W_NS}"><w:body>{paragraphs}</w:body></w:document>',
        )
    return buffer.getvalue()


@dataclass(frozen=True)
class Expected:
    """What a choice of options gives, as LibreOffice 7.4 writes it."""

    options: PdfOptions
    header: str
    part: str | None  # pdfaid:part
    conformance: str | None  # pdfaid:conformance
    tagged: bool


PLAIN = Expected(PLAIN_PDF, "%PDF-1.6", None, None, tagged=False)
PDF_A_2B_TAGGED = Expected(PdfOptions(PdfA.PDF_A_2B, tagged=True), "%PDF-1.6", "2", "B", True)
EXPECTED = {
    "plain": PLAIN,
    "tagged": Expected(PdfOptions(tagged=True), "%PDF-1.6", None, None, tagged=True),
    # Tagged although not asked to be, and so declared level A: LibreOffice's own choice.
    "pdf-a-1b": Expected(PdfOptions(PdfA.PDF_A_1B), "%PDF-1.4", "1", "A", tagged=True),
    "pdf-a-2b": Expected(PdfOptions(PdfA.PDF_A_2B), "%PDF-1.6", "2", "B", tagged=True),
    "pdf-a-3b": Expected(PdfOptions(PdfA.PDF_A_3B), "%PDF-1.6", "3", "B", tagged=True),
    "pdf-a-2b-tagged": PDF_A_2B_TAGGED,
}


def check(pdf: bytes, expected: Expected) -> None:
    found = facts(pdf)
    assert found.header == expected.header
    assert (found.pdfa_part, found.pdfa_conformance) == (expected.part, expected.conformance)
    # A PDF/A declares the colour space it was made for; a plain PDF does not need to.
    assert found.output_intent == ("sRGB IEC61966-2.1" if expected.part else None)
    assert (found.marked, found.structure_tree) == (expected.tagged, expected.tagged)
    if expected.tagged:
        assert "/P" in structure_roles(pdf)  # the paragraphs are elements of the tree
    pages = pdf_pages(pdf)
    assert pages and any(text.strip() for text in pages)  # still the document


# -- the options themselves ------------------------------------------------------------------


def test_filter_data_names_every_option_explicitly() -> None:
    assert PLAIN_PDF.filter_data() == {"SelectPdfVersion": 0, "UseTaggedPDF": False}
    assert PdfOptions(pdf_a=PdfA.PDF_A_1B).filter_data()["SelectPdfVersion"] == 1
    assert PdfOptions(pdf_a=PdfA.PDF_A_3B, tagged=True).filter_data() == {
        "SelectPdfVersion": 3,
        "UseTaggedPDF": True,
    }


def test_the_command_line_form_is_typed_json() -> None:
    assert PdfOptions(pdf_a=PdfA.PDF_A_2B, tagged=True).convert_to() == (
        'pdf:writer_pdf_Export:{"SelectPdfVersion":{"type":"long","value":"2"},'
        '"UseTaggedPDF":{"type":"boolean","value":"true"}}'
    )


def test_the_fake_converter_records_what_it_was_asked(tmp_path: Path) -> None:
    fake = FakeConverter()
    source = tmp_path / "in.docx"
    source.write_bytes(make_docx("x"))
    fake.convert(source, tmp_path / "a.pdf", 10)
    fake.convert(source, tmp_path / "b.pdf", 10, PdfOptions(pdf_a=PdfA.PDF_A_3B))
    assert fake.options == [PLAIN_PDF, PdfOptions(pdf_a=PdfA.PDF_A_3B)]


# -- the warm converter (UNO) ----------------------------------------------------------------


@pytest.mark.parametrize("choice", list(EXPECTED))
def test_uno_converter_applies_the_options(
    module_converter: UnoConverter,
    tmp_path: Path,
    corpus: Callable[[str], Path],
    choice: str,
) -> None:
    expected = EXPECTED[choice]
    target = tmp_path / "out.pdf"
    module_converter.convert(corpus(TABLES), target, timeout=60, options=expected.options)
    check(target.read_bytes(), expected)
    if expected.tagged:  # the tables document's heading and tables are elements too
        assert {"/H2", "/Table", "/TR", "/TD"} <= structure_roles(target.read_bytes())


def test_options_do_not_stick_to_a_warm_instance(
    module_converter: UnoConverter, tmp_path: Path, corpus: Callable[[str], Path]
) -> None:
    """One instance converts every job's files in turn: a PDF/A job must not make the next
    job's plain PDFs PDF/A, nor a tagged one tag them."""
    source = corpus(TABLES)
    module_converter.convert(
        source, tmp_path / "a.pdf", 60, PdfOptions(pdf_a=PdfA.PDF_A_1B, tagged=True)
    )
    module_converter.convert(source, tmp_path / "plain.pdf", 60)
    check((tmp_path / "plain.pdf").read_bytes(), PLAIN)


def test_every_font_is_embedded(
    module_converter: UnoConverter, tmp_path: Path, corpus: Callable[[str], Path]
) -> None:
    """Including documents asking for the PDF standard fonts, which a PDF could leave out."""
    standard = tmp_path / "standard-fonts.docx"
    standard.write_bytes(standard_fonts_docx())
    for source in (corpus(TABLES), standard):
        for choice in EXPECTED:
            target = tmp_path / f"{source.stem}-{choice}.pdf"
            module_converter.convert(source, target, 60, EXPECTED[choice].options)
            pdf = target.read_bytes()
            assert facts(pdf).pdfa_part == EXPECTED[choice].part
            assert unembedded_fonts(pdf) == [], (source.name, choice)
    # The check does find a font without its program: the fake's PDF names Helvetica only.
    assert unembedded_fonts(minimal_pdf("x")) == ["/Helvetica"]


def test_pdf_a_1_flattens_transparency_and_later_levels_keep_it(
    module_converter: UnoConverter, tmp_path: Path, corpus: Callable[[str], Path]
) -> None:
    source = corpus(TRANSPARENT)
    masks = {}
    for choice in ("plain", "pdf-a-1b", "pdf-a-2b", "pdf-a-3b"):
        target = tmp_path / f"{choice}.pdf"
        module_converter.convert(source, target, 60, EXPECTED[choice].options)
        masks[choice] = soft_masks(target.read_bytes())
    assert masks["plain"] > 0  # the document does have transparency
    assert masks["pdf-a-1b"] == 0
    assert masks["pdf-a-2b"] == masks["pdf-a-3b"] == masks["plain"]


# -- the command-line fallback ---------------------------------------------------------------


@pytest.mark.parametrize("choice", ["plain", "tagged", "pdf-a-1b", "pdf-a-2b", "pdf-a-3b"])
def test_cli_converter_applies_the_options(
    tmp_path: Path, corpus: Callable[[str], Path], choice: str
) -> None:
    expected = EXPECTED[choice]
    target = tmp_path / "out.pdf"
    CliConverter("soffice", tmp_path / "scratch").convert(
        corpus(TABLES), target, timeout=120, options=expected.options
    )
    check(target.read_bytes(), expected)
    if expected.tagged:  # the tables document's heading and tables are elements too
        assert {"/H2", "/Table", "/TR", "/TD"} <= structure_roles(target.read_bytes())


# -- through the worker ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def converter(module_converter: UnoConverter) -> Converter:
    return module_converter


def test_a_job_s_options_reach_every_one_of_its_pdfs(
    backend: Backend, sent: SentTasks, converter: Converter
) -> None:
    archived = submit(make_zip({"a.docx": make_docx("Alpha"), "sub/b.docx": make_docx("Beta")}))
    plain = submit(make_zip({"c.docx": make_docx("Gamma")}))
    with session_scope() as session:
        session.execute(
            update(Job).where(Job.id == archived).values(pdf_a=PdfA.PDF_A_2B, tagged_pdf=True)
        )
    for job_id in (archived, plain):  # one after the other on the same warm instance
        run_to_the_end(job_id, sent, converter)
        assert {f.status for f in files_by_name(job_id).values()} == {FileStatus.COMPLETED}

    members = result_members(archived)
    assert sorted(members) == ["a.pdf", "sub/b.pdf"]
    for pdf in members.values():
        check(pdf, PDF_A_2B_TAGGED)
    assert list(result_members(plain)) == ["c.pdf"]
    check(result_members(plain)["c.pdf"], PLAIN)
