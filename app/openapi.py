"""The OpenAPI document ``/openapi.json`` serves, in a form client generators accept (#14).

FastAPI builds it from the routes. Two things it cannot know are added here:

- The request bodies of ``POST /api/v1/jobs``. That route reads its body itself (a multipart
  upload is streamed into the store, a JSON body is size-checked before it is parsed), so
  FastAPI never sees a model for it. Its ``openapi_extra`` refers to the components named
  here, and their schemas join ``components/schemas``: one place for every shared schema, and
  every ``$ref`` resolves inside the document (a ``model_json_schema()`` pasted into a route
  carries ``#/$defs/...`` references that resolve nowhere in it).
- Quire's error body for 422. FastAPI documents its own validation-error shape
  (``HTTPValidationError``), but Quire's handler (app/api/errors.py) answers 422 with the same
  ``ErrorResponse`` as every other error; a generated client must parse what is sent.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.config import JsonDict

from app.schemas import ErrorResponse, JobSubmission

COMPONENTS = "#/components/schemas/"
REF_TEMPLATE = COMPONENTS + "{model}"

# The groups of operations, named and ordered as docs/api.md's sections are.
TAGS: list[dict[str, Any]] = [
    {
        "name": "jobs",
        "description": "Submit DOCX files, watch a job's status, list your jobs; retry, cancel "
        "or delete a job.",
    },
    {
        "name": "uploads",
        "description": "Direct uploads: a presigned URL to PUT a big zip straight to the object "
        "store, then `submitJob` with its `upload_id`.",
    },
    {
        "name": "events",
        "description": "A job's live progress as server-sent events.",
    },
    {
        "name": "downloads",
        "description": "The zip of PDFs and each file's PDF: a 307 to a presigned URL, or the "
        "bytes streamed through the API with `redirect=false`.",
    },
    {"name": "health", "description": "Liveness and readiness probes."},
    {"name": "operations", "description": "Prometheus metrics of the whole deployment."},
]


def component_ref(name: str) -> JsonDict:
    return {"$ref": REF_TEMPLATE.format(model=name)}


# Schemas of answers that are not JSON models: the bytes of a PDF or a zip, and URL headers.
BINARY: JsonDict = {"type": "string", "format": "binary"}
URI: JsonDict = {"type": "string", "format": "uri"}

# POST /api/v1/jobs as multipart/form-data. The route streams the parts (app/upload_stream.py)
# and reads the options into SubmissionOptions, so the option fields are the JSON body's.
SUBMIT_JOB_FORM: JsonDict = {
    "title": "SubmitJobForm",
    "description": "A zip of documents (`file`) or several documents (`files`), and the job's "
    "options. Documents: .docx, .docm, .doc, .rtf and .odt, each checked by what its bytes are.",
    "type": "object",
    "properties": {
        "file": {
            **BINARY,
            "description": "A zip archive of .docx, .docm, .doc, .rtf and .odt files (folders "
            "allowed; other entries are ignored).",
        },
        "files": {
            "type": "array",
            "items": BINARY,
            # A multipart body cannot send an empty list: a field without parts is absent.
            "minItems": 1,
            "description": "Several .docx, .docm, .doc, .rtf or .odt files, instead of a zip.",
        },
        "callback_url": {
            "type": "string",
            "format": "uri",
            "maxLength": 2048,
            "description": "Called with the job's status document when the job ends (webhooks).",
        },
        "pdf_a": component_ref("PdfA"),
        "tagged_pdf": {"type": "boolean", "description": "Write tagged PDF."},
        "strict_fonts": {
            "type": "boolean",
            "default": False,
            "description": "Fail a file whose document asks for a font that is not installed "
            "and that nothing suitable replaced, naming the fonts.",
            "examples": [True],
        },
        "merge": {
            "type": "boolean",
            "default": False,
            "description": "Also write one PDF of the whole job, in upload order, with one "
            "bookmark per file (GET /api/v1/jobs/{id}/merged).",
            "examples": [True],
        },
        "merge_failure_page": {
            "type": "boolean",
            "default": True,
            "description": "With merge: the merged PDF ends with pages listing the files that "
            "could not be converted, and why.",
        },
    },
}

# Request bodies no route declares to FastAPI, by component name.
BODY_MODELS: dict[str, type[BaseModel]] = {"JobSubmission": JobSubmission}
BODY_SCHEMAS: dict[str, JsonDict] = {"SubmitJobForm": SUBMIT_JOB_FORM}


class SchemaConflict(Exception):
    """Two different schemas were given one component name."""


def _register(schemas: dict[str, Any], name: str, schema: Any) -> None:
    known = schemas.setdefault(name, schema)
    if known != schema:
        raise SchemaConflict(f"components/schemas/{name} would have two different schemas")


def add_body_schemas(document: dict[str, Any]) -> None:
    """The request bodies of BODY_MODELS and BODY_SCHEMAS join ``components/schemas``."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, model in BODY_MODELS.items():
        schema = model.model_json_schema(ref_template=REF_TEMPLATE, mode="validation")
        # The models the body refers to (PdfA) become components of their own.
        for nested, nested_schema in schema.pop("$defs", {}).items():
            _register(schemas, nested, nested_schema)
        _register(schemas, name, schema)
    for name, body in BODY_SCHEMAS.items():
        _register(schemas, name, body)


def document_error_bodies(document: dict[str, Any]) -> None:
    """Every 422 answers with ErrorResponse, as the API does; FastAPI's own shape goes."""
    fastapi_shape = component_ref("HTTPValidationError")
    for path in document.get("paths", {}).values():
        for operation in path.values():
            if not isinstance(operation, dict):
                continue  # a path's shared "parameters" list
            answer = operation.get("responses", {}).get("422")
            if answer is None:
                continue
            content = answer.get("content", {}).get("application/json", {})
            if content.get("schema") == fastapi_shape:
                content["schema"] = component_ref(ErrorResponse.__name__)
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and /openapi.json) serve the completed document, built once."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = FastAPI.openapi(app)  # FastAPI's own, which it caches on the app...
            app.openapi_schema = None  # ...but only the completed document may be served
            add_body_schemas(document)
            document_error_bodies(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
