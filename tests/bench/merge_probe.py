"""Peak memory of building one job's merged PDF (issue #18: under 300 MB at 1,000 files).

    python -m tests.bench.merge_probe JOB_ID        # a finished job of the configured service
    python -m tests.bench.merge_probe --pdfs 1000   # standalone: 1,000 real PDFs, local store

With a job id (what ``make bench`` runs after its 1,000-document job), it runs the merge code the
worker runs, in a fresh process pointed at the same settings, over the job's converted files
in upload order, writing to a throwaway key. Standalone, it converts a few corpus documents with
LibreOffice once, stores ``--pdfs`` copies of their PDFs (each its own object, read and parsed
on its own) in a local store in a temporary folder, and measures the merge in a fresh process.
Either way it prints one line of JSON: the process's peak RSS, the PDFs, pages and bytes.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from app.config import get_settings
from app.db import session_scope
from app.models import File, FileStatus
from app.storage import LocalStore, get_store, output_key
from workers.merge import MergeResult, MergeSource, write_merged

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "corpus" / "pandoc"
# Documents of a few kinds (tables, lists, images, notes): their PDFs have fonts, images and
# annotations to copy, not only text.
SAMPLES = (
    "test__docx__tables.docx",
    "test__docx__lists.docx",
    "test__docx__image.docx",
    "test__docx__notes.docx",
    "test__docx__comments.docx",
    "test__docx__block_quotes.docx",
    "test__docx__headers.docx",
    "test__docx__links.docx",
)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _report(result: MergeResult, seconds: float) -> dict[str, Any]:
    return {
        "pdfs": result.merged,
        "pages": result.pages,
        "merged_bytes": result.bytes_written,
        "seconds": round(seconds, 3),
        "peak_rss_mb": _peak_rss_mb(),
    }


def probe_job(job_id: str) -> dict[str, Any]:
    with session_scope() as session:
        rows = session.execute(
            select(File.id, File.filename)
            .where(File.job_id == job_id, File.status == FileStatus.COMPLETED)
            .order_by(File.position)
        ).all()
    sources = [MergeSource(file_id, filename) for file_id, filename in rows]
    store, key = get_store(), f"jobs/{job_id}/bench-merged.pdf"
    started = time.perf_counter()
    result = write_merged(
        job_id, sources, [], store, key, scratch=get_settings().resolved_scratch_dir
    )
    elapsed = time.perf_counter() - started
    store.delete_prefix(key)
    return _report(result, elapsed)


def measure_store(root: Path, count: int) -> dict[str, Any]:
    """The merge of ``count`` stored PDFs of job "bench" (this process does nothing else)."""
    store = LocalStore(root / "store", "bench")
    sources = [MergeSource(f"{n:05d}", f"folder/document-{n:05d}.docx") for n in range(count)]
    started = time.perf_counter()
    result = write_merged(
        "bench", sources, [], store, "jobs/bench/merged.pdf", scratch=root / "scratch"
    )
    return _report(result, time.perf_counter() - started)


def prepare_store(root: Path, count: int) -> None:
    """``count`` PDFs written by LibreOffice, stored as job "bench"'s outputs."""
    converted = root / "converted"
    subprocess.run(
        [
            "soffice",
            f"-env:UserInstallation=file://{root / 'profile'}",
            "--headless",
            "--convert-to",
            "pdf",
            "--outdir",
            str(converted),
            *(str(CORPUS / name) for name in SAMPLES),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    pdfs = sorted(converted.glob("*.pdf"))
    assert pdfs, "LibreOffice wrote no PDF"
    store = LocalStore(root / "store", "bench")
    for n in range(count):
        store.put_file(output_key("bench", f"{n:05d}"), str(pdfs[n % len(pdfs)]), "application/pdf")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("job_id", nargs="?", help="a finished job of the configured service")
    parser.add_argument("--pdfs", type=int, help="standalone: merge this many real PDFs")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child's folder
    args = parser.parse_args(argv)
    if args.measure is not None:
        print(json.dumps(measure_store(args.measure, args.pdfs)))
    elif args.pdfs is not None:
        root = Path(tempfile.mkdtemp(prefix="quire-merge-bench-"))
        try:
            prepare_store(root, args.pdfs)
            # A fresh process, so that the peak is the merge's alone, not the preparation's.
            child = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tests.bench.merge_probe",
                    *("--pdfs", str(args.pdfs), "--measure", str(root)),
                ],
                cwd=REPO,
                check=True,
                capture_output=True,
                text=True,
            )
            print(child.stdout.strip().splitlines()[-1])
        finally:
            shutil.rmtree(root, ignore_errors=True)
    elif args.job_id:
        print(json.dumps(probe_job(args.job_id)))
    else:
        parser.error("give a job id or --pdfs N")


if __name__ == "__main__":
    main()
