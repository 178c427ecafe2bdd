"""The client installs and runs without the server's dependencies.

Its pyproject names httpx and rich alone; importing it (and its CLI) loads none of FastAPI,
Celery, boto3, psycopg or SQLAlchemy; and a fresh virtual environment holding only the client,
httpx, rich and their own dependencies, pinned by hash from the server's lock, runs ``quire``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from infra.lock import RUNTIME_LOCK

REPO = Path(__file__).resolve().parents[2]
CLIENT = REPO / "client"
SERVER_ONLY = ["fastapi", "starlette", "celery", "kombu", "boto3", "botocore", "psycopg",
               "sqlalchemy", "alembic", "uvicorn", "pydantic", "app", "workers"]  # fmt: skip
# httpx, rich and what they need (sniffio where an older anyio asks for it); setuptools builds
# the client. Anything else the fresh venv would need is a dependency the client gained.
LIGHT = ["httpx", "httpcore", "h11", "anyio", "idna", "certifi", "sniffio", "typing-extensions",
         "rich", "markdown-it-py", "mdurl", "pygments", "setuptools"]  # fmt: skip

PROBE = f"""
import json, sys
import quire_client, quire_client.cli, quire_client.cli.commands
print(json.dumps(sorted(name for name in {SERVER_ONLY!r} if name in sys.modules)))
"""


def test_the_client_depends_on_httpx_and_rich_only() -> None:
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    names = {canonicalize_name(Requirement(line).name) for line in project["dependencies"]}
    assert names == {"httpx", "rich"}
    assert project["scripts"] == {"quire": "quire_client.cli:main"}


def test_the_client_imports_nothing_of_the_server() -> None:
    """Statically (no import of app, workers or a server library in its source) and at run
    time (a fresh interpreter that imports it has none of them loaded)."""
    pattern = re.compile(r"^\s*(?:from|import)\s+(" + "|".join(SERVER_ONLY) + r")\b", re.MULTILINE)
    for source in (CLIENT / "quire_client").rglob("*.py"):
        found = pattern.findall(source.read_text())
        assert not found, f"{source.relative_to(REPO)} imports {found}"

    loaded = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, cwd="/"
    )
    assert json.loads(loaded.stdout) == []


def light_requirements(target: Path) -> Path:
    """The lock's pins (with their hashes) of the light set alone, as a requirements file."""
    blocks = re.split(r"\n(?=\S)", RUNTIME_LOCK.read_text())
    kept = []
    for block in blocks:
        match = re.match(r"([A-Za-z0-9._-]+)==", block)
        if match and canonicalize_name(match.group(1)) in LIGHT:
            kept.append("\n".join(line for line in block.splitlines() if "#" not in line))
    assert {"httpx", "rich"} <= {canonicalize_name(b.split("==")[0]) for b in kept}
    target.write_text("\n".join(kept) + "\n")
    return target


def test_a_fresh_venv_with_httpx_and_rich_alone_runs_quire(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
    # --no-deps: pip resolves nothing, so whatever the client needs beyond this set would be
    # missing and the checks below would fail.
    requirements = light_requirements(tmp_path / "light.txt")
    subprocess.run([*pip, "--require-hashes", "--no-deps", "-r", str(requirements)], check=True)
    # A copy, so the build writes nothing into the checkout; not editable, as a user gets it.
    source = tmp_path / "client"
    # Without the editable install's egg-info, whose file list the build would reuse.
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    subprocess.run(
        [*pip, "--no-deps", "--no-build-isolation", "--no-index", str(source)], check=True
    )

    listed = subprocess.run(
        [str(venv / "bin" / "pip"), "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
    )
    installed = {canonicalize_name(p["name"]) for p in json.loads(listed.stdout)}
    assert installed - {"pip", "quire-client"} <= set(LIGHT), installed
    checked = subprocess.run(
        [str(venv / "bin" / "pip"), "check"], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout  # nothing the client asks for is missing

    helped = subprocess.run(
        [str(venv / "bin" / "quire"), "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert helped.returncode == 0, helped.stderr
    assert "convert" in helped.stdout and "--server" in helped.stdout
    loaded = subprocess.run(
        [str(venv / "bin" / "python"), "-c", PROBE],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert json.loads(loaded.stdout) == []
