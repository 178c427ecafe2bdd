"""Reading an uploaded zip: which entries are DOCX files, their names, and their PDF names.

Only the central directory is read here (no decompression); the ingest task reads the bytes.
Entry names are data: they become a file's identity and, cleaned, its name in the result zip,
but never a key or a path on disk.
"""

from __future__ import annotations

import io
import re
import stat
import struct
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

UTF8_NAME_FLAG = 0x800
ENCRYPTED_FLAG = 0x1

# The zip format's end records (APPNOTE 4.3.14-4.3.16).
EOCD = struct.Struct("<4s4H2LH")
EOCD_SIGNATURE = b"PK\x05\x06"
EOCD_SEARCH = EOCD.size + 0x10000  # the record and a comment of at most 64 KiB, as zipfile reads
ZIP64_LOCATOR = struct.Struct("<4sLQL")
ZIP64_LOCATOR_SIG = b"PK\x06\x07"
ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
ZIP64_EOCD_SIG = b"PK\x06\x06"
CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # one central directory record (APPNOTE 4.3.12)
CENTRAL_SIG = b"PK\x01\x02"
ZIP64_EXTRA = 0x0001
MAX_EXTRACT_VERSION = 63  # zipfile refuses entries that need a later version of the format


class UploadRejected(Exception):
    """The upload as a whole cannot become a job; ``status_code`` is the HTTP answer."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


@dataclass(frozen=True, slots=True)
class DocxEntry:
    index: int  # position in the zip's central directory: stable, unique, unlike names
    name: str  # decoded path inside the zip, as the user knows it
    info: zipfile.ZipInfo | None = None  # zipfile's record, when zipfile read the listing


def decode_entry_name(info: zipfile.ZipInfo) -> str:
    """The entry's name as its author meant it.

    Without the UTF-8 flag, zipfile decodes names as CP437, but many tools write UTF-8 without
    setting the flag: recover those, and keep CP437 for real legacy names.
    """
    if info.flag_bits & UTF8_NAME_FLAG or info.filename.isascii():
        return info.filename  # ASCII reads the same in CP437 and UTF-8: nothing to recover
    raw = info.filename.encode("cp437")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return info.filename


# The file type in the high bits of the entry's Unix mode (external_attr >> 16).
SYMLINK_TYPE = stat.S_IFLNK >> 12


# The names of the documents a job converts; each file is then checked by what its bytes are
# (workers/formats.py), the name only chooses the entries.
DOCUMENT_SUFFIXES = (".docx", ".docm", ".doc", ".rtf", ".odt")


def is_document_name(name: str) -> bool:
    return name.lower().endswith(DOCUMENT_SUFFIXES)


def is_ignored(name: str) -> bool:
    """Entries a person did not mean to convert: folders, OS litter, Word lock files, names
    that are no document's (DOCUMENT_SUFFIXES)."""
    base = name[max(name.rfind("/"), name.rfind("\\")) + 1 :]
    # The suffix first: it alone settles most entries, including folders and .DS_Store.
    return (
        not is_document_name(base)
        or base.startswith(("._", "~$"))
        or ("__MACOSX" in name and "__MACOSX" in name.replace("\\", "/").split("/"))
    )


# Limits of the central directory, from the job's file limit (QUIRE_MAX_FILES_PER_JOB). A zip's
# end record can lie about its entry count, but not about its directory's byte size: that is
# what zipfile reads (into memory, at once), and every record in it is at least 46 bytes.


def max_entries(max_files: int) -> int:
    """Records a zip may hold: room for folders and OS litter beside the DOCX files (a Mac zip
    has a ``__MACOSX/._`` entry for each), but not for millions of entries."""
    return 4 * max_files + 1000


