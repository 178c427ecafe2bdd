"""LibreOffice for the tests: real, warm instances, started by the tests that ask for one.

A pytest plugin, registered by tests/conftest.py (``pytest_plugins``). Nothing here imports
``uno`` until a fixture runs: a run that starts no LibreOffice (``pytest
tests/app/test_zipinput.py``) neither needs python3-uno nor pays for importing it.

- ``module_converter``: one warm instance for a whole module, as a worker process has one for
  many files; a module that wants it under another name defines ``converter`` returning it.
- ``converter``: one instance for the test, with its profile in the test's folder.
- ``make_uno_converter``: instances of the test's own (recycling, sandbox or memory settings the
  shared ones must not be left with); all closed when the test ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest

if TYPE_CHECKING:  # the import at run time is in uno_converter: it imports uno
    from workers.libreoffice import SandboxSetting
    from workers.libreoffice.uno import UnoConverter


def uno_converter(
    profile_root: Path,
    *,
    restart_after: int = 100,
    sandbox: SandboxSetting = None,
    memory_mb: int | None = None,
) -> UnoConverter:
    """A warm converter on the system's soffice; ``sandbox`` and ``memory_mb`` as for
    UnoConverter (None: the settings)."""
    from workers.libreoffice.uno import UnoConverter

    return UnoConverter(
        soffice="soffice",
        profile_root=profile_root,
        start_timeout=60,
        restart_after=restart_after,
        sandbox=sandbox,
        memory_mb=memory_mb,
    )


@pytest.fixture(scope="module")
def module_converter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UnoConverter]:
    """One warm instance for a whole module, as a worker process has one for many files."""
    instance = uno_converter(tmp_path_factory.mktemp("profiles"), restart_after=1000)
    yield instance
    instance.close()


@pytest.fixture
def converter(tmp_path: Path) -> Iterator[UnoConverter]:
    """One instance for the test, with its profile in the test's folder; closed afterwards."""
    instance = uno_converter(tmp_path / "profiles")
    yield instance
    instance.close()


class MakeUnoConverter(Protocol):
    def __call__(
        self,
        profiles: str = "profiles",
        *,
        restart_after: int = 100,
        sandbox: SandboxSetting = None,
        memory_mb: int | None = None,
    ) -> UnoConverter: ...


@pytest.fixture
def make_uno_converter(tmp_path: Path) -> Iterator[MakeUnoConverter]:
    """Builds converters of the test's own, with their profiles in ``tmp_path / profiles``;
    the rest as for ``uno_converter``. All are closed when the test ends; closing one twice does
    no harm, so a test may close its own to look at what closing leaves behind."""
    built: list[UnoConverter] = []

    def make(
        profiles: str = "profiles",
        *,
        restart_after: int = 100,
        sandbox: SandboxSetting = None,
        memory_mb: int | None = None,
    ) -> UnoConverter:
        instance = uno_converter(
            tmp_path / profiles, restart_after=restart_after, sandbox=sandbox, memory_mb=memory_mb
        )
        built.append(instance)
        return instance

    yield make
    for instance in built:
        instance.close()


@pytest.fixture(scope="session")
def legacy_documents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A corpus DOCX saved by LibreOffice itself as .doc, .rtf and .odt (made once per session,
    each by a cold ``soffice --convert-to`` with a profile of its own), and the DOCX: by suffix."""
    import shutil

    from tests.conftest import CORPUS
    from tests.saved_documents import LEGACY_FILTERS, soffice_saved

    folder = tmp_path_factory.mktemp("legacy")
    source = folder / "source.docx"
    shutil.copyfile(CORPUS / "pandoc" / "test__docx__lists.docx", source)
    made = {"docx": source}
    for suffix, target_filter in LEGACY_FILTERS.items():
        [made[suffix]] = soffice_saved([source], target_filter, folder)
    made["encrypted-doc"] = folder / "encrypted.doc"
    made["encrypted-doc"].write_bytes(with_encrypted_flag(made["doc"]))
    return made


def with_encrypted_flag(doc: Path) -> bytes:
    """The .doc with its FibBase.fEncrypted bit set: what Word's password protection marks
    (LibreOffice's command line cannot save a .doc with a password)."""
    import struct

    from workers.ole2 import F_ENCRYPTED, CompoundFile

    with open(doc, "rb") as handle:
        # Found by its first bytes, as the parser reads them: LibreOffice's WordDocument stream
        # is small enough to lie in the mini stream, so no sector arithmetic finds it.
        head = CompoundFile(handle).read_stream("WordDocument", 32)
    data = bytearray(doc.read_bytes())
    assert head[:2] == b"\xec\xa5" and data.count(head) == 1
    flags_at = data.index(head) + 0x0A
    flags = struct.unpack_from("<H", data, flags_at)[0]
    struct.pack_into("<H", data, flags_at, flags | F_ENCRYPTED)
    return bytes(data)
