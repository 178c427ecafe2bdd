"""Hostile DOCX packages: every carrier we know that makes LibreOffice read a file, crossed with
every way we know to hide the reference from a filter (issue 12).

Importable by any test: ``write_secrets`` puts the files a hostile document tries to read into a
folder, ``hostile_documents`` yields one ``Hostile`` document per carrier and evasion that
points at them, and ``leaks`` says whether a PDF holds any of them. The secret picture has an
unusual size (173x97 px), so that it is recognised among a PDF's image XObjects whatever
LibreOffice re-encoded; text secrets carry a marker that no document contains.

The package builders (``package``, ``picture``, ``filled_shape``...) are shared with
tests/workers/test_remote_content.py, which points the same carriers at a web server.
"""

from __future__ import annotations

import base64
import io
import struct
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from pypdf import PdfReader

from tests.docx_factory import W_NS, WORD_MAIN, root_rels

# -- package builders --------------------------------------------------------------------------

R_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/"
NAMESPACES = (
    f'xmlns:w="{W_NS}" xmlns:r="{R_NS}" '
    'xmlns:wp="http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing" '
    'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
    'xmlns:pic="http://schemas.openxmlformats.org/drawingml/2006/picture" '
    'xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape" '
    'xmlns:v="urn:schemas-microsoft-com:vml" '
    'xmlns:o="urn:schemas-microsoft-com:office:office"'
)
PART_TYPE = "application/vnd.openxmlformats-officedocument."
VISIBLE = "Visible text survives"
Relationship = tuple[str, str, str]  # (id, type, target)


@dataclass
class Part:
    content_type: str
    data: str | bytes
    external: Sequence[Relationship] = field(default_factory=list)


def _attribute(value: str) -> str:
    """An XML attribute value with control characters as character references: written
    literally, a tab or newline would be normalised to a space by the parser."""
    text = quoteattr(value)
    return "".join(f"&#{ord(ch)};" if ord(ch) < 0x20 else ch for ch in text)


def rels_xml(
    external: Sequence[Relationship],
    internal: Sequence[Relationship] = (),
    *,
    mode: str | None = "External",
    encoding: str = "UTF-8",
) -> bytes:
    """A relationship part; ``external`` get TargetMode ``mode`` (None: no TargetMode at all,
    which OPC reads as Internal), encoded in ``encoding`` (UTF-16 with its byte order mark)."""
    mode_attribute = "" if mode is None else f" TargetMode={quoteattr(mode)}"
    items = [
        f'<Relationship Id="{rid}" Type="{REL}{kind}" Target={_attribute(target)}{mode_attribute}/>'
        for rid, kind, target in external
    ] + [
        f'<Relationship Id="{rid}" Type="{REL}{kind}" Target={_attribute(target)}/>'
        for rid, kind, target in internal
    ]
    text = (
        f'<?xml version="1.0" encoding="{encoding}" standalone="yes"?>'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        + "".join(items)
        + "</Relationships>"
    )
    return text.encode("utf-16" if encoding.upper() == "UTF-16" else encoding)


