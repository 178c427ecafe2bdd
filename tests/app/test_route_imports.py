"""Routes do HTTP only: no module of app/api opens a session, builds a query or sends a task.

They parse the request, call one service (app/services) and shape the answer. Read from each
module's imports, so a route that reaches past the services fails here, not in review.
deps.py is the exception: the request's session is made there.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[2] / "app" / "api"
EXCEPTED = {"deps.py"}
# What building queries or sending tasks takes; a route gets it from a service instead.
FORBIDDEN_MODULES = {"sqlalchemy", "app.transitions"}
FORBIDDEN_NAMES = {
    "app.db": {"session_scope", "get_engine", "get_sessionmaker", "make_engine"},
    "app.queue": {
        "queue_after_commit",
        "send_all",
        "send_now",
        "send_ingest",
        "send_conversions",
        "send_archive",
        "send_webhook",
        "get_sender",
    },
}
# Catching the database's outage to answer 503 builds no query.
ALLOWED = {("errors.py", "sqlalchemy.exc")}


def _mapped_class(module: str, name: str) -> bool:
    """Whether ``from module import name`` is an ORM model (a query builder)."""
    if module != "app.models":
        return False
    return hasattr(getattr(importlib.import_module(module), name, None), "__table__")


def violations(path: Path) -> list[str]:
    found: list[str] = []

    def check(module: str, names: list[str], line: int) -> None:
        if (path.name, module) in ALLOWED:
            return
        root = module.split(".")[0]
        if module in FORBIDDEN_MODULES or root in FORBIDDEN_MODULES:
            found.append(f"{path.name}:{line} imports {module}")
            return
        for name in names:
            if name == "*" or name in FORBIDDEN_NAMES.get(module, set()):
                found.append(f"{path.name}:{line} imports {name} from {module}")
            elif _mapped_class(module, name):
                found.append(f"{path.name}:{line} imports the model {name}")
            elif module == "app" and name in {"db", "queue", "transitions"}:
                found.append(f"{path.name}:{line} imports app.{name}")

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                check(alias.name, [], node.lineno)
                if alias.name in FORBIDDEN_NAMES:
                    found.append(f"{path.name}:{node.lineno} imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            check(node.module, [alias.name for alias in node.names], node.lineno)
    return found


ROUTE_MODULES = sorted(p for p in API.glob("*.py") if p.name not in EXCEPTED)


@pytest.mark.parametrize("path", ROUTE_MODULES, ids=lambda p: p.name)
def test_a_route_module_reaches_the_database_and_the_queue_only_through_services(
    path: Path,
) -> None:
    assert violations(path) == []


def test_the_check_sees_each_kind_of_reach(tmp_path: Path) -> None:
    route = tmp_path / "jobs.py"
    route.write_text(
        "from sqlalchemy import select\n"
        "import sqlalchemy.orm\n"
        "from app.db import session_scope\n"
        "from app.models import Job, JobStatus\n"
        "from app import transitions, queue\n"
        "from app.queue import queue_after_commit\n"
        "from app.db import check_database\n"
    )
    assert violations(route) == [
        "jobs.py:1 imports sqlalchemy",
        "jobs.py:2 imports sqlalchemy.orm",
        "jobs.py:3 imports session_scope from app.db",
        "jobs.py:4 imports the model Job",
        "jobs.py:5 imports app.transitions",
        "jobs.py:5 imports app.queue",
        "jobs.py:6 imports queue_after_commit from app.queue",
    ]
