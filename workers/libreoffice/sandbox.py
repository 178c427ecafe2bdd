"""LibreOffice's sandbox: what one instance may read, write and reach.

A document can point LibreOffice at local files (linked pictures, SVG images, external
relationships), and LibreOffice 7.4 follows some of them whatever its settings say
(docs/security.md). The sanitizer rewrites what it recognises; this is the line that holds when
it misses something. Each instance can read only its installation, the fonts, a few system
files the C library and fontconfig read, and its profile, which holds the one folder with the
document being converted; it can write only its profile; it can open no socket but a Unix one
(its UNO pipe), and in /tmp it can only create and remove sockets (LibreOffice always makes its
pipes there).

The fonts an operator adds (QUIRE_FONTS_DIR) are one more folder it may read; the worker
points fontconfig at them with a FONTCONFIG_FILE in the profile (``workers.fonts``).

It is built from what an unprivileged process gets from the kernel, so it works under the
image's uid 10001 without capabilities:

- Landlock (ABI 1 and later, each newer right used where the kernel has it) for the files, for
  TCP (ABI 4), and for abstract Unix sockets and signals outside the sandbox (ABI 6);
- a seccomp filter that fails ``socket()`` for every family but AF_UNIX with EACCES (Landlock
  does not cover UDP or raw sockets) and refuses io_uring, which could open sockets without
  ``socket()``;
- ``RLIMIT_AS``, so a document that makes LibreOffice swell kills its own instance, not the host.

Two halves, one file, so that the sandbox moves whole. The worker calls ``command`` to wrap
soffice's command line and ``check`` once to learn whether the kernel lets a sandbox be set up.
The same file, run as a script by the worker's interpreter in isolated mode, applies the rules
to itself and then execs soffice: the rules are fixed before LibreOffice's first instruction,
and every process it starts inherits them. That half uses nothing but the standard library and
runs before anything else is imported; a ``preexec_fn`` would run Python in a child forked
from a multithreaded worker, which can deadlock. So it is run by its path, not with ``-m``:
that would import the ``workers.libreoffice`` package, and with it the worker's settings,
before the rules apply.

The script exits with ``SETUP_FAILED`` when any step fails (it never runs soffice unconfined);
the converters then refuse to convert, as they do when the profile's settings do not take.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# The script's exit status when the sandbox could not be set up (its reason goes to stderr).
SETUP_FAILED = 97

# -- what LibreOffice may touch (measured with strace and Landlock over the corpus; see
# docs/security.md, "The LibreOffice sandbox") ------------------------------------------------

# Read and execute. Its installation and the libraries it loads: /usr/lib holds both on Debian
# (the installation's own folder is added from the soffice path, for installs elsewhere);
# /usr/bin for the tools the soffice shell script runs (sed, dirname, uname ...); /usr/share for
# fonts, fontconfig's configuration, dictionaries, locales and time zones. Missing paths are
# skipped: /lib, /lib64 and /bin are links into /usr on a merged-/usr system, folders elsewhere.
READABLE = (
    "/usr/lib",
    "/usr/lib64",
    "/usr/lib32",
    "/usr/bin",
    "/usr/share",
    "/lib",
    "/lib64",
    "/bin",
    "/usr/local/share/fonts",
    # Debian keeps the installation's registry in /etc/libreoffice, and links its shared
    # extension cache to /var/spool/libreoffice (without it soffice aborts at start).
    "/etc/libreoffice",
    "/var/lib/libreoffice",
    "/var/spool/libreoffice",
    # fontconfig: its configuration and the system's font caches (read only: the caches are
    # built when fonts are installed, so an instance never has to scan the fonts itself).
    "/etc/fonts",
    "/var/cache/fontconfig",
    # The C library: the loader's cache, the time zone, user and group names.
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    # Randomness (UUIDs, hash seeds).
    "/dev/urandom",
    "/dev/random",
    "/dev/zero",
    # What LibreOffice and its libraries read of the kernel: not /proc itself, where other
    # processes' command lines are.
    "/proc/filesystems",
    "/proc/meminfo",
    "/proc/cpuinfo",
    "/proc/stat",
    "/proc/version",
    "/proc/sys/vm/overcommit_memory",
    "/proc/sys/crypto/fips_enabled",
    "/sys/devices/system/cpu",
)
# Every right: the profile (its HOME, TMPDIR and the document's folder are inside it).
WRITABLE_DEVICES = ("/dev/null",)
# Only making and removing sockets: LibreOffice makes its pipes in /tmp (or in /var/tmp when /tmp
# cannot be written), whatever TMPDIR says.
PIPE_DIRS = ("/tmp", "/var/tmp")  # noqa: S108 - LibreOffice's fixed choice, not ours

# The worker's environment holds its secrets (store keys, the signing key): LibreOffice gets
# only what it needs to run and render, plus HOME and TMPDIR in its profile.
PASSED_ENVIRONMENT = ("LANG", "LANGUAGE", "TZ")
SAFE_PATH = "/usr/bin:/bin"


class SandboxError(Exception):
    """The sandbox cannot be set up on this machine; the message says why, for an operator."""


@dataclass(frozen=True)
class Policy:
    """What one LibreOffice process tree may touch. ``confine=False`` is QUIRE_SANDBOX=off:
    then only the memory limit applies."""

    writable: tuple[Path, ...]
    readable: tuple[Path, ...] = ()
    memory_mb: int | None = None
    confine: bool = True
    environment: dict[str, str] = field(default_factory=dict)


def libreoffice_policy(
    soffice: str,
    writable: Sequence[Path],
    *,
    memory_mb: int | None,
    confine: bool,
    fonts_dir: Path | None = None,
) -> Policy:
    """The policy of an instance that may write only ``writable`` (its profile), and read
    ``fonts_dir`` too (QUIRE_FONTS_DIR: the fonts an operator adds)."""
    readable = [Path(path) for path in READABLE]
    if fonts_dir is not None:
        readable.append(fonts_dir.resolve())
    installation = installation_dir(soffice)
    if installation is not None:
        readable.append(installation)
    return Policy(
        writable=tuple(Path(path).resolve() for path in writable),
        readable=tuple(readable),
        memory_mb=memory_mb,
        confine=confine,
    )


def installation_dir(soffice: str) -> Path | None:
    """The folder LibreOffice is installed in (``.../program/soffice`` → ``...``)."""
    found = shutil.which(soffice)
    if found is None:
        return None
    program = Path(found).resolve().parent
    return program.parent if program.name == "program" else program


def environment(
    home: Path,
    tmpdir: Path,
    base: dict[str, str] | None = None,
    fontconfig: dict[str, str] | None = None,
) -> dict[str, str]:
    """LibreOffice's environment inside the sandbox: the locale and nothing of the worker's
    configuration, with HOME and TMPDIR inside its profile (fontconfig and dconf write there),
    plus ``fontconfig`` (FONTCONFIG_FILE, when QUIRE_FONTS_DIR adds a folder of fonts)."""
    base = dict(os.environ) if base is None else base
    kept = {
        name: value
        for name, value in base.items()
        if name in PASSED_ENVIRONMENT or name.startswith("LC_")
    }
    # Two malloc arenas, not eight per core: each reserves 64 MiB of address space, which counts
    # against the memory limit (RLIMIT_AS) without being used, and more cores would mean less
    # room for the document.
    return {
        **kept,
        **(fontconfig or {}),
        "PATH": SAFE_PATH,
        "HOME": str(home),
        "TMPDIR": str(tmpdir),
        "MALLOC_ARENA_MAX": "2",
    }


def command(policy: Policy, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside ``policy``: this file as a script, which applies it and execs argv.
    -I -S: the interpreter reads no environment variable, site folder or current folder."""
    options: list[str] = []
    if policy.confine:
        options.append("--confine")
        options += [f"--read={path}" for path in policy.readable]
        options += [f"--write={path}" for path in (*policy.writable, *WRITABLE_DEVICES)]
        options += [f"--sockets={path}" for path in PIPE_DIRS]
    if policy.memory_mb is not None:
        options.append(f"--memory-mb={policy.memory_mb}")
    return [sys.executable, "-I", "-S", str(Path(__file__).resolve()), *options, "--", *argv]


