"""Write the lock files, requirements/runtime.txt and requirements/dev.txt, from pyproject.toml.

Run by ``make lock``. Each file pins every package of its set to one version with the hashes of
its distributions, so ``pip install --require-hashes --no-deps -r`` (infra/bootstrap.sh, hence
the image and CI) installs the same bytes on every machine, whatever PyPI holds that day. The
lock is resolved for CPython 3.11 (Debian 12's Python, for which python3-uno is built) on every
platform, so an arm64 image installs from it too.

Each file starts with the requirements it was resolved from, one ``# requirement:`` line each;
tests/infra/test_lock.py reads them back and fails when pyproject.toml says something else, so
a dependency changed without ``make lock`` is caught offline.

    dev.txt       the runtime set plus the [dependency-groups] dev tools: what tests need
    runtime.txt   the build backend and [project] dependencies, at dev.txt's pins: what the
                  image installs
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
LOCK_DIR = ROOT / "requirements"
RUNTIME_LOCK = LOCK_DIR / "runtime.txt"
DEV_LOCK = LOCK_DIR / "dev.txt"
PYTHON_VERSION = "3.11"
RECORD_PREFIX = "# requirement: "


def project_requirements(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, list[str]]:
    """The requirements of each lock, normalised, as pyproject.toml states them today."""
    data = tomllib.loads(pyproject.read_text())
    # The build backend is locked with the runtime set: bootstrap builds Quire's editable
    # install without build isolation, from the locked setuptools, so no build fetches anything.
    runtime = data["build-system"]["requires"] + data["project"]["dependencies"]
    dev = runtime + data["dependency-groups"]["dev"]
    return {
        "runtime": sorted(str(Requirement(line)) for line in runtime),
        "dev": sorted(str(Requirement(line)) for line in dev),
    }


def recorded_requirements(lock: Path) -> list[str]:
    """The requirements a lock file says it was resolved from."""
    return [
        line.removeprefix(RECORD_PREFIX).strip()
        for line in lock.read_text().splitlines()
        if line.startswith(RECORD_PREFIX)
    ]


def _compile(requirements: list[str], output: Path, constraints: Path | None = None) -> None:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        sys.exit("lock: uv is not installed; run `make bootstrap-dev` first")
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"{output.stem}.in"
        source.write_text("\n".join(requirements) + "\n")
        command = [
            uv, "pip", "compile", str(source),
            "--generate-hashes", "--universal", "--python-version", PYTHON_VERSION,
            "--no-header", "--annotation-style", "line", "--quiet",
            "--output-file", str(Path(tmp) / "out.txt"),
        ]  # fmt: skip
        if constraints is not None:
            command += ["--constraint", str(constraints)]
        subprocess.run(command, check=True)
        body = (Path(tmp) / "out.txt").read_text()
    # The annotations name the temporary input file; say where the pins came from instead.
    body = body.replace(f"-r {source}", f"{output.stem} set").replace(f"-c {constraints}", "")
    header = [
        f"# Quire's {output.stem} lock, written by `make lock` (infra/lock.py). Do not edit.",
        "# Install: pip install --require-hashes --no-deps -r " + str(output.relative_to(ROOT)),
        "# Resolved from these requirements of pyproject.toml:",
        *(RECORD_PREFIX + line for line in requirements),
        "",
    ]
    output.write_text("\n".join(header) + body)


def main() -> None:
    LOCK_DIR.mkdir(exist_ok=True)
    wanted = project_requirements()
    # The dev set is resolved first, as one whole, and the runtime set under its pins: both then
    # install the same runtime versions, and a dev tool's bound on a shared package holds for the
    # image too (openapi-python-client needs httpx below 0.29, so the service runs that httpx).
    _compile(wanted["dev"], DEV_LOCK)
    _compile(wanted["runtime"], RUNTIME_LOCK, constraints=DEV_LOCK)
    print(f"lock: wrote {RUNTIME_LOCK.relative_to(ROOT)} and {DEV_LOCK.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
