"""What the CLI shows on a terminal comes from the server (file names from the zip, error
messages) or from the command line (paths): shown as written, never read as rich markup (a
name with "[/x]" in it would stop the CLI with a MarkupError; "[red]" would vanish)."""

from __future__ import annotations

import io

from quire_client.cli.render import Display, print_failures

NAME = "reports/[final] q3 [/draft].docx"
MESSAGE = "The file is not a DOCX document: [bold]not[/bold] a zip [/oops]"


class Terminal(io.StringIO):
    """A stream that says it is a terminal, so rich draws as it would for a person."""

    def isatty(self) -> bool:
        return True


def test_failures_table_shows_names_and_messages_as_written() -> None:
    job = {
        "progress": {"total": 1},
        "files": [{"filename": NAME, "status": "FAILED", "error_message": MESSAGE}],
    }
    out = Terminal()
    print_failures(job, out)
    text = out.getvalue()
    assert "[final]" in text and "[/draft]" in text and "[/oops]" in text


def test_notes_show_paths_as_written() -> None:
    out = Terminal()
    Display(out).note("Zipped 3 .docx files from docs[2024]/[/old]")
    assert "docs[2024]/[/old]" in out.getvalue()
