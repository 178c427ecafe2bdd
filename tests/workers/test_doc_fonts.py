"""What a Word 97-2003 .doc asks for (workers/doc_fonts.py), and its font report.

The documents are DOCX files saved as .doc by LibreOffice itself; the reports come from real
conversions of those .doc files and the machine's fontconfig (Carlito for Calibri, Noto CJK for
Chinese, DejaVu as the fallback). The hostile ones are those streams, altered where MS-DOC says
each structure lies, or cut short.
"""

from __future__ import annotations

import io
import random
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest

from app.config import get_settings
from tests.font_docs import NOBODY, Run, fonts_docx, latin, report_documents
from tests.saved_documents import saved_by_libreoffice
from workers import doc_fonts, fonts
from workers.font_requests import DocumentTooLarge, Requested
from workers.libreoffice import Converter
from workers.libreoffice.uno import UnoConverter
from workers.ole2 import CompoundFile

# Styles as Word writes them: Normal, a heading based on another style, and one no text uses.
STYLES = (
    '<w:style w:type="paragraph" w:default="1" w:styleId="Normal"><w:name w:val="Normal"/>'
    '<w:rPr><w:rFonts w:ascii="Garamond" w:hAnsi="Garamond"/></w:rPr></w:style>'
    '<w:style w:type="paragraph" w:styleId="Base"><w:name w:val="Base"/>'
    '<w:rPr><w:rFonts w:cs="Arial"/></w:rPr></w:style>'
    '<w:style w:type="paragraph" w:styleId="Heading1"><w:name w:val="Heading One"/>'
    '<w:basedOn w:val="Base"/><w:rPr><w:rFonts w:ascii="Cambria" w:hAnsi="Cambria"/></w:rPr>'
    "</w:style>"
    '<w:style w:type="paragraph" w:styleId="Unused"><w:name w:val="Unused"/>'
    '<w:rPr><w:rFonts w:ascii="Unused Style Font" w:hAnsi="Unused Style Font"/></w:rPr></w:style>'
)
CHARACTER_STYLES = (
    '<w:style w:type="character" w:styleId="CodeChar"><w:name w:val="Code Char"/>'
    '<w:rPr><w:rFonts w:ascii="Consolas" w:hAnsi="Consolas"/></w:rPr></w:style>'
    '<w:style w:type="character" w:styleId="UnusedChar"><w:name w:val="Unused Char"/>'
    '<w:rPr><w:rFonts w:ascii="Unused Char Font" w:hAnsi="Unused Char Font"/></w:rPr></w:style>'
)


