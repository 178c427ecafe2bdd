"""Schemathesis against the OpenAPI document, in-process over ASGI: no 5xx, answers as documented.

Every operation is fuzzed on its own (examples, coverage and fuzzing phases; valid and invalid
requests), then the upload is chained into the operations that read the job it created (the
links Schemathesis infers from ``JobCreated.job_id``). The broker is captured, so jobs stay
PENDING: the API is under test, not the workers.
"""

from __future__ import annotations

import io
import stat
import warnings
import zipfile
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.transport.serialization import Binary

from app.main import create_app
from tests.conftest import Backend, SentTasks
from tests.docx_factory import make_docx

UPLOAD_PATH = "/api/v1/jobs"
# Any bytes are a schema-valid `file`, but only a readable zip holding .docx files becomes a job,
# which the schema cannot say: 400 is a right answer to schema-valid uploads. So is 422 for an
# Idempotency-Key reused with another body, which generated requests do. (Schemathesis'
# defaults plus those two; a 5xx still fails `not_a_server_error`.)
UPLOAD_ACCEPTS = ["2xx", "3xx", "400", "401", "403", "404", "409", "422", "429", "5xx"]
# A direct upload's `size` over QUIRE_MAX_UPLOAD_BYTES is refused at once with 413: the limit
# is a setting, which the schema cannot say either. (Listed first: the first entry that applies
# to an operation wins, and the one below applies to every POST.)
OFFER_ACCEPTS = ["2xx", "3xx", "400", "401", "403", "404", "409", "413", "422", "429", "5xx"]

# Bounded and derandomized: the same requests on every run, well under a minute in all.
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 1,
        "generation": {"max-examples": 50, "deterministic": True, "database": "none"},
        "operations": [
            {
                # In workflows a link from createUpload writes its upload_id into submitJob's
                # body, over the value a negative case made invalid; a multipart body ignores
                # the field, so the request is valid again and accepted (202). The fuzzing
                # phases still check submitJob's refusals of invalid data.
                "include-operation-id": "submitJob",
                "phases": {"stateful": {"checks": {"negative_data_rejection": {"enabled": False}}}},
            },
            {
                "include-operation-id": "createUpload",
                "checks": {"positive_data_acceptance": {"expected-statuses": OFFER_ACCEPTS}},
            },
            {
                "include-method": "POST",
                "include-path": UPLOAD_PATH,
                "checks": {"positive_data_acceptance": {"expected-statuses": UPLOAD_ACCEPTS}},
            },
        ],
    }
)
# The document the app serves at /openapi.json, read without starting the app: only the fixtures
# below may configure it. (A schema built inside a fixture, `schemathesis.pytest.from_fixture`,
# fails on pytest 9.2: it sets `Function._nodeid`, which pytest no longer has.)
# The live-events stream is left out: it stays open until its job ends, and jobs never end here
# (the broker is captured); tests/app/test_api.py and the e2e tests cover it.
schema = schemathesis.openapi.from_dict(create_app().openapi(), config=CONFIG).exclude(
    path_regex=r"/events$"
)

DOCX = make_docx("fuzz")
# Entry names: Unicode (no lone surrogates, which no zip can hold), slashes, dots, drive letters.
NAME_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
ENTRY_NAMES = st.one_of(
    st.tuples(NAME_TEXT, st.sampled_from([".docx", ".DOCX", ".Docx", ".doc", ""])).map("".join),
    st.sampled_from(
        [
            "a.docx",
            "A.DOCX",
            "dir/b.docx",
            "dir\\c.docx",
            "../../etc/d.docx",
            "/abs/e.docx",
            "C:/win/f.docx",
            "./g.docx",
            ".docx",
            "__MACOSX/._h.docx",
            "~$lock.docx",
            "folder/",
            "x" * 300 + ".docx",
        ]
    ),
)


@st.composite
def zip_uploads(draw: st.DrawFn) -> bytes:
    """A zip of DOCX entries under fuzzed names, beside folders, symlinks and other litter."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, warnings.catch_warnings():
        # Two entries under one name are part of the fuzzing; zipfile warns when writing them.
        warnings.filterwarnings("ignore", "Duplicate name: ", UserWarning)
        for name in draw(st.lists(ENTRY_NAMES, min_size=1, max_size=6)):
            info = zipfile.ZipInfo(name or "empty.docx")
            data = DOCX if draw(st.booleans()) else draw(st.binary(max_size=64))
            if draw(st.integers(0, 9)) == 0:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, data)
    return buffer.getvalue()


@schema.hook.apply_to(method="POST", path=UPLOAD_PATH)
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    """Keep Schemathesis' own `file` bytes (PNG, PDF, empty, random...) or send a zip instead.

    Without real zips every upload is refused with 400 and nothing past the zip check is ever
    reached. Only a generated binary `file` is replaced: invalid bodies stay invalid.
    """
    if isinstance(body, dict) and isinstance(body.get("file"), Binary):
        return st.one_of(
            st.just(body), zip_uploads().map(lambda data: {**body, "file": Binary(data)})
        )
    return st.just(body)


@pytest.fixture
def app(backend: Backend, sent: SentTasks) -> FastAPI:
    return create_app()


# The fixtures give each operation a fresh backend; the examples of one operation share it.
NO_FIXTURE_CHECK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@schema.parametrize()
@NO_FIXTURE_CHECK
def test_operation(case: schemathesis.Case, app: FastAPI) -> None:
    """Every default check: no 5xx, documented status, content type, body and headers, ...

    An unhandled exception is re-raised by Starlette after its 500, so it fails the test with
    the server's traceback and a curl line for the request.
    """
    case.call_and_validate(app=app)


def test_workflows(app: FastAPI) -> None:
    """Uploads followed by reads of the job they created: the same checks on real jobs."""

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"app": app}

    Workflow.run(
        settings=settings(
            max_examples=50,
            stateful_step_count=6,
            derandomize=True,
            database=None,
            deadline=None,
        )
    )
