"""The tests keep to their layout: helpers and fixtures live in conftest.py and helper modules,
never in a test module that another one imports.

A test module imported by another runs its fixtures and names in two places, makes pytest
collect the importer's tests against the other's fixtures, and turns a rename in one file into
a failure in another. And a fixture defined in several places can differ silently from one
module to the next, so the fixtures that were unified stay defined once. Both checks read the
source with ``ast``: nothing here is imported.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent

# Fixtures defined once, in a conftest.py; a test that needs another kind asks for a fixture
# named for what differs (``keyed``: a client with API keys; ``bare_client``: no lifespan;
# ``metrics_client``: one router alone; ``quire``: the SDK against the real service).
DEFINED_ONCE = ("client", "receiver", "webhooks_sent")


def python_files() -> list[Path]:
    return sorted(TESTS.rglob("*.py"))


def where(path: Path, node: ast.stmt) -> str:
    return f"{path.relative_to(ROOT).as_posix()}:{node.lineno}"


def dotted_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_test_module(name: str) -> bool:
    """Whether ``name`` is a test module of this tree (a file under tests/ named ``test_*``)."""
    parts = name.split(".")
    return (
        parts[0] == "tests"
        and parts[-1].startswith("test_")
        and ROOT.joinpath(*parts).with_suffix(".py").is_file()
    )


def imported_names(path: Path, tree: ast.Module) -> Iterator[tuple[ast.stmt, str]]:
    """Every module ``path`` imports, and for ``from X import Y`` also ``X.Y`` (which names a
    module when Y is one: ``from tests.app import test_api``)."""
    package = dotted_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            yield node, module
            for alias in node.names:
                yield node, f"{module}.{alias.name}"


def test_no_test_module_imports_another() -> None:
    found = []
    for path in python_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, name in imported_names(path, tree):
            if is_test_module(name):
                found.append(f"{where(path, node)} imports {name}")
    assert found == [], "move what is shared into conftest.py or a helper module:\n" + "\n".join(
        found
    )


def fixture_name(function: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """The name a fixture is requested by, or None if ``function`` is not a fixture."""
    for decorator in function.decorator_list:
        call = decorator if isinstance(decorator, ast.Call) else None
        target = call.func if call else decorator
        if (isinstance(target, ast.Attribute) and target.attr == "fixture") or (
            isinstance(target, ast.Name) and target.id == "fixture"
        ):
            for keyword in call.keywords if call else []:
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                    return str(keyword.value.value)
            return function.name
    return None


def test_the_shared_fixtures_are_defined_once() -> None:
    places: dict[str, list[str]] = defaultdict(list)
    for path in python_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                name = fixture_name(node)
                if name in DEFINED_ONCE:
                    places[name].append(where(path, node))
    repeated = {name: found for name, found in places.items() if len(found) > 1}
    assert repeated == {}, f"defined in more than one place: {repeated}"
