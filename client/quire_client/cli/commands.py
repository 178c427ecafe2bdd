"""``quire``: the command line, its commands and their exit codes, over ``quire_client``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from quire_client.cli.errors import (
    EXIT_ERROR,
    EXIT_FILES_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CliError,
)
from quire_client.cli.render import (
    Display,
    display_for,
    fonts_text,
    human_bytes,
    print_failures,
    print_jobs,
    print_status,
)
from quire_client.client import DEFAULT_SERVER, Client, JobOptions
from quire_client.errors import Forbidden, QuireError, TooManyRequests, Unauthorized
from quire_client.models import Job, JobStatus
from quire_client.sources import upload_source

POLL_SECONDS = 1.0
QUOTA_WAIT = 600.0  # seconds `convert` waits in all for a full quota, unless --quota-wait says

EPILOG = """\
global options (--server, --api-key) go before or after the command.

exit codes:
  0  done (with --allow-failures: done even if some files failed)
  1  some files failed, or the job failed as a whole
  2  bad command line
  3  nothing to report on: server unreachable or refusing, or a local error
"""
OUTPUT_HELP = (
    "where to save the PDFs: a folder (ending in '/', or one that exists) gets them in the "
    "input's folder structure; any other path gets the zip of PDFs"
)


def _global_options(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: an option not given adds nothing to the namespace, so a value given before the
    # command is not overwritten by the subcommand's default (argparse copies a subparser's
    # defaults over the parent's values).
    parser.add_argument(
        "--server",
        metavar="URL",
        default=argparse.SUPPRESS,
        help=f"the Quire API (default: $QUIRE_SERVER, else {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        default=argparse.SUPPRESS,
        help="sent as 'Authorization: Bearer KEY' (default: $QUIRE_API_KEY)",
    )


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common)
    top = argparse.ArgumentParser(
        prog="quire",
        description="Convert DOCX files to PDF in bulk with a Quire server.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(top)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            parents=[common],
            help=help,
            description=description,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    convert = command(
        "convert",
        "upload a folder or zip of DOCX files, follow the job, download the PDFs",
        description="Upload a folder (only its .docx, .docm, .doc, .rtf and .odt files are sent,\n"
        "with their relative paths), a zip or one document; follow the conversion; download the "
        "PDFs.",
    )
    convert.add_argument("source", metavar="DIR_OR_ZIP", type=Path)
    convert.add_argument("-o", "--output", metavar="OUT", required=True, help=OUTPUT_HELP)
    convert.add_argument(
        "--allow-failures",
        action="store_true",
        help="exit 0 even when some files failed (the job still has to produce an archive)",
    )
    convert.add_argument("--pdf-a", choices=["1b", "2b", "3b"], help="produce PDF/A")
    convert.add_argument("--tagged-pdf", action="store_true", help="produce tagged PDF")
    convert.add_argument(
        "--strict-fonts",
        action="store_true",
        help="fail a file that asks for a font the server lacks and could not replace",
    )
    convert.add_argument(
        "--merge",
        metavar="PDF",
        type=Path,
        help="also write one PDF of the whole job to PDF: the files in upload order, a "
        "bookmark for each, and a last page listing the failed ones",
    )
    convert.add_argument(
        "--no-failure-page",
        action="store_true",
        help="with --merge: leave out the page that lists the failed files",
    )
    convert.add_argument(
        "--quota-wait",
        metavar="SECONDS",
        type=float,
        default=QUOTA_WAIT,
        help="when the server's quota for your key is full (429), wait as it says and try "
        f"again, for at most this long in all (default {QUOTA_WAIT:g}; 0: give up at once)",
    )

    status = command("status", "a job's status, progress and failed files")
    status.add_argument("job_id", metavar="JOB")
    status.add_argument("--json", action="store_true", help="print the raw status document")

    download = command("download", "download a finished job's PDFs")
    download.add_argument("job_id", metavar="JOB")
    download.add_argument("-o", "--output", metavar="OUT", required=True, help=OUTPUT_HELP)
    download.add_argument(
        "--merged",
        action="store_true",
        help="the job's merged PDF (submitted with --merge) to OUT, instead of its PDFs",
    )

    listing = command("list", "your jobs, newest first")
    listing.add_argument("--status", choices=[status.value for status in JobStatus])
    listing.add_argument("--limit", type=int, default=20, help="jobs to show (default 20)")
    listing.add_argument("--json", action="store_true", help="print the raw page of jobs")

    for name, text in (
        ("retry", "convert a finished job's failed files again"),
        ("cancel", "stop a job that has not ended (converted files stay)"),
        ("delete", "remove a job, its files and its PDFs"),
    ):
        command(name, text).add_argument("job_id", metavar="JOB")
    return top


@dataclass(frozen=True)
class Output:
    """Where ``-o`` says the PDFs go: a folder mirroring the input, or one zip file."""

    path: Path
    folder: bool

    @classmethod
    def parse(cls, given: str) -> Output:
        # The trailing "/" is read from the text: Path("out/") would drop it.
        folder = given.endswith(("/", os.sep)) or Path(given).is_dir()
        if not folder and Path(given).suffix.lower() == ".pdf":
            raise CliError(f"{given}: -o takes a folder (ending in '/') or a .zip to write")
        return cls(Path(given), folder)


def follow(client: Client, job_id: str, total: int, display: Display) -> Job:
    """Show the job's progress until it ends; returns its final status document.

    Driven by the event stream; if the stream is missing or breaks, by polling the status.
    """
    with display.conversion(total) as update:
        return client.wait(
            job_id,
            on_progress=lambda progress: update(dict(progress.raw)),
            on_stream_broken=lambda broken: display.note(
                f"(live events unavailable: {broken}; polling instead)"
            ),
            poll_interval=POLL_SECONDS,
        )


def save(client: Client, job: Job, output: Output, display: Display) -> None:
    with display.transfer("Downloading", job.result_bytes) as advance:
        if output.folder:
            written = client.download_to_folder(job.job_id, output.path, received=advance)
            saved = f"Saved {len(written)} PDFs under {output.path}"
        else:
            size = client.download(job.job_id, output.path, received=advance)
            saved = f"Saved {output.path} ({human_bytes(size)})"
    display.note(saved)


def save_merged(client: Client, job: Job, target: Path, display: Display) -> None:
    with display.transfer("Downloading the merged PDF", job.merged_bytes) as advance:
        size = client.download_merged(job.job_id, target, received=advance)
    display.note(f"Saved {target} ({human_bytes(size)}), one PDF of the whole job")


def quota_note(refusal: TooManyRequests, seconds: float) -> str:
    """What `convert` shows while a quota keeps it waiting: the server's reason (its first
    sentence, e.g. "Quota reached: 2 active jobs of 2 allowed per API key") and the wait."""
    reason = refusal.message.split(". ")[0].rstrip(".") or str(refusal)
    return f"{reason}; retrying in {seconds:.0f} s…"


def convert(args: argparse.Namespace, client: Client) -> int:
    display = display_for()
    if args.no_failure_page and args.merge is None:
        raise CliError("--no-failure-page goes with --merge")
    options = JobOptions(
        pdf_a=args.pdf_a,
        tagged_pdf=args.tagged_pdf,
        strict_fonts=args.strict_fonts,
        merge=args.merge is not None,
        merge_failure_page=not args.no_failure_page,
    )
    output = Output.parse(args.output)
    with upload_source(args.source) as (archive, counted):
        if counted:
            display.note(f"Zipped {counted} documents from {args.source}")
        size = archive.stat().st_size
        with display.transfer("Uploading", size) as advance:
            created = client.submit_zip(
                archive,
                options,
                sent=advance,
                quota_wait=max(0.0, args.quota_wait),
                on_quota_wait=lambda refusal, seconds: display.note(quota_note(refusal, seconds)),
            )
    if not created.direct_upload:
        display.note("(the server offers no direct upload: the zip went through the API)")
    job_id = created.job_id
    display.note(f"Job {job_id}: {created.file_count} files")
    started = time.monotonic()
    try:
        job = follow(client, job_id, created.file_count, display)
    except KeyboardInterrupt:
        display.note(f"Stopped watching; the job goes on: quire status {job_id}")
        return EXIT_INTERRUPTED
    elapsed = time.monotonic() - started
    progress = job.progress
    print(
        f"Job {job_id} {job.status} in {elapsed:.1f}s: {progress.completed} converted, "
        f"{progress.failed} failed, {progress.total} files"
    )
    fonts = fonts_text(dict(job.raw))
    if fonts:
        print(fonts)
    if job.status is JobStatus.COMPLETED:
        save(client, job, output, display)
        if args.merge is not None:
            save_merged(client, job, args.merge, display)
    elif job.error_message:
        print(f"The job failed: {job.error_message}")
    print_failures(dict(job.raw))
    if job.status is not JobStatus.COMPLETED:
        return EXIT_FILES_FAILED  # no archive: --allow-failures cannot make that a success
    return EXIT_OK if args.allow_failures or not progress.failed else EXIT_FILES_FAILED


def status(args: argparse.Namespace, client: Client) -> int:
    job = client.job(args.job_id)
    if args.json:
        print(json.dumps(job.raw, indent=2, ensure_ascii=False))
    else:
        print_status(dict(job.raw))
    return EXIT_OK


def download(args: argparse.Namespace, client: Client) -> int:
    job = client.job(args.job_id)
    if job.status is not JobStatus.COMPLETED:
        reason = f": {job.error_message}" if job.error_message else ""
        raise CliError(f"job {job.job_id} is {job.status}; it has no archive{reason}")
    if args.merged:
        save_merged(client, job, Path(args.output), display_for())
    else:
        save(client, job, Output.parse(args.output), display_for())
    return EXIT_OK


def list_jobs(args: argparse.Namespace, client: Client) -> int:
    page = client.jobs(status=args.status, limit=max(1, min(args.limit, 200)))
    if args.json:
        print(json.dumps(page.raw, indent=2, ensure_ascii=False))
    else:
        print_jobs(page.jobs)
    return EXIT_OK


def retry(args: argparse.Namespace, client: Client) -> int:
    retried = client.retry(args.job_id)
    print(f"Job {retried.job_id} {retried.status}: {retried.retried_files} files queued again")
    return EXIT_OK


def cancel(args: argparse.Namespace, client: Client) -> int:
    cancelled = client.cancel(args.job_id)
    print(
        f"Job {cancelled.job_id} {cancelled.status}: "
        f"{cancelled.cancelled_files} files will not be converted"
    )
    return EXIT_OK


def delete(args: argparse.Namespace, client: Client) -> int:
    client.delete(args.job_id)
    print(f"Job {args.job_id} deleted")
    return EXIT_OK


COMMANDS = {
    "convert": convert,
    "status": status,
    "download": download,
    "list": list_jobs,
    "retry": retry,
    "cancel": cancel,
    "delete": delete,
}


def message(error: QuireError) -> str:
    text = str(error)
    if isinstance(error, Unauthorized | Forbidden):
        text += " (give the key with --api-key or QUIRE_API_KEY)"
    elif isinstance(error, TooManyRequests) and error.code == "quota_exceeded":
        text += " (quire convert waits for a quota up to --quota-wait seconds)"
    return text


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    server = getattr(args, "server", None) or os.environ.get("QUIRE_SERVER") or DEFAULT_SERVER
    api_key = getattr(args, "api_key", None) or os.environ.get("QUIRE_API_KEY") or None
    try:
        with Client(server, api_key, user_agent="quire-cli") as client:
            return COMMANDS[args.command](args, client)
    except QuireError as error:
        print(f"quire: error: {message(error)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("quire: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout went away (`quire status JOB | head`): stop quietly, and keep
        # Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FILES_FAILED
