"""Documents that ask for fonts, and a font no package ships, for the font report's tests."""

from __future__ import annotations

import io
import struct
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from tests.docx_factory import W_NS, WORD_MAIN

A_NS = "http://schemas.openxmlformats.org/drawingml/2006/main"
REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
STYLES_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.styles+xml"
THEME_TYPE = "application/vnd.openxmlformats-officedocument.theme+xml"
ADDED_FAMILY = "Quire Test Serif"  # no package ships it: added_font makes it
ADDED_POSTSCRIPT = "QuireTestSerif"  # its name in a PDF's /BaseFont
FONT_TABLE_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.fontTable+xml"


@dataclass(frozen=True)
class Run:
    """One paragraph of ``text`` whose run asks for fonts by slot (ascii, hAnsi, eastAsia, cs)
    or by theme (asciiTheme="minorHAnsi" ...), in an optional style and East Asian language."""

    text: str
    fonts: dict[str, str]
    style: str | None = None
    east_asian_language: str | None = None


def latin(family: str, text: str) -> Run:
    """A run in ``family`` as Word writes one for Latin text."""
    return Run(text, {"ascii": family, "hAnsi": family})


def _run_xml(run: Run) -> str:
    fonts = " ".join(f"w:{slot}={quoteattr(name)}" for slot, name in run.fonts.items())
    language = (
        f"<w:lang w:eastAsia={quoteattr(run.east_asian_language)}/>"
        if run.east_asian_language
        else ""
    )
    style = f"<w:pPr><w:pStyle w:val={quoteattr(run.style)}/></w:pPr>" if run.style else ""
    return (
        f"<w:p>{style}<w:r><w:rPr><w:rFonts {fonts}/>{language}</w:rPr>"
        f'<w:t xml:space="preserve">{escape(run.text)}</w:t></w:r></w:p>'
    )


