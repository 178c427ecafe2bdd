"""LibreOffice's sandbox (workers/libreoffice/sandbox.py), against the real kernel and the real
LibreOffice.

Each finding has a control: what the same document or process does with the sandbox off, so
that "nothing got through" means the sandbox stopped it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docx_factory import CONTENT_TYPES, WORD_MAIN, make_docx, root_rels
from tests.pdf import pdf_pages
from tests.plugins.libreoffice import MakeUnoConverter
from tests.workers.helpers import BLOCK_LANDLOCK
from workers.libreoffice import CliConverter, live_processes_in_group, sandbox

REPO = Path(__file__).resolve().parents[2]
VISIBLE = "Text beside the picture"
NAMESPACES = (
    'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" '
    'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" '
    'xmlns:wp="http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing" '
    'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main" '
    'xmlns:pic="http://schemas.openxmlformats.org/drawingml/2006/picture" '
    'xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape"'
)
IMAGE_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/image"
EXTENT = '<wp:extent cx="1905000" cy="1905000"/>'
XFRM = '<a:xfrm><a:off x="0" y="0"/><a:ext cx="1905000" cy="1905000"/></a:xfrm>'


def flat_png(width: int, height: int) -> bytes:
    """A one-colour RGB picture of any size, built in milliseconds: every row is the same, so
    one row is compressed after a full flush (which resets the compressor) and repeated."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + b"\xc8\x28\x5a" * width
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = compressor.compress(row) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(row) + compressor.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(height):
        adler = zlib.adler32(row, adler)
    stream = b"\x78\xda" + first + again * (height - 1) + b"\x03\x00" + struct.pack(">I", adler)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")
    )


def picture_docx(body: str, relationship: str, media: dict[str, bytes] | None = None) -> bytes:
    """A DOCX with a visible paragraph, then ``body``; ``relationship`` is the document's one
    relationship (id rIdP), ``media`` pictures stored in the package."""
    content_types = CONTENT_TYPES.format(main="word/document.xml", content_type=WORD_MAIN)
    content_types = content_types.replace(
        "<Override", '<Default Extension="png" ContentType="image/png"/><Override', 1
    )
    document = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f"<w:document {NAMESPACES}><w:body><w:p><w:r><w:t>{VISIBLE}</w:t></w:r></w:p>"
        f"{body}</w:body></w:document>"
    )
    rels = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f"{relationship}</Relationships>"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr("[Content_Types].xml", content_types)
        package.writestr("_rels/.rels", root_rels("word/document.xml"))
        package.writestr("word/document.xml", document)
        package.writestr("word/_rels/document.xml.rels", rels)
        for name, data in (media or {}).items():
            package.writestr(name, data, compress_type=zipfile.ZIP_STORED)
    return buffer.getvalue()


def shape_filled_with_linked_picture(picture: Path) -> bytes:
    """A Word 2010 rectangle filled with a picture linked by file URL: LibreOffice 7.4 loads it
    whatever the profile says (docs/security.md); only the sanitizer or the sandbox stop it."""
    shape = (
        "<w:p><w:r><w:drawing>"
        '<wp:anchor distT="0" distB="0" distL="0" distR="0" simplePos="0" relativeHeight="2" '
        'behindDoc="0" locked="0" layoutInCell="1" allowOverlap="1"><wp:simplePos x="0" y="0"/>'
        '<wp:positionH relativeFrom="column"><wp:posOffset>0</wp:posOffset></wp:positionH>'
        '<wp:positionV relativeFrom="paragraph"><wp:posOffset>0</wp:posOffset></wp:positionV>'
        f'{EXTENT}<wp:wrapNone/><wp:docPr id="3" name="Shape"/><a:graphic><a:graphicData '
        'uri="http://schemas.microsoft.com/office/word/2010/wordprocessingShape">'
        f'<wps:wsp><wps:cNvSpPr/><wps:spPr>{XFRM}<a:prstGeom prst="rect"><a:avLst/></a:prstGeom>'
        '<a:blipFill><a:blip r:link="rIdP"/><a:stretch><a:fillRect/></a:stretch></a:blipFill>'
        "</wps:spPr><wps:bodyPr/></wps:wsp></a:graphicData></a:graphic>"
        "</wp:anchor></w:drawing></w:r></w:p>"
    )
    relationship = (
        f'<Relationship Id="rIdP" Type="{IMAGE_REL}" Target="{picture.as_uri()}" '
        'TargetMode="External"/>'
    )
    return picture_docx(shape, relationship)