# What the directory may take per record it may hold, on average. A record with a long path and
# the usual extra fields (timestamps, Unix ids, NTFS times, Zip64 sizes) takes a few hundred
# bytes; the format allows 192 KiB (64 KiB each for name, extra field and comment).
DIRECTORY_BYTES_PER_ENTRY = 512
# The directory is read in pieces of this size, so a reading stopped at a limit has read only
# about as far as it got (plus one piece), never the whole directory.
DIRECTORY_CHUNK = 64 * 1024


def max_directory_bytes(max_files: int) -> int:
    """The largest central directory read at all: 20 MiB for the default 10,000 files."""
    return max_entries(max_files) * DIRECTORY_BYTES_PER_ENTRY


def _unreadable() -> UploadRejected:
    return UploadRejected(400, "The upload is not a readable zip archive.")


def _too_many_files(max_files: int, count: int | None = None) -> UploadRejected:
    held = f"{count}" if count is not None else f"more than {max_files}"
    return UploadRejected(
        413, f"The zip archive holds {held} .docx files; the limit is {max_files} per job."
    )


@dataclass(frozen=True, slots=True)
class Directory:
    """Where zipfile finds the central directory, learned from the end records alone."""

    start: int  # zipfile's start_dir
    size: int  # the bytes zipfile reads: the end record's size (Zip64's when there is one)
    declared: int  # the entry count the end records declare, which nothing checks
    plain: bool  # no Zip64 end records: the fast reading may take the entries
    tail: bytes  # the end of the file, where the end records are (up to 64 KiB and 22 bytes)
    tail_start: int

    def read(self, source: BinaryIO, position: int, length: int) -> bytes:
        """Directory bytes from ``position``: ``length`` of them (fewer at the directory's end)
        and up to a piece more; the rest of the directory at once when it lies in the tail."""
        first = self.start + position
        end = self.start + self.size
        if first >= self.tail_start:
            return self.tail[first - self.tail_start : end - self.tail_start]
        source.seek(first)
        return source.read(min(end, first + max(length, DIRECTORY_CHUNK)) - first)


def _read_at(source: BinaryIO, tail: bytes, tail_start: int, position: int, length: int) -> bytes:
    if position >= tail_start:
        return tail[position - tail_start : position - tail_start + length]
    source.seek(position)
    return source.read(length)


def find_directory(source: BinaryIO) -> Directory:
    """Locate the central directory as zipfile does (Python 3.11's ``_EndRecData`` and
    ``_EndRecData64``), from the end of the file only; refuse what zipfile would not open."""
    size = source.seek(0, io.SEEK_END)
    if size < EOCD.size:
        raise _unreadable()
    tail_start = max(0, size - EOCD_SEARCH)
    source.seek(tail_start)
    tail = source.read()
    if tail.startswith(EOCD_SIGNATURE, len(tail) - EOCD.size) and tail.endswith(b"\0\0"):
        at = len(tail) - EOCD.size  # no archive comment: zipfile looks here first
    else:
        at = tail.rfind(EOCD_SIGNATURE)
        if at < 0 or len(tail) - at < EOCD.size:
            raise _unreadable()
    _, _, _, _, declared, directory_size, _, _ = EOCD.unpack_from(tail, at)
    end = tail_start + at  # where the end record starts in the file
    start = end - directory_size  # the directory ends where the end record starts
    # zipfile looks for a Zip64 locator just before the end record; where there is no room for
    # one, its reading depends on the kind of file object: left to it (after the bounds).
    plain = end >= ZIP64_LOCATOR.size
    if plain:
        locator = _read_at(source, tail, tail_start, end - ZIP64_LOCATOR.size, ZIP64_LOCATOR.size)
        if locator.startswith(ZIP64_LOCATOR_SIG):
            plain = False
            _, disk, _, disks = ZIP64_LOCATOR.unpack(locator)
            record_at = end - ZIP64_LOCATOR.size - ZIP64_EOCD.size
            if disk != 0 or disks > 1 or record_at < 0:
                raise _unreadable()  # spans disks, or zipfile's seek before the start fails
            record = _read_at(source, tail, tail_start, record_at, ZIP64_EOCD.size)
            if len(record) == ZIP64_EOCD.size and record.startswith(ZIP64_EOCD_SIG):
                fields = ZIP64_EOCD.unpack(record)
                declared, directory_size = fields[7], fields[8]
                start = record_at - directory_size
    if start < 0:
        raise _unreadable()  # the directory would begin before the file
    return Directory(start, int(directory_size), int(declared), plain, tail, tail_start)