_checked = False


def check() -> None:
    """Raise SandboxError unless this machine lets a process sandbox itself and the sandbox
    really blocks: a probe applies the rules to itself, then must fail to read a file outside
    them and to open a TCP or UDP socket. Once per process when it succeeds (the kernel and
    the container's seccomp profile do not change under a running worker)."""
    global _checked
    if _checked:
        return
    probe = [sys.executable, "-I", "-S", str(Path(__file__).resolve()), "--probe"]
    try:
        result = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SandboxError(f"the sandbox probe could not run: {error}") from error
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()[-1:] or [f"exit code {result.returncode}"]
        raise SandboxError(reason[0])
    _checked = True


# -- the script half: applies a policy to itself, then execs ---------------------------------
# Linux UAPI values (include/uapi/linux/landlock.h, seccomp.h, filter.h, audit.h).

SYS_LANDLOCK_CREATE_RULESET = 444  # the same number on every architecture
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1

FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1

# The file-system rights each ABI can handle: everything a version knows is denied unless a
# rule grants it.
FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1}
FS_RIGHTS_LATEST = (1 << 16) - 1  # ABI 5 and later
FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
READ_RIGHTS = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
SOCKET_RIGHTS = FS_MAKE_SOCK | FS_REMOVE_FILE

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_JGE_K = 0x35
BPF_RET_K = 0x06
X32_SYSCALL_BIT = 0x40000000
ERRNO_EACCES = 13
ERRNO_ENOSYS = 38

