"""Peak memory of building one job's archive: ``python -m tests.bench.archive_probe JOB_ID``.

Runs the archive code the worker runs, in a fresh process pointed at the same settings, writing
to a throwaway key, and prints the process's peak RSS as JSON.
"""

from __future__ import annotations

import json
import resource
import sys
import time

from app.db import session_scope
from app.storage import get_store
from workers.archive import completed_files, write_archive


def main(job_id: str) -> None:
    with session_scope() as session:
        files = completed_files(session, job_id)
    store = get_store()
    key = f"jobs/{job_id}/bench-archive.zip"
    started = time.perf_counter()
    size = write_archive(job_id, files, store, key)
    elapsed = time.perf_counter() - started
    store.delete_prefix(key)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "pdfs": len(files),
                "archive_bytes": size,
                "seconds": elapsed,
                "peak_rss_mb": peak_kib / 1024,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