def _scan(source: BinaryIO, directory: Directory, max_files: int) -> list[DocxEntry] | None:
    """The DOCX entries, read straight from the central directory in pieces; None for anything
    but the plain case (Zip64, damage, odd versions or extra fields), which zipfile then decides.

    Raises 413 at the first record past max_entries, or (reading fast) the first DOCX entry past
    max_files: a directory that holds more than its end record declares is read only that far.
    Records the fast reading cannot take are still counted to the end, so zipfile, reading the
    same directory after this, parses no more records than the limit.

    The listing runs before the 202 for every upload, and zipfile builds a full ZipInfo per
    entry (1.3 ms for a thousand); this reads the same records for a fifth of that. It follows
    zipfile's own reading (which the ingest uses later) step by step, so for a zip it accepts
    the result is the same, and anything it would refuse is left to it.
    """
    limit = max_entries(max_files)
    size = directory.size
    fast = directory.plain
    entries: list[DocxEntry] = []
    unpack = CENTRAL.unpack_from
    data, base = b"", 0  # directory bytes from position ``base`` on
    position = index = 0
    while position < size:
        if index == limit:
            raise UploadRejected(
                413,
                f"The zip archive holds more than {limit} entries; at most {max_files} .docx "
                "files are accepted per job.",
            )
        at = position - base
        if at + 46 > len(data):
            data, base, at = directory.read(source, position, 46), position, 0
            if len(data) < 46:
                return None  # truncated: zipfile refuses it
        record = unpack(data, at)
        if record[0] != CENTRAL_SIG:
            return None  # zipfile refuses it at this record
        name_start = at + 46
        extra_start = name_start + record[12]
        position += 46 + record[12] + record[13] + record[14]
        index += 1
        if not fast:
            continue  # only counted
        if extra_start + record[13] > len(data) and base + len(data) < size:
            data, base = directory.read(source, base + at, 46 + record[12] + record[13]), base + at
            name_start, extra_start = 46, 46 + record[12]
        # Slices past the directory's end come out short, as zipfile's reads do.
        raw = data[name_start:extra_start]
        if record[3] > MAX_EXTRACT_VERSION or (
            record[13] and not _plain_extra(data[extra_start : extra_start + record[13]])
        ):
            fast = False
            continue
        try:
            name = raw.decode("utf-8") if record[5] & UTF8_NAME_FLAG else _legacy_name(raw)
        except UnicodeDecodeError:
            fast = False  # zipfile refuses a flagged name that is not UTF-8
            continue
        name = name.partition("\0")[0]
        # Cheap tests first: most entries cost a suffix check.
        if name.endswith("/") or record[17] >> 28 == SYMLINK_TYPE or is_ignored(name):
            continue
        if len(entries) == max_files:
            raise _too_many_files(max_files)
        entries.append(DocxEntry(index - 1, name))
    return entries if fast else None


def _legacy_name(raw: bytes) -> str:
    """A name without the UTF-8 flag, read as decode_entry_name reads zipfile's CP437 one."""
    raw = raw.partition(b"\0")[0]  # zipfile cuts names at a NUL (the same byte in both codes)
    if raw.isascii():
        return raw.decode("ascii")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp437")


def _plain_extra(extra: bytes) -> bool:
    """Whether zipfile reads these extra fields without a complaint and without Zip64 sizes."""
    at = 0
    while len(extra) - at >= 4:
        kind, length = struct.unpack_from("<HH", extra, at)
        if kind == ZIP64_EXTRA or at + 4 + length > len(extra):
            return False
        at += 4 + length
    return True


