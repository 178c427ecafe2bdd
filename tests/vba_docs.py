"""Macro-enabled test documents with a real VBA project: a .docm, and a .doc with one.

LibreOffice writes no VBA project, so this module builds one from the specifications: an OLE2
compound file (MS-CFB, version 3: 512-byte sectors, 64-byte mini sectors for streams under
4096 bytes) holding what LibreOffice's VBA import (oox/source/ole/vbaproject.cxx,
vbamodule.cxx) reads:

- ``VBA/dir``: the project's records (MS-OVBA 2.3.4.2), compressed: the code page, the
  project name, and per module its name, stream name, MODULEOFFSET and type (procedural or
  document);
- ``VBA/<module>``: the module's source, compressed, at MODULEOFFSET (0 here: no compiled
  "performance cache" before it);
- ``PROJECT``: ``Document=ThisDocument/&H00000000`` and ``Module=Module1`` lines, from which
  LibreOffice takes each module's type;
- ``VBA/_VBA_PROJECT`` (version 0xFFFF: no compiled code, Word recompiles from source) and
  ``PROJECTwm``, which LibreOffice does not read, so that the project is the whole of what
  MS-OVBA asks for.

Compression (MS-OVBA 2.4.1) writes each 4096-byte piece as an uncompressed chunk and the rest
as a compressed chunk made only of literal tokens: valid, and all LibreOffice needs to read.
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from tests.docx_factory import OFFICE_DOCUMENT, document_xml
from workers.ole2 import CompoundFile

# -- MS-OVBA compression ----------------------------------------------------------------------

CHUNK = 4096
LITERALS_PER_FLAG = 8
# A compressed chunk holds at most 4096 bytes of tokens; a flag byte before every 8 literals.
MOST_LITERALS_IN_A_CHUNK = CHUNK * LITERALS_PER_FLAG // (LITERALS_PER_FLAG + 1)
CHUNK_SIGNATURE = 0x3000  # 0b011 in bits 12-14 of every chunk header
CHUNK_COMPRESSED = 0x8000


def compress(data: bytes) -> bytes:
    """``data`` as an MS-OVBA CompressedContainer."""
    out = bytearray(b"\x01")  # SignatureByte
    pieces = [data[at : at + CHUNK] for at in range(0, len(data), CHUNK)]
    for piece in pieces:
        if len(piece) == CHUNK:  # an uncompressed chunk is always 4096 bytes of data
            out += struct.pack("<H", CHUNK_SIGNATURE | (CHUNK - 1)) + piece
            continue
        if len(piece) > MOST_LITERALS_IN_A_CHUNK:
            raise ValueError(
                f"a last piece of {len(piece)} bytes needs copy tokens, which this writer has not"
            )
        tokens = bytearray()
        for at in range(0, len(piece), LITERALS_PER_FLAG):
            tokens += b"\x00" + piece[at : at + LITERALS_PER_FLAG]  # flag 0: eight literals
        # CompressedChunkSize (the header's 2 bytes included) minus 3.
        header = CHUNK_COMPRESSED | CHUNK_SIGNATURE | (len(tokens) + 2 - 3)
        out += struct.pack("<H", header) + tokens
    return bytes(out)


# -- MS-CFB: an OLE2 compound file ------------------------------------------------------------

# A storage: its children by name, each a stream (bytes) or a storage.
Storage = Mapping[str, Union[bytes, "Storage"]]

SECTOR = 512
MINI_SECTOR = 64
MINI_CUTOFF = 4096
ENTRY = 128
FREE, END_OF_CHAIN, FAT_SECTOR = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD
NO_STREAM = 0xFFFFFFFF
STORAGE_KIND, STREAM_KIND, ROOT_KIND = 1, 2, 5
BLACK = 1
HEADER_DIFAT = 109
MAGIC = bytes.fromhex("D0CF11E0A1B11AE1")


@dataclass
class _Entry:
    name: str
    kind: int
    data: bytes = b""
    clsid: bytes = bytes(16)
    left: int = NO_STREAM
    right: int = NO_STREAM
    child: int = NO_STREAM
    start: int = END_OF_CHAIN
    size: int = 0


def _sort_key(name: str) -> tuple[int, str]:
    # MS-CFB 2.6.4: shorter names first, then by upper-case code points.
    return len(name), name.upper()


def _flatten(root: Storage, root_clsid: bytes) -> list[_Entry]:
    entries = [_Entry("Root Entry", ROOT_KIND, clsid=root_clsid)]

    def add(storage: Storage, parent: _Entry) -> None:
        children: list[int] = []
        nested: list[tuple[Storage, _Entry]] = []
        for name in sorted(storage, key=_sort_key):
            value = storage[name]
            if len(name) > 31:
                raise ValueError(f"{name!r}: a compound file name holds at most 31 characters")
            if isinstance(value, bytes):
                entry = _Entry(name, STREAM_KIND, value, size=len(value))
            else:
                entry = _Entry(name, STORAGE_KIND)
                nested.append((value, entry))
            children.append(len(entries))
            entries.append(entry)
        parent.child = _balanced(entries, children)
        for storage_value, entry in nested:
            add(storage_value, entry)

    add(root, entries[0])
    return entries


def _balanced(entries: list[_Entry], ordered: list[int]) -> int:
    """Link ``ordered`` (sorted siblings) as a balanced binary tree; its root's index. All
    black, as readers check only the order (a red-black tree's colours are a writer's aid)."""
    if not ordered:
        return NO_STREAM
    middle = len(ordered) // 2
    root = entries[ordered[middle]]
    root.left = _balanced(entries, ordered[:middle])
    root.right = _balanced(entries, ordered[middle + 1 :])
    return ordered[middle]


def _padded(data: bytes, size: int) -> bytes:
    return data + bytes(-len(data) % size)


def compound_file(root: Storage, root_clsid: bytes = bytes(16)) -> bytes:
    """``root`` as a version 3 compound file: streams under 4096 bytes in the mini stream."""
    entries = _flatten(root, root_clsid)
    fat: list[int] = []
    sectors: list[bytes] = []

    def allocate(data: bytes, filler: bytes = b"\0") -> int:
        """Append ``data`` as a chain of sectors, its last one filled up with ``filler``
        repeated; the first sector's number."""
        count = max(1, -(-len(data) // SECTOR))
        first = len(fat)
        fat.extend(range(first + 1, first + count))
        fat.append(END_OF_CHAIN)
        room = count * SECTOR - len(data)
        data += filler * (room // len(filler))
        sectors.extend(data[at : at + SECTOR] for at in range(0, count * SECTOR, SECTOR))
        return first

    mini_stream = bytearray()
    mini_fat: list[int] = []
    for entry in entries:
        if entry.kind != STREAM_KIND or entry.size == 0:
            continue
        if entry.size >= MINI_CUTOFF:
            entry.start = allocate(entry.data)
            continue
        count = -(-entry.size // MINI_SECTOR)
        entry.start = len(mini_fat)
        mini_fat.extend(range(entry.start + 1, entry.start + count))
        mini_fat.append(END_OF_CHAIN)
        mini_stream += _padded(entry.data, MINI_SECTOR)

    mini_fat_start, mini_fat_sectors = END_OF_CHAIN, 0
    if mini_stream:
        # The mini stream is the root entry's stream.
        entries[0].start, entries[0].size = allocate(bytes(mini_stream)), len(mini_stream)
        table = struct.pack(f"<{len(mini_fat)}L", *mini_fat)
        mini_fat_start = allocate(table, struct.pack("<L", FREE))
        mini_fat_sectors = -(-len(table) // SECTOR)

    unused = _directory_entry(_Entry("", 0))
    directory_start = allocate(b"".join(_directory_entry(entry) for entry in entries), unused)

    per_fat_sector = SECTOR // 4
    fat_sectors = 1
    while len(fat) + fat_sectors > fat_sectors * per_fat_sector:
        fat_sectors += 1
    if fat_sectors > HEADER_DIFAT:
        raise ValueError("too large for a compound file without DIFAT sectors")
    fat_locations = list(range(len(fat), len(fat) + fat_sectors))
    fat.extend([FAT_SECTOR] * fat_sectors)
    fat.extend([FREE] * (fat_sectors * per_fat_sector - len(fat)))
    fat_bytes = struct.pack(f"<{len(fat)}L", *fat)
    sectors.extend(fat_bytes[at : at + SECTOR] for at in range(0, len(fat_bytes), SECTOR))

    difat = fat_locations + [FREE] * (HEADER_DIFAT - len(fat_locations))
    header = (
        MAGIC
        + bytes(16)  # header CLSID
        + struct.pack("<HHHHH", 0x003E, 0x0003, 0xFFFE, 9, 6)
        + bytes(6)
        + struct.pack(
            "<LLLLLLLLL",
            0,  # directory sectors: always 0 in version 3
            fat_sectors,
            directory_start,
            0,  # transaction signature
            MINI_CUTOFF,
            mini_fat_start,
            mini_fat_sectors,
            END_OF_CHAIN,  # no DIFAT sectors
            0,
        )
        + struct.pack(f"<{HEADER_DIFAT}L", *difat)
    )
    assert len(header) == SECTOR
    return header + b"".join(sectors)


def _directory_entry(entry: _Entry) -> bytes:
    encoded = entry.name.encode("utf-16-le")
    name_length = len(encoded) + 2 if entry.name else 0
    return (
        _padded(encoded, 64)[:64]
        + struct.pack("<HBB", name_length, entry.kind, BLACK if entry.kind else 0)
        + struct.pack("<LLL", entry.left, entry.right, entry.child)
        + entry.clsid
        + bytes(4 + 8 + 8)  # state bits, creation and modification times
        + struct.pack("<LQ", entry.start if entry.kind else 0, entry.size)
    )


# -- MS-OVBA: a VBA project -------------------------------------------------------------------


@dataclass(frozen=True)
class Module:
    name: str
    source: str  # VBA code, without the Attribute lines the editor hides
    document: bool = False  # a document module (ThisDocument) rather than a procedural one


CODE_PAGE = 1252
PROJECT_NAME = "Project"


def _record(record_id: int, data: bytes = b"") -> bytes:
    return struct.pack("<HL", record_id, len(data)) + data


def _dir_stream(modules: list[Module]) -> bytes:
    """The ``dir`` stream's records, uncompressed (MS-OVBA 2.3.4.2)."""
    name = PROJECT_NAME.encode("cp1252")
    records = [
        _record(0x0001, struct.pack("<L", 1)),  # PROJECTSYSKIND: 32-bit Windows
        _record(0x0002, struct.pack("<L", 0x409)),  # PROJECTLCID
        _record(0x0014, struct.pack("<L", 0x409)),  # PROJECTLCIDINVOKE
        _record(0x0003, struct.pack("<H", CODE_PAGE)),  # PROJECTCODEPAGE
        _record(0x0004, name),  # PROJECTNAME
        _record(0x0005) + _record(0x0040),  # PROJECTDOCSTRING, and its Unicode twin
        _record(0x0006) + _record(0x003D),  # PROJECTHELPFILEPATH, and its second copy
        _record(0x0007, struct.pack("<L", 0)),  # PROJECTHELPCONTEXT
        _record(0x0008, struct.pack("<L", 0)),  # PROJECTLIBFLAGS
        # PROJECTVERSION: its size field says 4 but 6 bytes follow (major, minor).
        struct.pack("<HLLH", 0x0009, 4, 1, 0),
        _record(0x000C) + _record(0x003C),  # PROJECTCONSTANTS, and its Unicode twin
        _record(0x000F, struct.pack("<H", len(modules))),  # PROJECTMODULES
        _record(0x0013, struct.pack("<H", 0xFFFF)),  # PROJECTCOOKIE
    ]
    for module in modules:
        ansi, wide = module.name.encode("cp1252"), module.name.encode("utf-16-le")
        records += [
            _record(0x0019, ansi),  # MODULENAME
            _record(0x0047, wide),  # MODULENAMEUNICODE
            _record(0x001A, ansi) + _record(0x0032, wide),  # MODULESTREAMNAME, Unicode twin
            _record(0x001C) + _record(0x0048),  # MODULEDOCSTRING, and its Unicode twin
            _record(0x0031, struct.pack("<L", 0)),  # MODULEOFFSET: the source starts at 0
            _record(0x001E, struct.pack("<L", 0)),  # MODULEHELPCONTEXT
            _record(0x002C, struct.pack("<H", 0xFFFF)),  # MODULECOOKIE
            _record(0x0022 if module.document else 0x0021),  # MODULETYPE
            _record(0x002B),  # MODULEEND
        ]
    records.append(_record(0x0010))  # PROJECTEND
    return b"".join(records)


def _module_source(module: Module) -> bytes:
    attributes = [f'Attribute VB_Name = "{module.name}"']
    if module.document:
        attributes += [
            'Attribute VB_Base = "1Normal.ThisDocument"',
            "Attribute VB_GlobalNameSpace = False",
            "Attribute VB_Creatable = False",
            "Attribute VB_PredeclaredId = True",
            "Attribute VB_Exposed = True",
            "Attribute VB_TemplateDerived = True",
            "Attribute VB_Customizable = True",
        ]
    lines = attributes + module.source.strip("\n").split("\n")
    return "\r\n".join(lines).encode("cp1252") + b"\r\n"


def _project_stream(modules: list[Module]) -> bytes:
    """The ``PROJECT`` stream (MS-OVBA 2.3.1): LibreOffice takes each module's type from it."""
    lines = ['ID="{00000000-0000-0000-0000-000000000000}"']
    lines += [
        f"Document={module.name}/&H00000000" if module.document else f"Module={module.name}"
        for module in modules
    ]
    lines += [
        f'Name="{PROJECT_NAME}"',
        'HelpContextID="0"',
        'VersionCompatible32="393222000"',
        "",
        "[Host Extender Info]",
        "&H00000001={3832D640-CF90-11CF-8E43-00A0C911005A};VBE;&H00000000",
        "",
        "[Workspace]",
    ]
    lines += [f"{module.name}=0, 0, 0, 0, C" for module in modules]
    return "\r\n".join(lines).encode("cp1252") + b"\r\n"


def _project_wm(modules: list[Module]) -> bytes:
    """``PROJECTwm``: each module's name in the code page and in UTF-16 (MS-OVBA 2.3.3)."""
    names = b"".join(
        module.name.encode("cp1252") + b"\0" + module.name.encode("utf-16-le") + b"\0\0"
        for module in modules
    )
    return names + b"\0\0"


def vba_storage(modules: list[Module]) -> dict[str, bytes | dict[str, bytes]]:
    """A VBA project storage: what a .docm's vbaProject.bin holds at its root, and a .doc in
    its ``Macros`` storage."""
    vba: dict[str, bytes] = {
        "dir": compress(_dir_stream(modules)),
        # _VBA_PROJECT (MS-OVBA 2.3.4.1): reserved 0x61CC, version 0xFFFF says the compiled
        # code is absent, so an Office application compiles the sources.
        "_VBA_PROJECT": struct.pack("<HHBH", 0x61CC, 0xFFFF, 0, 0),
    }
    vba.update({module.name: compress(_module_source(module)) for module in modules})
    return {"VBA": vba, "PROJECT": _project_stream(modules), "PROJECTwm": _project_wm(modules)}


def vba_project(modules: list[Module]) -> bytes:
    """A .docm's ``word/vbaProject.bin``."""
    return compound_file(vba_storage(modules))


# -- macros that leave a mark -----------------------------------------------------------------


def vba_path(folder: Path) -> str:
    """``folder`` as a VBA string literal."""
    if '"' in str(folder):
        raise ValueError(f"{folder}: a VBA string literal cannot hold a double quote")
    return f'"{folder}"'


# The LibreOffice instance's own temporary folder, in its profile, where the sandbox lets it
# write: for a document whose macros must leave their mark in whichever instance opens it.
INSTANCE_TEMP = 'Environ("TMPDIR")'


def _writes(folder: str, name: str) -> str:
    return (
        "    Dim channel As Integer\n"
        "    channel = FreeFile\n"
        f'    Open {folder} & "/{name}" For Output As #channel\n'
        '    Print #channel, "ran"\n'
        "    Close #channel\n"
    )


def marking_macros(folder: str, inserted: str) -> list[Module]:
    """``ThisDocument.Document_Open`` writes ``Document_Open`` into ``folder`` (a VBA string
    expression: ``vba_path(path)``, or ``INSTANCE_TEMP``); ``Module1.AutoOpen`` writes
    ``AutoOpen`` there and appends ``inserted`` to the document's text."""
    return [
        Module(
            "ThisDocument",
            f"Private Sub Document_Open()\n{_writes(folder, 'Document_Open')}End Sub\n",
            document=True,
        ),
        Module(
            "Module1",
            f"Sub AutoOpen()\n{_writes(folder, 'AutoOpen')}"
            f'    ThisComponent.Text.End.String = "{inserted}"\nEnd Sub\n',
        ),
    ]


MARKS = ("Document_Open", "AutoOpen")


# -- the documents ----------------------------------------------------------------------------

DOCM_MAIN = "application/vnd.ms-word.document.macroEnabled.main+xml"
VBA_PROJECT_TYPE = "application/vnd.ms-office.vbaProject"
VBA_RELATIONSHIP = "http://schemas.microsoft.com/office/2006/relationships/vbaProject"


def docm(text: str, modules: list[Module]) -> bytes:
    """A .docm holding ``text`` and a VBA project of ``modules``, as Word writes one: the
    macro-enabled content type, ``word/vbaProject.bin`` and the relationship naming it."""
    content_types = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f'<Default Extension="bin" ContentType="{VBA_PROJECT_TYPE}"/>'
        f'<Override PartName="/word/document.xml" ContentType="{DOCM_MAIN}"/></Types>'
    )
    relationships = (
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr("[Content_Types].xml", content_types)
        package.writestr(
            "_rels/.rels",
            f'{relationships}<Relationship Id="rId1" Type="{OFFICE_DOCUMENT}" '
            'Target="word/document.xml"/></Relationships>',
        )
        package.writestr("word/document.xml", document_xml([text]))
        package.writestr(
            "word/_rels/document.xml.rels",
            f'{relationships}<Relationship Id="rIdVba" Type="{VBA_RELATIONSHIP}" '
            'Target="vbaProject.bin"/></Relationships>',
        )
        package.writestr("word/vbaProject.bin", vba_project(modules))
    return buffer.getvalue()


# Word's CLSID for a Word 97-2003 document's root storage.
WORD_DOCUMENT_CLSID = bytes.fromhex("0609020000000000C000000000000046")


def doc_with_macros(doc: Path, modules: list[Module]) -> bytes:
    """The Word 97-2003 document ``doc`` (streams at its root only, as LibreOffice writes
    them) written again with a ``Macros`` storage holding a VBA project of ``modules``."""
    with open(doc, "rb") as handle:
        original = CompoundFile(handle)
        root: dict[str, bytes | Storage] = {}
        for name, entry in original.entries.items():
            if entry.kind != STREAM_KIND:
                raise ValueError(f"{doc}: its storage {name!r} would be lost")
            root[name] = original.read_stream(name, entry.size)
    root["Macros"] = vba_storage(modules)
    return compound_file(root, WORD_DOCUMENT_CLSID)
