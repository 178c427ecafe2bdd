"""The warm LibreOffice converter, against the real LibreOffice."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.docx_factory import make_docx
from tests.pdf import pdf_pages
from tests.plugins.libreoffice import MakeUnoConverter
from workers.libreoffice import (
    CliConverter,
    ConversionTimeout,
    live_processes_in_group,
    single_instance_pipe,
)
from workers.libreoffice.uno import UnoConverter


def test_converts_pages_and_text(converter: UnoConverter, tmp_path: Path) -> None:
    source, target = tmp_path / "in.docx", tmp_path / "out.pdf"
    source.write_bytes(make_docx("First page alpha", "Second page beta", "Third page gamma"))
    converter.convert(source, target, timeout=60)
    pages = pdf_pages(target.read_bytes())
    assert len(pages) == 3
    assert "First page alpha" in pages[0]
    assert "Third page gamma" in pages[2]


CORPUS_SAMPLE = [
    "test__docx__tables.docx",
    "test__docx__alternate_document_path.docx",
    "test__docx__unicode.docx",
    "test__docx__image.docx",
    "test__docx__notes.docx",
    "tests__outputs__example.docx",
]


def test_converts_real_documents_from_the_corpus(
    converter: UnoConverter, tmp_path: Path, corpus: Callable[[str], Path]
) -> None:
    for name in CORPUS_SAMPLE:
        target = tmp_path / f"{name}.pdf"
        converter.convert(corpus(name), target, timeout=60)
        pages = pdf_pages(target.read_bytes())
        assert pages, name
        assert any(text.strip() for text in pages), f"{name} has no text"
    assert converter.restarts == 0  # one warm instance did them all


def test_a_hung_instance_is_killed_whole_and_replaced(
    converter: UnoConverter, tmp_path: Path
) -> None:
    source = tmp_path / "in.docx"
    source.write_bytes(make_docx("after the hang"))
    converter.convert(source, tmp_path / "warm.pdf", timeout=60)
    assert converter.process is not None
    hung_group = converter.process.pid
    os.killpg(hung_group, signal.SIGSTOP)  # LibreOffice stops answering, as a hung one does

    with pytest.raises(ConversionTimeout, match="did not finish within 2 seconds"):
        converter.convert(source, tmp_path / "hung.pdf", timeout=2)
    assert live_processes_in_group(hung_group) == []  # soffice.bin too, not only its launcher

    converter.convert(source, tmp_path / "after.pdf", timeout=60)
    assert converter.restarts == 1
    assert "after the hang" in pdf_pages((tmp_path / "after.pdf").read_bytes())[0]


def test_an_instance_that_died_is_restarted(converter: UnoConverter, tmp_path: Path) -> None:
    source = tmp_path / "in.docx"
    source.write_bytes(make_docx("still converting"))
    converter.convert(source, tmp_path / "one.pdf", timeout=60)
    assert converter.process is not None
    os.killpg(converter.process.pid, signal.SIGKILL)
    converter.process.wait()
    converter.convert(source, tmp_path / "two.pdf", timeout=60)
    assert converter.restarts == 1
    assert (tmp_path / "two.pdf").stat().st_size > 0


def test_instances_are_recycled_after_n_conversions(
    make_uno_converter: MakeUnoConverter, tmp_path: Path
) -> None:
    converter = make_uno_converter(restart_after=2)
    source = tmp_path / "in.docx"
    source.write_bytes(make_docx("recycled"))
    try:
        for index in range(5):
            converter.convert(source, tmp_path / f"{index}.pdf", timeout=60)
        assert converter.restarts == 2  # started, recycled after 2, and after 4
    finally:
        converter.close()


def test_close_leaves_no_process_behind(make_uno_converter: MakeUnoConverter) -> None:
    converter = make_uno_converter(restart_after=10)
    converter.start()
    assert converter.process is not None
    group = converter.process.pid
    assert live_processes_in_group(group)
    converter.close()
    assert live_processes_in_group(group) == []
    assert not converter.profile_dir.exists()


def _pipe_file(name: str) -> Path:
    return Path("/tmp") / f"OSL_PIPE_{os.getuid()}_{name}"


def _temp_folders() -> set[str]:
    """LibreOffice's temporary folders in /tmp (lu<pid><random>.tmp)."""
    return {name for name in os.listdir("/tmp") if name.startswith("lu") and name.endswith(".tmp")}