def _zipfile_entries(source: BinaryIO) -> list[DocxEntry]:
    """zipfile's listing; only after _scan, which bounds the directory zipfile reads whole."""
    source.seek(0)
    try:
        archive = zipfile.ZipFile(source)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        OSError,
        ValueError,
        EOFError,
        NotImplementedError,  # an entry needing a later version of the format
    ):
        raise _unreadable() from None
    with archive:
        return [
            DocxEntry(index, name, info)
            for index, info in enumerate(archive.infolist())
            if not (
                (name := decode_entry_name(info)).endswith("/")
                or info.external_attr >> 28 == SYMLINK_TYPE
                or is_ignored(name)
            )
        ]


def list_docx_entries(source: BinaryIO, max_files: int) -> list[DocxEntry]:
    """The zip's DOCX entries, from its central directory only (no decompression).

    Bounded before anything is parsed: the declared entry count and the directory's byte size
    against the limits, then the records counted as they are read. Neither the API (the
    listing before the 202) nor the ingest (which reads the stored zip again, and a direct
    upload's object may have been replaced meanwhile) ever holds more than that.
    """
    directory = find_directory(source)
    limit = max_entries(max_files)
    if directory.declared > limit:
        raise UploadRejected(
            413,
            f"The zip archive holds {directory.declared} entries; at most {max_files} .docx "
            "files are accepted per job.",
        )
    if directory.size > max_directory_bytes(max_files):
        raise UploadRejected(
            413,
            f"The zip archive's central directory (its list of entries) is {directory.size} "
            f"bytes; a job of at most {max_files} .docx files needs no more than "
            f"{max_directory_bytes(max_files)}.",
        )
    if directory.size == 0:
        raise UploadRejected(400, "The zip archive is empty.")
    entries = _scan(source, directory, max_files)
    if entries is None:
        entries = _zipfile_entries(source)
        if len(entries) > max_files:
            raise _too_many_files(max_files, len(entries))
    if not entries:
        raise UploadRejected(
            400, "The zip archive contains no .docx, .docm, .doc, .rtf or .odt files."
        )
    return entries


_DRIVE = re.compile(r"^[A-Za-z]:$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# Anything safe_relative_path would change: a control character, a backslash, an empty, "." or
# ".." component (so also a leading or trailing slash), or a drive letter first.
_NEEDS_CLEANING = re.compile(r"[\x00-\x1f\x7f\\]|(?:^|/)\.{0,2}(?:/|$)|^[A-Za-z]:(?:/|$)")


def safe_relative_path(name: str) -> str:
    """A path that stays inside whatever folder the result zip is unpacked into."""
    if not _NEEDS_CLEANING.search(name):
        return name  # almost every name: one scan instead of splitting and joining
    parts = [_CONTROL.sub("_", part) for part in name.replace("\\", "/").split("/")]
    parts = [part for part in parts if part not in ("", ".", "..")]
    if parts and _DRIVE.match(parts[0]):
        parts = parts[1:]
    return "/".join(parts) or "document.docx"


def output_names(entry_names: list[str]) -> list[str]:
    """The PDF name for each entry: the same path with ``.pdf``, unique in the result zip.

    Uniqueness ignores case, because the archive is often unpacked on case-insensitive disks.
    """
    taken: set[str] = set()
    names = []
    for entry_name in entry_names:
        path = safe_relative_path(entry_name)
        suffix = path[path.rfind(".") :].lower()
        stem = path[: -len(suffix)] if suffix in DOCUMENT_SUFFIXES else path
        candidate = f"{stem}.pdf"
        counter = 2
        while candidate.lower() in taken:
            candidate = f"{stem} ({counter}).pdf"
            counter += 1
        taken.add(candidate.lower())
        names.append(candidate)
    return names
