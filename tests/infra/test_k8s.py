"""The Kubernetes manifests in infra/k8s, checked offline (no cluster, no kustomize binary).

- Every built-in kind validates strictly (unknown fields refused) with kubernetes-validate,
  against the oldest and the newest Kubernetes it carries schemas for.
- KEDA's ScaledObject and TriggerAuthentication validate against the openAPIV3Schema of KEDA's
  own CRDs (tests/infra/schemas/, copied from kedacore/keda with its source and licence), made
  strict the way the API server's strict field validation is.
- Each kustomization lists exactly the files of its folder and uses only fields kustomize
  knows; the overlays' JSON patches apply, and what they make validates too.
- Consistency with the code: every QUIRE_* name is a setting of ``app.config.Settings``; the
  worker's stop grace outlasts the task time limits the ConfigMap gives; the commands and the
  image are compose's and the Dockerfile's; no Secret holds a value; probes name routes the
  app has; every pod is non-root on a read-only root with its writable paths on volumes.
  Each of these checks returns the problems it found, and is shown to find one in a mutated
  copy of the manifests.
- What runs for real: the wait-for-schema init container against a database before and
  after ``app.migrate``; the worker's preStop against a real Celery worker and Redis; the
  autoscaling query's selector against the API's real ``/metrics``; one conversion by the
  real, sandboxed LibreOffice under the worker pod's user, capabilities and read-only root.
- docs/kubernetes.md and the README quote the manifests' settings as they are.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from celery import Celery
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Match

from app import webhooks
from app.config import Settings
from app.main import app as quire_app
from app.migrate import upgrade
from tests.services import redis_server

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
EXAMPLES = K8S / "examples"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

# The oldest Kubernetes docs/kubernetes.md says the manifests run on (every field they use
# exists there), and the newest kubernetes-validate has schemas for.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
KEDA_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject-v1alpha1.yaml",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication-v1alpha1.yaml",
}
QUIRE_IMAGE = "quire"  # the name every Quire container uses; the kustomization maps it
# Containers that run the Quire image, by the compose service whose command they share.
COMPOSE_SERVICE_OF = {"api": "api", "worker": "worker", "beat": "beat", "migrate": "migrate"}
POD_KINDS = ("Deployment", "StatefulSet", "Job")

# -- reading the manifests -----------------------------------------------------------------


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@dataclass
class Kustomization:
    """One kustomization folder: its kustomization.yaml and the resources it lists."""

    folder: Path
    spec: dict[str, Any]
    resources: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path) -> Kustomization:
        (spec,) = documents(folder / "kustomization.yaml")
        loaded = cls(folder, spec)
        for entry in spec.get("resources", []):
            if (folder / entry).is_file():
                loaded.resources[entry] = documents(folder / entry)
        return loaded

    def objects(self) -> list[dict[str, Any]]:
        return [doc for docs in self.resources.values() for doc in docs]

    def find(self, kind: str, name: str) -> dict[str, Any]:
        (found,) = [
            doc for doc in self.objects() if doc["kind"] == kind and doc["metadata"]["name"] == name
        ]
        return found


def base() -> Kustomization:
    return Kustomization.load(K8S)


def overlays() -> list[Kustomization]:
    return [Kustomization.load(folder) for folder in sorted(EXAMPLES.iterdir())]


def every_object() -> list[tuple[str, dict[str, Any]]]:
    """Each object of the base and the overlays' own resources, named by its file."""
    found: list[tuple[str, dict[str, Any]]] = []
    for kustomization in [base(), *overlays()]:
        for name, docs in kustomization.resources.items():
            where = (kustomization.folder / name).relative_to(K8S).as_posix()
            found.extend((where, doc) for doc in docs)
    return found


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in objects:
        if doc["kind"] in POD_KINDS:
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def quire_containers(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, pod in pod_specs(objects):
        for container in containers(pod):
            if container["image"] == QUIRE_IMAGE:
                yield name, container


def config_data(kustomization: Kustomization) -> dict[str, str]:
    return dict(kustomization.find("ConfigMap", "quire-config")["data"])


def settings_from(data: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as a pod with this ConfigMap gets them: its values, defaults for the rest."""
    for name in list(os.environ):
        if name.startswith("QUIRE_"):
            monkeypatch.delenv(name)
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    return Settings()


# -- overlays: JSON patches, applied as kustomize applies them -------------------------------


def _pointer(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def apply_json_patch(target: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 add and replace (all the overlays use). A path whose parent is missing, or a
    replace of a missing member, raises KeyError as kustomize fails the build."""
    patched = copy.deepcopy(target)
    for operation in operations:
        *parents, last = _pointer(operation["path"])
        node: Any = patched
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if operation["op"] == "replace" and (
            last not in node if isinstance(node, dict) else int(last) >= len(node)
        ):
            raise KeyError(operation["path"])
        if isinstance(node, list) and operation["op"] == "add":
            node.insert(int(last), operation["value"])
        elif isinstance(node, list):
            node[int(last)] = operation["value"]
        else:
            node[last] = operation["value"]
    return patched


def built_objects(overlay: Kustomization) -> list[dict[str, Any]]:
    """The base's objects with the overlay's patches applied, plus the overlay's own."""
    objects = base().objects()
    for patch in overlay.spec.get("patches", []):
        target = patch["target"]
        operations = yaml.safe_load(patch["patch"])
        objects = [
            apply_json_patch(doc, operations)
            if doc["kind"] == target["kind"] and doc["metadata"]["name"] == target["name"]
            else doc
            for doc in objects
        ]
    return [*objects, *overlay.objects()]


# -- schemas ---------------------------------------------------------------------------------


def strict(schema: Any) -> Any:
    """An OpenAPI schema that refuses unknown fields wherever it lists the known ones (what
    kubectl's --validate=strict asks of the API server; a CRD schema alone would prune)."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def keda_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    schema = yaml.safe_load((SCHEMAS / KEDA_SCHEMAS[api_version, kind]).read_text())
    return jsonschema.Draft7Validator(strict(schema))


def validate(doc: dict[str, Any]) -> None:
    if (doc["apiVersion"], doc["kind"]) in KEDA_SCHEMAS:
        keda_validator(doc["apiVersion"], doc["kind"]).validate(doc)
        return
    # Any other kind must be a built-in one: kubernetes-validate raises SchemaNotFoundError.
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize(
    ("where", "doc"),
    every_object(),
    ids=[f"{where}:{doc['kind']}/{doc['metadata']['name']}" for where, doc in every_object()],
)
def test_every_manifest_validates_strictly(where: str, doc: dict[str, Any]) -> None:
    validate(doc)


@pytest.mark.parametrize("overlay", overlays(), ids=lambda overlay: overlay.folder.name)
def test_what_each_overlay_builds_validates(overlay: Kustomization) -> None:
    for doc in built_objects(overlay):
        validate(doc)


def test_the_schemas_refuse_what_kubernetes_would() -> None:
    worker = base().find("Deployment", "quire-worker")
    unknown_field = copy.deepcopy(worker)
    unknown_field["spec"]["template"]["spec"]["containers"][0]["gracePeriod"] = 30
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(unknown_field)
    scaled = base().find("ScaledObject", "quire-worker")
    misspelt = copy.deepcopy(scaled)
    misspelt["spec"]["maxReplicas"] = misspelt["spec"].pop("maxReplicaCount")
    wrong_type = copy.deepcopy(scaled)
    wrong_type["spec"]["minReplicaCount"] = "one"
    for broken in (misspelt, wrong_type):
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)


def test_the_keda_schemas_name_their_source_and_licence() -> None:
    for name in KEDA_SCHEMAS.values():
        header = (SCHEMAS / name).read_text().split("\n\n")[0]
        assert "github.com/kedacore/keda/blob/v" in header, name
        assert re.search(r"commit [0-9a-f]{40}", header), name
        assert "Apache License, Version 2.0" in header, name


# -- the kustomizations ----------------------------------------------------------------------

# kustomize's Kustomization fields (api/types/kustomization.go) and those of the entries this
# repository uses; anything else is a typo kustomize would refuse or, worse, ignore.
KUSTOMIZATION_FIELDS = {
    "apiVersion", "kind", "metadata", "namespace", "namePrefix", "nameSuffix", "labels",
    "commonLabels", "commonAnnotations", "resources", "components", "crds", "images",
    "replicas", "patches", "configMapGenerator", "secretGenerator", "generatorOptions",
    "generators", "transformers", "validators", "buildMetadata", "openapi", "configurations",
    "sortOptions", "helmCharts", "replacements",
}  # fmt: skip
ENTRY_FIELDS = {
    "labels": {"pairs", "includeSelectors", "includeTemplates", "fields"},
    "images": {"name", "newName", "newTag", "digest", "tagSuffix"},
    "patches": {"path", "patch", "target", "options"},
    "configMapGenerator": {
        "name", "namespace", "behavior", "files", "envs", "literals", "options",
    },
    "secretGenerator": {
        "name", "namespace", "behavior", "files", "envs", "literals", "options", "type",
    },
}  # fmt: skip
TARGET_FIELDS = {
    "group", "version", "kind", "name", "namespace", "labelSelector", "annotationSelector",
}  # fmt: skip
GENERATOR_OPTIONS = {"labels", "annotations", "disableNameSuffixHash", "immutable"}
# Beside the manifests, what a folder may hold without listing it: its kustomization, the
# operator's env files' examples, and the git ignore list that keeps their filled-in copies out.
UNLISTED = {"kustomization.yaml", ".gitignore"}


def unknown_kustomize_fields(spec: dict[str, Any]) -> list[str]:
    problems = [f"unknown field {name}" for name in sorted(set(spec) - KUSTOMIZATION_FIELDS)]
    for section, known in ENTRY_FIELDS.items():
        for entry in spec.get(section, []):
            problems += [f"{section}: unknown field {name}" for name in set(entry) - known]
            target = entry.get("target", {}) if section == "patches" else {}
            problems += [
                f"{section}.target: unknown {name}" for name in set(target) - TARGET_FIELDS
            ]
            options = entry.get("options", {}) if section.endswith("Generator") else {}
            problems += [
                f"{section}.options: unknown {name}" for name in set(options) - GENERATOR_OPTIONS
            ]
    return problems


def operator_files(spec: dict[str, Any]) -> set[str]:
    """The env files the generators read that the operator writes (never in the repository)."""
    return {
        path
        for generator in spec.get("secretGenerator", [])
        for path in [*generator.get("envs", []), *generator.get("files", [])]
    }


def listing_problems(folder: Path, spec: dict[str, Any]) -> list[str]:
    """Files of the folder the kustomization does not list, and listed files that are missing
    (an operator's env file must be missing, git-ignored, and have an .example beside it)."""
    listed = {entry for entry in spec.get("resources", []) if not entry.startswith("..")}
    listed |= {entry["path"] for entry in spec.get("patches", []) if "path" in entry}
    for generator in spec.get("configMapGenerator", []):
        listed |= {*generator.get("files", []), *generator.get("envs", [])}
    secrets = operator_files(spec)
    examples = {f"{name}.example" for name in secrets}
    # The operator's own env files may be there (secret.env once filled in): never listed.
    present = {path.name for path in folder.iterdir() if path.is_file()} - UNLISTED - secrets
    problems = [f"{name}: in {folder.name}/ but not listed" for name in present - listed - examples]
    problems += [f"{name}: listed but missing" for name in listed - present]
    problems += [f"{name}: an example is missing" for name in examples - present]
    for name in secrets:
        ignored = subprocess.run(["git", "check-ignore", "-q", str(folder / name)], cwd=ROOT)
        if ignored.returncode != 0:
            problems.append(f"{name}: not git-ignored")
    return problems


def kustomization_folders() -> list[Path]:
    return [K8S, *sorted(EXAMPLES.iterdir())]


@pytest.mark.parametrize("folder", kustomization_folders(), ids=lambda path: path.name)
def test_each_kustomization_lists_exactly_its_files(folder: Path) -> None:
    assert listing_problems(folder, Kustomization.load(folder).spec) == []


@pytest.mark.parametrize("folder", kustomization_folders(), ids=lambda path: path.name)
def test_each_kustomization_uses_only_fields_kustomize_knows(folder: Path) -> None:
    spec = Kustomization.load(folder).spec
    assert spec["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert spec["kind"] == "Kustomization"
    assert unknown_kustomize_fields(spec) == []


def test_the_overlays_build_on_the_base() -> None:
    for overlay in overlays():
        assert "../.." in overlay.spec["resources"], overlay.folder


def test_the_listing_and_field_checks_find_what_is_wrong(tmp_path: Path) -> None:
    folder = tmp_path / "k8s"
    folder.mkdir()
    for path in K8S.iterdir():
        if path.is_file():
            (folder / path.name).write_bytes(path.read_bytes())
    spec = Kustomization.load(K8S).spec
    (folder / "orphan.yaml").write_text("kind: ConfigMap\n")
    (folder / "configmap.yaml").unlink()
    problems = listing_problems(folder, spec)
    assert "orphan.yaml: in k8s/ but not listed" in problems
    assert "configmap.yaml: listed but missing" in problems
    typo = {**spec, "commonLabel": {"a": "b"}, "images": [{"name": "quire", "newTags": "1"}]}
    assert unknown_kustomize_fields(typo) == [
        "unknown field commonLabel",
        "images: unknown field newTags",
    ]


# -- consistency with the code ---------------------------------------------------------------

SETTING_NAMES = {f"QUIRE_{name.upper()}" for name in Settings.model_fields}


def env_names(kustomization: Kustomization, objects: list[dict[str, Any]]) -> set[str]:
    """Every QUIRE_* name the manifests give a pod: ConfigMap keys, the Secret's keys (from
    the env file's example), env entries and the keys they read."""
    names: set[str] = set()
    for doc in objects:
        if doc["kind"] == "ConfigMap":
            names |= set(doc.get("data", {}))
    for _, pod in pod_specs(objects):
        for container in containers(pod):
            for entry in container.get("env", []):
                names.add(entry["name"])
                for ref in ("configMapKeyRef", "secretKeyRef"):
                    names.add(entry.get("valueFrom", {}).get(ref, {}).get("key", ""))
    for name in operator_files(kustomization.spec):
        example = (kustomization.folder / f"{name}.example").read_text()
        names |= {line.split("=")[0] for line in example.splitlines() if re.match(r"\w+=", line)}
    return {name for name in names if name.startswith("QUIRE_")}


def unknown_settings(kustomization: Kustomization, objects: list[dict[str, Any]]) -> list[str]:
    return sorted(env_names(kustomization, objects) - SETTING_NAMES)


def test_every_quire_variable_is_a_setting() -> None:
    assert unknown_settings(base(), base().objects()) == []
    for overlay in overlays():
        assert unknown_settings(overlay, built_objects(overlay)) == []
    assert {"QUIRE_SECRET_KEY", "QUIRE_WORKER_CONCURRENCY"} <= env_names(base(), base().objects())


def test_an_unknown_variable_is_found() -> None:
    objects = copy.deepcopy(base().objects())
    for doc in objects:
        if doc["kind"] == "ConfigMap":
            doc["data"]["QUIRE_WORKERS"] = "4"
    assert unknown_settings(base(), objects) == ["QUIRE_WORKERS"]


def task_hard_limits(settings: Settings) -> dict[str, int]:
    """The hard time limit of each kind of task a worker runs, from its settings."""
    from workers import tasks

    return {
        "conversion": settings.task_hard_time_limit,
        "ingest and archive": settings.job_task_time_limit
        + (tasks.JOB_HARD_LIMIT - tasks.JOB_SOFT_LIMIT),
        "webhook": webhooks.task_soft_time_limit(settings)
        + (int(tasks.deliver_webhook.time_limit or 0) - tasks.WEBHOOK_SOFT_LIMIT),
    }


def prestop_seconds(container: dict[str, Any]) -> int:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "timeout", "the preStop must be bounded"
    return int(command[1])


def grace_problems(objects: list[dict[str, Any]], settings: Settings) -> list[str]:
    (pod,) = [pod for name, pod in pod_specs(objects) if name == "quire-worker"]
    (worker,) = pod["containers"]
    grace = pod["terminationGracePeriodSeconds"]
    prestop = prestop_seconds(worker)
    return [
        f"grace {grace} s <= the {kind} task's {limit} s + the preStop's {prestop} s"
        for kind, limit in task_hard_limits(settings).items()
        if grace <= limit + prestop
    ]


def test_the_worker_grace_outlasts_every_task(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(config_data(base()), monkeypatch)
    assert task_hard_limits(settings)["conversion"] == 450  # the figure the comments quote
    assert task_hard_limits(settings)["ingest and archive"] == 3660
    assert grace_problems(base().objects(), settings) == []


def test_a_grace_shorter_than_a_task_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    data = {**config_data(base()), "QUIRE_JOB_TASK_TIME_LIMIT": "7200"}
    problems = grace_problems(base().objects(), settings_from(data, monkeypatch))
    assert len(problems) == 1
    assert "ingest and archive task's 7260 s" in problems[0]


def compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return services


def dockerfile(instruction: str) -> str:
    """The argument of the Dockerfile's last instruction of this name (continuations joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = [line.split(None, 1)[1] for line in text.splitlines() if line.startswith(instruction)]
    return found[-1].strip()


def command_problems(objects: list[dict[str, Any]]) -> list[str]:
    problems = []
    services = compose_services()
    seen = set()
    for pod_name, container in quire_containers(objects):
        name = container["name"]
        if name == "wait-for-schema":
            continue
        seen.add(name)
        expected = services[COMPOSE_SERVICE_OF[name]]["command"]
        if container["command"] != expected:
            problems.append(
                f"{pod_name}/{name}: {container['command']} is not compose's {expected}"
            )
    if seen != set(COMPOSE_SERVICE_OF):
        problems.append(f"Quire containers {sorted(seen)}, expected {sorted(COMPOSE_SERVICE_OF)}")
    cmd = json.loads(dockerfile("CMD"))
    api = [c for _, c in quire_containers(objects) if c["name"] == "api"]
    if [c["command"] for c in api] != [cmd]:
        problems.append(f"the api's command is not the image's CMD {cmd}")
    return problems


def test_commands_are_compose_s_and_the_image_s() -> None:
    assert command_problems(base().objects()) == []


def test_a_command_unlike_compose_s_is_found() -> None:
    objects = copy.deepcopy(base().objects())
    for _, container in quire_containers(objects):
        if container["name"] == "worker":
            container["command"] = [*container["command"], "--concurrency", "8"]
    (problem,) = command_problems(objects)
    assert problem.startswith("quire-worker/worker:")


def image_problems(kustomization: Kustomization, objects: list[dict[str, Any]]) -> list[str]:
    problems = []
    images = kustomization.spec.get("images", [])
    if [image["name"] for image in images] != [QUIRE_IMAGE] or not images[0].get("newName"):
        problems.append(f"the kustomization must map the image {QUIRE_IMAGE!r}: {images}")
    user, group = dockerfile("USER").split(":")
    data_dir = re.search(r"QUIRE_DATA_DIR=(\S+)", dockerfile("ENV"))
    data = config_data(kustomization)
    if data_dir is None or data.get("QUIRE_DATA_DIR") != data_dir.group(1):
        problems.append("QUIRE_DATA_DIR differs from the Dockerfile's")
    for name, pod in pod_specs(objects):
        if any(c["image"] == QUIRE_IMAGE for c in containers(pod)):
            context = pod["securityContext"]
            if (str(context.get("runAsUser")), str(context.get("runAsGroup"))) != (user, group):
                problems.append(f"{name}: not the image's user {user}:{group}")
    for _, container in quire_containers(objects):
        for port in container.get("ports", []):
            if str(port["containerPort"]) != dockerfile("EXPOSE"):
                problems.append(f"{container['name']}: port {port['containerPort']}")
    return problems


def test_the_image_its_user_data_dir_and_port_are_the_dockerfile_s() -> None:
    assert image_problems(base(), base().objects()) == []
    objects = copy.deepcopy(base().objects())
    for doc in objects:
        if doc["kind"] == "Job":
            doc["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 1000
    assert image_problems(base(), objects) == ["quire-migrate: not the image's user 10001:10001"]


def secret_problems(kustomization: Kustomization) -> list[str]:
    """No Secret whose value is in the repository: no literals, no Secret manifest with data,
    and the env files the generators read absent from git (an .example with empty values)."""
    problems = []
    for generator in kustomization.spec.get("secretGenerator", []):
        if generator.get("literals"):
            problems.append(f"{generator['name']}: literals")
    for doc in kustomization.objects():
        if doc["kind"] == "Secret" and (doc.get("data") or doc.get("stringData")):
            problems.append(f"Secret {doc['metadata']['name']} holds values")
    for name in operator_files(kustomization.spec):
        path = kustomization.folder / name
        tracked = subprocess.run(
            ["git", "ls-files", "--error-unmatch", str(path)], cwd=ROOT, capture_output=True
        )
        if tracked.returncode == 0:
            problems.append(f"{name} is committed")
        example = (kustomization.folder / f"{name}.example").read_text()
        for line in example.splitlines():
            if re.match(r"\w+=.", line):
                problems.append(f"{name}.example gives a value: {line.split('=')[0]}")
    return problems


@pytest.mark.parametrize("folder", kustomization_folders(), ids=lambda path: path.name)
def test_no_secret_holds_a_value(folder: Path) -> None:
    assert secret_problems(Kustomization.load(folder)) == []


def test_a_secret_with_a_value_is_found(tmp_path: Path) -> None:
    kustomization = base()
    kustomization.spec["secretGenerator"][0]["literals"] = ["QUIRE_SECRET_KEY=abc"]
    kustomization.resources["leak.yaml"] = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "stringData": {"a": "b"}}
    ]
    folder = tmp_path / "k8s"
    folder.mkdir()
    (folder / "secret.env.example").write_text("QUIRE_SECRET_KEY=0f1e2d3c\n")
    kustomization.folder = folder
    assert secret_problems(kustomization) == [
        "quire-secrets: literals",
        "Secret x holds values",
        "secret.env.example gives a value: QUIRE_SECRET_KEY",
    ]


def route_exists(path: str) -> bool:
    scope = {"type": "http", "path": path, "method": "GET", "root_path": "", "headers": []}
    return any(route.matches(scope)[0] == Match.FULL for route in quire_app.routes)


def probe_problems(objects: list[dict[str, Any]]) -> list[str]:
    problems = []
    expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for _, container in quire_containers(objects):
        if container["name"] != "api":
            continue
        ports = {port["name"] for port in container["ports"]}
        for probe, path in expected.items():
            get = container.get(probe, {}).get("httpGet", {})
            if get.get("path") != path:
                problems.append(f"{probe}: {get.get('path')}, expected {path}")
            if not route_exists(get.get("path", "")):
                problems.append(f"{probe}: no route {get.get('path')}")
            if get.get("port") not in ports:
                problems.append(f"{probe}: port {get.get('port')} is not the container's")
    return problems


def test_the_api_probes_name_routes_the_app_has() -> None:
    assert route_exists("/healthz") and route_exists("/readyz")
    assert not route_exists("/health")
    assert probe_problems(base().objects()) == []


def test_a_probe_on_a_missing_route_is_found() -> None:
    objects = copy.deepcopy(base().objects())
    for _, container in quire_containers(objects):
        if container["name"] == "api":
            container["livenessProbe"]["httpGet"]["path"] = "/health"
    assert probe_problems(objects) == [
        "livenessProbe: /health, expected /healthz",
        "livenessProbe: no route /health",
    ]


def hardening_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Every pod: non-root, RuntimeDefault seccomp, no API token, no service-link variables;
    every container: read-only root, no privilege escalation, all capabilities dropped,
    requests and limits for CPU and memory."""
    problems = []
    for name, pod in pod_specs(objects):
        context = pod.get("securityContext", {})
        if context.get("runAsNonRoot") is not True or context.get("runAsUser", 0) == 0:
            problems.append(f"{name}: may run as root")
        if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: no RuntimeDefault seccomp profile")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: mounts an API token")
        if pod.get("enableServiceLinks") is not False:
            problems.append(f"{name}: service-link variables")
        for container in containers(pod):
            where = f"{name}/{container['name']}"
            security = container.get("securityContext", {})
            if security.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: writable root filesystem")
            if security.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: privilege escalation allowed")
            capabilities = security.get("capabilities", {})
            if capabilities.get("drop") != ["ALL"] or capabilities.get("add"):
                problems.append(f"{where}: capabilities not all dropped")
            if security.get("privileged") or security.get("runAsUser") == 0:
                problems.append(f"{where}: privileged or root")
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                if set(resources.get(kind, {})) != {"cpu", "memory"}:
                    problems.append(f"{where}: {kind} must give cpu and memory")
    return problems


def test_every_pod_is_non_root_read_only_and_bounded() -> None:
    objects = [doc for _, doc in every_object()]
    assert len(list(pod_specs(objects))) == 6  # api, worker, beat, migrate; MinIO, its setup
    assert hardening_problems(objects) == []


def test_a_weakened_pod_is_found() -> None:
    objects = copy.deepcopy(base().objects())
    (_, beat), *_ = [(n, p) for n, p in pod_specs(objects) if n == "quire-beat"]
    beat["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    beat["containers"][0]["securityContext"]["capabilities"] = {"add": ["SYS_ADMIN"]}
    del beat["containers"][0]["resources"]["limits"]
    beat["securityContext"]["runAsUser"] = 0
    assert hardening_problems(objects) == [
        "quire-beat: may run as root",
        "quire-beat/beat: writable root filesystem",
        "quire-beat/beat: capabilities not all dropped",
        "quire-beat/beat: limits must give cpu and memory",
    ]


def writable_paths(settings: Settings, container: dict[str, Any]) -> list[Path]:
    """Where a Quire container writes, as the code computes it: a worker its scratch space
    and LibreOffice's profiles (app/config.py), and /tmp and /var/tmp, where LibreOffice makes
    its UNO pipes and the converter removes them (workers/libreoffice/process.py); beat its
    schedule file. The API (with S3 and the secret key given) and the migrate Job write
    nothing."""
    from workers.libreoffice.process import PIPE_DIRS

    command = container["command"]
    if container["name"] == "worker":
        return [settings.resolved_scratch_dir, settings.libreoffice_profiles_dir, *PIPE_DIRS]
    if "--schedule" in command:
        return [Path(command[command.index("--schedule") + 1]).parent]
    return []


def volume_problems(objects: list[dict[str, Any]], settings: Settings) -> list[str]:
    problems = []
    for name, pod in pod_specs(objects):
        scratch = {volume["name"] for volume in pod.get("volumes", []) if "emptyDir" in volume}
        for container in pod["containers"]:
            if container["image"] != QUIRE_IMAGE:
                continue
            mounts = [
                Path(mount["mountPath"])
                for mount in container.get("volumeMounts", [])
                if mount["name"] in scratch and not mount.get("readOnly")
            ]
            for path in writable_paths(settings, container):
                if not any(path == mount or mount in path.parents for mount in mounts):
                    problems.append(f"{name}: {path} is on the read-only root")
    return problems


def test_every_path_quire_writes_is_a_writable_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(config_data(base()), monkeypatch)
    assert volume_problems(base().objects(), settings) == []


def test_a_path_outside_the_volumes_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    data = {**config_data(base()), "QUIRE_SCRATCH_DIR": "/scratch"}
    problems = volume_problems(base().objects(), settings_from(data, monkeypatch))
    assert problems == ["quire-worker: /scratch is on the read-only root"]


# -- what each workload promises ------------------------------------------------------------


# What needs workers: the files waiting for one, and the conversions in flight (app/metrics.py).
SCALING_GAUGES = ("quire_files_waiting", "quire_files_in_flight")


def scaling_problems(objects: list[dict[str, Any]]) -> list[str]:
    problems = []
    scaled = next(doc for doc in objects if doc["kind"] == "ScaledObject")
    spec = scaled["spec"]
    workers = [doc for doc in objects if doc["kind"] == "Deployment"]
    target = [doc for doc in workers if doc["metadata"]["name"] == spec["scaleTargetRef"]["name"]]
    if [doc["metadata"]["name"] for doc in target] != ["quire-worker"]:
        problems.append(f"scales {spec['scaleTargetRef']['name']}, not the worker Deployment")
    elif "replicas" in target[0]["spec"]:
        problems.append("the worker Deployment sets replicas: re-applying it undoes KEDA's")
    # With no worker, an upload is never ingested into files, so nothing would scale up.
    if spec.get("minReplicaCount", 0) < 1:
        problems.append("minReplicaCount must be at least 1")
    if spec["maxReplicaCount"] < spec.get("minReplicaCount", 0):
        problems.append("maxReplicaCount is below minReplicaCount")
    (trigger,) = spec["triggers"]
    query = trigger["metadata"]["query"]
    gauges = set(re.findall(r"\b(quire_\w+)\{", query))
    if trigger["type"] != "prometheus" or not gauges:
        problems.append(f"not a prometheus query on Quire's gauges: {query}")
    elif gauges != set(SCALING_GAUGES):
        problems.append(f"counts {', '.join(sorted(gauges))}, not the files waiting and in flight")
    if float(trigger["metadata"]["threshold"]) <= 0:
        problems.append("threshold must be positive")
    return problems


def test_keda_scales_the_workers_on_waiting_files() -> None:
    assert scaling_problems(base().objects()) == []
    for overlay in overlays():
        assert scaling_problems(built_objects(overlay)) == []


def test_a_scaling_mistake_is_found() -> None:
    objects = copy.deepcopy(base().objects())
    for doc in objects:
        if doc["kind"] == "ScaledObject":
            doc["spec"]["minReplicaCount"] = 0
            doc["spec"]["triggers"][0]["metadata"]["query"] = (
                'sum(quire_files{status=~"PENDING|COMPLETED"})'
            )
    assert scaling_problems(objects) == [
        "minReplicaCount must be at least 1",
        "counts quire_files, not the files waiting and in flight",
    ]


def test_the_query_selects_series_quire_publishes(client: TestClient) -> None:
    """The trigger's gauges, read from the real /metrics: each is one series without labels
    (so max() across API replicas is the deployment's figure), and together they count a new
    job's files, which wait for a worker."""
    trigger = base().find("ScaledObject", "quire-worker")["spec"]["triggers"][0]
    assert re.findall(r"\b(quire_\w+)\{", trigger["metadata"]["query"]) == list(SCALING_GAUGES)
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        for name in ("a.docx", "b.docx", "c.docx"):
            archive.writestr(name, b"not converted here")
    submitted = client.post(
        "/api/v1/jobs", files={"file": ("batch.zip", zipped.getvalue(), "application/zip")}
    )
    assert submitted.status_code == 202, submitted.text
    response = client.get("/metrics")
    assert response.status_code == 200
    published = {
        sample.name: sample
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name in SCALING_GAUGES
    }
    assert sorted(published) == sorted(SCALING_GAUGES)
    assert all(sample.labels == {} for sample in published.values())
    assert sum(sample.value for sample in published.values()) == 3


def test_the_worker_runs_one_process_more_than_its_cores() -> None:
    """QUIRE_WORKER_CONCURRENCY is set (a container's os.cpu_count() is the node's) to the
    pod's CPU plus one, the best measured (docs/benchmarks.md)."""
    (worker,) = base().find("Deployment", "quire-worker")["spec"]["template"]["spec"]["containers"]
    cores = int(worker["resources"]["limits"]["cpu"])
    assert int(config_data(base())["QUIRE_WORKER_CONCURRENCY"]) == cores + 1


def test_the_docs_quote_the_manifests() -> None:
    """docs/kubernetes.md's settings table and figures, and the README's, are the manifests'."""
    docs = (ROOT / "docs" / "kubernetes.md").read_text()
    readme = (ROOT / "README.md").read_text()
    scaled = base().find("ScaledObject", "quire-worker")["spec"]
    trigger = scaled["triggers"][0]["metadata"]
    (image,) = base().spec["images"]
    worker = base().find("Deployment", "quire-worker")["spec"]["template"]["spec"]
    rows = {
        "`minReplicaCount`": f"`{scaled['minReplicaCount']}`",
        "`maxReplicaCount`": f"`{scaled['maxReplicaCount']}`",
        "`threshold`": f"`{trigger['threshold']}`",
        "`serverAddress`": f"`{trigger['serverAddress']}`",
        "`images[quire]`": f"`{image['newName']}:{image['newTag']}`",
        "`QUIRE_WORKER_CONCURRENCY`": f"`{config_data(base())['QUIRE_WORKER_CONCURRENCY']}`",
    }
    for setting, value in rows.items():
        (row,) = [line for line in docs.splitlines() if line.startswith("| `") and setting in line]
        assert value in row, (setting, value, row)
    assert trigger["query"] in docs
    assert f"The grace, {worker['terminationGracePeriodSeconds']} s" in docs
    assert f"about {trigger['threshold']} per worker pod" in readme


def test_beat_is_one_replica_replaced_not_rolled() -> None:
    beat = base().find("Deployment", "quire-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}


def test_the_api_runs_two_replicas_behind_its_service() -> None:
    api = base().find("Deployment", "quire-api")
    service = base().find("Service", "quire-api")
    assert api["spec"]["replicas"] == 2
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_each_disruption_budget_covers_its_pods() -> None:
    for name in ("quire-api", "quire-worker"):
        budget = base().find("PodDisruptionBudget", name)["spec"]["selector"]["matchLabels"]
        labels = base().find("Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert budget.items() <= labels.items(), name
        others = [
            doc["metadata"]["name"]
            for doc in base().objects()
            if doc["kind"] == "Deployment"
            and doc["metadata"]["name"] != name
            and budget.items() <= doc["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert others == [], f"{name}'s budget also covers {others}"


def test_the_migrate_job_runs_first_and_the_others_wait_for_it() -> None:
    job = base().find("Job", "quire-migrate")
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == ["python", "-m", "app.migrate"]
    generated = {entry["name"] for entry in base().spec["configMapGenerator"]}
    for name in ("quire-api", "quire-worker", "quire-beat"):
        pod = base().find("Deployment", name)["spec"]["template"]["spec"]
        (wait,) = pod["initContainers"]
        assert wait["command"] == ["python", "/etc/quire/wait_for_schema.py"], name
        (mount,) = wait["volumeMounts"]
        (volume,) = [volume for volume in pod["volumes"] if volume["name"] == mount["name"]]
        assert volume["configMap"]["name"] in generated
        assert mount["mountPath"] == "/etc/quire"


def test_the_minio_setup_is_compose_s_createbuckets() -> None:
    job = Kustomization.load(EXAMPLES / "minio").find("Job", "minio-setup")
    (mc,) = job["spec"]["template"]["spec"]["containers"]
    createbuckets = compose_services()["createbuckets"]
    assert mc["args"] == [line.replace("$$", "$") for line in createbuckets["command"]]
    assert mc["image"] == createbuckets["image"]
    statefulset = Kustomization.load(EXAMPLES / "minio").find("StatefulSet", "minio")
    assert (
        statefulset["spec"]["template"]["spec"]["containers"][0]["image"]
        == (compose_services()["minio"]["image"])
    )


# -- the two mechanisms, run -------------------------------------------------------------------


def quire_environment(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("QUIRE_")}
    env.update({"PYTHONPATH": str(ROOT), "QUIRE_DATA_DIR": str(tmp_path / "data"), **values})
    return env


def test_wait_for_schema_waits_for_the_migration(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'quire.db'}"
    script = [sys.executable, str(K8S / "wait_for_schema.py")]
    env = quire_environment(
        tmp_path,
        QUIRE_DATABASE_URL=database,
        QUIRE_BROKER_URL="redis://redis.invalid:6379/0",
        QUIRE_SECRET_KEY="a4c8e0b1d5f9a3c7e1b5d9f3a7c1e5b9",
    )
    refused = subprocess.run(
        script, env={**env, "QUIRE_SECRET_KEY": ""}, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1
    assert '"missing": "QUIRE_SECRET_KEY"' in refused.stderr

    waiting = subprocess.Popen(script, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert waiting.stderr is not None
        events = (json.loads(line) for line in waiting.stderr)
        first = next(events)
        assert (first["event"], first["current"]) == ("schema.waiting", "none")
        upgrade(database)
        assert any(event["event"] == "schema.ready" for event in events)
        assert waiting.wait(timeout=60) == 0
    finally:
        waiting.kill()
        waiting.wait()
        if waiting.stderr is not None:
            waiting.stderr.close()


# Run as the worker pod runs: its user, no capability, no_new_privs, the root read-only, and
# a tmpfs at each of its emptyDir mounts. Prints what it saw, then converts one document with
# the real (sandboxed) LibreOffice.
AS_THE_POD = """
import os, sys
from pathlib import Path
from app.config import get_settings
from workers.libreoffice import sandbox
from workers.runtime import build_converter

status = Path("/proc/self/status").read_text()
field = lambda name: status.split(name + ":")[1].split()[0]
print("uid", os.getuid(), "gid", os.getgid(), end=" ")
print("CapBnd", field("CapBnd"), "NoNewPrivs", field("NoNewPrivs"))
try:
    open("/opt/quire-root-is-writable", "w")
except OSError as error:
    print("root", error.strerror)
sandbox.check()
print("sandbox ready")
settings = get_settings()
converter = build_converter(settings)
work = settings.resolved_scratch_dir / "one"
work.mkdir(parents=True)
converter.convert(Path(sys.argv[1]), work / "out.pdf", timeout=120)
converter.close()
print("pdf", (work / "out.pdf").read_bytes()[:5].decode())
"""


@pytest.mark.parametrize("var_tmp_volume", [True, False], ids=["as-deployed", "var-tmp-read-only"])
def test_a_worker_converts_as_its_pod_runs_it(tmp_path: Path, var_tmp_volume: bool) -> None:
    """The worker's pod, approximated on this machine: a private mount namespace whose root
    is remounted read-only, with a tmpfs at each emptyDir mount of the worker container, and
    the process under the pod's user with every capability gone and no_new_privs set
    (allowPrivilegeEscalation: false). The data directory is a setting, so its tmpfs stands
    at /srv here (nothing is created on this machine's root); /tmp and /var/tmp, which
    LibreOffice chooses itself, are the real paths. RuntimeDefault seccomp is not reproduced.

    Also without the /var/tmp volume: an image or runtime that leaves /var/tmp read-only must
    not stop LibreOffice from starting (unlink() of a missing pipe there fails with EROFS)."""
    tools = [shutil.which(tool) for tool in ("unshare", "setpriv", "soffice")]
    if os.geteuid() != 0 or None in tools:
        pytest.skip("needs root, unshare, setpriv and LibreOffice")
    worker_pod = base().find("Deployment", "quire-worker")["spec"]["template"]["spec"]
    (container,) = worker_pod["containers"]
    user, group = (
        worker_pod["securityContext"]["runAsUser"],
        worker_pod["securityContext"]["runAsGroup"],
    )
    scratch = {volume["name"] for volume in worker_pod["volumes"] if "emptyDir" in volume}
    data = config_data(base())
    stand_in = Path("/srv")
    mounts = []
    for mount in container["volumeMounts"]:
        if mount["name"] in scratch:
            path = Path(mount["mountPath"])
            mounts.append(stand_in if path == Path(data["QUIRE_DATA_DIR"]) else path)
    assert stand_in in mounts and Path("/tmp") in mounts
    if not var_tmp_volume:
        mounts.remove(Path("/var/tmp"))
    document = sorted((ROOT.parent / "shared" / "corpus" / "pandoc").glob("*.docx"))[0]
    # The repository (and its venv) seen through a bind mount that no tmpfs below covers: a
    # checkout under /tmp (CI's may be) would vanish under the pod's /tmp volume otherwise.
    repo = Path("/run/quire-under-test")
    python = repo / Path(sys.executable).relative_to(ROOT)
    script = "\n".join(
        [
            "set -e",
            f"mkdir -p {repo}",
            f"mount --bind {shlex.quote(str(ROOT))} {repo}",
            f"cd {repo}",
            f"mount -t tmpfs -o mode=0777 tmpfs {stand_in}",
            f"cp {shlex.quote(str(document))} {stand_in}/in.docx && chmod 0644 {stand_in}/in.docx",
            "mount -o remount,bind,ro /",
            *(f"mount -t tmpfs -o mode=1777 tmpfs {path}" for path in mounts if path != stand_in),
            shlex.join(
                [
                    *("setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups"),
                    *("--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"),
                    *(str(python), "-c", AS_THE_POD, f"{stand_in}/in.docx"),
                ]
            ),
        ]
    )
    env = quire_environment(tmp_path, **{**data, "QUIRE_DATA_DIR": str(stand_in)})
    env["PYTHONPATH"] = str(repo)
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [
        f"uid {user} gid {group} CapBnd 0000000000000000 NoNewPrivs 1",
        "root Read-only file system",
        "sandbox ready",
        "pdf %PDF-",
    ]


@pytest.fixture
def celery_worker(tmp_path: Path) -> Iterator[tuple[Celery, str, dict[str, str]]]:
    """A real Celery worker (fake converter) on a Redis of its own, and its node name."""
    with redis_server(tmp_path / "redis") as redis:
        env = quire_environment(
            tmp_path,
            QUIRE_BROKER_URL=redis.url,
            QUIRE_CONVERTER="fake",
            QUIRE_WORKER_CONCURRENCY="1",
            QUIRE_DATABASE_URL=f"sqlite:///{tmp_path / 'quire.db'}",
        )
        command = compose_services()["worker"]["command"]
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / command[0]), *command[1:]],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        control = Celery(broker=redis.url)
        try:
            answers: dict[str, Any] = {}
            deadline = time.monotonic() + 120
            while not answers:
                assert worker.poll() is None, "the worker exited at start"
                assert time.monotonic() < deadline, "the worker did not answer within 120 s"
                answers = control.control.inspect(timeout=1).active_queues() or {}
            (node,) = answers
            yield control, node, env
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
            control.close()


def test_the_worker_prestop_stops_it_consuming(
    celery_worker: tuple[Celery, str, dict[str, str]],
) -> None:
    control, node, env = celery_worker
    queues = control.control.inspect(destination=[node], timeout=5).active_queues() or {}
    assert {queue["name"] for queue in queues[node]} == {"quire-convert", "quire-control"}
    worker = base().find("Deployment", "quire-worker")["spec"]["template"]["spec"]
    command = worker["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:4] == ["timeout", "30", "python", "-c"], shlex.join(command)
    subprocess.run([sys.executable, "-c", command[4]], env=env, cwd=ROOT, check=True, timeout=60)
    assert control.control.inspect(destination=[node], timeout=5).active_queues() == {node: []}