# machine: (AUDIT_ARCH_*, socket, io_uring_setup, io_uring_enter, io_uring_register)
ARCHITECTURES = {
    "x86_64": (0xC000003E, 41, 425, 426, 427),
    "aarch64": (0xC00000B7, 198, 425, 426, 427),
}


class RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in the UAPI header
    _fields_ = (
        ("allowed_access", ctypes.c_uint64),
        ("parent_fd", ctypes.c_int32),
    )


class SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class SockFprog(ctypes.Structure):
    _fields_ = (
        ("len", ctypes.c_ushort),
        ("filter", ctypes.POINTER(SockFilter)),
    )


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(number: int, *args: object) -> int:
    result = int(_libc.syscall(number, *args))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; OSError when Landlock is missing or blocked."""
    return _syscall(
        SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), LANDLOCK_CREATE_RULESET_VERSION
    )


def _prctl(option: int, *args: object) -> None:
    if _libc.prctl(option, *args) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def apply_landlock(readable: Iterable[str], writable: Iterable[str], sockets: Iterable[str]) -> int:
    """Restrict this process (and whatever it execs) to the given folders and files, no TCP,
    and no abstract sockets or signals outside; return the ABI used."""
    abi = landlock_abi()
    fs = FS_RIGHTS_BY_ABI.get(abi, FS_RIGHTS_LATEST)
    attr = RulesetAttr(handled_access_fs=fs)
    size = 8
    if abi >= 4:
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP  # no rule grants a port
        size = 16
    if abi >= 6:
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        size = 24
    ruleset = _syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0)
    try:
        for paths, rights in ((readable, READ_RIGHTS), (writable, fs), (sockets, SOCKET_RIGHTS)):
            for path in paths:
                _allow(ruleset, path, rights & fs)
        _syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0)
    finally:
        os.close(ruleset)
    return abi


def _allow(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # not on this system (a merged-/usr link, an optional font folder)
    try:
        if not os.path.isdir(path):
            rights &= FILE_RIGHTS  # a rule on a file may hold only a file's rights
        rule = PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        _syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0)
    finally:
        os.close(fd)


def _bpf(code: int, k: int, jt: int = 0, jf: int = 0) -> SockFilter:
    return SockFilter(code=code, jt=jt, jf=jf, k=k)


def socket_filter(machine: str) -> list[SockFilter]:
    """A seccomp program: socket() only for AF_UNIX (EACCES otherwise), no io_uring (ENOSYS),
    and no system call through another ABI (x32, or 32-bit compat: it would bypass the check)."""
    try:
        arch, sys_socket, *io_uring = ARCHITECTURES[machine]
    except KeyError:
        raise OSError(f"no seccomp filter for the {machine} architecture") from None
    deny_socket = SECCOMP_RET_ERRNO | ERRNO_EACCES
    program = [
        _bpf(BPF_LD_W_ABS, 4),  # seccomp_data.arch
        _bpf(BPF_JEQ_K, arch, jt=1),
        _bpf(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
        _bpf(BPF_LD_W_ABS, 0),  # seccomp_data.nr
    ]
    if machine == "x86_64":
        program += [
            _bpf(BPF_JGE_K, X32_SYSCALL_BIT, jf=1),
            _bpf(BPF_RET_K, SECCOMP_RET_ERRNO | ERRNO_ENOSYS),
        ]
    for number in io_uring:
        program += [
            _bpf(BPF_JEQ_K, number, jf=1),
            _bpf(BPF_RET_K, SECCOMP_RET_ERRNO | ERRNO_ENOSYS),
        ]
    program += [
        _bpf(BPF_JEQ_K, sys_socket, jf=3),
        _bpf(BPF_LD_W_ABS, 16),  # the low half of seccomp_data.args[0] (little-endian): family
        _bpf(BPF_JEQ_K, socket.AF_UNIX, jt=1),
        _bpf(BPF_RET_K, deny_socket),
        _bpf(BPF_RET_K, SECCOMP_RET_ALLOW),
    ]
    return program


def apply_seccomp() -> None:
    program = socket_filter(platform.machine())
    filters = (SockFilter * len(program))(*program)
    prog = SockFprog(len=len(program), filter=filters)
    _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0)


def confine(readable: Iterable[str], writable: Iterable[str], sockets: Iterable[str]) -> None:
    # no_new_privs first: both Landlock and an unprivileged seccomp filter require it, and it
    # keeps a set-uid program from shedding the rules.
    _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    apply_landlock(readable, writable, sockets)
    apply_seccomp()


def limit_memory(megabytes: int) -> None:
    limit = megabytes * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # A LibreOffice killed by its limit would otherwise leave a core file as large, in a
    # folder of the worker's.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def probe() -> str | None:
    """Inside the sandbox: what still gets through, or None when everything is blocked."""
    try:
        os.listdir("/")  # a folder no rule grants
    except PermissionError:
        pass
    else:
        return "a sandboxed process could still read outside its folders"
    for family, kind in ((socket.AF_INET, socket.SOCK_STREAM), (socket.AF_INET, socket.SOCK_DGRAM)):
        try:
            socket.socket(family, kind).close()
        except PermissionError:
            continue
        return "a sandboxed process could still open network sockets"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a program in LibreOffice's sandbox.")
    parser.add_argument("--confine", action="store_true")
    parser.add_argument("--read", action="append", default=[])
    parser.add_argument("--write", action="append", default=[])
    parser.add_argument("--sockets", action="append", default=[])
    parser.add_argument("--memory-mb", type=int)
    parser.add_argument("--probe", action="store_true", help="check that the sandbox blocks")
    parser.add_argument("program", nargs="*")
    args = parser.parse_args(argv)
    try:
        if args.memory_mb is not None:
            limit_memory(args.memory_mb)
        if args.confine or args.probe:
            confine(args.read, args.write, args.sockets)
    except OSError as error:
        print(f"the kernel refused the sandbox: {error}", file=sys.stderr)
        return SETUP_FAILED
    if args.probe:
        leak = probe()
        if leak is not None:
            print(leak, file=sys.stderr)
            return SETUP_FAILED
        return 0
    if not args.program:
        parser.error("no program to run")
    try:
        os.execvp(args.program[0], args.program)  # noqa: S606 - the point of this script
    except OSError as error:
        print(f"cannot run {args.program[0]}: {error}", file=sys.stderr)
    return SETUP_FAILED


if __name__ == "__main__":
    sys.exit(main())
