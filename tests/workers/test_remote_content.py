"""LibreOffice never fetches anything and never runs a macro while converting.

Each way we found for a DOCX to point LibreOffice at a URL is put into a document that points at
a local HTTP server recording every connection and request. Each document is checked by the
validator (which may refuse it: the pipeline then never converts it) and converted by a real
warm instance anyway, since the instance must hold on its own. Afterwards the server must have
seen nothing, the conversion must have ended (a PDF, or a ConversionError with a message, never
a hang), and the same instance must still convert the next, ordinary file.

LibreOffice 7.4 as configured out of the box fetches a picture linked by URL (a:blip r:link) and
a shape filled with one; the control test shows it, so that "nothing seen" means something. The
profile settings in workers.libreoffice.profile are what stop it.
"""

from __future__ import annotations

import io
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from tests.docx_factory import make_docx
from tests.hostile_docs import (
    VISIBLE,
    Part,
    complex_field,
    filled_shape,
    header_or_footer,
    package,
    picture,
    png,
    section_with,
    settings,
    simple_field,
    theme,
    vml_picture,
)
from tests.pdf import pdf_pages
from tests.plugins.libreoffice import MakeUnoConverter
from tests.workers.helpers import open_allowing_macros
from workers.libreoffice import (
    CliConverter,
    ConversionError,
    ConversionTimeout,
    ConverterMisconfigured,
    profile,
)
from workers.libreoffice.uno import NEVER_EXECUTE, NO_UPDATE, UnoConverter
from workers.sanitize import strip_local_links
from workers.validation import InvalidDocument, validate_docx

# -- a local HTTP server that records everything ---------------------------------------------


PNG = png(1, 1, (255, 0, 0))  # a client that does fetch gets a real picture back


class RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.lock = threading.Lock()
        self.connections = 0
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def verify_request(self, request: Any, client_address: Any) -> bool:
        # Counted on accept: a client that connects and never sends a request line counts too.
        with self.lock:
            self.connections += 1
        return True

    def record(self, line: str) -> None:
        with self.lock:
            self.requests.append(line)

    def reset(self) -> None:
        with self.lock:
            self.connections = 0
            self.requests.clear()

    def seen(self) -> tuple[int, list[str]]:
        with self.lock:
            return self.connections, list(self.requests)


class RecordingHandler(BaseHTTPRequestHandler):
    server: RecordingServer

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        # Every method is recorded: LibreOffice's WebDAV provider sends OPTIONS before its GET.
        self.server.record(f"{self.command} {self.path}")
        return parsed

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(PNG)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[RecordingServer]:
    instance = RecordingServer()
    thread = threading.Thread(target=instance.serve_forever, daemon=True)
    thread.start()
    yield instance
    instance.shutdown()
    instance.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def converter(module_converter: UnoConverter) -> UnoConverter:
    # One warm instance for the module, as a worker has: no document may leave it changed.
    return module_converter


# -- hostile packages --------------------------------------------------------------------------

SECRET = "QUIRE-LOCAL-SECRET-7f3a"  # in a local file that documents try to include


def xxe(system_id: str) -> bytes:
    """An external entity, used in the text."""
    return package(
        "<w:p><w:r><w:t>&xxe;</w:t></w:r></w:p>",
        prolog=(
            '<?xml version="1.0" encoding="UTF-8" standalone="no"?>'
            f'<!DOCTYPE w:document [<!ENTITY xxe SYSTEM "{system_id}">]>'
        ),
    )


# Documents pointing at the server, by name: each builder takes the server's base URL.
NETWORK: dict[str, Callable[[str], bytes]] = {}
# Documents pointing at a local directory holding secret.txt and local.png.
LOCAL: dict[str, Callable[[Path], bytes]] = {}


def network(build: Callable[[str], bytes]) -> Callable[[str], bytes]:
    NETWORK[build.__name__.replace("_", "-")] = build
    return build


def local(build: Callable[[Path], bytes]) -> Callable[[Path], bytes]:
    LOCAL[build.__name__.replace("_", "-")] = build
    return build


@network
def linked_picture(url: str) -> bytes:
    """What Word writes for Insert Picture > Link to File: a:blip r:link, external target."""
    return package(picture('<a:blip r:link="rIdL"/>'), [("rIdL", "image", f"{url}/linked.png")])


@network
def embedded_picture_with_external_target(url: str) -> bytes:
    return package(picture('<a:blip r:embed="rIdE"/>'), [("rIdE", "image", f"{url}/embed.png")])