def package(
    body: str,
    external: Sequence[Relationship] = (),
    *,
    prolog: str = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>',
    before_body: str = "",
    parts: dict[str, tuple[Relationship, Part]] | None = None,
    mode: str | None = "External",
    rels_encoding: str = "UTF-8",
    extra_defaults: str = "",
) -> bytes:
    """A DOCX whose word/document.xml has a visible paragraph and then ``body``; ``external``
    are the document's external relationships (TargetMode ``mode``, every relationship part
    encoded in ``rels_encoding``), ``parts`` further parts by name, each with the document's
    relationship to it."""
    parts = parts or {}
    overrides = "".join(
        f'<Override PartName="/{name}" ContentType="{part.content_type}"/>'
        for name, (_, part) in parts.items()
    )
    content_types = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Default Extension="png" ContentType="image/png"/>'
        '<Default Extension="svg" ContentType="image/svg+xml"/>'
        f"{extra_defaults}"
        f'<Override PartName="/word/document.xml" ContentType="{WORD_MAIN}"/>'
        f"{overrides}</Types>"
    )
    document = (
        f"{prolog}<w:document {NAMESPACES}>{before_body}<w:body>"
        f"<w:p><w:r><w:t>{VISIBLE}</w:t></w:r></w:p>{body}</w:body></w:document>"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", content_types)
        archive.writestr("_rels/.rels", root_rels("word/document.xml"))
        archive.writestr("word/document.xml", document)
        internal = [relation for relation, _ in parts.values()]
        archive.writestr(
            "word/_rels/document.xml.rels",
            rels_xml(external, internal, mode=mode, encoding=rels_encoding),
        )
        for name, (_, part) in parts.items():
            archive.writestr(name, part.data)
            if part.external:
                folder, _, leaf = name.rpartition("/")
                archive.writestr(
                    f"{folder}/_rels/{leaf}.rels",
                    rels_xml(part.external, mode=mode, encoding=rels_encoding),
                )
    return buffer.getvalue()


def picture(blip: str) -> str:
    """An inline DrawingML picture whose ``a:blip`` element is ``blip``."""
    return (
        '<w:p><w:r><w:drawing><wp:inline distT="0" distB="0" distL="0" distR="0">'
        '<wp:extent cx="952500" cy="952500"/><wp:docPr id="1" name="Picture"/>'
        '<a:graphic><a:graphicData uri="http://schemas.openxmlformats.org/drawingml/2006/picture">'
        '<pic:pic><pic:nvPicPr><pic:cNvPr id="1" name="remote.png"/><pic:cNvPicPr/></pic:nvPicPr>'
        f"<pic:blipFill>{blip}<a:stretch><a:fillRect/></a:stretch></pic:blipFill>"
        '<pic:spPr><a:xfrm><a:off x="0" y="0"/><a:ext cx="952500" cy="952500"/></a:xfrm>'
        '<a:prstGeom prst="rect"><a:avLst/></a:prstGeom></pic:spPr></pic:pic>'
        "</a:graphicData></a:graphic></wp:inline></w:drawing></w:r></w:p>"
    )


def filled_shape(relationship_id: str, attribute: str = "r:link") -> str:
    """A floating Word 2010 rectangle filled with the picture ``relationship_id`` names."""
    return (
        "<w:p><w:r><w:drawing>"
        '<wp:anchor distT="0" distB="0" distL="0" distR="0" simplePos="0" relativeHeight="2" '
        'behindDoc="0" locked="0" layoutInCell="1" allowOverlap="1">'
        '<wp:simplePos x="0" y="0"/>'
        '<wp:positionH relativeFrom="column"><wp:posOffset>0</wp:posOffset></wp:positionH>'
        '<wp:positionV relativeFrom="paragraph"><wp:posOffset>0</wp:posOffset></wp:positionV>'
        '<wp:extent cx="952500" cy="952500"/><wp:wrapNone/><wp:docPr id="3" name="Shape"/>'
        "<a:graphic><a:graphicData "
        'uri="http://schemas.microsoft.com/office/word/2010/wordprocessingShape">'
        '<wps:wsp><wps:cNvSpPr/><wps:spPr><a:xfrm><a:off x="0" y="0"/>'
        '<a:ext cx="952500" cy="952500"/></a:xfrm><a:prstGeom prst="rect"><a:avLst/></a:prstGeom>'
        f'<a:blipFill><a:blip {attribute}="{relationship_id}"/><a:stretch><a:fillRect/>'
        "</a:stretch></a:blipFill></wps:spPr><wps:bodyPr/></wps:wsp></a:graphicData></a:graphic>"
        "</wp:anchor></w:drawing></w:r></w:p>"
    )


def vml_picture(imagedata: str) -> str:
    return (
        '<w:p><w:r><w:pict><v:shape id="_x0000_i1025" type="#_x0000_t75" '
        f'style="width:75pt;height:75pt">{imagedata}</v:shape></w:pict></w:r></w:p>'
    )


def simple_field(instruction: str) -> str:
    return (
        f"<w:p><w:fldSimple w:instr={_attribute(f' {instruction} ')}>"
        "<w:r><w:t>field result</w:t></w:r></w:fldSimple></w:p>"
    )


def complex_field(instruction: str) -> str:
    return (
        '<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r>'
        f'<w:r><w:instrText xml:space="preserve"> {escape(instruction)} </w:instrText></w:r>'
        '<w:r><w:fldChar w:fldCharType="separate"/></w:r>'
        "<w:r><w:t>field result</w:t></w:r>"
        '<w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>'
    )


def settings(inner: str, external: Sequence[Relationship] = ()) -> dict[str, Any]:
    xml = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f'<w:settings xmlns:w="{W_NS}" xmlns:r="{R_NS}">{inner}</w:settings>'
    )
    part = Part(f"{PART_TYPE}wordprocessingml.settings+xml", xml, external)
    return {"word/settings.xml": (("rIdSettings", "settings", "settings.xml"), part)}


