"""The converter interface, its errors, and two converters besides the UNO one.

``CliConverter`` runs ``soffice --convert-to`` per file: a fallback where ``import uno`` fails.
``FakeConverter`` writes a one-page PDF without LibreOffice, for unit tests of the pipeline.
The real, warm converter lives in ``workers.libreoffice``. Both real ones run LibreOffice in
``workers.sandbox``, and give it the document in a folder that holds nothing else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from app.config import get_settings
from app.models import PdfA
from workers import sandbox

log = logging.getLogger("quire.conversion")


class ConversionError(Exception):
    """LibreOffice could not turn the document into a PDF; the message is for people."""


class ConversionTimeout(ConversionError):
    pass


class ConverterCrashed(ConversionError):
    """The converter process died; a fresh instance may well succeed."""


class ConverterMisconfigured(ConversionError):
    """LibreOffice runs without the settings that keep documents from fetching anything: an
    installation problem that retrying cannot fix, so files fail at once, saying so."""


def sandbox_refusal(reason: str) -> ConverterMisconfigured:
    """Fail closed: an instance that cannot be sandboxed converts nothing (docs/security.md)."""
    log.error("libreoffice.sandbox_unavailable reason=%s", reason)
    return ConverterMisconfigured(
        f"LibreOffice's sandbox cannot be set up on this worker ({reason}), so it converts "
        "nothing. The kernel or the container must allow Landlock and seccomp; QUIRE_SANDBOX=off "
        "turns the sandbox off."
    )


def crash_message(memory_mb: int | None) -> str:
    if not memory_mb:
        return "LibreOffice crashed while converting this document."
    # A document that needs more than the limit makes allocations fail, and where LibreOffice
    # does not recover (it drops a picture it cannot decode, for one) it aborts.
    return (
        "LibreOffice crashed while converting this document; it may have needed more than its "
        f"memory limit of {memory_mb} MiB (QUIRE_LIBREOFFICE_MEMORY_MB)."
    )


class ConverterUnavailable(Exception):
    """LibreOffice cannot be started: the worker's trouble, not the document's, so the task is
    retried later instead of failing the file."""


# writer_pdf_Export's SelectPdfVersion for each PDF/A level (0 is a plain PDF).
PDF_A_VERSIONS = {PdfA.PDF_A_1B: 1, PdfA.PDF_A_2B: 2, PdfA.PDF_A_3B: 3}


@dataclass(frozen=True)
class PdfOptions:
    """What a job asks of its PDFs, applied through LibreOffice's PDF export options.

    LibreOffice 7.4 tags every PDF/A it writes whatever UseTaggedPDF says, and marks PDF/A-1
    as conformance level A (a superset of 1b); tests/workers/test_pdf_options.py measures it.
    """

    pdf_a: PdfA | None = None
    tagged: bool = False

    def filter_data(self) -> dict[str, int | bool]:
        """writer_pdf_Export's FilterData. Both keys are always given, so a plain PDF is asked
        for explicitly rather than taken from whatever the profile's PDF defaults are."""
        version = PDF_A_VERSIONS[self.pdf_a] if self.pdf_a is not None else 0
        return {"SelectPdfVersion": version, "UseTaggedPDF": self.tagged}

    def convert_to(self) -> str:
        """The ``soffice --convert-to`` argument: the filter with its options as JSON, which
        LibreOffice 7.4 reads (each value typed, as UNO needs it)."""
        typed = {
            name: (
                {"type": "boolean", "value": str(value).lower()}
                if isinstance(value, bool)
                else {"type": "long", "value": str(value)}
            )
            for name, value in self.filter_data().items()
        }
        return "pdf:writer_pdf_Export:" + json.dumps(typed, separators=(",", ":"))


PLAIN_PDF = PdfOptions()

# A converter's ``sandbox`` argument: None takes QUIRE_SANDBOX; False or "off" is for control
# runs in tests and for debugging.
SandboxSetting = bool | Literal["on", "off"] | None


def use_sandbox(setting: SandboxSetting) -> bool:
    if setting is None:
        setting = get_settings().sandbox
    return setting in (True, "on")


