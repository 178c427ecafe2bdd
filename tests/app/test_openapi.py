"""The OpenAPI document as client generators read it (#14): every reference resolves inside it,
it is valid OpenAPI, openapi-python-client reads it without a warning, every operation has a
name a person would call and a tag of docs/api.md's sections, and binary answers and
redirects are typed. The generated client's calls against the real service are in
tests/e2e/test_generated_client.py.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from app.main import create_app
from app.openapi import SchemaConflict, add_body_schemas
from app.schemas import JobSubmission
from tests.generated_client import generate_client

# Every operation's id and tag: the names docs/api.md gives beside each route.
EXPECTED = {
    ("post", "/api/v1/jobs"): ("submitJob", "jobs"),
    ("get", "/api/v1/jobs"): ("listJobs", "jobs"),
    ("get", "/api/v1/jobs/{job_id}"): ("getJob", "jobs"),
    ("delete", "/api/v1/jobs/{job_id}"): ("deleteJob", "jobs"),
    ("post", "/api/v1/jobs/{job_id}/retry"): ("retryJob", "jobs"),
    ("post", "/api/v1/jobs/{job_id}/cancel"): ("cancelJob", "jobs"),
    ("post", "/api/v1/uploads"): ("createUpload", "uploads"),
    ("get", "/api/v1/jobs/{job_id}/events"): ("jobEvents", "events"),
    ("get", "/api/v1/jobs/{job_id}/download"): ("downloadJob", "downloads"),
    ("get", "/api/v1/jobs/{job_id}/files/{file_id}"): ("downloadFile", "downloads"),
    ("get", "/api/v1/jobs/{job_id}/merged"): ("downloadMerged", "downloads"),
    ("get", "/healthz"): ("healthz", "health"),
    ("get", "/readyz"): ("readyz", "health"),
    ("get", "/metrics"): ("metrics", "operations"),
}
METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
# FastAPI's default id: the function's name, the path and the method in snake case.
FASTAPI_GENERATED = re.compile(r"_api_v1_|__|_(get|put|post|delete|patch|options|head|trace)$")
CAMEL_CASE = re.compile(r"^[a-z]+(?:[A-Z][a-z0-9]*)*$")
BINARY = {"type": "string", "format": "binary"}
URI = {"type": "string", "format": "uri"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app().openapi()


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


# -- every reference resolves ------------------------------------------------------------------


def resolve(document: dict[str, Any], ref: str) -> bool:
    """Whether a ``$ref`` names something inside this document (a JSON pointer after '#')."""
    if not ref.startswith("#"):
        return False  # the document must stand alone: nothing may point outside it
    node: Any = document
    for token in ref[1:].split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return False
    return True


def references(node: Any, where: str = "#") -> list[tuple[str, str]]:
    """Every ``$ref`` in the document, with the JSON pointer of the object holding it."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            found.append((where, node["$ref"]))
        for key, value in node.items():
            found += references(value, f"{where}/{key.replace('~', '~0').replace('/', '~1')}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += references(value, f"{where}/{index}")
    return found


def unresolved(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(where, ref) for where, ref in references(document) if not resolve(document, ref)]


def test_every_reference_resolves_inside_the_document(document: dict[str, Any]) -> None:
    assert unresolved(document) == []
    refs = {ref for _, ref in references(document)}
    # The request bodies of submitJob are shared components, and what they refer to is too.
    body = document["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/JobSubmission"}
    assert body["multipart/form-data"]["schema"] == {"$ref": "#/components/schemas/SubmitJobForm"}
    assert {
        "#/components/schemas/JobSubmission",
        "#/components/schemas/SubmitJobForm",
        "#/components/schemas/PdfA",
        "#/components/schemas/ErrorResponse",
    } <= refs
    assert "$defs" not in str(document)


def test_the_walk_finds_the_reference_a_pasted_model_schema_breaks(
    document: dict[str, Any],
) -> None:
    """The document as it was before #14: JobSubmission's model_json_schema() pasted into the
    route. Its ``#/$defs/PdfA`` resolves nowhere in an OpenAPI document."""
    old = copy.deepcopy(document)
    body = old["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    body["schema"] = JobSubmission.model_json_schema()
    where = (
        "#/paths/~1api~1v1~1jobs/post/requestBody/content/application~1json/schema/properties"
        "/pdf_a/anyOf/0"
    )
    assert unresolved(old) == [(where, "#/$defs/PdfA")]
    # And a reference out of the document counts as unresolved too.
    body["schema"] = {"$ref": "other.json#/components/schemas/JobSubmission"}
    assert [ref for _, ref in unresolved(old)] == ["other.json#/components/schemas/JobSubmission"]


def test_a_body_schema_may_not_replace_a_different_component(document: dict[str, Any]) -> None:
    changed = copy.deepcopy(document)
    changed["components"]["schemas"]["PdfA"]["enum"] = ["1b"]
    with pytest.raises(SchemaConflict, match="PdfA"):
        add_body_schemas(changed)


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_openapi_python_client_reads_it_without_a_warning(
    document: dict[str, Any], tmp_path: Path
) -> None:
    generate_client(document, tmp_path)
    generated = {path.stem for path in (tmp_path / "quire_openapi_client" / "api").glob("*/*.py")}
    expected = {re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower() for name, _ in EXPECTED.values()}
    assert expected <= generated, expected - generated
    for name in ("job_submission", "submit_job_form", "error_response"):
        assert (tmp_path / "quire_openapi_client" / "models" / f"{name}.py").is_file()


def test_generation_fails_on_a_warning(document: dict[str, Any], tmp_path: Path) -> None:
    """The check above can fail: the body as it was before #14 is a warning of the generator."""
    old = copy.deepcopy(document)
    body = old["paths"]["/api/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    body["schema"] = JobSubmission.model_json_schema()
    with pytest.raises(AssertionError, match="POST /api/v1/jobs"):
        generate_client(old, tmp_path)


# -- names a person would call -----------------------------------------------------------------


def fastapi_generated(operation_id: str) -> bool:
    return bool(FASTAPI_GENERATED.search(operation_id)) or not CAMEL_CASE.match(operation_id)


def test_fastapi_generated_ids_are_recognised() -> None:
    for generated in (
        "submit_job_api_v1_jobs_post",
        "download_file_api_v1_jobs__job_id__files__file_id__get",
        "healthz_healthz_get",
        "metrics_metrics_get",
    ):
        assert fastapi_generated(generated)
    assert not any(fastapi_generated(name) for name, _ in EXPECTED.values())


def test_every_operation_has_its_id_and_tag(document: dict[str, Any]) -> None:
    found = operations(document)
    assert set(found) == set(EXPECTED)
    for key, operation in found.items():
        assert "operationId" in operation, key
        assert not fastapi_generated(operation["operationId"]), key
        assert (operation["operationId"], operation["tags"]) == (
            EXPECTED[key][0],
            [EXPECTED[key][1]],
        )
    ids = [operation["operationId"] for operation in found.values()]
    assert len(ids) == len(set(ids))


def test_tags_are_described_and_used(document: dict[str, Any]) -> None:
    declared = [tag["name"] for tag in document["tags"]]
    assert declared == ["jobs", "uploads", "events", "downloads", "health", "operations"]
    assert all(tag["description"] for tag in document["tags"])
    assert {tag for _, tag in EXPECTED.values()} == set(declared)


def test_the_web_page_docs_and_blobs_stay_out(document: dict[str, Any]) -> None:
    paths = set(document["paths"])
    assert not {"/", "/docs", "/redoc", "/static/{name}", "/static/docs/{name}"} & paths
    assert not [path for path in paths if path.startswith("/api/v1/blobs")]


# -- typed answers -----------------------------------------------------------------------------


def test_pdf_and_zip_answers_are_binary(document: dict[str, Any]) -> None:
    media: dict[str, list[dict[str, Any]]] = {}
    for operation in operations(document).values():
        for answer in operation["responses"].values():
            for media_type, content in answer.get("content", {}).items():
                media.setdefault(media_type, []).append(content)
                assert "schema" in content, media_type  # no `{}`: generators skip those
    assert {"application/pdf", "application/zip"} <= set(media)
    for media_type, contents in media.items():
        if not (media_type == "application/json" or media_type.startswith("text/")):
            assert [content["schema"] for content in contents] == [BINARY] * len(contents)
    answers = operations(document)
    for key, media_type in (
        (("get", "/api/v1/jobs/{job_id}/files/{file_id}"), "application/pdf"),
        (("get", "/api/v1/jobs/{job_id}/download"), "application/zip"),
        (("get", "/api/v1/jobs/{job_id}/merged"), "application/pdf"),
    ):
        assert answers[key]["responses"]["200"]["content"] == {media_type: {"schema": BINARY}}


def test_redirects_and_accepted_answers_declare_their_location(document: dict[str, Any]) -> None:
    with_location = []
    for key, operation in operations(document).items():
        for status, answer in operation["responses"].items():
            if status in ("201", "202", "303", "307") or "Location" in answer.get("headers", {}):
                location = answer.get("headers", {}).get("Location")
                if status != "201":  # createUpload's 201 names no Location: its body has the URL
                    assert location is not None, (key, status)
                    assert location["schema"] == URI, (key, status)
                    with_location.append((operation["operationId"], status))
    assert sorted(with_location) == [
        ("downloadFile", "307"),
        ("downloadJob", "307"),
        ("downloadMerged", "307"),
        ("retryJob", "202"),
        ("submitJob", "202"),
    ]


def test_every_422_is_documented_with_the_body_it_has(
    document: dict[str, Any], client: TestClient
) -> None:
    """Quire answers a validation error with its own error body, not FastAPI's."""
    assert not {"HTTPValidationError", "ValidationError"} & set(document["components"]["schemas"])
    documented = [
        operation["responses"]["422"]["content"]["application/json"]["schema"]
        for operation in operations(document).values()
        if "422" in operation["responses"]
    ]
    assert documented and all(
        schema == {"$ref": "#/components/schemas/ErrorResponse"} for schema in documented
    )
    answer = client.get("/api/v1/jobs", params={"limit": 0})
    assert answer.status_code == 422
    assert set(answer.json()) == {"error"} and answer.json()["error"]["status"] == 422


def test_the_served_document_is_the_completed_one(client: TestClient) -> None:
    served = client.get("/openapi.json").json()
    assert served["components"]["schemas"]["SubmitJobForm"]["properties"]["file"] == {
        **BINARY,
        "description": "A zip archive of .docx, .docm, .doc, .rtf and .odt files (folders "
        "allowed; other entries are ignored).",
    }
    assert unresolved(served) == []
