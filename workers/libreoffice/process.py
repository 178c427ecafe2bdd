"""Starting and stopping LibreOffice processes: the sandbox and memory settings a converter
runs with, the command-line flags that tie an instance to its own profile, killing a whole
process group, and the pipe files a killed instance leaves behind.

Both real converters start soffice through ``workers.libreoffice.sandbox`` in a new session, so
that its process group holds soffice.bin too (it outlives its launcher) and a kill reaches it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from app.config import get_settings

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


# Where LibreOffice makes its named pipes: always /tmp (or /var/tmp when /tmp is not
# writable), whatever TMPDIR says.
PIPE_DIRS = (Path("/tmp"), Path("/var/tmp"))  # noqa: S108 - LibreOffice's fixed choice


def pipe_files(name: str) -> list[Path]:
    """Where the socket file of LibreOffice's pipe ``name`` can be."""
    return [folder / f"OSL_PIPE_{os.getuid()}_{name}" for folder in PIPE_DIRS]


def single_instance_pipe(profile_dir: Path) -> str:
    """The name of the pipe LibreOffice opens for its profile (besides the one we ask for):
    SingleOfficeIPC_ and the MD5 of the profile's URL in UTF-16, each byte in hex without
    padding, as desktop/source/app/officeipcthread.cxx writes it. LibreOffice hashes its own
    normal form of the URL, which leaves the characters a URL path allows (such as "@" and
    "+") unescaped where pathlib's as_uri() escapes them."""
    url = "file://" + quote(str(profile_dir.resolve()), safe="/!$&'()*+,;=:@~")
    digest = hashlib.md5(url.encode("utf-16-le"), usedforsecurity=False)
    return "SingleOfficeIPC_" + "".join(f"{byte:x}" for byte in digest.digest())
