"""A reproducible install: locked by hash, isolated from Debian's Python, runtime-only image."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from infra.lock import DEV_LOCK, RUNTIME_LOCK, project_requirements, recorded_requirements

REPO = Path(__file__).resolve().parents[2]
DEBIAN_SITE = "/usr/lib/python3/dist-packages"
DEV_ONLY = ["pytest", "mypy", "selenium", "ruff", "moto", "schemathesis", "hypothesis"]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def pins(lock: Path) -> dict[str, str]:
    """Each pinned package of a lock file, by canonical name, and that every pin has a hash."""
    found: dict[str, str] = {}
    lines = lock.read_text().splitlines()
    for index, line in enumerate(lines):
        match = PIN.match(line)
        if match:
            following = lines[index + 1] if index + 1 < len(lines) else ""
            assert "--hash=sha256:" in line + following, f"{match.group(1)} has no hash in {lock}"
            found[canonicalize_name(match.group(1))] = match.group(2)
    return found


@pytest.mark.parametrize("lock_set", ["runtime", "dev"])
def test_the_lock_was_resolved_from_what_pyproject_says(lock_set: str) -> None:
    lock = RUNTIME_LOCK if lock_set == "runtime" else DEV_LOCK
    assert recorded_requirements(lock) == project_requirements()[lock_set], (
        f"pyproject.toml and {lock.name} disagree: run `make lock` and commit the result"
    )
    locked = pins(lock)
    for line in recorded_requirements(lock):
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is required but not locked"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{lock.name} pins {requirement.name}=={locked[name]}, outside {requirement.specifier}"
        )


def test_a_changed_dependency_is_noticed_without_a_registry(tmp_path: Path) -> None:
    """The check above can fail: one floor raised in pyproject.toml, and the records differ."""
    changed = (REPO / "pyproject.toml").read_text().replace('"rich>=', '"rich>=99,>=', 1)
    (tmp_path / "pyproject.toml").write_text(changed)
    assert project_requirements(tmp_path / "pyproject.toml")["runtime"] != recorded_requirements(
        RUNTIME_LOCK
    )


def test_dev_installs_the_same_runtime_versions_as_the_image() -> None:
    runtime, dev = pins(RUNTIME_LOCK), pins(DEV_LOCK)
    assert {name: dev.get(name) for name in runtime} == runtime
    for tool in DEV_ONLY:
        assert tool in dev
        assert tool not in runtime, f"the runtime lock (the image) would install {tool}"


def test_the_venv_sees_no_debian_python_package_but_uno() -> None:
    """Import everything Quire imports, then look where each module came from."""
    probe = f"""
import importlib.util, json, os, sys
import app.main, quire_client.cli, workers.tasks, workers.libreoffice.uno, boto3, urllib3.contrib
import uno, unohelper
leaked = sorted(
    name for name, module in sys.modules.items()
    if (getattr(module, "__file__", None) or "").startswith({DEBIAN_SITE!r})
    and name not in ("uno", "unohelper")
)
openssl = importlib.util.find_spec("OpenSSL")
print(json.dumps({{
    "leaked": leaked,
    "path": [entry for entry in sys.path if entry.startswith({DEBIAN_SITE!r})],
    "openssl": openssl.origin if openssl else None,
    "uno": os.path.realpath(uno.__file__),
}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    seen = json.loads(result.stdout)
    assert seen["leaked"] == []
    assert seen["path"] == []
    assert seen["openssl"] is None, "Debian's pyOpenSSL is importable from the venv"
    assert seen["uno"] == f"{DEBIAN_SITE}/uno.py"


def test_the_image_installs_only_the_runtime_set(tmp_path: Path) -> None:
    """The Dockerfile runs bootstrap.sh without --dev from the runtime lock alone; doing the same
    here makes a venv that runs Quire and has none of the test or lint tools."""
    dockerfile = (REPO / "Dockerfile").read_text()
    runs = re.findall(r"infra/bootstrap\.sh[^\n]*", dockerfile)
    assert runs, "the image is not set up by infra/bootstrap.sh"
    assert all("--dev" not in run for run in runs)
    assert "COPY requirements/runtime.txt" in dockerfile
    assert "dev.txt" not in dockerfile
    assert "!requirements/runtime.txt" in (REPO / ".dockerignore").read_text()

    venv = tmp_path / "venv"
    env = {**os.environ, "QUIRE_VENV": str(venv)}
    subprocess.run(["infra/bootstrap.sh"], cwd=REPO, env=env, check=True, capture_output=True)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [python, "-c", "import app.main, workers.tasks, workers.libreoffice.uno"],
        cwd=REPO,
        check=True,
    )
    for tool in DEV_ONLY:
        found = subprocess.run(
            [python, "-c", f"import importlib.util as u; print(u.find_spec({tool!r}) is None)"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert found.stdout.strip() == "True", f"the runtime set installed {tool}"