def use_memory_limit(memory_mb: int | None) -> int | None:
    """The instance's memory limit in MiB (None: none); None takes the setting."""
    if memory_mb is None:
        memory_mb = get_settings().libreoffice_memory_mb
    return memory_mb or None


def stage_document(source: Path, work_dir: Path) -> Path:
    """Put ``source`` into ``work_dir`` under a fixed name (never the uploaded one) and return
    its path there. A hard link costs nothing on the same file system; a copy elsewhere."""
    staged = work_dir / ("document" + source.suffix.lower())
    staged.unlink(missing_ok=True)
    try:
        os.link(source, staged)
    except OSError:
        shutil.copyfile(source, staged)
    return staged


def move_file(source: Path, target: Path) -> None:
    try:
        os.replace(source, target)
    except OSError:  # another file system
        shutil.move(source, target)


def empty_folder(folder: Path) -> None:
    """Remove what a conversion left in ``folder`` (the document, its PDF, a lock file)."""
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


class Converter(Protocol):
    restarts: int

    def convert(
        self, source: Path, target: Path, timeout: float, options: PdfOptions = PLAIN_PDF
    ) -> None:
        """Write ``target`` as a PDF of ``source`` with ``options``, or raise ConversionError."""
        ...

    def close(self) -> None: ...


# How long a kill waits for the whole process group to end before going on regardless.
KILL_WAIT = 10.0


def live_processes_in_group(pgid: int) -> list[int]:
    """The processes of a process group that are still running (a zombie is already dead)."""
    alive: list[int] = []
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:
        return alive  # no /proc: nothing to wait for that could be seen
    for proc in entries:
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue  # it ended while we looked
        fields = stat.rsplit(")", 1)[1].split()
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            alive.append(int(proc.name))
    return alive