def with_run_style(docx: bytes, style_id: str) -> bytes:
    """The DOCX with its first run in the character style ``style_id``."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(docx)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "word/document.xml":
                reference = f'<w:rPr><w:rStyle w:val="{style_id}"/>'.encode()
                data = data.replace(b"<w:rPr>", reference, 1)
            target.writestr(info, data)
    return out.getvalue()


DOCUMENTS = {
    **report_documents(),
    "styled": fonts_docx(
        Run("A heading", {}, style="Heading1"), latin("Courier New", "Code"), styles=STYLES
    ),
    "character-style": with_run_style(
        fonts_docx(Run("x = 1", {}), styles=CHARACTER_STYLES), "CodeChar"
    ),
}
LIMIT = get_settings().max_part_expanded_bytes
# MS-DOC: FibRgFcLcb97's pairs follow the FIB's fixed parts (csw 14 words, cslw 22 longs).
FC_LCB_AT = 154
STSHF, PLCF_BTE_CHPX, STTBF_FFN, CLX = 1, 12, 15, 33


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return saved_by_libreoffice(DOCUMENTS, "doc", tmp_path_factory.mktemp("doc-fonts"))


@pytest.fixture(scope="module")
def converter(module_converter: UnoConverter) -> Converter:
    return module_converter


def report_of(converter: Converter, doc: Path, folder: Path) -> dict[str, Any] | None:
    pdf = folder / "output.pdf"
    converter.convert(doc, pdf, 60)
    return fonts.font_report(doc, pdf, get_settings())


def streams(doc: Path) -> tuple[bytearray, bytearray]:
    """The WordDocument stream and its table stream, to alter."""
    with open(doc, "rb") as handle:
        compound = CompoundFile(handle)
        word = compound.read_stream("WordDocument", compound.entries["WordDocument"].size)
        table_name = "1Table" if word[0x0B] & 0x02 else "0Table"
        table = compound.read_stream(table_name, compound.entries[table_name].size)
    # LibreOffice writes Word 97's FIB: its counts put FibRgFcLcb97 where FC_LCB_AT says.
    assert struct.unpack_from("<H", word, 32)[0] == 14
    assert struct.unpack_from("<H", word, 62)[0] == 22
    return bytearray(word), bytearray(table)


def location(word: bytes | bytearray, index: int) -> tuple[int, int]:
    fc, lcb = struct.unpack_from("<II", word, FC_LCB_AT + 8 * index)
    return fc, lcb


# -- real documents, real conversions ---------------------------------------------------------


def test_fonts_kind_dispatches_a_doc_to_this_reader() -> None:
    assert fonts.reader_for(Path("input.doc")) is doc_fonts.requested_fonts


def test_calibri_is_asked_for_and_reported_as_replaced_by_carlito(
    docs: dict[str, Path], converter: Converter, tmp_path: Path
) -> None:
    requested = doc_fonts.requested_fonts(docs["calibri"], LIMIT)
    assert requested.slots["Calibri"] == {"ascii", "hAnsi"}
    assert requested.east_asian_text is False
    # The other families asked for (LibreOffice's own for the East Asian and complex slots of
    # Normal) are installed: the report names Calibri alone.
    assert report_of(converter, docs["calibri"], tmp_path) == {
        "substituted": {"Calibri": {"used": "Carlito", "metric_compatible": True}},
        "missing": [],
    }


def test_a_font_nobody_has_is_missing(
    docs: dict[str, Path], converter: Converter, tmp_path: Path
) -> None:
    requested = doc_fonts.requested_fonts(docs["nobody"], LIMIT)
    assert requested.slots[NOBODY] == {"ascii", "hAnsi"}
    # LibreOffice saves its default font, Calibri, as the Normal style's: the .doc asks for it.
    assert requested.slots["Calibri"] == {"ascii", "hAnsi"}
    assert report_of(converter, docs["nobody"], tmp_path) == {
        "substituted": {"Calibri": {"used": "Carlito", "metric_compatible": True}},
        "missing": [NOBODY],
    }


def test_chinese_text_in_a_chinese_font_is_asked_for_in_the_east_asian_slot(
    docs: dict[str, Path], converter: Converter, tmp_path: Path
) -> None:
    requested = doc_fonts.requested_fonts(docs["chinese"], LIMIT)
    assert "eastAsia" in requested.slots["SimSun"]
    assert requested.east_asian_text is True  # found in the text through the piece table
    assert requested.east_asian_language == "zh-cn"
    report = report_of(converter, docs["chinese"], tmp_path)
    assert report is not None and report["missing"] == []
    used = report["substituted"]["SimSun"]
    assert used["metric_compatible"] is False
    assert used["used"].startswith("Noto Serif CJK")  # what LibreOffice drew the text with


def test_only_the_fonts_the_text_uses_are_asked_for(docs: dict[str, Path]) -> None:
    requested = doc_fonts.requested_fonts(docs["styled"], LIMIT)
    assert requested.slots == {
        "Courier New": {"ascii", "hAnsi"},  # the run's
        "Cambria": {"ascii", "hAnsi"},  # the heading's style
        "Arial": {"cs"},  # the style the heading's is based on
        "Garamond": {"ascii", "hAnsi"},  # Normal, the second paragraph's style
        # LibreOffice's own, in Normal's other slots.
        "Noto Serif CJK SC": {"eastAsia"},
        "DejaVu Sans": {"cs"},
    }
    # The document holds more, which no text uses: an unused style's font, and the font
    # table's Times New Roman, Symbol and Liberation Serif.
    data = docs["styled"].read_bytes()
    for unused in ("Unused Style Font", "Times New Roman", "Symbol", "Liberation Serif"):
        assert unused.encode("utf-16-le") in data
        assert unused not in requested.slots


def test_a_runs_character_style_is_asked_for_and_an_unused_one_is_not(
    docs: dict[str, Path],
) -> None:
    requested = doc_fonts.requested_fonts(docs["character-style"], LIMIT)
    assert requested.slots["Consolas"] == {"ascii", "hAnsi"}  # the run's style (sprmCIstd)
    assert "Unused Char Font".encode("utf-16-le") in docs["character-style"].read_bytes()
    assert "Unused Char Font" not in requested.slots


# -- hostile documents --------------------------------------------------------------------------


def test_a_word_6_or_95_layout_gives_no_report_rather_than_an_empty_one(
    docs: dict[str, Path],
) -> None:
    word, table = streams(docs["calibri"])
    struct.pack_into("<HH", word, 0, 0xA5DC, 104)  # Word 95's identifier and nFib
    with pytest.raises(doc_fonts.UnreadableDoc, match="Word 6 or 95"):
        doc_fonts.requested_in(bytes(word), bytes(table))


def test_a_stream_larger_than_the_part_bound_is_not_read(docs: dict[str, Path]) -> None:
    size = len(streams(docs["calibri"])[0])
    with pytest.raises(DocumentTooLarge):
        doc_fonts.requested_fonts(docs["calibri"], size - 1)


@pytest.mark.parametrize("keep", [100, 511, 513, 2048, 0.5, -1])
def test_a_truncated_doc_fails_closed(docs: dict[str, Path], tmp_path: Path, keep: float) -> None:
    data = docs["calibri"].read_bytes()
    cut = tmp_path / "cut.doc"
    cut.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(doc_fonts.UnreadableDoc):
        doc_fonts.requested_fonts(cut, LIMIT)


def altered(word: bytearray, table: bytearray, change: str) -> None:
    """One lie, where MS-DOC says the structure lies."""
    if change == "csw counts past the stream":
        struct.pack_into("<H", word, 32, 0xFFFF)
    elif change == "fewer locations than Word 97's":
        struct.pack_into("<H", word, 152, 10)
    elif change == "font table past the stream":
        struct.pack_into("<I", word, FC_LCB_AT + 8 * STTBF_FFN, len(table) - 2)
    elif change == "65535 fonts":
        struct.pack_into("<H", table, location(word, STTBF_FFN)[0], 0xFFFF)
    elif change == "65535 styles":
        struct.pack_into("<H", table, location(word, STSHF)[0] + 2, 0xFFFF)
    elif change == "255 runs in a page":
        fc, lcb = location(word, PLCF_BTE_CHPX)
        page = struct.unpack_from("<I", table, fc + lcb - 4)[0] & 0x3FFFFF
        word[page * 512 + 511] = 255
    elif change == "a page past the stream":
        fc, lcb = location(word, PLCF_BTE_CHPX)
        struct.pack_into("<I", table, fc + lcb - 4, 0x3FFFFF)
    elif change == "no piece table":
        fc, _ = location(word, CLX)
        table[fc] = 7
    else:
        raise AssertionError(change)


@pytest.mark.parametrize(
    "change",
    [
        "csw counts past the stream",
        "fewer locations than Word 97's",
        "font table past the stream",
        "65535 fonts",
        "65535 styles",
        "255 runs in a page",
        "a page past the stream",
        "no piece table",
    ],
)
def test_structures_that_lie_fail_closed(docs: dict[str, Path], change: str) -> None:
    word, table = streams(docs["calibri"])
    assert doc_fonts.requested_in(bytes(word), bytes(table)).slots  # read as it is
    altered(word, table, change)
    with pytest.raises(doc_fonts.UnreadableDoc):
        doc_fonts.requested_in(bytes(word), bytes(table))


def test_a_style_based_on_itself_is_read_once(docs: dict[str, Path]) -> None:
    word, table = streams(docs["styled"])
    expected = doc_fonts.requested_in(bytes(word), bytes(table))
    # Normal (istd 0) is the stylesheet's first STD: after cbStshi, the Stshi and cbStd; its
    # istdBase is the high 12 bits of the STD's second word.
    fc, _ = location(word, STSHF)
    normal = fc + 2 + struct.unpack_from("<H", table, fc)[0] + 2
    kind = struct.unpack_from("<H", table, normal + 2)[0] & 0x000F
    struct.pack_into("<H", table, normal + 2, kind | (0 << 4))  # based on istd 0: itself
    assert doc_fonts.requested_in(bytes(word), bytes(table)) == expected


def test_a_page_named_a_hundred_thousand_times_is_read_once(
    docs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    word, table = streams(docs["calibri"])
    expected = doc_fonts.requested_in(bytes(word), bytes(table))
    fc, lcb = location(word, PLCF_BTE_CHPX)
    page = struct.unpack_from("<I", table, fc + lcb - 4)[0]
    count = 100_000
    plc = struct.pack(f"<{count + 1}I", *range(count + 1)) + struct.pack("<I", page) * count
    struct.pack_into("<II", word, FC_LCB_AT + 8 * PLCF_BTE_CHPX, len(table), len(plc))
    table += plc
    read: list[int] = []
    real_page = doc_fonts._page

    def counted(stream: bytes, number: int) -> bytes:
        read.append(number)
        return real_page(stream, number)

    monkeypatch.setattr(doc_fonts, "_page", counted)
    assert doc_fonts.requested_in(bytes(word), bytes(table)) == expected
    assert read.count(page & 0x3FFFFF) <= 2  # once for the runs, once if a paragraph page


def test_overlapping_pieces_are_searched_no_further_than_the_stream(
    docs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    word, table = streams(docs["calibri"])
    # 10,000 pieces, each claiming the whole stream as UTF-16 text from its start.
    count, characters = 10_000, len(word) // 2
    positions = struct.pack(f"<{count + 1}I", *(characters * n for n in range(count + 1)))
    pieces = struct.pack("<HIH", 0, 0, 0) * count
    plc = positions + pieces
    clx = b"\x02" + struct.pack("<I", len(plc)) + plc
    struct.pack_into("<II", word, FC_LCB_AT + 8 * CLX, len(table), len(clx))
    table += clx
    searched: list[int] = []

    class Counting:
        def search(self, text: str) -> re.Match[str] | None:
            searched.append(len(text))
            return None

    monkeypatch.setattr(doc_fonts, "EAST_ASIAN", Counting())
    assert doc_fonts.requested_in(bytes(word), bytes(table)).east_asian_text is False
    assert 0 < sum(searched) <= len(word) // 2


def test_random_damage_is_read_or_refused_never_a_crash(docs: dict[str, Path]) -> None:
    original = streams(docs["styled"])
    outcomes = {"read": 0, "refused": 0}
    for seed in range(400):
        rng = random.Random(seed)
        word, table = bytearray(original[0]), bytearray(original[1])
        for _ in range(rng.randint(1, 8)):
            stream = rng.choice((word, table))
            stream[rng.randrange(len(stream))] = rng.randrange(256)
        try:
            result = doc_fonts.requested_in(bytes(word), bytes(table))
        except doc_fonts.UnreadableDoc:
            outcomes["refused"] += 1
        else:
            assert isinstance(result, Requested)
            outcomes["read"] += 1
    assert outcomes["read"] and outcomes["refused"]  # both paths were exercised
