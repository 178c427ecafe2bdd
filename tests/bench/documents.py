"""Benchmark documents: realistic DOCX packages of an exact page count, built by hand.

Each document has a header part with its number, and per page a heading, body paragraphs, a
bordered table and a paragraph of Greek, Cyrillic, CJK and Arabic text; page 1 also shows an
in-line PNG image. Pages end in hard page breaks and each page's content fills about half an
A4 or Letter page, so the PDF has exactly as many pages as asked for. Page ``i`` (1-based)
contains the marker ``Document {index} page {i}`` in one run, so its text can be checked.

Only the standard library is used: the OPC parts are handwritten XML (with the helpers of
``tests.docx_factory``) and the image is a PNG encoded with ``zlib`` and ``struct``.
"""

from __future__ import annotations

import functools
import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from xml.sax.saxutils import escape

from tests.docx_factory import CONTENT_TYPES, PAGE_BREAK, W_NS, WORD_MAIN, root_rels

MAIN = "word/document.xml"
R_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
WP_NS = "http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing"
A_NS = "http://schemas.openxmlformats.org/drawingml/2006/main"
PIC_NS = "http://schemas.openxmlformats.org/drawingml/2006/picture"
REL_TYPE = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/"
CT_PREFIX = "application/vnd.openxmlformats-officedocument.wordprocessingml."
HEADER_CONTENT_TYPE = CT_PREFIX + "header+xml"
STYLES_CONTENT_TYPE = CT_PREFIX + "styles+xml"

IMAGE_SIZE = 64  # pixels a side
IMAGE_EMU = 914400  # drawn one inch a side
TABLE_ROWS, TABLE_COLUMNS = 4, 5
NO_SPACING = '<w:spacing w:after="0"/>'
HEADER_STYLE = '<w:pStyle w:val="Header"/>'
AFTER_TABLE = '<w:spacing w:before="160"/>'

# Non-Latin samples, a paragraph each on every page. Greek, Cyrillic and CJK come back intact
# from pypdf's text extraction; Arabic comes back in visual order without its spaces.
NON_LATIN = {
    "greek": "Καλημέρα κόσμε, η μετατροπή ολοκληρώθηκε.",
    "cyrillic": "Съешь же ещё этих мягких французских булок.",
    "cjk": "本文档已成功转换为便携式文档格式。",
    "arabic": "تم تحويل المستند بنجاح.",
}

SENTENCES = [
    "The quarterly figures were reconciled against the ledger before the review meeting.",
    "Each department submitted its forecast on time, and two of them revised it afterwards.",
    "Shipping costs rose in the spring, mostly because of longer routes and higher fuel prices.",
    "The committee approved the new procurement policy with minor changes to section four.",
    "Customer satisfaction improved slightly, although response times remained uneven.",
    "Maintenance of the northern warehouse is scheduled for the second half of the year.",
    "A summary of open risks and their owners is attached to the end of this report.",
    "Training sessions for the new accounting system will start once the pilot is complete.",
    "Energy consumption fell by six percent after the lighting upgrade in the main office.",
    "Several suppliers have agreed to extend payment terms from thirty to forty-five days.",
]
TABLE_HEADINGS = ["Region", "Q1", "Q2", "Q3", "Q4"]
REGIONS = ["North", "South", "East", "West", "Central", "Coastal", "Highlands"]


def marker(index: int, page: int) -> str:
    """The text that identifies page ``page`` (1-based) of document ``index``."""
    return f"Document {index} page {page}"


def header_text(index: int) -> str:
    """The text of the header shown on every page of document ``index``."""
    return f"Quire benchmark report no. {index}"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


