"""Listing an uploaded zip: what counts as a DOCX entry, names, and the PDFs' names."""

from __future__ import annotations

import io
import re
import struct
import zipfile
from datetime import datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app import zipinput
from app.zipinput import (
    DIRECTORY_CHUNK,
    EOCD_SEARCH,
    UTF8_NAME_FLAG,
    UploadRejected,
    decode_entry_name,
    is_ignored,
    list_docx_entries,
    output_names,
)
from tests.bench.documents import bench_zip
from tests.docx_factory import make_docx, make_zip
from tests.hostile_inputs import CENTRAL, CountingReader, huge_directory_zip, lying_zip


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
            "folder/~$old.doc": b"junk",
            "memo.RTF": b"{\\rtf1}",
            "report.odt": b"odt",
            "macros.docm": b"docm",
            "sheet.xls": b"xls",
        }
    )
    # By name only: what each really is, the worker decides (workers/formats.py).
    assert names == [
        "a.docx",
        "Folder/Sub/b.DOCX",
        "old.doc",
        "memo.RTF",
        "report.odt",
        "macros.docm",
    ]


def test_every_kind_of_document_gets_its_stem_and_pdf() -> None:
    assert output_names(["a.doc", "a.docx", "b.RTF", "c.odt", "d.docm", "e.txt.odt", "f"]) == [
        "a.pdf",
        "a (2).pdf",
        "b.pdf",
        "c.pdf",
        "d.pdf",
        "e.txt.pdf",
        "f.pdf",
    ]


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


# The central directory is read without zipfile for speed; zipfile (which the ingest uses)
# stays the reference: for any zip, the fast reading is either zipfile's listing or nothing
# (then zipfile decides). Zips are written by hand here to reach what zipfile never writes:
# unflagged UTF-8 and CP437 names, NULs, odd versions, broken extra fields, damage.


def raw_zip(
    entries: list[tuple[bytes, int, int, bytes, int]],
    *,
    prefix: bytes = b"",
    comment: bytes = b"",
) -> bytes:
    """Stored entries (name, flags, version needed, extra, external attributes)."""
    body, directory = bytearray(prefix), bytearray()
    for name, flags, version, extra, external in entries:
        offset = len(body)
        body += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, flags, 0, 0, 0, 0, 0, 0, len(name), 0)
        body += name
        directory += struct.pack(
            "<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, version, 0, flags, 0, 0, 0, 0, 0, 0,
            len(name), len(extra), 0, 0, 0, external, offset,
        )  # fmt: skip
        directory += name + extra
    end = struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(directory), len(body),
        len(comment),
    )  # fmt: skip
    return bytes(body + directory + end + comment)


def both_readings(data: bytes) -> tuple[object, object]:
    """The fast reading's entries (None: it left the zip to zipfile) and zipfile's; "refused"
    where the end records already refuse the zip, or zipfile does."""
    source = io.BytesIO(data)
    try:
        fast: object = zipinput._scan(source, zipinput.find_directory(source), 100)
    except UploadRejected:
        fast = "refused"
    try:
        reference: object = zipinput._zipfile_entries(source)
    except UploadRejected:
        reference = "refused"
    return (
        [(entry.index, entry.name) for entry in fast] if isinstance(fast, list) else fast,
        [(entry.index, entry.name) for entry in reference]
        if isinstance(reference, list)
        else reference,
    )


RAW_NAMES = st.lists(
    st.sampled_from(
        [b"a", b"/", b".docx", b"\x00", b"\xc3\xa9", b"\x82", b"\xff", b"\\", b"__MACOSX/"]
    ),
    max_size=6,
).map(b"".join)
EXTRAS = st.sampled_from(
    [b"", b"UT\x05\x00\x03\x00\x00\x00\x00", b"\x01\x00\x00\x00", b"\x0a\x00\x08\x00abc", b"xy"]
)
ENTRIES = st.lists(
    st.tuples(
        RAW_NAMES,
        st.sampled_from([0, UTF8_NAME_FLAG]),
        st.sampled_from([10, 20, 45, 63, 64]),
        EXTRAS,
        st.sampled_from([0, 0o100644 << 16, 0o120777 << 16, 0o040755 << 16]),
    ),
    max_size=5,
)


@example([(b"\xc3\xa9\x00\xff.docx", 0, 20, b"", 0)], b"", b"", [])  # NUL, then not UTF-8
@example([(b"a.docx", 0, 20, b"", 0)], b"", b"PK\x05\x06", [])  # a decoy end in the comment
@given(
    ENTRIES,
    st.binary(max_size=40),
    st.binary(max_size=40),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3),
)
@settings(max_examples=2000, deadline=None)
def test_the_fast_directory_reading_is_zipfiles_or_none(
    entries: list[tuple[bytes, int, int, bytes, int]],
    prefix: bytes,
    comment: bytes,
    damage: list[tuple[int, int]],
) -> None:
    data = bytearray(raw_zip(entries, prefix=prefix, comment=comment))
    for at, value in damage:  # bytes flipped anywhere, the end records included
        if data:
            data[at % len(data)] = value
    fast, reference = both_readings(bytes(data))
    assert fast is None or fast == reference


