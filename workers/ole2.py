"""Reading an OLE2 compound file (MS-CFB), bounded: which streams its root holds, and the first
bytes of one of them. Enough to tell a Word 97-2003 ``.doc`` from an encrypted OOXML document
(a ``.docx`` with a password is an OLE2 file holding ``EncryptionInfo`` and
``EncryptedPackage``), from another Office file, and from damage, without a new dependency.

Everything read is checked against the file before it is used: the sector size is one of the
two the format allows, every sector number points inside the file, every chain (the DIFAT, the
directory's, a stream's) is walked at most once per sector (a loop is damage, not a hang), and
the directory holds at most as many entries as its sectors can. What is held in memory grows
with the file at most linearly (the FAT and a chain: four bytes per sector), and a file larger
than QUIRE_MAX_PART_EXPANDED_BYTES is refused before any of it is read. Entry names are compared
without regard to case, as MS-CFB compares them; two root entries of one name are damage.
"""

from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeAlias

from app.config import get_settings

MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
HEADER = struct.Struct("<8s16s5H6s9L")
HEADER_DIFAT = 109  # sector numbers of the first FAT sectors, in the header itself
DIFAT_OFFSET = 76
MAX_REGULAR_SECTOR = 0xFFFFFFFA
END_OF_CHAIN = 0xFFFFFFFE
FREE_SECTOR = 0xFFFFFFFF
NO_STREAM = 0xFFFFFFFF
ENTRY_SIZE = 128
STORAGE, STREAM, ROOT = 1, 2, 5
# Sector shift per major version (MS-CFB 2.2): 512-byte sectors in version 3, 4096 in 4.
SECTOR_SHIFTS = {3: 9, 4: 12}
MINI_SECTOR_SHIFT = 6
MINI_STREAM_CUTOFF = 4096
# Word writes a few dozen directory entries; embedded objects add a few each. Past this, a
# directory chain is refused rather than read into memory.
MAX_DIRECTORY_ENTRIES = 16384

# Sector numbers, 4 bytes each as in the file: a FAT of a 100 MB file is 800 KB, not a list of
# 200,000 int objects.
Table: TypeAlias = "array[int]"


def _table() -> Table:
    return array("I")


def _extend(table: Table, sector: bytes) -> None:
    values = array("I", sector)
    if sys.byteorder == "big":
        values.byteswap()  # the file is little-endian
    table.extend(values)


class DamagedCompound(Exception):
    """The file starts like an OLE2 compound file but its structure cannot be read."""


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    kind: int  # STORAGE or STREAM
    start: int  # first sector (mini sector for a small stream)
    size: int


class Entries(dict[str, Entry]):
    """The root's entries by name, compared as MS-CFB compares them (2.6.4): without regard to
    case, so "worddocument" is the WordDocument stream, and two of one name are damage."""

    def add(self, entry: Entry) -> None:
        key = entry.name.upper()
        if key in self:
            raise DamagedCompound(f"its directory names {entry.name!r} twice")
        super().__setitem__(key, entry)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.upper())

    def __getitem__(self, name: str) -> Entry:
        return super().__getitem__(name.upper())

    def get(self, name: str, default: Entry | None = None) -> Entry | None:  # type: ignore[override]
        return super().get(name.upper(), default)