def embedded_picture(png: bytes) -> bytes:
    inline = (
        '<w:p><w:r><w:drawing><wp:inline distT="0" distB="0" distL="0" distR="0">'
        f'{EXTENT}<wp:docPr id="1" name="Picture"/><a:graphic>'
        '<a:graphicData uri="http://schemas.openxmlformats.org/drawingml/2006/picture">'
        '<pic:pic><pic:nvPicPr><pic:cNvPr id="1" name="p.png"/><pic:cNvPicPr/></pic:nvPicPr>'
        '<pic:blipFill><a:blip r:embed="rIdP"/><a:stretch><a:fillRect/></a:stretch>'
        f'</pic:blipFill><pic:spPr>{XFRM}<a:prstGeom prst="rect"><a:avLst/></a:prstGeom>'
        "</pic:spPr></pic:pic></a:graphicData></a:graphic></wp:inline></w:drawing></w:r></w:p>"
    )
    relationship = f'<Relationship Id="rIdP" Type="{IMAGE_REL}" Target="media/picture.png"/>'
    return picture_docx(inline, relationship, {"word/media/picture.png": png})


def images_in(pdf: Path) -> int:
    """How many pictures the PDF holds (LibreOffice writes each as an image XObject)."""
    return pdf.read_bytes().count(b"/Subtype/Image")


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A picture where another job's files would be: beside the profiles, in scratch space."""
    folder = tmp_path / "scratch" / "convert-another-job"
    folder.mkdir(parents=True)
    picture = folder / "secret.png"
    picture.write_bytes(flat_png(64, 64))
    return picture