def kill_process_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the process and everything it started (soffice.bin outlives its launcher), and
    wait until all of it has ended: the launcher is reaped at once, but soffice.bin can take a
    moment to die after its launcher, still holding its memory and its pipes."""
    # Only a group that still has a member: once it is empty, its id may be taken again.
    if process.poll() is None or live_processes_in_group(process.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=KILL_WAIT)
    while live_processes_in_group(process.pid) and time.monotonic() < deadline:
        time.sleep(0.01)


# Every LibreOffice instance starts from this configuration, written into its profile before it
# starts (both converters, first start or restart alike). A DOCX can point at URLs, and
# LibreOffice 7.4 follows some of them whatever the load asks for; these settings are what stops
# it. tests/workers/test_remote_content.py proves it against a local HTTP server.
SECURITY = "/org.openoffice.Office.Common/Security/Scripting"
PROFILE_SETTINGS = (  # (node, property, value)
    # A picture linked by URL (a:blip r:link to a relationship with TargetMode="External") is
    # fetched when the page is laid out, even with UpdateDocMode NO_UPDATE: the link is not
    # "updated", the graphic is swapped in. This makes LibreOffice refuse to follow any link of
    # a document outside its trusted locations (SvtSecurityOptions::isUntrustedReferer), to the
    # network or to a local file ...
    (SECURITY, "BlockUntrustedRefererLinks", "true"),
    # ... and no location is trusted.
    (SECURITY, "SecureURL", ""),
    # No macro runs, even where a load does not say MacroExecutionMode (soffice --convert-to).
    (SECURITY, "DisableMacrosExecution", "true"),
    # Writer never updates links (0 always, 1 on request, 2 never), whatever the load says.
    ("/org.openoffice.Office.Writer/Content/Update", "Link", "2"),
)

# A shape filled with a picture linked by URL (a:blipFill in wps:spPr) is fetched even so: that
# graphic is loaded without asking whose link it is. So the content providers that reach the
# network are removed from the instance's UCB, and no URL of these schemes can be opened at all.
UCB_PROVIDERS = (
    "/org.openoffice.ucb.Configuration/ContentProviders/Local/SecondaryKeys/Office/ProviderData"
)
NETWORK_PROVIDERS = {  # node in UCB_PROVIDERS: the URL scheme it serves
    "Provider3": "http",
    "Provider12": "https",
    "Provider4": "vnd.sun.star.webdav",
    "Provider4a": "webdav",
    "Provider12a": "vnd.sun.star.webdavs",
    "Provider12b": "webdavs",
    "Provider6": "ftp",
    "Provider43": "vnd.libreoffice.cmis",
}


def write_profile_settings(profile_dir: Path) -> None:
    """Write the profile's user configuration (user/registrymodifications.xcu), replacing what
    LibreOffice left there, so that every start begins from exactly these settings."""
    properties = (
        f'<item oor:path="{node}"><prop oor:name="{name}" oor:op="fuse">'
        f"<value>{value}</value></prop></item>"
        for node, name, value in PROFILE_SETTINGS
    )
    removals = (
        f'<item oor:path="{UCB_PROVIDERS}"><node oor:name="{name}" oor:op="remove"/></item>'
        for name in NETWORK_PROVIDERS
    )
    user = profile_dir / "user"
    user.mkdir(parents=True, exist_ok=True)
    (user / "registrymodifications.xcu").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<oor:items xmlns:oor="http://openoffice.org/2001/registry">\n'
        + "\n".join([*properties, *removals])
        + "\n</oor:items>\n",
        encoding="utf-8",
    )


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
    """One cold ``soffice --convert-to pdf`` per document (about 1.3 s each), sandboxed like the
    warm one: each run can write only its own folder, which holds its profile and the document.
    ``sandbox`` and ``memory_mb`` as for ``UnoConverter``."""

    def __init__(
        self,
        soffice: str,
        scratch_dir: Path,
        *,
        sandbox: SandboxSetting = None,
        memory_mb: int | None = None,
    ) -> None:
        self.soffice = soffice
        self.scratch_dir = scratch_dir
        self.sandboxed = use_sandbox(sandbox)
        self.memory_mb = use_memory_limit(memory_mb)
        self.restarts = 0

    def convert(
        self, source: Path, target: Path, timeout: float, options: PdfOptions = PLAIN_PDF
    ) -> None:
        if self.sandboxed:
            try:
                sandbox.check()
            except sandbox.SandboxError as error:
                raise sandbox_refusal(str(error)) from None
        else:
            log.warning("libreoffice.sandbox_off QUIRE_SANDBOX=off: documents are not confined")
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.scratch_dir, prefix="cli-") as work_dir:
            work = Path(work_dir)
            outdir, profile = work / "out", work / "profile"
            home, temp = profile / "home", profile / "tmp"
            write_profile_settings(profile)
            for folder in (home, temp):
                folder.mkdir()
            staged = stage_document(source, work)
            command = [
                self.soffice,
                *soffice_flags(profile),
                "--convert-to",
                options.convert_to(),
                "--outdir",
                str(outdir),
                str(staged),
            ]
            policy = sandbox.libreoffice_policy(
                self.soffice, [work], memory_mb=self.memory_mb, confine=self.sandboxed
            )
            env = (
                sandbox.environment(home=home, tmpdir=temp)
                if self.sandboxed
                else {**os.environ, "TMPDIR": str(temp)}
            )
            process = subprocess.Popen(
                sandbox.command(policy, command),
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                cwd=work,
            )
            try:
                returncode = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_process_group(process)
                raise ConversionTimeout(
                    f"LibreOffice did not finish within {timeout:g} seconds and was stopped."
                ) from None
            if returncode == sandbox.SETUP_FAILED:
                raise sandbox_refusal("its launcher could not apply the rules")
            # soffice exits 0 even when it wrote nothing: the PDF itself is the only proof.
            produced = outdir / (staged.stem + ".pdf")
            if not produced.is_file() or produced.stat().st_size == 0:
                raise ConversionError("LibreOffice could not convert this document.")
            move_file(produced, target)

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
        self.options: list[PdfOptions] = []  # what each conversion asked for; not applied

    def convert(
        self, source: Path, target: Path, timeout: float, options: PdfOptions = PLAIN_PDF
    ) -> None:
        self.converted.append(source)
        self.options.append(options)
        target.write_bytes(minimal_pdf(f"converted {source.name}"))

    def close(self) -> None:
        pass
