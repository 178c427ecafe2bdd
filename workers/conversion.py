"""The converter interface, its errors, and two converters besides the UNO one.

``CliConverter`` runs ``soffice --convert-to`` per file: a fallback where ``import uno`` fails.
``FakeConverter`` writes a one-page PDF without LibreOffice, for unit tests of the pipeline.
The real, warm converter lives in ``workers.libreoffice``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Protocol


class ConversionError(Exception):
    """LibreOffice could not turn the document into a PDF; the message is for people."""


class ConversionTimeout(ConversionError):
    pass


class ConverterCrashed(ConversionError):
    """The converter process died; a fresh instance may well succeed."""


class ConverterUnavailable(Exception):
    """LibreOffice cannot be started: the worker's trouble, not the document's, so the task is
    retried later instead of failing the file."""


class Converter(Protocol):
    restarts: int

    def convert(self, source: Path, target: Path, timeout: float) -> None:
        """Write ``target`` as a PDF of ``source`` or raise ConversionError."""
        ...

    def close(self) -> None: ...


def kill_process_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the process and everything it started (soffice.bin outlives its launcher)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def soffice_flags(profile_dir: Path) -> list[str]:
    return [
        f"-env:UserInstallation={profile_dir.resolve().as_uri()}",
        "--headless",
        "--invisible",
        "--nologo",
        "--norestore",
        "--nolockcheck",
        "--nodefault",
        "--nofirststartwizard",
    ]


class CliConverter:
    """One cold ``soffice --convert-to pdf`` per document (about 1.3 s each)."""

    def __init__(self, soffice: str, scratch_dir: Path) -> None:
        self.soffice = soffice
        self.scratch_dir = scratch_dir
        self.restarts = 0

    def convert(self, source: Path, target: Path, timeout: float) -> None:
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.scratch_dir, prefix="cli-") as work:
            outdir = Path(work) / "out"
            command = [
                self.soffice,
                *soffice_flags(Path(work) / "profile"),
                "--convert-to",
                "pdf:writer_pdf_Export",
                "--outdir",
                str(outdir),
                str(source),
            ]
            process = subprocess.Popen(
                command,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_process_group(process)
                raise ConversionTimeout(
                    f"LibreOffice did not finish within {timeout:g} seconds and was stopped."
                ) from None
            # soffice exits 0 even when it wrote nothing: the PDF itself is the only proof.
            produced = outdir / (source.stem + ".pdf")
            if not produced.is_file() or produced.stat().st_size == 0:
                raise ConversionError("LibreOffice could not convert this document.")
            shutil.move(produced, target)

    def close(self) -> None:
        pass


def minimal_pdf(text: str) -> bytes:
    """A valid one-page PDF showing ``text`` (ASCII), built by hand with a correct xref table."""
    safe = text.encode("ascii", "replace").replace(b"\\", b"\\\\")
    safe = safe.replace(b"(", b"\\(").replace(b")", b"\\)")
    stream = b"BT /F1 12 Tf 72 720 Td (" + safe + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


class FakeConverter:
    """Stands in for LibreOffice at the process boundary in unit tests of the pipeline."""

    def __init__(self) -> None:
        self.restarts = 0
        self.converted: list[Path] = []

    def convert(self, source: Path, target: Path, timeout: float) -> None:
        self.converted.append(source)
        target.write_bytes(minimal_pdf(f"converted {source.name}"))

    def close(self) -> None:
        pass