def theme(relationship: Relationship) -> dict[str, Any]:
    """A theme whose fill styles are a picture linked by ``relationship`` (id rIdT)."""
    fill = '<a:blipFill><a:blip r:link="rIdT"/><a:stretch><a:fillRect/></a:stretch></a:blipFill>'
    names = ["dk1", "lt1", "dk2", "lt2", "hlink", "folHlink"] + [f"accent{n}" for n in range(1, 7)]
    colours = "".join(f'<a:{name}><a:srgbClr val="336699"/></a:{name}>' for name in names)
    font = '<a:latin typeface="Carlito"/><a:ea typeface=""/><a:cs typeface=""/>'
    line = '<a:ln w="9525"><a:solidFill><a:schemeClr val="phClr"/></a:solidFill></a:ln>'
    effect = "<a:effectStyle><a:effectLst/></a:effectStyle>"
    xml = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<a:theme xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
        f'xmlns:r="{R_NS}" name="Remote"><a:themeElements>'
        f'<a:clrScheme name="Remote">{colours}</a:clrScheme>'
        f'<a:fontScheme name="Remote"><a:majorFont>{font}</a:majorFont>'
        f"<a:minorFont>{font}</a:minorFont></a:fontScheme>"
        f'<a:fmtScheme name="Remote"><a:fillStyleLst>{fill * 3}</a:fillStyleLst>'
        f"<a:lnStyleLst>{line * 3}</a:lnStyleLst><a:effectStyleLst>{effect * 3}</a:effectStyleLst>"
        f"<a:bgFillStyleLst>{fill * 3}</a:bgFillStyleLst></a:fmtScheme>"
        "</a:themeElements></a:theme>"
    )
    part = Part(f"{PART_TYPE}theme+xml", xml, [relationship])
    return {"word/theme/theme1.xml": (("rIdTheme", "theme", "theme/theme1.xml"), part)}


def header_or_footer(kind: str, content: str, external: Sequence[Relationship]) -> dict[str, Any]:
    tag = "hdr" if kind == "header" else "ftr"
    xml = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f"<w:{tag} {NAMESPACES}>{content}</w:{tag}>"
    )
    part = Part(f"{PART_TYPE}wordprocessingml.{kind}+xml", xml, external)
    return {f"word/{kind}1.xml": ((f"rId{kind}", kind, f"{kind}1.xml"), part)}


def section_with(kind: str) -> str:
    return f'<w:sectPr><w:{kind}Reference w:type="default" r:id="rId{kind}"/></w:sectPr>'


# -- the secrets -------------------------------------------------------------------------------

SECRET_SIZE = (173, 97)  # no picture a test document embeds has this size
SECRET_TEXT = "QUIRE-LOCAL-SECRET-7f3a"  # in the text files documents try to include


