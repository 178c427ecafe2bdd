"""The fallback converter: one cold ``soffice --convert-to pdf`` per document, for a worker
where ``import uno`` fails (``workers.runtime`` chooses). About 1.3 s a document against
0.16 s warm, but it needs nothing beyond the soffice binary.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from app.config import get_settings
from app.logs import get_logger
from workers.fonts import fontconfig_environment
from workers.libreoffice import sandbox
from workers.libreoffice.errors import ConversionError, ConversionTimeout, sandbox_refusal
from workers.libreoffice.options import PLAIN_PDF, PdfOptions
from workers.libreoffice.process import (
    SandboxSetting,
    kill_process_group,
    soffice_flags,
    use_memory_limit,
    use_sandbox,
)
from workers.libreoffice.profile import write_profile_settings
from workers.libreoffice.workdir import move_file, stage_document

# The logger's name predates the package (workers/conversion.py); kept so logs read the same.
log = get_logger("quire.conversion")


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
        self.fonts_dir = get_settings().fonts_dir
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
            log.warning("libreoffice.sandbox_off", "QUIRE_SANDBOX=off: documents are not confined")
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
                self.soffice,
                [work],
                memory_mb=self.memory_mb,
                confine=self.sandboxed,
                fonts_dir=self.fonts_dir,
            )
            # The operator's fonts (QUIRE_FONTS_DIR), seen through a configuration in the profile.
            fontconfig = fontconfig_environment(profile, self.fonts_dir)
            env = (
                sandbox.environment(home=home, tmpdir=temp, fontconfig=fontconfig)
                if self.sandboxed
                else {**os.environ, **fontconfig, "TMPDIR": str(temp)}
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