@functools.cache
def png_image(size: int = IMAGE_SIZE) -> bytes:
    """A ``size`` x ``size`` 8-bit RGB gradient PNG."""
    rows = bytearray()
    for y in range(size):
        rows.append(0)  # filter type: none
        for x in range(size):
            rows += bytes((x * 255 // (size - 1), y * 255 // (size - 1), 160))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + _png_chunk(b"IEND", b"")
    )


def _run(text: str, properties: str = "") -> str:
    rpr = f"<w:rPr>{properties}</w:rPr>" if properties else ""
    return f'<w:r>{rpr}<w:t xml:space="preserve">{escape(text)}</w:t></w:r>'


def _paragraph(content: str, properties: str = "") -> str:
    ppr = f"<w:pPr>{properties}</w:pPr>" if properties else ""
    return f"<w:p>{ppr}{content}</w:p>"


def _body_text(index: int, page: int, paragraph: int, sentences: int = 3) -> str:
    start = index * 7 + page * 3 + paragraph * 5
    return " ".join(SENTENCES[(start + k) % len(SENTENCES)] for k in range(sentences))


def _table(index: int, page: int) -> str:
    width = 9026 // TABLE_COLUMNS  # A4 text width (11906 - 2 * 1440 twips) shared equally
    grid = "".join(f'<w:gridCol w:w="{width}"/>' for _ in range(TABLE_COLUMNS))
    rows = []
    for row in range(TABLE_ROWS):
        cells = []
        for column in range(TABLE_COLUMNS):
            if row == 0:
                text, bold = TABLE_HEADINGS[column], "<w:b/>"
            elif column == 0:
                text, bold = REGIONS[(index + page + row) % len(REGIONS)], ""
            else:
                value = (index * 37 + page * 11 + row * 7 + column * 13) % 900 + 100
                text, bold = f"{value}.{(row * column) % 10}0", ""
            cells.append(
                f'<w:tc><w:tcPr><w:tcW w:w="{width}" w:type="dxa"/></w:tcPr>'
                f"{_paragraph(_run(text, bold), NO_SPACING)}</w:tc>"
            )
        rows.append("<w:tr>" + "".join(cells) + "</w:tr>")
    return (
        '<w:tbl><w:tblPr><w:tblStyle w:val="TableGrid"/><w:tblW w:w="0" w:type="auto"/>'
        '<w:tblLook w:val="04A0" w:firstRow="1" w:lastRow="0" w:firstColumn="1" '
        'w:lastColumn="0" w:noHBand="0" w:noVBand="1"/></w:tblPr>'
        f"<w:tblGrid>{grid}</w:tblGrid>{''.join(rows)}</w:tbl>"
    )


def _image(relationship: str) -> str:
    return (
        "<w:r><w:drawing>"
        '<wp:inline distT="0" distB="0" distL="0" distR="0">'
        f'<wp:extent cx="{IMAGE_EMU}" cy="{IMAGE_EMU}"/>'
        '<wp:effectExtent l="0" t="0" r="0" b="0"/>'
        '<wp:docPr id="1" name="Picture 1" descr="Colour gradient"/>'
        '<wp:cNvGraphicFramePr><a:graphicFrameLocks noChangeAspect="1"/></wp:cNvGraphicFramePr>'
        f'<a:graphic><a:graphicData uri="{PIC_NS}"><pic:pic>'
        '<pic:nvPicPr><pic:cNvPr id="0" name="image1.png"/><pic:cNvPicPr/></pic:nvPicPr>'
        f'<pic:blipFill><a:blip r:embed="{relationship}"/>'
        "<a:stretch><a:fillRect/></a:stretch></pic:blipFill>"
        '<pic:spPr><a:xfrm><a:off x="0" y="0"/>'
        f'<a:ext cx="{IMAGE_EMU}" cy="{IMAGE_EMU}"/></a:xfrm>'
        '<a:prstGeom prst="rect"><a:avLst/></a:prstGeom></pic:spPr>'
        "</pic:pic></a:graphicData></a:graphic></wp:inline></w:drawing></w:r>"
    )


def _non_latin() -> str:
    """One paragraph per script, so that no line wraps in the middle of a sample."""
    return (
        _paragraph(_run(NON_LATIN["greek"], '<w:lang w:val="el-GR"/>'))
        + _paragraph(_run(NON_LATIN["cyrillic"], '<w:lang w:val="ru-RU"/>'))
        + _paragraph(
            _run(NON_LATIN["cjk"], '<w:rFonts w:hint="eastAsia"/><w:lang w:eastAsia="zh-CN"/>')
        )
        + _paragraph(_run(NON_LATIN["arabic"], '<w:rtl/><w:lang w:bidi="ar-SA"/>'), "<w:bidi/>")
    )


def _page(index: int, page: int) -> str:
    parts = [
        _paragraph(
            _run(f"{marker(index, page)}: operations review"), '<w:pStyle w:val="Heading1"/>'
        ),
    ]
    if page == 1:
        parts.append(_paragraph(_image("rId3"), '<w:jc w:val="center"/>'))
    parts += [_paragraph(_run(_body_text(index, page, n))) for n in range(2)]
    parts.append(_table(index, page))
    parts.append(_paragraph(_run(_body_text(index, page, 2, sentences=2)), AFTER_TABLE))
    parts.append(_non_latin())
    return "".join(parts)


def _document_xml(index: int, pages: int) -> str:
    body = PAGE_BREAK.join(_page(index, page) for page in range(1, pages + 1))
    section = (
        '<w:sectPr><w:headerReference w:type="default" r:id="rId2"/>'
        '<w:pgSz w:w="11906" w:h="16838"/>'
        '<w:pgMar w:top="1440" w:right="1440" w:bottom="1440" w:left="1440" '
        'w:header="708" w:footer="708" w:gutter="0"/></w:sectPr>'
    )
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f'<w:document xmlns:w="{W_NS}" xmlns:r="{R_NS}" xmlns:wp="{WP_NS}" '
        f'xmlns:a="{A_NS}" xmlns:pic="{PIC_NS}"><w:body>{body}{section}</w:body></w:document>'
    )


def _header_xml(index: int) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f'<w:hdr xmlns:w="{W_NS}" xmlns:r="{R_NS}">'
        f"{_paragraph(_run(header_text(index)), HEADER_STYLE)}</w:hdr>"
    )