def fonts_docx(
    *runs: Run,
    styles: str | None = None,
    theme: dict[str, str] | None = None,
    font_table: list[str] = (),  # type: ignore[assignment]
) -> bytes:
    """A DOCX of ``runs``; ``styles`` is the inside of w:styles; ``theme`` maps
    "minor_latin", "major_latin", "minor_ea" ... to typefaces; ``font_table`` lists fonts in
    word/fontTable.xml (which the report does not read)."""
    parts = {"/word/document.xml": WORD_MAIN}
    relationships = []
    files: dict[str, str] = {}
    if styles is not None:
        parts["/word/styles.xml"] = STYLES_TYPE
        relationships.append(("styles", "styles.xml"))
        files["word/styles.xml"] = f'<w:styles xmlns:w="{W_NS}">{styles}</w:styles>'
    if theme is not None:
        parts["/word/theme/theme1.xml"] = THEME_TYPE

        def group(kind: str) -> str:
            return "".join(
                f"<a:{script} typeface={quoteattr(theme.get(f'{kind}_{script}', ''))}/>"
                for script in ("latin", "ea", "cs")
            )

        relationships.append(("theme", "theme/theme1.xml"))
        files["word/theme/theme1.xml"] = (
            f'<a:theme xmlns:a="{A_NS}" name="Office"><a:themeElements>'
            f'<a:fontScheme name="Office"><a:majorFont>{group("major")}</a:majorFont>'
            f"<a:minorFont>{group('minor')}</a:minorFont></a:fontScheme>"
            "</a:themeElements></a:theme>"
        )
    if font_table:
        parts["/word/fontTable.xml"] = FONT_TABLE_TYPE
        relationships.append(("fontTable", "fontTable.xml"))
        fonts = "".join(f"<w:font w:name={quoteattr(name)}/>" for name in font_table)
        files["word/fontTable.xml"] = f'<w:fonts xmlns:w="{W_NS}">{fonts}</w:fonts>'
    body = "".join(_run_xml(run) for run in runs)
    files["word/document.xml"] = (
        f'<w:document xmlns:w="{W_NS}"><w:body>{body}</w:body></w:document>'
    )
    overrides = "".join(
        f'<Override PartName="{name}" ContentType="{kind}"/>' for name, kind in parts.items()
    )
    files["[Content_Types].xml"] = (
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        f'<Default Extension="xml" ContentType="application/xml"/>{overrides}</Types>'
    )
    files["_rels/.rels"] = (
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{REL}/officeDocument" Target="word/document.xml"/>'
        "</Relationships>"
    )
    files["word/_rels/document.xml.rels"] = (
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        + "".join(
            f'<Relationship Id="rId{n}" Type="{REL}/{kind}" Target="{target}"/>'
            for n, (kind, target) in enumerate(relationships, start=1)
        )
        + "</Relationships>"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as package:
        for name, text in files.items():
            package.writestr(name, '<?xml version="1.0" encoding="UTF-8"?>' + text)
    return buffer.getvalue()


# -- a font no package ships ------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    data += b"\0" * (-len(data) % 4)
    words: tuple[int, ...] = struct.unpack(f">{len(data) // 4}I", data)
    return sum(words) & 0xFFFFFFFF


def _name_table(family: str) -> bytes:
    """A 'name' table (format 0) naming only ``family``, for Windows Unicode English."""
    postscript = family.replace(" ", "")
    names = {1: family, 2: "Regular", 3: f"{postscript};Quire test", 4: family, 6: postscript}
    records, strings = [], b""
    for name_id, text in names.items():
        encoded = text.encode("utf-16-be")
        records.append(struct.pack(">6H", 3, 1, 0x409, name_id, len(encoded), len(strings)))
        strings += encoded
    header = struct.pack(">3H", 0, len(records), 6 + 12 * len(records))
    return header + b"".join(records) + strings


def renamed_font(source: Path, family: str) -> bytes:
    """A copy of the TrueType font ``source`` whose 'name' table calls it ``family`` (and
    nothing else): a font that no package ships, made with struct alone. The new table goes at
    the end of the file and its directory entry points there."""
    data = bytearray(source.read_bytes())
    count = struct.unpack_from(">H", data, 4)[0]
    table = _name_table(family)
    for index in range(count):
        entry = 12 + 16 * index
        if bytes(data[entry : entry + 4]) == b"name":
            data += b"\0" * (-len(data) % 4)
            offset = len(data)
            struct.pack_into(">III", data, entry + 4, _checksum(table), offset, len(table))
            data += table
            return bytes(data)
    raise ValueError(f"{source} has no name table")


def added_font(folder: Path) -> Path:
    """``folder``, made, holding a font that no package ships: DejaVu Serif renamed
    ADDED_FAMILY."""
    dejavu = subprocess.run(
        ["fc-match", "-f", "%{file}", "DejaVu Serif"], capture_output=True, text=True, check=True
    ).stdout
    if not dejavu.endswith(".ttf"):
        raise RuntimeError(f"DejaVu Serif is not installed as a TrueType file: {dejavu!r}")
    folder.mkdir(parents=True)
    (folder / "quire-test-serif.ttf").write_bytes(renamed_font(Path(dejavu), ADDED_FAMILY))
    return folder


NOBODY = "Nobody Has This Typeface"  # no font has it, no rule knows it: missing
CHINESE = "你好世界。这是一段中文文本。"


def report_documents() -> dict[str, bytes]:
    """The three documents each kind's font report is tested on (issue #18): one asking for
    Calibri, one for a font nobody has, one with Chinese text in SimSun, as Word writes a
    Chinese run (SimSun in every slot, the text's language on the run)."""
    return {
        "calibri": fonts_docx(latin("Calibri", "Text in Calibri")),
        "nobody": fonts_docx(latin(NOBODY, "Text in a font nobody has")),
        "chinese": fonts_docx(
            Run(
                CHINESE,
                {"ascii": "SimSun", "hAnsi": "SimSun", "eastAsia": "SimSun"},
                east_asian_language="zh-CN",
            )
        ),
    }
