"""A Python client generated from Quire's OpenAPI document by openapi-python-client, the way
docs/api.md#generating-a-client tells a client developer to: its command and its config file
(docs/openapi-python-client.yaml), offline. Shared by tests/app/test_openapi.py (the generator
accepts the document without a warning) and tests/e2e/test_generated_client.py (the generated
code works against the real service)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "docs" / "openapi-python-client.yaml"
# Not quire_client, the name the generator derives from the title: that is the SDK's package.
PACKAGE = "quire_openapi_client"
VENV_BIN = Path(sys.executable).parent


def generate_client(document: dict[str, Any], into: Path) -> str:
    """Generate the client package ``PACKAGE`` under ``into``; return what the generator printed.

    Fails on any warning: the generator prints one for each piece of the document it cannot
    read (and leaves that piece out of the client), and ``--fail-on-warning`` makes it exit
    non-zero too. Its post-hooks run ruff on the generated code, from this virtual environment.
    """
    path = into / "openapi.json"
    path.write_text(json.dumps(document))
    result = subprocess.run(
        [
            str(VENV_BIN / "openapi-python-client"),
            "generate",
            "--path",
            str(path),
            "--output-path",
            str(into / PACKAGE),
            "--meta",
            "none",
            "--config",
            str(CONFIG),
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "warning" not in output.lower(), output
    assert "skipping" not in output.lower(), output  # a post-hook that could not run
    assert (into / PACKAGE / "client.py").is_file(), output
    return output
