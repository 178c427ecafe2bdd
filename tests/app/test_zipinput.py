"""Listing an uploaded zip: what counts as a DOCX entry, names, and the PDFs' names."""

from __future__ import annotations

import io
import zipfile

import pytest

from app.zipinput import UploadRejected, decode_entry_name, list_docx_entries, output_names
from tests.docx_factory import make_docx, make_zip


def listed(entries: dict[str, bytes], max_files: int = 100) -> list[str]:
    return [entry.name for entry in list_docx_entries(io.BytesIO(make_zip(entries)), max_files)]


def test_keeps_docx_entries_with_their_paths_and_skips_litter() -> None:
    doc = make_docx("x")
    names = listed(
        {
            "a.docx": doc,
            "Folder/Sub/b.DOCX": doc,
            "folder/": b"",
            "__MACOSX/folder/._b.docx": b"junk",
            "folder/._c.docx": b"junk",
            ".DS_Store": b"junk",
            "folder/~$lock.docx": b"junk",
            "notes.txt": b"text",
            "old.doc": b"legacy",
        }
    )
    assert names == ["a.docx", "Folder/Sub/b.DOCX"]


def test_directory_entries_and_symlinks_are_skipped() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("real.docx", make_docx("x"))
        link = zipfile.ZipInfo("link.docx")
        link.external_attr = 0o120777 << 16  # S_IFLNK
        archive.writestr(link, "real.docx")
        archive.writestr(zipfile.ZipInfo("dir.docx/"), b"")
    names = [e.name for e in list_docx_entries(io.BytesIO(buffer.getvalue()), 10)]
    assert names == ["real.docx"]


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"not a zip at all", 400, "not a readable zip"),
        (b"", 400, "not a readable zip"),
        (make_zip({})[:10], 400, "not a readable zip"),
        (make_zip({}), 400, "empty"),
        (make_zip({"a.txt": b"x", "b/": b""}), 400, "no .docx"),
    ],
)
def test_unusable_uploads_are_rejected_with_a_message(
    data: bytes, status: int, message: str
) -> None:
    with pytest.raises(UploadRejected) as caught:
        list_docx_entries(io.BytesIO(data), 10)
    assert caught.value.status_code == status
    assert message in caught.value.message


def test_more_entries_than_the_limit_is_413() -> None:
    with pytest.raises(UploadRejected) as caught:
        listed({f"{i}.docx": b"x" for i in range(4)}, max_files=3)
    assert caught.value.status_code == 413
    assert "limit is 3" in caught.value.message


def test_truncated_zip_is_rejected() -> None:
    data = make_zip({"a.docx": make_docx("x" * 1000)})
    with pytest.raises(UploadRejected):
        list_docx_entries(io.BytesIO(data[: len(data) - 30]), 10)


def test_legacy_and_unflagged_utf8_names_are_decoded() -> None:
    utf8_unflagged = zipfile.ZipInfo("x")
    utf8_unflagged.filename = "r\u00e9sum\u00e9.docx".encode().decode("cp437")
    assert decode_entry_name(utf8_unflagged) == "r\u00e9sum\u00e9.docx"
    cp437_name = zipfile.ZipInfo("x")
    cp437_name.filename = b"na\x8bve.docx".decode("cp437")  # a genuine CP437 name
    assert decode_entry_name(cp437_name) == b"na\x8bve.docx".decode("cp437")


def test_output_names_mirror_paths_and_never_collide() -> None:
    names = output_names(
        [
            "a/report.docx",
            "a/Report.DOCX",
            "b/report.docx",
            "a/report.docx",
            "plain.docx",
        ]
    )
    assert names == [
        "a/report.pdf",
        "a/Report (2).pdf",
        "b/report.pdf",
        "a/report (3).pdf",
        "plain.pdf",
    ]
    assert len({name.lower() for name in names}) == len(names)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("../../etc/evil.docx", "etc/evil.pdf"),
        ("/abs/path.docx", "abs/path.pdf"),
        ("C:\\Users\\me\\doc.docx", "Users/me/doc.pdf"),
        ("a/./b/../c.docx", "a/b/c.pdf"),
        ("tab\there.docx", "tab_here.pdf"),
        ("..", "document.pdf"),
    ],
)
def test_output_names_stay_inside_the_archive(entry: str, expected: str) -> None:
    assert output_names([entry]) == [expected]


def test_a_zip_declaring_far_too_many_entries_is_refused_before_parsing() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(5000):
            archive.writestr(f"empty/{index}", b"")
    with pytest.raises(UploadRejected) as caught:
        list_docx_entries(io.BytesIO(buffer.getvalue()), max_files=10)
    assert caught.value.status_code == 413
    assert "5000 entries" in caught.value.message