class CompoundFile:
    """An OLE2 compound file open for reading: its root's entries by name, and their bytes."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._file_size = handle.seek(0, 2)
        handle.seek(0)
        header = handle.read(512)
        if len(header) < 512 or not header.startswith(MAGIC):
            raise DamagedCompound("its header is incomplete")
        fields = HEADER.unpack_from(header)
        major, byte_order, sector_shift, mini_shift = fields[3], fields[4], fields[5], fields[6]
        if SECTOR_SHIFTS.get(major) != sector_shift or byte_order != 0xFFFE:
            raise DamagedCompound("its header names an impossible sector size or byte order")
        if mini_shift != MINI_SECTOR_SHIFT:
            raise DamagedCompound("its header names an impossible mini sector size")
        self._shift = sector_shift
        self._sector_size = 1 << sector_shift
        # Whole sectors after the header (which takes one sector's room in version 4 too).
        self._sectors = max(0, self._file_size - self._sector_size) >> sector_shift
        fat_sectors, directory_start = fields[9], fields[10]
        self._mini_cutoff = fields[12]
        mini_fat_start, mini_fat_sectors = fields[13], fields[14]
        difat_start, difat_sectors = fields[15], fields[16]
        # Writers allocate FAT sectors generously (msoffcrypto-tool writes 3 for a 35-sector
        # file), so only the file bounds them: the FAT read is then at most the file's size.
        if fat_sectors > self._sectors or difat_sectors > self._sectors:
            raise DamagedCompound("its header counts more sectors than the file holds")
        self._fat = self._read_fat(header, fat_sectors, difat_start, difat_sectors)
        self._mini_fat_start, self._mini_fat_sectors = mini_fat_start, mini_fat_sectors
        self._mini_fat: Table | None = None
        self._root, self.entries = self._read_directory(directory_start)

    # -- sectors and chains ----------------------------------------------------------------------

    def _sector(self, number: int) -> bytes:
        if number >= self._sectors:
            raise DamagedCompound("a sector number points past the end of the file")
        self._handle.seek((number + 1) << self._shift)
        data = self._handle.read(self._sector_size)
        if len(data) < self._sector_size:
            raise DamagedCompound("the file ends inside a sector")
        return data

    def _chain(self, start: int, table: Table, limit: int) -> Table:
        """The sector numbers of the chain from ``start``: each at most once, at most
        ``limit`` of them, every one inside ``table``. Four bytes per sector for the chain and
        one for the loop check: a list and a set took some 100 bytes per sector."""
        chain = _table()
        seen = bytearray(len(table))
        number = start
        while number != END_OF_CHAIN:
            if number > MAX_REGULAR_SECTOR or number >= len(table) or seen[number]:
                raise DamagedCompound("a chain of sectors is broken or loops")
            if len(chain) == limit:
                raise DamagedCompound("a chain of sectors is longer than the file")
            seen[number] = 1
            chain.append(number)
            number = table[number]
        return chain

    def _read_fat(
        self, header: bytes, fat_sectors: int, difat_start: int, difat_sectors: int
    ) -> Table:
        per_sector = self._sector_size // 4
        locations = list(struct.unpack_from(f"<{HEADER_DIFAT}L", header, DIFAT_OFFSET))
        number, seen = difat_start, set()
        for _ in range(difat_sectors):
            if len(locations) >= fat_sectors:
                # Every FAT sector is located: the rest of the DIFAT is never read, so a header
                # counting the whole file as DIFAT costs no more than the FAT itself (listing
                # every entry first took ten times the file's size in memory).
                break
            if number > MAX_REGULAR_SECTOR or number in seen:
                raise DamagedCompound("its DIFAT chain is broken or loops")
            seen.add(number)
            values = struct.unpack(f"<{per_sector}L", self._sector(number))
            locations.extend(values[:-1])
            number = values[-1]  # the last entry of a DIFAT sector points at the next one
        fat = _table()
        for location in locations[:fat_sectors]:
            if location > MAX_REGULAR_SECTOR:
                raise DamagedCompound("its FAT is incomplete")
            _extend(fat, self._sector(location))
        if len(locations) < fat_sectors:
            raise DamagedCompound("its FAT is incomplete")
        return fat

    def _read_directory(self, start: int) -> tuple[Entry, Entries]:
        limit = max(1, MAX_DIRECTORY_ENTRIES * ENTRY_SIZE // self._sector_size)
        sectors = self._chain(start, self._fat, min(self._sectors, limit))
        data = b"".join(self._sector(number) for number in sectors)
        count = len(data) // ENTRY_SIZE
        if count == 0:
            raise DamagedCompound("its directory is empty")

        def entry(index: int) -> tuple[Entry, int, int, int]:
            at = index * ENTRY_SIZE
            name_bytes = struct.unpack_from("<H", data, at + 64)[0]
            name = data[at : at + min(max(name_bytes - 2, 0), 62)].decode("utf-16-le", "replace")
            kind = data[at + 66]
            left, right, child = struct.unpack_from("<3L", data, at + 68)
            start_sector, size = struct.unpack_from("<LQ", data, at + 116)
            if self._sector_size == 512:
                size &= 0xFFFFFFFF  # version 3 files may leave junk in the high half
            return Entry(name, kind, start_sector, size), left, right, child

        root, _, _, child = entry(0)
        if root.kind != ROOT:
            raise DamagedCompound("its directory has no root entry")
        # The root's children form a tree through their left and right siblings: walk it
        # without recursion, each entry at most once.
        entries = Entries()
        pending, seen = [child], set()
        while pending:
            index = pending.pop()
            if index == NO_STREAM:
                continue
            if index >= count or index in seen or index == 0:
                raise DamagedCompound("its directory tree is broken or loops")
            seen.add(index)
            item, left, right, _ = entry(index)
            if item.kind in (STORAGE, STREAM):
                entries.add(item)
            pending += [left, right]
        return root, entries

    # -- streams ---------------------------------------------------------------------------------

    def read_stream(self, name: str, length: int) -> bytes:
        """The first ``length`` bytes of the root's stream ``name`` (fewer if it is shorter)."""
        entry = self.entries[name]
        wanted = min(length, entry.size)
        if entry.size < self._mini_cutoff:
            return self._read_mini(entry.start, wanted)
        sectors = -(-wanted // self._sector_size)
        chain = self._chain(entry.start, self._fat, self._sectors)
        if len(chain) * self._sector_size < entry.size:
            raise DamagedCompound(f"its {name} stream is shorter than its entry says")
        return b"".join(self._sector(number) for number in chain[:sectors])[:wanted]

    def _read_mini(self, start: int, wanted: int) -> bytes:
        if self._mini_fat is None:
            self._mini_fat = _table()
            for number in self._chain(self._mini_fat_start, self._fat, self._mini_fat_sectors):
                _extend(self._mini_fat, self._sector(number))
        mini = 1 << MINI_SECTOR_SHIFT
        mini_chain = self._chain(start, self._mini_fat, len(self._mini_fat))
        # The mini stream is the root entry's stream, in regular sectors.
        container = self._chain(self._root.start, self._fat, self._sectors)
        out = bytearray()
        for number in mini_chain[: -(-wanted // mini)]:
            offset = number * mini
            index, within = divmod(offset, self._sector_size)
            if index >= len(container):
                raise DamagedCompound("a mini sector lies outside the mini stream")
            out += self._sector(container[index])[within : within + mini]
        return bytes(out[:wanted])


# -- Word 97-2003 ---------------------------------------------------------------------------------

WORD_IDENTIFIER = 0xA5EC  # FibBase.wIdent of Word 97 and later (MS-DOC 2.5.2)
WORD95_IDENTIFIER = 0xA5DC  # Word 6 and 95, which LibreOffice reads too
FIB_BASE = struct.Struct("<HH6xH")  # wIdent, nFib, then (at 0x0A) the flags
F_ENCRYPTED = 0x0100
F_WHICH_TABLE = 0x0200
F_OBFUSCATED = 0x8000

ENCRYPTED_OOXML = (
    "The file is a password-protected (encrypted) Word document: Office stores a .docx with a "
    "password inside an OLE2 container that only the password opens. Remove the password in "
    "Word (File > Info > Protect Document), save it, then upload it again."
)
ENCRYPTED_DOC = (
    "The file is a password-protected (encrypted) Word 97-2003 document (.doc). Remove the "
    "password in Word, save it again, then upload it again."
)
TOO_LARGE = (
    "The Word 97-2003 document (.doc) is larger than QUIRE_MAX_PART_EXPANDED_BYTES allows; refused."
)
NOT_WORD = (
    "The file is an OLE2 compound file but not a Word document: it holds no WordDocument "
    "stream (it may be an Excel .xls, a PowerPoint .ppt or an Outlook message)."
)


def word_document_problem(path: Path) -> str | None:
    """Why the OLE2 file at ``path`` is not a Word 97-2003 document LibreOffice should convert,
    for a person (encrypted OOXML, encrypted .doc, another Office file, damage); None when it
    is one."""
    try:
        # A .doc is one part, read whole by LibreOffice: bounded as an RTF or a DOCX's part is.
        if path.stat().st_size > get_settings().max_part_expanded_bytes:
            return TOO_LARGE
        with open(path, "rb") as handle:
            compound = CompoundFile(handle)
            streams = compound.entries
            if "EncryptionInfo" in streams and "EncryptedPackage" in streams:
                return ENCRYPTED_OOXML
            if "WordDocument" not in streams:
                return NOT_WORD
            fib = compound.read_stream("WordDocument", FIB_BASE.size)
            if len(fib) < FIB_BASE.size:
                raise DamagedCompound("its WordDocument stream is too short")
            identifier, _, flags = FIB_BASE.unpack(fib)
            if identifier not in (WORD_IDENTIFIER, WORD95_IDENTIFIER):
                raise DamagedCompound("its WordDocument stream does not start like a Word file")
            if flags & (F_ENCRYPTED | F_OBFUSCATED):  # RC4 or XOR: both need the password
                return ENCRYPTED_DOC
            if identifier == WORD_IDENTIFIER:
                table = "1Table" if flags & F_WHICH_TABLE else "0Table"
                if table not in streams:
                    raise DamagedCompound(f"its {table} stream is missing")
    except DamagedCompound as damage:
        return f"The file is a damaged or truncated Word 97-2003 document (.doc): {damage}."
    except (OSError, struct.error, UnicodeDecodeError):
        return (
            "The file is a damaged or truncated Word 97-2003 document (.doc): its OLE2 "
            "structure cannot be read."
        )
    return None
