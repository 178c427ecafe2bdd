"""The CLI's zipping of an upload: which files go in, under which names, in what memory."""

from __future__ import annotations

import os
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from quire_client.cli.render import print_failures
from quire_client.errors import InputError
from quire_client.sources import docx_files, upload_source
from tests.docx_factory import make_docx, make_zip


def write(root: Path, name: str, data: bytes) -> None:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(data)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    write(root, "b.docx", make_docx("b"))
    write(root, "a/z.docx", make_docx("z"))
    write(root, "a/deeper/UPPER.DOCX", make_docx("upper"))
    write(root, "a/~$z.docx", b"Word's lock file")
    write(root, "notes.txt", b"not a document")
    write(root, "a/report.docx.bak", b"a backup")
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)  # must not be walked
    return root


def test_only_docx_files_with_their_relative_paths_in_a_stable_order(folder: Path) -> None:
    assert [name for _, name in docx_files(folder)] == [
        "b.docx",
        "a/z.docx",
        "a/deeper/UPPER.DOCX",
    ]
    assert docx_files(folder) == docx_files(folder)


def test_doc_rtf_odt_and_docm_files_are_sent_too(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    for name in ("a.doc", "b.RTF", "c.odt", "d.docm", "e.xls", "f.pdf", "~$g.doc"):
        write(root, name, b"x")
    assert [name for _, name in docx_files(root)] == ["a.doc", "b.RTF", "c.odt", "d.docm"]
    with upload_source(root / "a.doc") as (_, count):
        assert count == 1
    with upload_source([root / "b.RTF", root / "c.odt"]) as (_, count):
        assert count == 2


def test_a_folder_is_zipped_to_a_temporary_file_removed_afterwards(folder: Path) -> None:
    with upload_source(folder) as (archive, count):
        assert count == 3
        with zipfile.ZipFile(archive) as zipped:
            assert sorted(zipped.namelist()) == ["a/deeper/UPPER.DOCX", "a/z.docx", "b.docx"]
            assert zipped.read("a/z.docx") == (folder / "a/z.docx").read_bytes()
            # Stored: a DOCX is compressed already.
            assert {info.compress_type for info in zipped.infolist()} == {zipfile.ZIP_STORED}
        made = archive
    assert not made.exists()


def test_a_zip_goes_as_it_is_and_one_docx_is_zipped_alone(tmp_path: Path) -> None:
    batch = tmp_path / "batch.zip"
    batch.write_bytes(make_zip({"x.docx": make_docx("x")}))
    with upload_source(batch) as (archive, count):
        assert archive == batch and count == 0
    assert batch.exists()

    single = tmp_path / "Letter.docx"
    single.write_bytes(make_docx("letter"))
    with upload_source(single) as (archive, count), zipfile.ZipFile(archive) as zipped:
        assert count == 1 and zipped.namelist() == ["Letter.docx"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "holds no .docx, .docm, .doc, .rtf or .odt file"),
        (
            lambda p: p.write_text("hello"),
            "is neither a folder, a zip nor a .docx, .docm, .doc, .rtf or .odt file",
        ),
    ],
)
def test_nothing_to_send_is_a_clear_error(tmp_path: Path, setup: object, message: str) -> None:
    source = tmp_path / "source"
    setup(source)  # type: ignore[operator]
    with pytest.raises(InputError, match=message), upload_source(source):
        pass


def test_a_large_folder_is_zipped_without_holding_a_file_in_memory(tmp_path: Path) -> None:
    root = tmp_path / "big"
    root.mkdir()
    size = 32 * 1024 * 1024
    for name in ("one.docx", "two.docx"):
        with (root / name).open("wb") as big:
            big.write(os.urandom(size))
    tracemalloc.start()
    try:
        with upload_source(root) as (archive, _):
            assert archive.stat().st_size > 2 * size
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, peak


def test_the_failure_table_outside_a_terminal_is_one_line_per_file(tmp_path: Path) -> None:
    job = {
        "progress": {"total": 3},
        "files": [
            {"filename": "ok.docx", "status": "COMPLETED", "error_message": None},
            {"filename": "sub/bad.docx", "status": "FAILED", "error_message": "Not a zip."},
            {"filename": "x.docx", "status": "FAILED", "error_message": "Empty file."},
        ],
    }
    report = tmp_path / "report.txt"
    with report.open("w") as stream:
        print_failures(job, stream)
    assert report.read_text().splitlines() == [
        "2 of 3 files failed:",
        "  FILE          ERROR",
        "  sub/bad.docx  Not a zip.",
        "  x.docx        Empty file.",
    ]