STYLES_XML = f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:styles xmlns:w="{W_NS}">
<w:docDefaults><w:rPrDefault><w:rPr>
<w:rFonts w:ascii="Calibri" w:hAnsi="Calibri" w:eastAsia="Noto Sans CJK SC" w:cs="Arial"/>
<w:sz w:val="22"/><w:szCs w:val="22"/><w:lang w:val="en-GB" w:eastAsia="zh-CN" w:bidi="ar-SA"/>
</w:rPr></w:rPrDefault>
<w:pPrDefault><w:pPr><w:spacing w:after="160" w:line="259" w:lineRule="auto"/></w:pPr>
</w:pPrDefault></w:docDefaults>
<w:style w:type="paragraph" w:default="1" w:styleId="Normal"><w:name w:val="Normal"/></w:style>
<w:style w:type="paragraph" w:styleId="Heading1"><w:name w:val="heading 1"/>
<w:basedOn w:val="Normal"/><w:next w:val="Normal"/>
<w:pPr><w:keepNext/><w:spacing w:before="240" w:after="120"/><w:outlineLvl w:val="0"/></w:pPr>
<w:rPr><w:b/><w:color w:val="2F5496"/><w:sz w:val="32"/><w:szCs w:val="32"/></w:rPr></w:style>
<w:style w:type="paragraph" w:styleId="Header"><w:name w:val="header"/>
<w:basedOn w:val="Normal"/><w:pPr><w:spacing w:after="0"/><w:jc w:val="right"/></w:pPr>
<w:rPr><w:color w:val="595959"/><w:sz w:val="18"/></w:rPr></w:style>
<w:style w:type="table" w:default="1" w:styleId="TableNormal"><w:name w:val="Normal Table"/>
<w:tblPr><w:tblInd w:w="0" w:type="dxa"/><w:tblCellMar><w:top w:w="0" w:type="dxa"/>
<w:left w:w="108" w:type="dxa"/><w:bottom w:w="0" w:type="dxa"/>
<w:right w:w="108" w:type="dxa"/></w:tblCellMar></w:tblPr></w:style>
<w:style w:type="table" w:styleId="TableGrid"><w:name w:val="Table Grid"/>
<w:basedOn w:val="TableNormal"/><w:tblPr><w:tblBorders>
<w:top w:val="single" w:sz="4" w:space="0" w:color="auto"/>
<w:left w:val="single" w:sz="4" w:space="0" w:color="auto"/>
<w:bottom w:val="single" w:sz="4" w:space="0" w:color="auto"/>
<w:right w:val="single" w:sz="4" w:space="0" w:color="auto"/>
<w:insideH w:val="single" w:sz="4" w:space="0" w:color="auto"/>
<w:insideV w:val="single" w:sz="4" w:space="0" w:color="auto"/>
</w:tblBorders></w:tblPr></w:style>
</w:styles>"""

DOCUMENT_RELS = f"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
<Relationship Id="rId1" Type="{REL_TYPE}styles" Target="styles.xml"/>
<Relationship Id="rId2" Type="{REL_TYPE}header" Target="header1.xml"/>
<Relationship Id="rId3" Type="{REL_TYPE}image" Target="media/image1.png"/>
</Relationships>"""

# The project's content types, plus the image default and the header and styles overrides.
BENCH_CONTENT_TYPES = CONTENT_TYPES.format(main=MAIN, content_type=WORD_MAIN).replace(
    "</Types>",
    '<Default Extension="png" ContentType="image/png"/>\n'
    f'<Override PartName="/word/header1.xml" ContentType="{HEADER_CONTENT_TYPE}"/>\n'
    f'<Override PartName="/word/styles.xml" ContentType="{STYLES_CONTENT_TYPE}"/>\n'
    "</Types>",
)


def bench_docx(index: int, pages: int) -> bytes:
    """A realistic DOCX of exactly ``pages`` pages whose page ``i`` contains ``marker(index, i)``.

    A header with the document number, per page a heading, body paragraphs, a 4x5 table and
    Greek, Cyrillic, CJK and Arabic text, on page 1 an in-line PNG image; pages are separated
    by hard page breaks and each fits easily on one A4 or Letter page.
    """
    if pages < 1:
        raise ValueError(f"a document has at least one page, not {pages}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr("[Content_Types].xml", BENCH_CONTENT_TYPES)
        package.writestr("_rels/.rels", root_rels(MAIN))
        package.writestr(MAIN, _document_xml(index, pages))
        package.writestr("word/_rels/document.xml.rels", DOCUMENT_RELS)
        package.writestr("word/styles.xml", STYLES_XML)
        package.writestr("word/header1.xml", _header_xml(index))
        package.writestr("word/media/image1.png", png_image(), zipfile.ZIP_STORED)
    return buffer.getvalue()


def bench_zip(count: int, pages: int | Callable[[int], int], *, folder: str = "docs") -> bytes:
    """A zip of ``count`` bench documents named ``{folder}/doc-{i:05}.docx``, i from 0.

    ``pages`` is either every document's page count or a function of the index, such as
    ``lambda i: 1 + i % 3``.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(count):
            page_count = pages(i) if callable(pages) else pages
            archive.writestr(f"{folder}/doc-{i:05}.docx", bench_docx(i, page_count))
    return buffer.getvalue()