@network
def linked_svg_picture(url: str) -> bytes:
    return package(
        picture(
            '<a:blip r:link="rIdL"><a:extLst><a:ext uri="{96DAC541-7B7A-43D3-8B79-37D633B846F1}">'
            '<asvg:svgBlip xmlns:asvg="http://schemas.microsoft.com/office/drawing/2016/SVG/main" '
            'r:link="rIdS"/></a:ext></a:extLst></a:blip>'
        ),
        [("rIdL", "image", f"{url}/svg-fallback.png"), ("rIdS", "image", f"{url}/svg.svg")],
    )


@network
def linked_picture_in_header(url: str) -> bytes:
    content = picture('<a:blip r:link="rIdH"/>')
    linked = [("rIdH", "image", f"{url}/header.png")]
    return package(section_with("header"), parts=header_or_footer("header", content, linked))


@network
def shape_filled_with_linked_picture(url: str) -> bytes:
    return package(filled_shape("rIdF"), [("rIdF", "image", f"{url}/shape-fill.png")])


@network
def theme_filled_with_linked_picture(url: str) -> bytes:
    return package("", parts=theme(("rIdT", "image", f"{url}/theme-fill.png")))


@network
def vml_imagedata(url: str) -> bytes:
    return package(
        vml_picture('<v:imagedata r:id="rIdV" o:title=""/>'),
        [("rIdV", "image", f"{url}/vml-imagedata.png")],
    )


@network
def vml_imagedata_src(url: str) -> bytes:
    return package(vml_picture(f'<v:imagedata src="{url}/vml-src.png"/>'))


@network
def vml_page_background(url: str) -> bytes:
    return package(
        "",
        [("rIdB", "image", f"{url}/background.png")],
        before_body=(
            '<w:background w:color="FFFFFF"><v:background id="_x0000_s1025" o:bwmode="white">'
            '<v:fill r:id="rIdB" o:title="bg" recolor="t" type="frame"/></v:background>'
            "</w:background>"
        ),
        parts=settings("<w:displayBackgroundShape/>"),
    )


@network
def includepicture_simple_field(url: str) -> bytes:
    return package(simple_field(f'INCLUDEPICTURE "{url}/field-simple.png" \\d'))


@network
def includepicture_complex_field(url: str) -> bytes:
    return package(
        complex_field(f'INCLUDEPICTURE "{url}/field-complex.png" \\d')
        + complex_field(f'INCLUDEPICTURE "{url}/field-merge.png" \\* MERGEFORMATINET')
    )


@network
def includetext_fields(url: str) -> bytes:
    return package(
        simple_field(f'INCLUDETEXT "{url}/includetext-simple.docx"')
        + complex_field(f'INCLUDETEXT "{url}/includetext-complex.docx"')
    )


@network
def link_dde_and_import_fields(url: str) -> bytes:
    return package(
        complex_field(f'LINK Excel.Sheet.8 "{url}/link.xls" "Sheet1!R1C1" \\a \\f 4 \\h')
        + complex_field(f'DDEAUTO Excel "{url}/ddeauto.xls" "Sheet1!R1C1"')
        + complex_field(f'IMPORT "{url}/import.png"')
    )


@network
def hyperlinks(url: str) -> bytes:
    return package(
        '<w:p><w:hyperlink r:id="rIdH"><w:r><w:t>a link</w:t></w:r></w:hyperlink></w:p>'
        + complex_field(f'HYPERLINK "{url}/hyperlink-field"'),
        [("rIdH", "hyperlink", f"{url}/hyperlink")],
    )


@network
def external_entity(url: str) -> bytes:
    return xxe(f"{url}/xxe")


@network
def external_dtd_and_parameter_entity(url: str) -> bytes:
    return package(
        "",
        prolog=(
            '<?xml version="1.0" encoding="UTF-8" standalone="no"?>'
            f'<!DOCTYPE w:document SYSTEM "{url}/external.dtd" '
            f'[<!ENTITY % p SYSTEM "{url}/xxe-parameter"> %p;]>'
        ),
    )


@network
def xinclude(url: str) -> bytes:
    return package(
        '<w:p><w:r><w:t><xi:include xmlns:xi="http://www.w3.org/2001/XInclude" '
        f'href="{url}/xinclude" parse="text"/></w:t></w:r></w:p>'
    )


