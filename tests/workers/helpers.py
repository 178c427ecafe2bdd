"""Helpers shared by the tests of the pipeline, the sweeper and what drives them (the metrics,
the logs): a test module imports them from here, never from another test module."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from app.config import get_settings
from app.db import session_scope
from app.jobs import JobSpec, create_job, new_job_id
from app.models import File, Job, utcnow
from app.storage import get_store, result_key, upload_key
from app.zipinput import list_docx_entries
from tests.conftest import SentTasks
from workers.archive import build_archive
from workers.file_conversion import convert_file
from workers.ingest import ingest_job
from workers.libreoffice import Converter

if TYPE_CHECKING:  # imported when used: a run that starts no LibreOffice needs no uno
    from workers.libreoffice.uno import UnoConverter


def submit(zip_bytes: bytes, **options: Any) -> str:
    """What POST /api/v1/jobs does, minus HTTP: store the zip, list it, create the rows.

    ``options`` are JobSpec fields (pdf_a, tagged_pdf, callback_url, owner...)."""
    job_id = new_job_id()
    store = get_store()
    store.put_bytes(upload_key(job_id), zip_bytes, "application/zip")
    with store.open_reader(upload_key(job_id)) as source:
        entries = list_docx_entries(source, get_settings().max_files_per_job)
    with session_scope() as session:
        create_job(session, JobSpec(job_id, len(zip_bytes), **options), entries)
    return job_id


def run_to_the_end(job_id: str, sent: SentTasks, converter: Converter) -> None:
    settings, store = get_settings(), get_store()
    ingest_job(job_id, store, settings)
    while sent.conversions:
        convert_file(sent.conversions.pop(0), store, converter, settings)
    while sent.archives:
        build_archive(sent.archives.pop(0), store)


def files_by_name(job_id: str) -> dict[str, File]:
    with session_scope() as session:
        return {f.filename: f for f in session.scalars(select(File).where(File.job_id == job_id))}


def result_members(job_id: str) -> dict[str, bytes]:
    data = b"".join(get_store().iter_chunks(result_key(job_id)))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def age(job_id: str, seconds: int) -> None:
    """Pretend nothing touched the job and its files for ``seconds``."""
    past = utcnow() - timedelta(seconds=seconds)
    with session_scope() as session:
        session.execute(update(File).where(File.job_id == job_id).values(touched_at=past))
        session.execute(update(Job).where(Job.id == job_id).values(updated_at=past))


# The start of a child process's program: a seccomp filter that answers ENOSYS to Landlock's
# three system calls (444-446), as an older container engine's default profile does. What runs
# after it sees a kernel without Landlock.
BLOCK_LANDLOCK = """
import ctypes
from workers.libreoffice import sandbox as sb

program = [sb._bpf(sb.BPF_LD_W_ABS, 0)]
for number in (444, 445, 446):
    program += [sb._bpf(sb.BPF_JEQ_K, number, jf=1),
                sb._bpf(sb.BPF_RET_K, sb.SECCOMP_RET_ERRNO | sb.ERRNO_ENOSYS)]
program.append(sb._bpf(sb.BPF_RET_K, sb.SECCOMP_RET_ALLOW))
filters = (sb.SockFilter * len(program))(*program)
sb._prctl(sb.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
sb._prctl(sb.PR_SET_SECCOMP, sb.SECCOMP_MODE_FILTER,
          ctypes.byref(sb.SockFprog(len=len(program), filter=filters)), 0, 0)
"""


ALWAYS_EXECUTE_NO_WARN = 4  # com.sun.star.document.MacroExecMode, for the controls only


@contextmanager
def opened_allowing_macros(desktop: Any, source: Path) -> Iterator[Any]:
    """``source`` open for the block, through ``desktop`` (an instance's, on the connection
    the caller talks to it through), visible (a hidden document gets no load events) and with
    macros allowed; closed afterwards."""
    import uno

    from workers.libreoffice.uno import _props

    document = desktop.loadComponentFromURL(
        uno.systemPathToFileUrl(str(source)),
        "_blank",
        0,
        _props(ReadOnly=True, MacroExecutionMode=ALWAYS_EXECUTE_NO_WARN),
    )
    assert document is not None
    try:
        yield document
    finally:
        document.close(True)


def open_allowing_macros(instance: UnoConverter, source: Path) -> None:
    """Open ``source`` as ``opened_allowing_macros`` does, and close it a second later: load
    events are dispatched from LibreOffice's main loop, after the load returned."""
    with opened_allowing_macros(instance.desktop, source):
        time.sleep(1)
