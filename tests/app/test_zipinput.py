"""Listing an uploaded zip: what counts as a DOCX entry, names, and the PDFs' names."""

from __future__ import annotations

import io
import re
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.zipinput import (
    UploadRejected,
    decode_entry_name,
    is_ignored,
    list_docx_entries,
    output_names,
)
from tests.bench.documents import bench_zip
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


# The listing's fast paths must decide exactly as the plain rules below, which say what a
# name means; they only skip work for the usual names.


def plain_is_ignored(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    base = parts[-1]
    return (
        not base
        or "__MACOSX" in parts
        or base.startswith("._")
        or base == ".DS_Store"
        or base.startswith("~$")
        or not base.lower().endswith(".docx")
    )


def plain_output_name(name: str) -> str:
    parts = [re.sub(r"[\x00-\x1f\x7f]", "_", part) for part in name.replace("\\", "/").split("/")]
    parts = [part for part in parts if part not in ("", ".", "..")]
    if parts and re.match(r"^[A-Za-z]:$", parts[0]):
        parts = parts[1:]
    path = "/".join(parts) or "document.docx"
    return re.sub(r"\.docx$", "", path, flags=re.IGNORECASE) + ".pdf"


NAME_PIECES = ["a", "Z", "é", ".", "..", "/", "\\", ":", "C:", "\t", "\x00", "._", "~$"]
NAME_PIECES += [".docx", ".DOCX", "__MACOSX", ".DS_Store", "x y"]


@given(st.lists(st.sampled_from(NAME_PIECES), max_size=8).map("".join))
@settings(max_examples=3000, deadline=None)
def test_fast_name_rules_agree_with_the_plain_ones(name: str) -> None:
    assert is_ignored(name) == plain_is_ignored(name)
    assert output_names([name]) == [plain_output_name(name)]


def test_the_bench_upload_lists_every_document() -> None:
    data = bench_zip(30, 1, folder="nested/dir")
    entries = list_docx_entries(io.BytesIO(data), 100)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        expected = [(i, n) for i, n in enumerate(archive.namelist()) if n.endswith(".docx")]
    assert [(entry.index, entry.name) for entry in entries] == expected
    assert output_names([entry.name for entry in entries]) == [
        name[: -len(".docx")] + ".pdf" for _, name in expected
    ]
