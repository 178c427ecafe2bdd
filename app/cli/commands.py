"""``quire``: the command line, its three commands and their exit codes."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from app.cli.archive import upload_source
from app.cli.client import TERMINAL, JobOptions, QuireClient, StreamBroken
from app.cli.errors import (
    EXIT_ERROR,
    EXIT_FILES_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CliError,
)
from app.cli.render import Display, display_for, human_bytes, print_failures, print_status

DEFAULT_SERVER = "http://127.0.0.1:8000"
POLL_SECONDS = 1.0

EPILOG = """\
exit codes:
  0  done (with --allow-failures: done even if some files failed)
  1  some files failed, or the job failed as a whole
  2  bad command line
  3  nothing to report on: server unreachable or refusing, or a local error
"""


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--server",
        metavar="URL",
        help=f"the Quire API (default: $QUIRE_SERVER, else {DEFAULT_SERVER})",
    )
    common.add_argument(
        "--api-key",
        metavar="KEY",
        help="sent as 'Authorization: Bearer KEY' (default: $QUIRE_API_KEY)",
    )
    top = argparse.ArgumentParser(
        prog="quire",
        description="Convert DOCX files to PDF in bulk with a Quire server.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    convert = commands.add_parser(
        "convert",
        parents=[common],
        help="upload a folder or zip of DOCX files, follow the job, download the PDFs",
        description="Upload a folder (only its .docx files are sent, with their relative\n"
        "paths), a zip or one .docx file; follow the conversion; download the zip of PDFs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument("source", metavar="DIR_OR_ZIP", type=Path)
    convert.add_argument(
        "-o", "--output", type=Path, required=True, help="where to save the zip of PDFs"
    )
    convert.add_argument(
        "--allow-failures",
        action="store_true",
        help="exit 0 even when some files failed (the job still has to produce an archive)",
    )
    convert.add_argument("--pdf-a", choices=["1b", "2b", "3b"], help="produce PDF/A")
    convert.add_argument("--tagged-pdf", action="store_true", help="produce tagged PDF")

    status = commands.add_parser(
        "status", parents=[common], help="a job's status, progress and failed files"
    )
    status.add_argument("job_id", metavar="JOB")
    status.add_argument("--json", action="store_true", help="print the raw status document")

    download = commands.add_parser(
        "download", parents=[common], help="download a finished job's zip of PDFs"
    )
    download.add_argument("job_id", metavar="JOB")
    download.add_argument("-o", "--output", type=Path, required=True, help="where to save it")
    return top


def follow(client: QuireClient, job_id: str, total: int, display: Display) -> dict[str, Any]:
    """Show the job's progress until it ends; returns its final status document.

    Driven by the event stream; if the stream is missing or breaks, by polling the status.
    """
    with display.conversion(total) as update:
        try:
            for name, data in client.events(job_id):
                if name == "progress":
                    update(data)
                elif name == "job":
                    update(data.get("progress", {}))
                    break
        except StreamBroken as broken:
            display.note(f"(live events unavailable: {broken}; polling instead)")
            while True:
                job = client.get_job(job_id)
                update(job["progress"])
                if job["status"] in TERMINAL:
                    break
                time.sleep(POLL_SECONDS)
    return client.get_job(job_id)


def save_archive(client: QuireClient, job: dict[str, Any], target: Path, display: Display) -> None:
    with display.transfer("Downloading", job.get("result_bytes")) as advance:
        written = client.download(job["job_id"], target, advance)
    display.note(f"Saved {target} ({human_bytes(written)})")


def convert(args: argparse.Namespace, client: QuireClient) -> int:
    display = display_for()
    options = JobOptions(pdf_a=args.pdf_a, tagged_pdf=args.tagged_pdf)
    if args.output.is_dir():
        raise CliError(f"{args.output} is a folder; -o takes the path of the zip to write")
    with upload_source(args.source) as (archive, counted):
        if counted:
            display.note(f"Zipped {counted} .docx files from {args.source}")
        size = archive.stat().st_size
        with display.transfer("Uploading", size) as advance:
            created = client.submit(archive, options, advance)
    if not client.direct_upload:
        display.note("(the server offers no direct upload: the zip went through the API)")
    job_id = created["job_id"]
    display.note(f"Job {job_id}: {created['file_count']} files")
    started = time.monotonic()
    try:
        job = follow(client, job_id, created["file_count"], display)
    except KeyboardInterrupt:
        display.note(f"Stopped watching; the job goes on: quire status {job_id}")
        return EXIT_INTERRUPTED
    elapsed = time.monotonic() - started
    progress = job["progress"]
    print(
        f"Job {job_id} {job['status']} in {elapsed:.1f}s: {progress['completed']} converted, "
        f"{progress['failed']} failed, {progress['total']} files"
    )
    if job["status"] == "COMPLETED":
        save_archive(client, job, args.output, display)
    elif job.get("error_message"):
        print(f"The job failed: {job['error_message']}")
    print_failures(job)
    if job["status"] != "COMPLETED":
        return EXIT_FILES_FAILED  # no archive: --allow-failures cannot make that a success
    return EXIT_OK if args.allow_failures or not progress["failed"] else EXIT_FILES_FAILED


def status(args: argparse.Namespace, client: QuireClient) -> int:
    job = client.get_job(args.job_id)
    if args.json:
        print(json.dumps(job, indent=2, ensure_ascii=False))
    else:
        print_status(job)
    return EXIT_OK


def download(args: argparse.Namespace, client: QuireClient) -> int:
    job = client.get_job(args.job_id)
    if job["status"] != "COMPLETED":
        reason = f": {job['error_message']}" if job.get("error_message") else ""
        raise CliError(f"job {job['job_id']} is {job['status']}; it has no archive{reason}")
    save_archive(client, job, args.output, display_for())
    return EXIT_OK


COMMANDS = {"convert": convert, "status": status, "download": download}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    server = args.server or os.environ.get("QUIRE_SERVER") or DEFAULT_SERVER
    api_key = args.api_key or os.environ.get("QUIRE_API_KEY") or None
    try:
        with QuireClient(server, api_key) as client:
            return COMMANDS[args.command](args, client)
    except CliError as error:
        print(f"quire: error: {error.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("quire: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout went away (`quire status JOB | head`): stop quietly, and keep
        # Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FILES_FAILED
