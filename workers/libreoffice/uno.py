"""A warm LibreOffice instance, supervised, driven directly through UNO.

Each worker process owns one instance: its own profile directory and pipe, started in its own
process group so that a timeout can kill soffice.bin too (it survives its launcher). Start-up
costs about a second, a warm conversion of a two-page document about 0.05 s, hence one instance
kept alive and recycled every ``restart_after`` conversions rather than one per document.

The instance runs in a sandbox (``workers.libreoffice.sandbox``) whose rules are fixed when it
starts, so its profile holds one work folder, and each document is linked into that folder,
converted there, and its PDF moved out: the only document the instance can read is the one it
converts (``workers.libreoffice.workdir``).

This is the only module that imports ``uno``: ``import workers.libreoffice`` works without
python3-uno, and ``workers.runtime`` falls back to the command-line converter when importing
this one fails.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, NoReturn

# Importing this module fails where python3-uno is missing; workers.runtime then falls back to
# the command-line converter. (uno must be imported before any com.sun.star module.)
import uno
from com.sun.star.beans import PropertyValue
from com.sun.star.connection import NoConnectException

from app.config import get_settings
from app.logs import get_logger
from workers import metrics
from workers.fonts import fontconfig_environment
from workers.libreoffice import profile, sandbox
from workers.libreoffice.errors import (
    ConversionError,
    ConversionTimeout,
    ConverterCrashed,
    ConverterMisconfigured,
    ConverterUnavailable,
    crash_message,
    sandbox_refusal,
)
from workers.libreoffice.options import PLAIN_PDF, PdfOptions
from workers.libreoffice.process import (
    SandboxSetting,
    kill_process_group,
    pipe_files,
    single_instance_pipe,
    soffice_flags,
    use_memory_limit,
    use_sandbox,
)
from workers.libreoffice.watchdog import Watchdog
from workers.libreoffice.workdir import empty_folder, move_file, stage_document

log = get_logger("quire.libreoffice")

# com.sun.star.document.UpdateDocMode.NO_UPDATE and MacroExecMode.NEVER_EXECUTE: a document
# being converted never refreshes links from elsewhere and never runs its macros.
NO_UPDATE = 0
NEVER_EXECUTE = 0


def _props(**values: Any) -> tuple[Any, ...]:
    result = []
    for name, value in values.items():
        prop = PropertyValue()
        prop.Name, prop.Value = name, value
        result.append(prop)
    return tuple(result)


# How long closing waits for an instance to quit cleanly before it is killed.
CLOSE_GRACE = 5.0


class UnoConverter:
    def __init__(
        self,
        *,
        soffice: str,
        profile_root: Path,
        start_timeout: float,
        restart_after: int,
        sandbox: SandboxSetting = None,
        memory_mb: int | None = None,
    ) -> None:
        """``sandbox`` and ``memory_mb`` (0: no limit) default to QUIRE_SANDBOX and
        QUIRE_LIBREOFFICE_MEMORY_MB."""
        self.soffice = soffice
        self.profile_dir = profile_root / f"lo-{os.getpid()}"
        self.start_timeout = start_timeout
        self.restart_after = restart_after
        self.sandboxed = use_sandbox(sandbox)
        self.memory_mb = use_memory_limit(memory_mb)
        self.fonts_dir = get_settings().fonts_dir
        # LibreOffice's temporary files go here (TMPDIR), not to /tmp: a killed instance leaves
        # its folder behind, with whatever it was writing, and a restart empties it.
        self.temp_dir = self.profile_dir / "tmp"
        self.home_dir = self.profile_dir / "home"
        # The one folder with a document in it that the instance can read (see the module's
        # docstring); emptied after every conversion.
        self.work_dir = self.profile_dir / "work"
        self.pipe: str | None = None  # the pipe we asked the current instance to accept on
        self.process: subprocess.Popen[bytes] | None = None
        self.desktop: Any = None
        self.conversions = 0  # since the last start
        self.restarts = 0  # starts after the first: crashes, timeouts and recycling
        self.timed_out = False
        self.watchdog: Watchdog | None = None  # started with the first conversion
        self._running: int | None = None  # the watchdog generation of the conversion under way
        self._running_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.process is not None:
            self.restarts += 1
            metrics.libreoffice_restarted(recycled=self.conversions >= self.restart_after)
        self._remove_leftovers()
        pipe = self.pipe = f"quire-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        profile.write_profile_settings(self.profile_dir)
        for folder in (self.temp_dir, self.home_dir, self.work_dir):
            folder.mkdir(parents=True, exist_ok=True)
        empty_folder(self.work_dir)
        # The operator's fonts (QUIRE_FONTS_DIR), seen through a configuration in the profile.
        fontconfig = fontconfig_environment(self.profile_dir, self.fonts_dir)
        if self.sandboxed:
            try:
                sandbox.check()
            except sandbox.SandboxError as error:
                self.process = None
                raise sandbox_refusal(str(error)) from None
            env = sandbox.environment(
                home=self.home_dir, tmpdir=self.temp_dir, fontconfig=fontconfig
            )
        else:
            log.warning("libreoffice.sandbox_off", "QUIRE_SANDBOX=off: documents are not confined")
            env = {**os.environ, **fontconfig, "TMPDIR": str(self.temp_dir)}
        policy = sandbox.libreoffice_policy(
            self.soffice,
            [self.profile_dir],
            memory_mb=self.memory_mb,
            confine=self.sandboxed,
            fonts_dir=self.fonts_dir,
        )
        command = [
            self.soffice,
            *soffice_flags(self.profile_dir),
            f"--accept=pipe,name={pipe};urp;StarOffice.ComponentContext",
        ]
        self.process = subprocess.Popen(
            sandbox.command(policy, command),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=self.profile_dir,
        )
        local = uno.getComponentContext()
        resolver = local.ServiceManager.createInstanceWithContext(
            "com.sun.star.bridge.UnoUrlResolver", local
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                context = resolver.resolve(f"uno:pipe,name={pipe};urp;StarOffice.ComponentContext")
                break
            except NoConnectException:
                if self.process.poll() == sandbox.SETUP_FAILED:
                    self._kill()
                    raise sandbox_refusal("its launcher could not apply the rules") from None
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self._kill()
                    raise ConverterUnavailable(
                        f"LibreOffice did not start within {self.start_timeout:g} seconds "
                        f"(exit code {self.process.poll()})"
                    ) from None
                time.sleep(0.05)
        try:
            self._check_settings(context)
        except ConverterMisconfigured:
            raise
        except Exception as error:  # noqa: BLE001 - a key that cannot be read is not taken
            self._refuse(f"its settings cannot be read back: {error}")
        self.desktop = context.ServiceManager.createInstanceWithContext(
            "com.sun.star.frame.Desktop", context
        )
        self.conversions = 0
        log.info("libreoffice.started", pid=self.process.pid, restarts=self.restarts)

    def _check_settings(self, context: Any) -> None:
        """Fail closed: an instance that did not take its profile's settings (one finalized by
        the system's configuration, a key renamed by an upgrade, a network provider installed
        under another name) could fetch what a document points at, so it converts nothing."""
        provider = context.ServiceManager.createInstanceWithContext(
            "com.sun.star.configuration.ConfigurationProvider", context
        )
        # Read through the module, not imported by name: the control tests patch them there.
        for node, name, wanted in profile.PROFILE_SETTINGS:
            access = provider.createInstanceWithArguments(
                "com.sun.star.configuration.ConfigurationAccess", _props(nodepath=node)
            )
            value = access.getByName(name)
            if isinstance(value, bool):
                value = str(value).lower()
            elif isinstance(value, tuple):
                value = " ".join(value)
            if str(value) != wanted:
                self._refuse(f"{node}/{name} is {value!r}, not {wanted!r}")
        broker = context.ServiceManager.createInstanceWithContext(
            "com.sun.star.ucb.UniversalContentBroker", context
        )
        for scheme in (*profile.NETWORK_PROVIDERS.values(), *profile.OTHER_NETWORK_SCHEMES):
            if broker.queryContentProvider(f"{scheme}://127.0.0.1/") is not None:
                self._refuse(f"it can open {scheme}: URLs")

    def _refuse(self, reason: str) -> NoReturn:
        self._kill()
        raise ConverterMisconfigured(
            "LibreOffice did not take the settings that keep documents from fetching anything "
            f"or running macros ({reason})."
        )

    def _kill(self) -> None:
        if self.process is not None:
            kill_process_group(self.process)
        self.desktop = None

    def close(self) -> None:
        """Stop the instance and remove its profile (called when the worker process exits)."""
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None
        if self.desktop is not None and self.process is not None and self.process.poll() is None:
            self._terminate(CLOSE_GRACE)
        self._kill()
        self.process = None
        self._remove_leftovers()
        shutil.rmtree(self.profile_dir, ignore_errors=True)

    def _terminate(self, grace: float) -> None:
        """Ask the instance to quit, waiting at most ``grace`` seconds: a hung instance never
        answers (a UNO call cannot be interrupted), and the kill that follows ends the call."""
        desktop = self.desktop

        def terminate() -> None:
            try:
                desktop.terminate()
            except Exception:  # noqa: BLE001 - the bridge may be gone already; the kill follows
                log.debug("libreoffice.terminate_failed")

        caller = threading.Thread(target=terminate, name="libreoffice-terminate", daemon=True)
        caller.start()
        caller.join(grace)
        if caller.is_alive():
            log.warning("libreoffice.terminate_timeout", pid=self.process and self.process.pid)

    def _remove_leftovers(self) -> None:
        """What a killed instance leaves: its two pipes' socket files in /tmp, and its
        temporary files. Called before a start and on close, from the converting thread only,
        so a new instance's own pipes are never taken away. (Every recycling is a kill, and
        before this each one left two files in /tmp for good.)"""
        names = [single_instance_pipe(self.profile_dir)]
        if self.pipe is not None:
            names.append(self.pipe)
        for name in names:
            for path in pipe_files(name):
                try:
                    path.unlink()
                except OSError as error:
                    # Missing is the usual case. A read-only folder (/var/tmp on a container's
                    # read-only root) cannot hold a pipe of ours, and unlink() of a missing file
                    # there fails with EROFS, not ENOENT: found by tests/infra/test_k8s.py.
                    if error.errno not in (errno.ENOENT, errno.EROFS):
                        raise
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _ensure_running(self) -> None:
        alive = self.process is not None and self.process.poll() is None
        if alive and self.desktop is not None and self.conversions < self.restart_after:
            return
        if self.process is not None:
            # Also when the launcher is gone: soffice.bin can outlive it, and a new instance
            # must not start beside it on the same profile.
            self._kill()
        self.start()

    def _responsive(self) -> bool:
        """Whether the instance still answers: a crash can surface before the process is gone."""
        if self.process is None or self.process.poll() is not None or self.desktop is None:
            return False
        try:
            self.desktop.getComponents()
        except Exception:  # noqa: BLE001 - any failure of the bridge means the instance is gone
            return False
        return True

    # -- conversion --------------------------------------------------------------------------

    def _on_timeout(self, generation: int) -> None:
        with self._running_lock:
            if generation != self._running:
                return  # that conversion ended meanwhile; this one must not be touched
            self.timed_out = True
            log.warning("libreoffice.timeout", pid=self.process.pid if self.process else None)
            self._kill()
        metrics.libreoffice_timed_out()  # outside the lock: the conversion's end waits on it

    def convert(
        self, source: Path, target: Path, timeout: float, options: PdfOptions = PLAIN_PDF
    ) -> None:
        self._ensure_running()
        # Linked (or copied) into the instance's work folder, the only one it may read; its PDF
        # is written there too, then moved out.
        staged, produced = stage_document(source, self.work_dir), self.work_dir / "document.pdf"
        try:
            self._convert_in_work_dir(staged, produced, timeout, options)
            if produced.is_file():
                move_file(produced, target)
        finally:
            empty_folder(self.work_dir)

    def _convert_in_work_dir(
        self, source: Path, target: Path, timeout: float, options: PdfOptions
    ) -> None:
        self.timed_out = False
        # A blocked UNO call cannot be interrupted from this thread; the watchdog kills the
        # whole process group, which makes the call fail at once.
        if self.watchdog is None:
            self.watchdog = Watchdog(self._on_timeout)
        self._running = self.watchdog.arm(timeout)
        try:
            self._convert(
                uno.systemPathToFileUrl(str(source.resolve())),
                uno.systemPathToFileUrl(str(target.resolve())),
                options,
            )
        except ConversionError:
            raise
        except Exception as error:
            if self.timed_out:
                raise ConversionTimeout(
                    f"LibreOffice did not finish within {timeout:g} seconds and was stopped."
                ) from None
            if not self._responsive():
                self._kill()
                raise ConverterCrashed(crash_message(self.memory_mb)) from error
            # The instance is alive, so the document itself was refused (an IOException or
            # IllegalArgumentException from the load or the PDF export).
            raise ConversionError(
                f"LibreOffice could not convert this document ({type(error).__name__})."
            ) from error
        finally:
            with self._running_lock:  # after this, a late expiry finds no conversion to stop
                self.watchdog.disarm()
                self._running = None
            self.conversions += 1
        if self.timed_out:  # the kill raced with a conversion that had just finished
            raise ConversionTimeout(
                f"LibreOffice did not finish within {timeout:g} seconds and was stopped."
            )

    def _convert(self, source_url: str, target_url: str, options: PdfOptions) -> None:
        document = self.desktop.loadComponentFromURL(
            source_url,
            "_blank",
            0,
            _props(
                Hidden=True,
                ReadOnly=True,
                UpdateDocMode=NO_UPDATE,
                MacroExecutionMode=NEVER_EXECUTE,
            ),
        )
        if document is None:
            raise ConversionError("LibreOffice could not open this document.")
        try:
            # The filter wants FilterData as a sequence of PropertyValue: a bare tuple would
            # reach it as a sequence of any, and the options would be ignored.
            filter_data = uno.Any(
                "[]com.sun.star.beans.PropertyValue", _props(**options.filter_data())
            )
            document.storeToURL(
                target_url, _props(FilterName="writer_pdf_Export", FilterData=filter_data)
            )
        finally:
            try:
                document.close(True)
            except Exception:  # noqa: BLE001 - a failed close must not hide the export's outcome
                log.debug("libreoffice.close_failed")
