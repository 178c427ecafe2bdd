"""A Word document's VBA macros never run (issue #18: "a .docm is converted with macros off").

The documents carry a real VBA project, built by tests/vba_docs.py: ``Module1.AutoOpen`` and
``ThisDocument.Document_Open``, each writing a marker file and appending text to the document.
A .docm holds it in ``word/vbaProject.bin``, a .doc (one LibreOffice wrote) in its ``Macros``
storage.

What LibreOffice 7.4 does with such a document, found while writing these tests:

- It imports the project (oox's VbaProject reads ``VBA/dir``, each module's stream and
  ``PROJECT``) into a Basic library named after the project, each module compiled with
  ``Option VBASupport 1`` (the "Executable code" VBA option, on by default): the macros are
  code the document can run.
- Opening the document does not fire Word's open events on this build, even with macros
  allowed: Writer asks the VBA service factory for ``com.sun.star.script.vba.
  VBATextEventProcessor``, while the component registers the processor (SwVbaEventsHelper) as
  ``com.sun.star.document.vba.VBATextEventProcessor``, so none is created. A LibreOffice where
  the names agree would run AutoOpen and Document_Open on load; so the tests do not count on
  it: they create that processor themselves and hand it Writer's DOCUMENT_OPEN event, which is
  what Writer does on load when it has one (it runs AutoOpen too).

The control shows both macros run that way in a stock LibreOffice with macros allowed. The
tests show that in Quire neither runs: a .docm reaches LibreOffice without its project, and a
document that still has one (a .doc, whose binary is not rewritten, or a .docm that skipped the
sanitizer) meets an instance that refuses to execute it, the open event handed to it included.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.pdf import pdf_pages
from tests.plugins.libreoffice import MakeUnoConverter
from tests.vba_docs import INSTANCE_TEMP, MARKS, doc_with_macros, docm, marking_macros
from tests.workers.helpers import opened_allowing_macros
from workers.formats import prepare_document
from workers.libreoffice.uno import UnoConverter

TEXT = "the text of a macro-enabled document"
INSERTED = "INSERTED-BY-A-MACRO"  # what AutoOpen appends to the document
WORD_EVENT_PROCESSOR = "com.sun.star.document.vba.VBATextEventProcessor"
NORMAL_MODULE, DOCUMENT_MODULE = 1, 4  # com.sun.star.script.ModuleType


@pytest.fixture(scope="module")
def converter(module_converter: UnoConverter) -> UnoConverter:
    # One warm instance for the module, as a worker has.
    return module_converter


def macro_document(kind: str, folder: Path, legacy: dict[str, Path]) -> Path:
    """A .docm or .doc, saved in ``folder``, whose macros write into the temporary folder of
    the instance that runs them: in its profile, the one place the sandbox lets it write, so a
    test does not pass on the sandbox alone."""
    modules = marking_macros(INSTANCE_TEMP, INSERTED)
    source = folder / f"macro.{kind}"
    if kind == "docm":
        source.write_bytes(docm(TEXT, modules))
    else:
        source.write_bytes(doc_with_macros(legacy["doc"], modules))
    return source


def marks(instance: UnoConverter) -> set[str]:
    """The marks the macros left in ``instance``'s temporary folder."""
    return {name for name in MARKS if (instance.temp_dir / name).exists()}


def connect(instance: UnoConverter) -> Any:
    """A connection of the test's own to ``instance``: its component context. The event
    processor must be created on the connection the document was loaded through (it finds the
    document's shell from the model it is given, which must not be a proxy of a proxy)."""
    import uno

    assert instance.pipe is not None  # started
    local = uno.getComponentContext()
    resolver = local.ServiceManager.createInstanceWithContext(
        "com.sun.star.bridge.UnoUrlResolver", local
    )
    return resolver.resolve(f"uno:pipe,name={instance.pipe};urp;StarOffice.ComponentContext")


@contextmanager
def opened(instance: UnoConverter, source: Path) -> Iterator[tuple[Any, Any]]:
    """``source`` open in ``instance`` with macros allowed: (the context, the document)."""
    context = connect(instance)
    desktop = context.ServiceManager.createInstanceWithContext(
        "com.sun.star.frame.Desktop", context
    )
    with opened_allowing_macros(desktop, source) as document:
        yield context, document


def vba_modules(document: Any) -> dict[str, tuple[int, str]]:
    """Every VBA module LibreOffice imported into ``document``: name to (type, Basic source)."""
    libraries = document.BasicLibraries
    modules = {}
    for library_name in libraries.getElementNames():
        library = libraries.getByName(library_name)
        for name in library.getElementNames():
            if library.hasModuleInfo(name):  # a module of an imported VBA project
                modules[name] = (library.getModuleInfo(name).ModuleType, library.getByName(name))
    return modules