def test_the_fast_reading_takes_the_usual_zips() -> None:
    doc = make_docx("x")
    for data in (
        bench_zip(20, 1),
        make_zip({"a.docx": doc, "sub/b.docx": doc, "r\u00e9sum\u00e9.docx": doc}),
        raw_zip([(b"caf\x82.docx", 0, 20, b"UT\x05\x00\x03\x00\x00\x00\x00", 0)], comment=b"c"),
    ):
        fast, reference = both_readings(data)
        assert fast is not None
        assert fast == reference


def test_zip64_archives_list_as_zipfile_lists_them() -> None:
    from stream_zip import NO_COMPRESSION_64, stream_zip

    doc = make_docx("x")
    member = ("big/a.docx", datetime(2026, 1, 1), 0o100644, NO_COMPRESSION_64, (doc,))
    data = b"".join(stream_zip([member]))
    fast, reference = both_readings(data)
    assert reference == [(0, "big/a.docx")]
    assert fast is None or fast == reference
    assert [entry.name for entry in list_docx_entries(io.BytesIO(data), 10)] == ["big/a.docx"]


def test_an_entry_needing_a_later_zip_version_is_400_not_500() -> None:
    data = raw_zip([(b"a.docx", 0, 64, b"", 0)])
    with pytest.raises(UploadRejected) as caught:
        list_docx_entries(io.BytesIO(data), 10)
    assert caught.value.status_code == 400


def test_an_entry_with_an_empty_name_is_skipped_not_a_crash() -> None:
    data = raw_zip([(b"\x00hidden.docx", 0, 20, b"", 0), (b"a.docx", 0, 20, b"", 0)])
    assert [entry.name for entry in list_docx_entries(io.BytesIO(data), 10)] == ["a.docx"]


# Bounded reading (#12): the end record's entry count may lie; the directory's byte size and the
# records actually read are what is bounded, before zipfile ever sees the directory.


def test_a_directory_holding_more_than_declared_is_read_only_up_to_the_limit() -> None:
    # 40,000 records of a.docx (2 MB, within the 2.5 MB a 1,000-file job may have) declared as 1.
    source = CountingReader(io.BytesIO(lying_zip(40_000)))
    with pytest.raises(UploadRejected) as caught:
        list_docx_entries(source, 1000)  # type: ignore[arg-type]
    assert caught.value.status_code == 413
    assert "more than 1000 .docx files" in caught.value.message
    # The tail (end records), then the directory in pieces up to the 1,001st .docx record.
    record = CENTRAL.size + len(b"a.docx")
    assert source.bytes_read <= 1001 * record + EOCD_SEARCH + 2 * DIRECTORY_CHUNK
    assert source.bytes_read < 40_000 * record / 5


@pytest.mark.parametrize("zip64", [False, True])
def test_the_entry_limit_counts_records_of_any_kind(zip64: bool) -> None:
    # One file allowed: 1,004 records in all. Folders are read to the end, one more is refused,
    # whatever the end record (classic or Zip64) declares.
    limit = zipinput.max_entries(1)
    with pytest.raises(UploadRejected) as within:
        list_docx_entries(io.BytesIO(lying_zip(limit, name=b"d/", zip64=zip64)), 1)
    assert within.value.status_code == 400  # read to the end: no .docx among them
    with pytest.raises(UploadRejected) as past:
        list_docx_entries(io.BytesIO(lying_zip(limit + 1, name=b"d/", zip64=zip64)), 1)
    assert past.value.status_code == 413
    assert f"more than {limit} entries" in past.value.message


def test_a_zip64_directory_is_counted_before_zipfile_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[object] = []
    monkeypatch.setattr(zipfile, "ZipFile", lambda *args, **kwargs: opened.append(args))
    with pytest.raises(UploadRejected) as caught:
        list_docx_entries(io.BytesIO(lying_zip(50_000, zip64=True)), 1000)
    assert caught.value.status_code == 413
    assert opened == []  # refused from the count alone


def test_a_directory_larger_than_any_job_needs_is_refused_from_its_end_record() -> None:
    data = huge_directory_zip(10)  # ten honest records of 192 KiB each
    source = CountingReader(io.BytesIO(data))
    with pytest.raises(UploadRejected) as caught:
        list_docx_entries(source, 100)  # type: ignore[arg-type]
    assert caught.value.status_code == 413
    assert f"needs no more than {zipinput.max_directory_bytes(100)}" in caught.value.message
    assert source.bytes_read <= EOCD_SEARCH + 76  # the end of the file only