def png(width: int, height: int, rgb: tuple[int, int, int] = (200, 40, 90)) -> bytes:
    """A valid PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = b"\x00" + bytes(rgb) * width
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


SECRET_PNG = png(*SECRET_SIZE)


def secret_svg() -> str:
    """An SVG that shows the secret picture (inline, as a data: URI) and the marker."""
    width, height = SECRET_SIZE
    data = base64.b64encode(SECRET_PNG).decode()
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<image width="{width}" height="{height}" xlink:href="data:image/png;base64,{data}"/>'
        f'<text x="2" y="20">{SECRET_TEXT}</text></svg>'
    )


@dataclass(frozen=True)
class Secrets:
    """Files outside any job that documents try to read, by what they are."""

    picture: Path  # the 173x97 PNG
    svg: Path  # an SVG showing it
    text: Path  # plain text holding SECRET_TEXT
    html: Path  # HTML holding SECRET_TEXT and showing the picture
    docx: Path  # a Word document holding SECRET_TEXT and the picture


def write_secrets(folder: Path) -> Secrets:
    from tests.docx_factory import make_docx  # the plain builder, for a plain secret document

    folder.mkdir(parents=True, exist_ok=True)
    secrets = Secrets(
        picture=folder / "secret.png",
        svg=folder / "secret.svg",
        text=folder / "secret.txt",
        html=folder / "secret.html",
        docx=folder / "secret.docx",
    )
    secrets.picture.write_bytes(SECRET_PNG)
    secrets.svg.write_text(secret_svg())
    secrets.text.write_text(f"{SECRET_TEXT}\n")
    secrets.html.write_text(
        f"<html><body><p>{SECRET_TEXT}</p><img src={quoteattr(secrets.picture.name)}></body></html>"
    )
    secrets.docx.write_bytes(make_docx(SECRET_TEXT))
    return secrets


# Pictures the hostile documents embed themselves (the SVG fallback): any other image in a PDF
# came from outside the package.
OWN_PICTURE_SIZES = frozenset({(2, 2)})


def pdf_images(pdf: bytes) -> list[tuple[int, int]]:
    """The size of every image XObject in the PDF, also those inside form XObjects (which is
    how LibreOffice exports an imported SVG or PDF) and annotation appearances."""
    reader = PdfReader(io.BytesIO(pdf))
    sizes: list[tuple[int, int]] = []
    seen: set[int] = set()

    def walk(resources: Any) -> None:
        resources = resources.get_object() if resources is not None else None
        if not resources or "/XObject" not in resources:
            return
        for reference in resources["/XObject"].values():
            number = getattr(reference, "idnum", None)
            if number is not None:
                if number in seen:
                    continue
                seen.add(number)
            xobject = reference.get_object()
            if xobject.get("/Subtype") == "/Image":
                sizes.append((int(xobject["/Width"]), int(xobject["/Height"])))
            elif xobject.get("/Subtype") == "/Form":
                walk(xobject.get("/Resources"))

    for page in reader.pages:
        walk(page.get("/Resources"))
        for annotation in page.get("/Annots") or []:
            appearance = annotation.get_object().get("/AP")
            normal = appearance.get("/N") if appearance else None
            if normal is not None and normal.get_object().get("/Subtype") == "/Form":
                walk(normal.get_object().get("/Resources"))
    return sizes


def pdf_text(pdf: bytes) -> str:
    reader = PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() or "" for page in reader.pages)


def leaks(pdf: bytes) -> list[str]:
    """What of the secrets the PDF holds: "picture" (an image of the secret's size), "text"
    (the marker), or "image WxH" (any other picture the document does not embed itself: a
    secret PDF is rasterised at its page's size)."""
    found = []
    if SECRET_TEXT in "".join(pdf_text(pdf).split()):
        found.append("text")
    for size in sorted(set(pdf_images(pdf)) - OWN_PICTURE_SIZES):
        found.append("picture" if size == SECRET_SIZE else f"image {size[0]}x{size[1]}")
    return found


# -- evasions: how a reference to a local path is written -------------------------------------

CLIMB = "../" * 24  # more than any scratch folder is deep: from anywhere up to /


@dataclass(frozen=True)
class Evasion:
    name: str
    spelling: str  # how the path is written: a format for spell()
    mode: str | None = "External"  # the relationship's TargetMode (None: none written)
    rels_encoding: str = "UTF-8"
    relationship_only: bool = False  # only means something in a relationship part

    def spell(self, path: Path) -> str:
        text = path.as_posix()
        return self.spelling.format(
            uri=path.as_uri(),
            path=text,
            climb=CLIMB + text.lstrip("/"),
            percent="file://"
            + "".join(
                f"%{byte:02X}" if chr(byte).isalnum() else chr(byte) for byte in text.encode()
            ),
            backslashed=text.replace("/", "\\"),
        )


EVASIONS = [
    Evasion("file-uri", "{uri}"),
    Evasion("absolute-path", "{path}"),
    Evasion("relative-path", "{climb}"),
    Evasion("utf16-rels", "{uri}", rels_encoding="UTF-16", relationship_only=True),
    Evasion("bogus-target-mode", "{uri}", mode="Bogus", relationship_only=True),
    Evasion("lowercase-target-mode", "{uri}", mode="external", relationship_only=True),
    Evasion("internal-uri", "{uri}", mode=None, relationship_only=True),
    Evasion("internal-climb", "{climb}", mode=None, relationship_only=True),
    # "h<TAB>ttp:" is http to a URL parser that drops controls, no scheme to LibreOffice.
    Evasion("control-in-scheme", "h\tttp:/{climb}"),
    Evasion("newline-in-scheme", "fi\nle://{path}"),
    Evasion("percent-encoded", "{percent}"),
    Evasion("mixed-case-scheme", "FiLe://{path}"),
    Evasion("backslashes", "{backslashed}"),
    Evasion("unc-path", "\\\\localhost{backslashed}"),
    Evasion("file-backslashes", "file:{backslashed}"),
    Evasion("surrounding-space", "  {uri} "),
]


# -- carriers: what in a document makes LibreOffice read a file --------------------------------


@dataclass(frozen=True)
class Hostile:
    name: str  # carrier/evasion
    carrier: str
    evasion: str
    data: bytes
    expects: str  # what leaks if it works: "picture" or "text"


OLE_LINK = (
    '<w:p><w:r><w:object w:dxaOrig="1440" w:dyaOrig="1440">'
    '<v:shape id="_x0000_i1030" type="#_x0000_t75" style="width:72pt;height:72pt">'
    '<v:imagedata r:id="rIdX" o:title=""/></v:shape>'
    '<o:OLEObject Type="Link" ProgID="Package" ShapeID="_x0000_i1030" '
    'DrawAspect="Content" r:id="rIdX" UpdateMode="Always">'
    "<o:LinkType>Picture</o:LinkType><o:LockedField>false</o:LockedField>"
    "</o:OLEObject></w:object></w:r></w:p>"
)
SVG_BLIP = (
    '<a:blip r:embed="rIdP"><a:extLst><a:ext uri="{96DAC541-7B7A-43D3-8B79-37D633B846F1}">'
    '<asvg:svgBlip xmlns:asvg="http://schemas.microsoft.com/office/drawing/2016/SVG/main" '
    'r:link="rIdX"/></a:ext></a:extLst></a:blip>'
)
PAGE_BACKGROUND = (
    '<w:background w:color="FFFFFF"><v:background id="_x0000_s1025" o:bwmode="white">'
    '<v:fill r:id="rIdX" o:title="bg" recolor="t" type="frame"/></v:background></w:background>'
)
FRAMESET = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    f'<w:webSettings xmlns:w="{W_NS}" xmlns:r="{R_NS}"><w:frameset><w:frame>'
    '<w:name w:val="secret"/><w:sourceFileName r:id="rIdX"/></w:frame></w:frameset>'
    "</w:webSettings>"
)
TINY_PNG = png(2, 2, (255, 255, 255))  # the SVG's fallback: one of OWN_PICTURE_SIZES
DOCX_TYPE = f"{PART_TYPE}wordprocessingml.document"
LINKED = '<a:blip r:link="rIdX"/>'
Carriers = dict[str, tuple[bytes, str]]  # carrier: (document, what leaks: "picture" or "text")


def relationship_carriers(evasion: Evasion, picture: str, document: str) -> Carriers:
    """Carriers whose reference is a relationship's target (``picture`` or ``document``,
    written as ``evasion`` says), in the document's relationship part or another's."""

    def build(body: str, kind: str = "image", target: str = picture, **options: Any) -> bytes:
        external = [("rIdX", kind, target)] if kind else []
        return package(
            body, external, mode=evasion.mode, rels_encoding=evasion.rels_encoding, **options
        )

    def in_part(parts: dict[str, Any], body: str = "") -> bytes:
        return build(body, kind="", parts=parts)

    image = [("rIdX", "image", picture)]
    fallback = Part("image/png", TINY_PNG)
    web_settings = Part(f"{PART_TYPE}wordprocessingml.webSettings+xml", FRAMESET)
    web_settings.external = [("rIdX", "frame", document)]
    template = settings(
        '<w:attachedTemplate r:id="rIdX"/><w:linkStyles/>',
        [("rIdX", "attachedTemplate", document)],
    )
    return {
        "shape-fill": (build(filled_shape("rIdX")), "picture"),
        "linked-picture": (build(_picture(LINKED)), "picture"),
        "embedded-picture": (build(_picture('<a:blip r:embed="rIdX"/>')), "picture"),
        "header-shape-fill": (
            in_part(
                header_or_footer("header", filled_shape("rIdX"), image), section_with("header")
            ),
            "picture",
        ),
        "footer-linked-picture": (
            in_part(header_or_footer("footer", _picture(LINKED), image), section_with("footer")),
            "picture",
        ),
        "vml-imagedata": (build(vml_picture('<v:imagedata r:id="rIdX" o:title=""/>')), "picture"),
        "vml-page-background": (
            build("", before_body=PAGE_BACKGROUND, parts=settings("<w:displayBackgroundShape/>")),
            "picture",
        ),
        "theme-fill": (in_part(theme(("rIdT", "image", picture))), "picture"),
        "ole-link": (build(OLE_LINK, "oleObject"), "picture"),
        "svg-blip": (
            build(
                _picture(SVG_BLIP),
                parts={
                    "word/media/fallback.png": (("rIdP", "image", "media/fallback.png"), fallback)
                },
            ),
            "picture",
        ),
        "altchunk": (build('<w:altChunk r:id="rIdX"/>', "aFChunk", document), "text"),
        "subdocument": (
            build('<w:p><w:subDoc r:id="rIdX"/></w:p>', "subDocument", document),
            "text",
        ),
        "attached-template": (in_part(template), "text"),
        "frameset": (
            in_part(
                {"word/webSettings.xml": (("rIdW", "webSettings", "webSettings.xml"), web_settings)}
            ),
            "text",
        ),
    }


def _picture(blip: str) -> str:
    return picture(blip)  # ``picture`` is shadowed by the parameters above


def svg_part(inner: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="173" height="97" viewBox="0 0 173 97">{inner}</svg>'
    )


def embedded_svg(inner: str, name: str = "word/media/image1.svg") -> bytes:
    """A DOCX showing an SVG part of its own whose content is ``inner``."""
    part = Part("image/svg+xml", svg_part(inner))
    return package(
        _picture('<a:blip r:embed="rIdS"/>'),
        parts={name: (("rIdS", "image", name.removeprefix("word/")), part)},
    )


def inline_carriers(picture: str, document: str) -> Carriers:
    """Carriers whose reference is written in a part's content, not in a relationship: fields,
    VML attributes, SVG and HTML inside the package, and a DOCX inside the DOCX."""
    href = _attribute(picture)
    image = f'<image width="173" height="97" xlink:href={href}/>'
    html = f"<html><body><p>chunk</p><img src={href} width=173 height=97></body></html>"
    nested = package(filled_shape("rIdX"), [("rIdX", "image", picture)])
    chunk = '<w:altChunk r:id="rIdC"/>'
    return {
        "vml-imagedata-src": (package(vml_picture(f"<v:imagedata src={href}/>")), "picture"),
        "vml-imagedata-href": (package(vml_picture(f"<v:imagedata o:href={href}/>")), "picture"),
        "includepicture-field": (
            package(
                complex_field(f'INCLUDEPICTURE "{picture}" \\d')
                + simple_field(f'INCLUDEPICTURE "{picture}"')
            ),
            "picture",
        ),
        "includetext-field": (
            package(
                complex_field(f'INCLUDETEXT "{document}"')
                + simple_field(f'INCLUDETEXT "{document}"')
            ),
            "text",
        ),
        "link-field": (
            package(complex_field(f'LINK Word.Document.12 "{document}" "" \\a \\f 0 \\t')),
            "text",
        ),
        "svg-image-xlink": (embedded_svg(image), "picture"),
        "svg-image-href": (
            embedded_svg(f'<image width="173" height="97" href={href}/>'),
            "picture",
        ),
        # LibreOffice finds an SVG by its content, whatever the part is called.
        "svg-as-png-name": (embedded_svg(image, "word/media/image1.png"), "picture"),
        "svg-use": (embedded_svg(f"<use xlink:href={_attribute(picture + '#s')}/>"), "picture"),
        "svg-feimage": (
            embedded_svg(
                f'<filter id="f"><feImage xlink:href={href}/></filter>'
                '<rect width="173" height="97" filter="url(#f)"/>'
            ),
            "picture",
        ),
        "svg-css": (
            embedded_svg(
                f"<style>@import url({picture}); rect {{ fill: url({picture}) }}</style>"
                '<rect width="173" height="97"/>'
            ),
            "picture",
        ),
        "altchunk-html": (
            package(
                chunk,
                parts={
                    "word/chunk.html": (("rIdC", "aFChunk", "chunk.html"), Part("text/html", html))
                },
            ),
            "picture",
        ),
        "altchunk-docx": (
            package(
                chunk,
                parts={
                    "word/chunk.docx": (("rIdC", "aFChunk", "chunk.docx"), Part(DOCX_TYPE, nested))
                },
            ),
            "picture",
        ),
    }


def hostile_documents(secrets: Secrets, picture: Path | None = None) -> Iterator[Hostile]:
    """Every carrier crossed with every evasion that applies to it, pointing at ``secrets``
    (pictures at ``picture`` when given: the SVG, or another job's PDF)."""
    target = picture or secrets.picture
    for evasion in EVASIONS:
        image, document = evasion.spell(target), evasion.spell(secrets.docx)
        documents = relationship_carriers(evasion, image, document)
        if not evasion.relationship_only:
            documents |= inline_carriers(image, document)
        for carrier, (data, expects) in documents.items():
            yield Hostile(f"{carrier}/{evasion.name}", carrier, evasion.name, data, expects)


# -- .odt, .rtf and .doc: the same secrets, reached for by the other kinds of document -----------

ODT_MIMETYPE = "application/vnd.oasis.opendocument.text"
ODF_NAMESPACES = {
    "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
    "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
    "draw": "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0",
    "svg": "urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0",
    "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
    "xlink": "http://www.w3.org/1999/xlink",
    # Used only inside attribute values (table:formula="of:=...", text:condition="ooow:..."):
    # a parser that writes the part back from a tree drops their declarations.
    "of": "urn:oasis:names:tc:opendocument:xmlns:of:1.2",
    "ooow": "http://openoffice.org/2004/writer",
}


def odt_content_xml(body: str) -> bytes:
    declarations = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in ODF_NAMESPACES.items())
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<office:document-content {declarations} office:version="1.2">'
        f"<office:body><office:text>{body}</office:text></office:body>"
        "</office:document-content>"
    ).encode()


