"""The documentation holds together: every setting is documented and no link dangles.

README.md is the front door and docs/ the reference. Two promises keep that split honest:
every field of ``app.config.Settings`` has a row in the settings table of docs/operations.md,
and every relative link in README.md, CHANGELOG.md and docs/*.md names a file that exists
and, for a Markdown file with an ``#anchor``, one of its headings (GitHub's anchor rules).
Nothing here renders Markdown: fenced code and inline code are skipped, which is where the
documents show text that only looks like a heading or a link.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pytest

from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_DOC = ROOT / "docs" / "operations.md"
SETTINGS_HEADING = "Settings"
DOCUMENTS = sorted(
    [ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")],
    key=lambda path: path.relative_to(ROOT).as_posix(),
)

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target), with an optional "title"; link texts here hold no ']'.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def prose(text: str) -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, with their 1-based numbers."""
    lines: list[tuple[int, str]] = []
    fence = ""
    for number, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if fence:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                fence = ""
        elif match:
            fence = match.group(1)
        else:
            lines.append((number, line))
    return lines


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: its text lower-cased, punctuation dropped, each space '-'."""
    text = CODE_SPAN.sub(lambda match: match.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading id of a Markdown text; a repeated one gets -1, -2... as on GitHub."""
    seen: Counter[str] = Counter()
    found: set[str] = set()
    for _, line in prose(text):
        match = HEADING.match(line)
        if match:
            anchor = github_anchor(match.group(2))
            found.add(anchor if seen[anchor] == 0 else f"{anchor}-{seen[anchor]}")
            seen[anchor] += 1
    return found


def broken_links(text: str, folder: Path, name: str) -> list[str]:
    """What is wrong with each relative link of a Markdown text in folder: 'name:line: why'."""
    problems: list[str] = []
    for number, line in prose(text):
        for target in LINK.findall(CODE_SPAN.sub("", line)):
            if not target or SCHEME.match(target) or target.startswith("//"):
                continue  # a web address (checked by nobody here) or an empty link
            file_part, _, anchor = target.partition("#")
            where = f"{name}:{number}: ({target})"
            if not file_part:
                if anchor not in anchors(text):
                    problems.append(f"{where} names no heading of {name}")
                continue
            linked = (folder / unquote(file_part)).resolve()
            if not linked.is_relative_to(ROOT):
                problems.append(f"{where} leaves the repository")
            elif not linked.exists():
                problems.append(f"{where} names no file")
            elif (
                anchor
                and linked.suffix == ".md"
                and anchor not in anchors(linked.read_text(encoding="utf-8"))
            ):
                problems.append(f"{where} names no heading of {linked.relative_to(ROOT)}")
    return problems


def settings_table_names() -> set[str]:
    """The variable names in the first column of the settings table's rows."""
    names: set[str] = set()
    inside = False
    for _, line in prose(SETTINGS_DOC.read_text(encoding="utf-8")):
        heading = HEADING.match(line)
        if heading:
            inside = heading.group(2).strip() == SETTINGS_HEADING
        elif inside and line.startswith("|"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", line.split("|")[1]))
    return names


def setting_variables() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{field}".upper() for field in Settings.model_fields}


def test_every_setting_has_a_row_in_the_settings_reference() -> None:
    missing = setting_variables() - settings_table_names()
    assert not missing, (
        f"settings with no row in the {SETTINGS_HEADING!r} table of "
        f"{SETTINGS_DOC.relative_to(ROOT)}: {sorted(missing)}"
    )


def test_the_settings_reference_names_no_setting_that_does_not_exist() -> None:
    prefix = str(Settings.model_config.get("env_prefix", "")).upper()
    stale = {name for name in settings_table_names() if name.startswith(prefix)}
    stale -= setting_variables()
    assert not stale, f"rows for settings app.config.Settings does not have: {sorted(stale)}"


@pytest.mark.parametrize(
    "document", DOCUMENTS, ids=[path.relative_to(ROOT).as_posix() for path in DOCUMENTS]
)
def test_every_relative_link_reaches_a_file_and_heading(document: Path) -> None:
    name = document.relative_to(ROOT).as_posix()
    assert document.exists(), f"{name} is missing"
    problems = broken_links(document.read_text(encoding="utf-8"), document.parent, name)
    assert not problems, "dangling links:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Submit — `POST /api/v1/jobs`", "submit--post-apiv1jobs"),
        ("Webhooks — `callback_url`", "webhooks--callback_url"),
        (
            "One file's PDF — `GET /api/v1/jobs/{job_id}/files/{file_id}`",
            "one-files-pdf--get-apiv1jobsjob_idfilesfile_id",
        ),
        ("Retry, cancel, delete", "retry-cancel-delete"),
        ("What gets installed: the lock", "what-gets-installed-the-lock"),
        ("The [MinIO](https://min.io) console", "the-minio-console"),
    ],
)
def test_anchors_follow_githubs_rules(heading: str, anchor: str) -> None:
    assert github_anchor(heading) == anchor


def test_a_dangling_link_or_anchor_is_reported() -> None:
    # The checker on a made-up page in docs/: each kind of break is reported, nothing else.
    text = "\n".join(
        [
            "# Here",
            "[ok](operations.md#settings) [ok](#here) [ok](https://example.com/x.md#y)",
            "`[in code](nope.md)` [no file](nope.md) [no heading](operations.md#nope)",
            "[no heading here](#nowhere) [outside](../../etc/hostname)",
            "```",
            "[in a fence](nope.md)",
            "```",
        ]
    )
    problems = broken_links(text, ROOT / "docs", "docs/probe.md")
    assert problems == [
        "docs/probe.md:3: (nope.md) names no file",
        "docs/probe.md:3: (operations.md#nope) names no heading of docs/operations.md",
        "docs/probe.md:4: (#nowhere) names no heading of docs/probe.md",
        "docs/probe.md:4: (../../etc/hostname) leaves the repository",
    ]