# -- files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["uno", "cli"])
def test_a_linked_local_picture_is_out_of_reach_in_the_sandbox(
    kind: str,
    make_uno_converter: MakeUnoConverter,
    tmp_path: Path,
    elsewhere: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The converter is called on the raw file: no sanitizer, only the sandbox stands between.
    source = tmp_path / "linked.docx"
    source.write_bytes(shape_filled_with_linked_picture(elsewhere))
    outcomes: dict[str, int] = {}
    for mode in ("on", "off"):
        converter = (
            make_uno_converter(f"profiles-{mode}", sandbox=mode)
            if kind == "uno"
            else CliConverter("soffice", tmp_path / f"cli-{mode}", sandbox=mode)
        )
        target = tmp_path / f"{mode}.pdf"
        try:
            with caplog.at_level(logging.WARNING):
                converter.convert(source, target, timeout=120)
        finally:
            converter.close()
        assert VISIBLE in pdf_pages(target.read_bytes())[0]
        outcomes[mode] = images_in(target)
    assert outcomes == {"on": 0, "off": 1}  # the control read the picture: the sandbox stopped it
    # Turning the sandbox off is said, at every start.
    assert [r.message for r in caplog.records if "sandbox_off" in r.message]


def test_each_document_is_converted_alone_in_its_folder(
    make_uno_converter: MakeUnoConverter, tmp_path: Path
) -> None:
    converter = make_uno_converter()
    source, document = tmp_path / "in.docx", make_docx("alone")
    source.write_bytes(document)
    try:
        converter.convert(source, tmp_path / "out.pdf", timeout=60)
        assert "alone" in pdf_pages((tmp_path / "out.pdf").read_bytes())[0]
        assert source.read_bytes() == document  # the caller's file is left where it was
        assert list(converter.work_dir.iterdir()) == []  # nothing stays for the next document
    finally:
        converter.close()


def test_libreoffice_gets_none_of_the_workers_environment(
    make_uno_converter: MakeUnoConverter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUIRE_S3_SECRET_KEY", "worker-secret")
    converter = make_uno_converter()
    try:
        converter.start()
        assert converter.process is not None
        environments = []
        for pid in live_processes_in_group(converter.process.pid):
            raw = Path(f"/proc/{pid}/environ").read_bytes()
            environments.append(
                dict(item.split("=", 1) for item in raw.decode().split("\0") if item)
            )
    finally:
        converter.close()
    assert environments
    for environment in environments:
        assert "worker-secret" not in environment.values()
        assert environment["HOME"] == str(converter.home_dir)
        assert environment["TMPDIR"] == str(converter.temp_dir)


# -- a process under the same rules --------------------------------------------------------------

PROBE = """
import json, os, socket, sys
inside, outside, port, parent = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def attempt(action):
    try:
        action()
        return "allowed"
    except OSError as error:
        return error.__class__.__name__

def connect(family, kind, address):
    with socket.socket(family, kind) as sock:
        sock.settimeout(2)
        sock.connect(address)
        sock.send(b"x")

def unix_socket():
    with socket.socket(socket.AF_UNIX) as sock:
        path = "/tmp/quire-sandbox-test-%d" % os.getpid()
        sock.bind(path)
        os.unlink(path)

print(json.dumps({
    "read inside": attempt(lambda: open(os.path.join(inside, "mine.txt")).read()),
    "write inside": attempt(lambda: open(os.path.join(inside, "new.txt"), "w").close()),
    "read outside": attempt(lambda: open(outside).read()),
    "list outside": attempt(lambda: os.listdir(os.path.dirname(outside))),
    "write in /tmp": attempt(lambda: open("/tmp/quire-sandbox-test", "w").close()),
    "read /etc/hostname": attempt(lambda: open("/etc/hostname").read()),
    "read another process": attempt(lambda: open("/proc/%d/cmdline" % parent).read()),
    "tcp": attempt(lambda: connect(socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", port))),
    "udp": attempt(lambda: connect(socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", port))),
    "tcp6": attempt(lambda: connect(socket.AF_INET6, socket.SOCK_STREAM, ("::1", port))),
    "signal outside": attempt(lambda: os.kill(parent, 0)),
    "unix socket in /tmp": attempt(unix_socket),
}))
"""


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP and a UDP socket on the same loopback port, for a sandboxed process to try."""
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        port = tcp.getsockname()[1]
        udp.bind(("127.0.0.1", port))
        yield port


def run_probe(tmp_path: Path, port: int, confine: bool) -> dict[str, str]:
    inside = tmp_path / "profile"
    inside.mkdir(exist_ok=True)
    (inside / "mine.txt").write_text("mine")
    outside = tmp_path / "objects" / "another-job.docx"
    outside.parent.mkdir(exist_ok=True)
    outside.write_text("not yours")
    policy = sandbox.libreoffice_policy("soffice", [inside], memory_mb=None, confine=confine)
    argv = ["/usr/bin/python3", "-I", "-S", "-c", PROBE]
    argv += [str(inside), str(outside), str(port), str(os.getpid())]
    result = subprocess.run(
        sandbox.command(policy, argv), capture_output=True, text=True, timeout=60, check=True
    )
    outcome: dict[str, str] = json.loads(result.stdout)
    return outcome


def test_a_sandboxed_process_reaches_only_its_folder_and_no_network(
    tmp_path: Path, listener: int
) -> None:
    outcome = run_probe(tmp_path, listener, confine=True)
    assert outcome == {
        "read inside": "allowed",
        "write inside": "allowed",
        "read outside": "PermissionError",
        "list outside": "PermissionError",
        "write in /tmp": "PermissionError",
        "read /etc/hostname": "PermissionError",
        "read another process": "PermissionError",
        "tcp": "PermissionError",
        "udp": "PermissionError",
        "tcp6": "PermissionError",
        "signal outside": "PermissionError",
        "unix socket in /tmp": "allowed",  # LibreOffice's UNO pipe
    }
    # The control: the same process without the rules reaches all of it.
    control = run_probe(tmp_path, listener, confine=False)
    assert {name for name, result in control.items() if result != "allowed"} <= {"tcp6"}


# -- failing closed ------------------------------------------------------------------------------

# Runs in a child process: installs a seccomp filter that answers ENOSYS to Landlock's system
# calls, as a container engine's default profile may, then converts with the sandbox on and off.
WITHOUT_LANDLOCK = (
    BLOCK_LANDLOCK
    + """
import json, sys
from pathlib import Path
from workers.libreoffice import ConverterMisconfigured, CliConverter
from workers.libreoffice.uno import UnoConverter

folder, source = Path(sys.argv[1]), Path(sys.argv[2])
outcome = {}
converters = {
    "uno": lambda mode: UnoConverter(soffice="soffice", profile_root=folder / mode,
                                     start_timeout=60, restart_after=10, sandbox=mode),
    "cli": lambda mode: CliConverter("soffice", folder / ("cli-" + mode), sandbox=mode),
}
for kind, build in converters.items():
    for mode in ("on", "off"):
        converter = build(mode)
        target = folder / (kind + mode + ".pdf")
        try:
            converter.convert(source, target, timeout=60)
            outcome[kind + " " + mode] = "converted" if target.stat().st_size else "empty"
        except ConverterMisconfigured as error:
            outcome[kind + " " + mode] = "refused: " + str(error)
        finally:
            converter.close()
print(json.dumps(outcome))
"""
)


@pytest.mark.timeout(300)
def test_a_worker_that_cannot_set_the_sandbox_up_converts_nothing(tmp_path: Path) -> None:
    source = tmp_path / "in.docx"
    source.write_bytes(make_docx("refused"))
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_LANDLOCK, str(tmp_path), str(source)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    for kind in ("uno", "cli"):
        assert outcome[f"{kind} on"].startswith("refused: LibreOffice's sandbox cannot be set up")
        assert "Function not implemented" in outcome[f"{kind} on"]
        assert "QUIRE_SANDBOX=off" in outcome[f"{kind} on"]
        assert outcome[f"{kind} off"] == "converted"  # only an explicit choice converts
    assert "libreoffice.sandbox_unavailable" in result.stderr


# -- memory --------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_a_picture_too_large_for_the_memory_limit_stays_in_its_instance(
    make_uno_converter: MakeUnoConverter, tmp_path: Path
) -> None:
    # 256 megapixels: LibreOffice needs about 1 GiB more to decode it. Under a 1 GiB limit the
    # allocation fails inside the instance, which drops the picture and goes on converting.
    source = tmp_path / "huge-picture.docx"
    source.write_bytes(embedded_picture(flat_png(16000, 16000)))
    small = tmp_path / "small.docx"
    small.write_bytes(make_docx("after the huge picture"))
    limited = make_uno_converter("limited", memory_mb=1024)
    try:
        limited.convert(source, tmp_path / "limited.pdf", timeout=120)
        assert VISIBLE in pdf_pages((tmp_path / "limited.pdf").read_bytes())[0]
        assert images_in(tmp_path / "limited.pdf") == 0
        limited.convert(small, tmp_path / "small.pdf", timeout=60)
        assert "after the huge picture" in pdf_pages((tmp_path / "small.pdf").read_bytes())[0]
    finally:
        limited.close()
    unlimited = make_uno_converter("unlimited", memory_mb=0)  # the control
    try:
        unlimited.convert(source, tmp_path / "unlimited.pdf", timeout=120)
    finally:
        unlimited.close()
    assert images_in(tmp_path / "unlimited.pdf") == 1