def odt_manifest(mimetype: str = ODT_MIMETYPE, extra: str = "") -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
        'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" '
        'manifest:version="1.2"><manifest:file-entry manifest:full-path="/" '
        f'manifest:version="1.2" manifest:media-type="{mimetype}"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml">'
        f"{extra}</manifest:file-entry></manifest:manifest>"
    )


def odt(
    content_body: str,
    mimetype: str = ODT_MIMETYPE,
    manifest_extra: str = "",
    *,
    content: bytes | None = None,
    manifest: bytes | None = None,
    parts: dict[str, bytes] | None = None,
) -> bytes:
    """An ODT as LibreOffice lays one out: ``mimetype`` first and stored, then the parts, the
    manifest last. ``content`` and ``manifest`` replace the parts built from the arguments."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("mimetype", mimetype)
        archive.writestr(
            "content.xml", content or odt_content_xml(content_body), zipfile.ZIP_DEFLATED
        )
        for name, data in (parts or {}).items():
            archive.writestr(name, data, zipfile.ZIP_DEFLATED)
        archive.writestr(
            "META-INF/manifest.xml",
            manifest or odt_manifest(mimetype, manifest_extra).encode(),
            zipfile.ZIP_DEFLATED,
        )
    return buffer.getvalue()


def odt_content(path: Path) -> bytes:
    with zipfile.ZipFile(path) as package:
        return package.read("content.xml")


def odt_frame(inner: str) -> str:
    return f'<text:p><draw:frame svg:width="4cm" svg:height="2cm">{inner}</draw:frame></text:p>'


def inline_svg_picture(picture: Path) -> str:
    """A picture written inside the document (base64): an SVG that links ``picture``."""
    width, height = SECRET_SIZE
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{width}" height="{height}"><image width="{width}" height="{height}" '
        f'xlink:href="file://{picture}"/></svg>'
    )
    data = base64.b64encode(svg.encode()).decode()
    return odt_frame(f"<draw:image><office:binary-data>{data}</office:binary-data></draw:image>")


def dde_link(topic: Path) -> str:
    """A DDE field whose link asks LibreOffice ("soffice") for the document ``topic``."""
    return (
        '<text:dde-connection-decls><text:dde-connection-decl office:name="Link1" '
        f'office:dde-application="soffice" office:dde-topic="{topic}" office:dde-item="" '
        'office:automatic-update="true"/></text:dde-connection-decls>'
        '<text:p><text:dde-connection text:connection-name="Link1">cached</text:dde-connection>'
        "</text:p>"
    )


def hostile_odts(secrets: Secrets) -> dict[str, bytes]:
    """ODTs that reach for ``secrets``, by carrier."""
    visible = f"<text:p>{VISIBLE}</text:p>"
    climbing = CLIMB + str(secrets.picture).lstrip("/")
    return {
        "linked-section": odt(
            visible + '<text:section text:name="linked"><text:section-source '
            f'xlink:type="simple" xlink:href="file://{secrets.text}"/><text:p>cached</text:p>'
            "</text:section>"
        ),
        "linked-picture": odt(
            visible
            + odt_frame(f'<draw:image xlink:type="simple" xlink:href="file://{secrets.picture}"/>')
        ),
        "climbing-picture": odt(
            visible + odt_frame(f'<draw:image xlink:type="simple" xlink:href="{climbing}"/>')
        ),
        "binary-data-svg": odt(visible + inline_svg_picture(secrets.picture)),
        "dde": odt(visible + dde_link(secrets.text)),
    }


def rtf_field(instruction: bytes) -> bytes:
    return (
        b"{\\rtf1\\ansi{\\fonttbl{\\f0 Liberation Serif;}}\\f0 " + VISIBLE.encode() + b"\\par "
        b"{\\field{\\*\\fldinst " + instruction + b"}{\\fldrslt cached}}\\par}"
    )


def hostile_rtfs(secrets: Secrets) -> dict[str, bytes]:
    """RTFs whose fields reach for ``secrets``, plainly and hidden."""
    text, picture = str(secrets.text).encode(), str(secrets.picture).encode()
    return {
        "includetext": rtf_field(b'INCLUDETEXT "' + text + b'"'),
        "includepicture": rtf_field(b'INCLUDEPICTURE "' + picture + b'" \\\\d'),
        "dde": rtf_field(b'DDEAUTO soffice "' + text + b'" ""'),
        # \bin bytes LibreOffice skips, splitting the keyword for a reader that counts them.
        "bin-split": rtf_field(b'INCLUDE\\bin1 XPICTURE "' + picture + b'" \\\\d'),
        "deep-nesting": b"{\\rtf1 " + b"{" * 100_000 + VISIBLE.encode() + b"}" * 100_000 + b"}",
    }