@network
def attached_template_and_mail_merge_source(url: str) -> bytes:
    return package(
        "",
        parts=settings(
            '<w:attachedTemplate r:id="rIdT"/><w:linkStyles/>'
            '<w:mailMerge><w:mainDocumentType w:val="formLetters"/>'
            '<w:dataType w:val="textFile"/><w:query w:val="SELECT * FROM x"/>'
            '<w:dataSource r:id="rIdM"/></w:mailMerge>',
            [
                ("rIdT", "attachedTemplate", f"{url}/template.dotx"),
                ("rIdM", "mailMergeSource", f"{url}/mailmerge.csv"),
            ],
        ),
    )


@network
def alt_chunk_and_subdocument(url: str) -> bytes:
    return package(
        '<w:altChunk r:id="rIdC"/><w:p><w:subDoc r:id="rIdD"/></w:p>',
        [("rIdC", "aFChunk", f"{url}/altchunk.html"), ("rIdD", "subDocument", f"{url}/sub.docx")],
    )


@network
def linked_ole_object(url: str) -> bytes:
    return package(
        '<w:p><w:r><w:object w:dxaOrig="1440" w:dyaOrig="1440">'
        '<v:shape id="_x0000_i1030" type="#_x0000_t75" style="width:72pt;height:72pt">'
        '<v:imagedata r:id="rIdP" o:title=""/></v:shape>'
        '<o:OLEObject Type="Link" ProgID="Excel.Sheet.12" ShapeID="_x0000_i1030" '
        'DrawAspect="Content" r:id="rIdO" UpdateMode="Always">'
        "<o:LinkType>EnhancedMetaFile</o:LinkType><o:LockedField>false</o:LockedField>"
        "</o:OLEObject></w:object></w:r></w:p>",
        [("rIdP", "image", f"{url}/ole-preview.png"), ("rIdO", "oleObject", f"{url}/ole.xlsx")],
    )


@local
def linked_local_picture(directory: Path) -> bytes:
    target = (directory / "local.png").as_uri()
    return package(picture('<a:blip r:link="rIdL"/>'), [("rIdL", "image", target)])


@local
def shape_filled_with_local_picture(directory: Path) -> bytes:
    return package(filled_shape("rIdF"), [("rIdF", "image", (directory / "local.png").as_uri())])


@local
def shape_filled_with_relative_picture(directory: Path) -> bytes:
    """An external target without a scheme: resolved beside the document being converted."""
    return package(filled_shape("rIdF"), [("rIdF", "image", "local.png")])


@local
def includetext_local_file(directory: Path) -> bytes:
    return package(complex_field(f'INCLUDETEXT "{(directory / "secret.txt").as_posix()}"'))


@local
def external_entity_local_file(directory: Path) -> bytes:
    return xxe((directory / "secret.txt").as_uri())


# -- running a document ------------------------------------------------------------------------


@dataclass
class Outcome:
    validation: str  # "accepted" or why it was refused
    conversion: str  # "converted", or "failed: <message>"
    text: str = ""
    images: int = 0


def convert(converter: UnoConverter | CliConverter, source: Path, target: Path) -> Outcome:
    """What the worker does (workers.file_conversion): validate, strip local links, convert."""
    try:
        validate_docx(source)
        validation = "accepted"
    except InvalidDocument as error:
        validation = f"refused: {error}"
    strip_local_links(source)
    try:
        converter.convert(source, target, timeout=60)
    except ConversionTimeout:
        raise  # a hang is never an acceptable outcome
    except ConversionError as error:
        assert str(error), "a failure carries a message for people"
        return Outcome(validation, f"failed: {error}")
    assert target.stat().st_size > 0
    reader = PdfReader(io.BytesIO(target.read_bytes()))
    text = "\n".join(page.extract_text() or "" for page in reader.pages)
    images = sum(len(page.images) for page in reader.pages)
    return Outcome(validation, "converted", text, images)


def seen_after_a_while(server: RecordingServer) -> tuple[int, list[str]]:
    time.sleep(1)  # a fetch made in the background after the conversion returned still shows
    return server.seen()


def next_file_converts(converter: UnoConverter, tmp_path: Path) -> None:
    plain = tmp_path / "next.docx"
    plain.write_bytes(make_docx("the next file of the job"))
    converter.convert(plain, tmp_path / "next.pdf", timeout=60)
    assert "the next file of the job" in pdf_pages((tmp_path / "next.pdf").read_bytes())[0]