def fire_open_event(context: Any, document: Any) -> None:
    """Hand ``document`` Word's open event, as Writer does on load when it has a VBA event
    processor: DOCUMENT_OPEN runs ThisDocument's Document_Open, and AutoOpen before it."""
    import uno

    processor = context.ServiceManager.createInstanceWithArgumentsAndContext(
        WORD_EVENT_PROCESSOR, (document,), context
    )
    assert processor is not None, f"LibreOffice has no {WORD_EVENT_PROCESSOR}"
    processor.processVbaEvent(
        uno.getConstantByName("com.sun.star.script.vba.VBAEventId.DOCUMENT_OPEN"), ()
    )


def converted_text(instance: UnoConverter, source: Path, target: Path) -> str:
    instance.convert(source, target, timeout=60)
    return " ".join(pdf_pages(target.read_bytes()))


# -- the control: stock LibreOffice runs these macros ------------------------------------------


@pytest.mark.usefixtures("unprotected")
@pytest.mark.parametrize("kind", ["docm", "doc"])
def test_control_stock_libreoffice_imports_the_project_and_runs_both_macros(
    kind: str,
    make_uno_converter: MakeUnoConverter,
    legacy_documents: dict[str, Path],
    tmp_path: Path,
) -> None:
    """Without the profile's settings and the sandbox, with macros allowed: the project is
    imported as executable VBA and the open event runs AutoOpen and Document_Open. Without this
    the other tests' "nothing ran" would prove nothing."""
    instance = make_uno_converter(sandbox="off")
    instance.start()
    source = macro_document(kind, tmp_path, legacy_documents)

    with opened(instance, source) as (context, document):
        modules = vba_modules(document)
        assert {name: kind for name, (kind, _) in modules.items()} == {
            "ThisDocument": DOCUMENT_MODULE,
            "Module1": NORMAL_MODULE,
        }
        assert all("Option VBASupport 1" in code for _, code in modules.values())
        fire_open_event(context, document)
        assert marks(instance) == set(MARKS)
        assert document.Text.String.endswith(INSERTED)


@pytest.mark.usefixtures("unprotected")
def test_control_a_prepared_docm_hands_libreoffice_no_macro(
    make_uno_converter: MakeUnoConverter, legacy_documents: dict[str, Path], tmp_path: Path
) -> None:
    """The same stock LibreOffice, macros allowed, given the .docm as Quire prepares it
    (workers.formats.prepare_document): no VBA module is imported, so no open event has a
    macro to run."""
    instance = make_uno_converter(sandbox="off")
    instance.start()
    prepared = prepare_document(macro_document("docm", tmp_path, legacy_documents), "macro.docm")

    with opened(instance, prepared) as (_, document):
        assert vba_modules(document) == {}
        assert document.Text.String == TEXT


# -- Quire: no macro runs ------------------------------------------------------------------------


def test_a_docm_converts_through_quire_and_no_macro_runs(
    converter: UnoConverter, legacy_documents: dict[str, Path], tmp_path: Path
) -> None:
    source = macro_document("docm", tmp_path, legacy_documents)

    prepared = prepare_document(source, "macro.docm")  # what workers.file_conversion does
    text = converted_text(converter, prepared, tmp_path / "macro.pdf")

    assert TEXT in text and INSERTED not in text
    assert marks(converter) == set()


@pytest.mark.parametrize("kind", ["docm", "doc"])
def test_a_document_that_keeps_its_project_runs_no_macro_even_on_its_open_event(
    kind: str, converter: UnoConverter, legacy_documents: dict[str, Path], tmp_path: Path
) -> None:
    """What holds where the project is not removed: a .doc (prepare_document leaves a DOC's
    binary as it is) and, as if the sanitizer had missed it, a .docm. The instance's settings
    (MacroExecutionMode NEVER_EXECUTE on every load, DisableMacrosExecution in the profile)
    hold on their own: in the conversion, and in a load that asks for macros and is handed
    Word's open event."""
    source = macro_document(kind, tmp_path, legacy_documents)
    if kind == "doc":
        source = prepare_document(source, "macro.doc")
        plain = tmp_path / "plain.doc"
        shutil.copyfile(legacy_documents["doc"], plain)
        expected = converted_text(converter, plain, tmp_path / "plain.pdf")
    else:
        expected = TEXT

    text = converted_text(converter, source, tmp_path / "macro.pdf")
    assert expected in text and INSERTED not in text
    assert marks(converter) == set()

    # From the instance's work folder: the sandbox lets it read no other.
    staged = converter.work_dir / source.name
    shutil.copyfile(source, staged)
    try:
        with opened(converter, staged) as (context, document):
            assert set(vba_modules(document)) == {"ThisDocument", "Module1"}  # the code is there
            fire_open_event(context, document)
            assert INSERTED not in document.Text.String
    finally:
        staged.unlink()
    assert marks(converter) == set()