def test_recycling_and_close_leave_nothing_in_tmp(
    make_uno_converter: MakeUnoConverter, tmp_path: Path
) -> None:
    # A profile path with characters a URL escapes and LibreOffice does not (its pipe's name
    # is a hash of that URL).
    converter = make_uno_converter("pro+files@1", restart_after=1)
    source = tmp_path / "in.docx"
    source.write_bytes(make_docx("no litter"))
    single = _pipe_file(single_instance_pipe(converter.profile_dir))
    pids: list[int] = []
    folders_before = _temp_folders()
    try:
        converter.convert(source, tmp_path / "one.pdf", timeout=60)
        first = converter.pipe
        assert first is not None and converter.process is not None
        pids += live_processes_in_group(converter.process.pid)
        # LibreOffice made its pipes where they are looked for, and its temporary folder in ours.
        assert _pipe_file(first).exists() and single.exists()
        assert list(converter.temp_dir.iterdir())
        converter.convert(source, tmp_path / "two.pdf", timeout=60)  # recycled: a kill
        assert converter.restarts == 1 and converter.pipe not in (None, first)
        assert not _pipe_file(first).exists()
        assert converter.pipe is not None and _pipe_file(converter.pipe).exists()
        assert "no litter" in pdf_pages((tmp_path / "two.pdf").read_bytes())[0]
        assert converter.process is not None
        pids += live_processes_in_group(converter.process.pid)
        os.killpg(converter.process.pid, signal.SIGKILL)  # as the watchdog does
        second = converter.pipe
    finally:
        converter.close()
    assert len(pids) >= 2  # the launcher and soffice.bin of each instance
    assert not _pipe_file(second).exists() and not single.exists()
    # None made meanwhile by these processes (a name is "lu", the pid, then random characters,
    # so only new names are looked at: an old one may start with the same digits).
    new_folders = _temp_folders() - folders_before
    assert not [name for name in new_folders for pid in pids if name.startswith(f"lu{pid}")]


def test_an_instance_whose_launcher_died_is_not_left_running(
    make_uno_converter: MakeUnoConverter, tmp_path: Path
) -> None:
    # soffice.bin outlives its launcher; a new instance must not start beside it.
    converter = make_uno_converter(restart_after=10)
    source = tmp_path / "in.docx"
    source.write_bytes(make_docx("one instance"))
    try:
        converter.convert(source, tmp_path / "one.pdf", timeout=60)
        assert converter.process is not None
        old_group = converter.process.pid
        os.kill(old_group, signal.SIGKILL)  # the launcher only
        converter.process.wait()
        assert live_processes_in_group(old_group)  # soffice.bin lives on
        converter.convert(source, tmp_path / "two.pdf", timeout=60)
        assert live_processes_in_group(old_group) == []
        assert "one instance" in pdf_pages((tmp_path / "two.pdf").read_bytes())[0]
    finally:
        converter.close()


def test_close_does_not_wait_on_a_hung_idle_instance(
    make_uno_converter: MakeUnoConverter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hung between two conversions, no watchdog is armed: only closing meets it, and a call
    # into it would never return.
    monkeypatch.setattr("workers.libreoffice.uno.CLOSE_GRACE", 1.0)
    converter = make_uno_converter(restart_after=10)
    source = tmp_path / "in.docx"
    source.write_bytes(make_docx("then it hangs"))
    converter.convert(source, tmp_path / "one.pdf", timeout=60)
    assert converter.process is not None
    group = converter.process.pid
    os.killpg(group, signal.SIGSTOP)
    started = time.monotonic()
    converter.close()
    assert time.monotonic() - started < 30  # it would hang for good before
    assert live_processes_in_group(group) == []
    assert not converter.profile_dir.exists()


def test_cli_fallback_converts_and_proves_its_output(tmp_path: Path) -> None:
    cli = CliConverter("soffice", tmp_path / "scratch")
    source, target = tmp_path / "in.docx", tmp_path / "out.pdf"
    source.write_bytes(make_docx("cold start"))
    cli.convert(source, target, timeout=120)
    assert "cold start" in pdf_pages(target.read_bytes())[0]