# -- tests -------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", list(NETWORK))
def test_a_document_pointing_at_the_network_fetches_nothing(
    name: str, converter: UnoConverter, server: RecordingServer, tmp_path: Path
) -> None:
    source = tmp_path / f"{name}.docx"
    source.write_bytes(NETWORK[name](server.url))
    server.reset()

    outcome = convert(converter, source, tmp_path / f"{name}.pdf")
    print(name, outcome)  # with -s: what the validator and LibreOffice made of it

    assert seen_after_a_while(server) == (0, [])
    if outcome.conversion == "converted":
        assert VISIBLE in outcome.text
        assert outcome.images == 0  # converted without the remote content
    next_file_converts(converter, tmp_path)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", list(LOCAL))
def test_a_document_pointing_at_a_local_file_does_not_read_it(
    name: str, converter: UnoConverter, tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_text(SECRET)
    (tmp_path / "local.png").write_bytes(PNG)
    source = tmp_path / f"{name}.docx"
    source.write_bytes(LOCAL[name](tmp_path))

    outcome = convert(converter, source, tmp_path / f"{name}.pdf")
    print(name, outcome)

    if outcome.validation == "accepted":  # what the validator refuses is never converted
        assert SECRET not in outcome.text
        assert outcome.images == 0
    next_file_converts(converter, tmp_path)


def test_an_embedded_picture_still_shows(converter: UnoConverter, tmp_path: Path) -> None:
    """Pictures inside the package are no link: the settings leave them alone."""
    part = Part("image/png", PNG)
    source = tmp_path / "embedded.docx"
    source.write_bytes(
        package(
            picture('<a:blip r:embed="rIdPicture"/>'),
            parts={"word/media/picture.png": (("rIdPicture", "image", "media/picture.png"), part)},
        )
    )
    outcome = convert(converter, source, tmp_path / "embedded.pdf")
    assert (outcome.conversion, outcome.images) == ("converted", 1)


def macro_document(marker: Path) -> bytes:
    """An ODT whose Basic macro, bound to the load, save and unload events, writes ``marker``.
    (A DOCX cannot carry macros; the converter itself would open an ODT all the same.)"""
    module = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<script:module xmlns:script="http://openoffice.org/2000/script" script:name="Module1" '
        'script:language="StarBasic" script:moduleType="normal">'
        f'Sub Run\n  Open "{marker}" For Output As #1\n  Print #1, "ran"\n  Close #1\nEnd Sub\n'
        "</script:module>"
    )
    events = ["dom:load", "office:load-finished", "office:save-to", "office:prepare-unload"]
    listeners = "".join(
        f'<script:event-listener script:language="ooo:script" script:event-name="{event}" '
        'xlink:type="simple" '
        'xlink:href="vnd.sun.star.script:Standard.Module1.Run?language=Basic&amp;location=document"/>'
        for event in events
    )
    content = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
        'xmlns:script="urn:oasis:names:tc:opendocument:xmlns:script:1.0" '
        'xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:dom="http://www.w3.org/2001/xml-events" '
        'xmlns:ooo="http://openoffice.org/2004/office" office:version="1.2">'
        f"<office:scripts><office:event-listeners>{listeners}</office:event-listeners>"
        "</office:scripts><office:body><office:text><text:p>macro document</text:p>"
        "</office:text></office:body></office:document-content>"
    )
    library = 'xmlns:library="http://openoffice.org/2000/library"'
    files = {
        "content.xml": content,
        "Basic/script-lc.xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><library:libraries {library} '
            'xmlns:xlink="http://www.w3.org/1999/xlink"><library:library '
            'library:name="Standard" library:link="false"/></library:libraries>'
        ),
        "Basic/Standard/script-lb.xml": (
            f'<?xml version="1.0" encoding="UTF-8"?><library:library {library} '
            'library:name="Standard" library:readonly="false" library:passwordprotected="false">'
            '<library:element library:name="Module1"/></library:library>'
        ),
        "Basic/Standard/Module1.xml": module,
    }
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
        'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" '
        'manifest:version="1.2"><manifest:file-entry manifest:full-path="/" '
        'manifest:version="1.2" manifest:media-type="application/vnd.oasis.opendocument.text"/>'
        + "".join(
            f'<manifest:file-entry manifest:full-path="{name}" manifest:media-type="text/xml"/>'
            for name in files
        )
        + "</manifest:manifest>"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        archive.writestr("META-INF/manifest.xml", manifest, zipfile.ZIP_DEFLATED)
        for name, data in files.items():
            archive.writestr(name, data, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


@pytest.mark.usefixtures("unprotected")
def test_control_stock_libreoffice_fetches_and_runs_macros(
    make_uno_converter: MakeUnoConverter, server: RecordingServer, tmp_path: Path
) -> None:
    """Without the profile's settings the same documents do reach the server, and the macro
    document's macro does run: the other tests' "nothing happened" is a real finding."""
    # Without the sandbox too: it would stop the fetches on its own (tests/workers/test_sandbox.py).
    instance = make_uno_converter(sandbox="off")
    try:
        for name, path in [
            ("linked-picture", "/linked.png"),
            ("shape-filled-with-linked-picture", "/shape-fill.png"),
        ]:
            source = tmp_path / f"{name}.docx"
            source.write_bytes(NETWORK[name](server.url))
            server.reset()
            outcome = convert(instance, source, tmp_path / f"{name}.pdf")
            _, requests = seen_after_a_while(server)
            assert f"GET {path}" in requests, name
            assert outcome.images == 1, name  # the fetched picture is in the PDF

        marker = tmp_path / "macro-ran"
        source = tmp_path / "macro.odt"
        source.write_bytes(macro_document(marker))
        open_allowing_macros(instance, source)
        assert marker.exists()
    finally:
        instance.close()


def test_macros_never_run(converter: UnoConverter, tmp_path: Path) -> None:
    # In the instance's profile, the one folder the sandbox lets it write: a macro that ran
    # must be able to leave its mark, or this test would pass on the sandbox alone.
    marker = converter.profile_dir / f"macro-ran-{tmp_path.name}"
    source = tmp_path / "macro.odt"
    source.write_bytes(macro_document(marker))

    converter.convert(source, tmp_path / "macro.pdf", timeout=60)  # MacroExecutionMode NEVER
    assert "macro document" in pdf_pages((tmp_path / "macro.pdf").read_bytes())[0]
    # The profile's DisableMacrosExecution holds on its own, even against a load that asks
    # (from the instance's work folder: the sandbox lets it read no other).
    staged = converter.work_dir / source.name
    staged.write_bytes(source.read_bytes())
    open_allowing_macros(converter, staged)
    time.sleep(1)
    assert not marker.exists()


class RecordingDesktop:
    """Passes calls through to LibreOffice's desktop, keeping the media descriptor each loaded
    document reports: what LibreOffice applied, not what the code meant to send."""

    def __init__(self, desktop: Any) -> None:
        self.desktop = desktop
        self.loaded: list[dict[str, Any]] = []

    def loadComponentFromURL(self, url: str, frame: str, flags: int, props: Any) -> Any:
        document = self.desktop.loadComponentFromURL(url, frame, flags, props)
        if document is not None:
            self.loaded.append({prop.Name: prop.Value for prop in document.getArgs()})
        return document

    def __getattr__(self, name: str) -> Any:
        return getattr(self.desktop, name)


def test_documents_load_hidden_read_only_without_updates_or_macros(
    converter: UnoConverter, tmp_path: Path
) -> None:
    source = tmp_path / "in.docx"
    source.write_bytes(make_docx("load arguments"))
    converter.convert(source, tmp_path / "warm.pdf", timeout=60)  # started and warm
    recording = RecordingDesktop(converter.desktop)
    converter.desktop = recording
    try:
        converter.convert(source, tmp_path / "out.pdf", timeout=60)
    finally:
        converter.desktop = recording.desktop
    [args] = recording.loaded
    assert args["MacroExecutionMode"] == NEVER_EXECUTE
    assert args["UpdateDocMode"] == NO_UPDATE
    assert args["Hidden"] is True
    assert args["ReadOnly"] is True


def test_an_instance_that_can_reach_the_network_is_refused(
    make_uno_converter: MakeUnoConverter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if a provider for file: URLs reached the network: the check must notice and refuse.
    monkeypatch.setattr(profile, "OTHER_NETWORK_SCHEMES", ("file",))
    instance = make_uno_converter()
    try:
        with pytest.raises(ConverterMisconfigured, match="can open file: URLs"):
            instance.start()
        assert instance.process is not None
        assert instance.process.poll() is not None  # killed, not left running
    finally:
        instance.close()


@pytest.mark.timeout(300)
def test_the_command_line_fallback_fetches_nothing(server: RecordingServer, tmp_path: Path) -> None:
    cli = CliConverter("soffice", tmp_path / "scratch")
    for name in ["linked-picture", "shape-filled-with-linked-picture"]:
        source = tmp_path / f"{name}.docx"
        source.write_bytes(NETWORK[name](server.url))
        server.reset()
        outcome = convert(cli, source, tmp_path / f"{name}.pdf")
        assert seen_after_a_while(server) == (0, []), name
        assert outcome.conversion == "converted" and outcome.images == 0, name
