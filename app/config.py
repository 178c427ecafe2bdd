"""All configuration, read once from ``QUIRE_*`` environment variables and validated at start-up.

Every field is documented in the settings table of docs/operations.md (tests/infra/test_docs.py
fails when one is missing); keep the two in step.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.logs import get_logger

MiB = 1024 * 1024
GiB = 1024 * MiB

# Secrets that were published with Quire (its compose file and env example once fell back to
# them): anyone can read them, so a deployment that still uses one refuses to start.
KNOWN_PUBLIC_SECRETS = frozenset(
    {
        "quire",
        "quire-dev-secret-change-me",
        "quire-minio-secret",
        "change-me",
        "change-me-secret-key",
        "change-me-minio-secret",
        "change-me-postgres",
        "changeme",
        "minioadmin",
        "secret",
    }
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QUIRE_", extra="ignore")

    # Where the embedded default keeps everything: SQLite, the local object store, Redis, scratch.
    data_dir: Path = Path(".data")

    database_url: str = ""  # empty: SQLite in data_dir
    broker_url: str = "redis://localhost:6379/0"

    storage_backend: Literal["local", "s3"] = "local"
    local_store_dir: Path | None = None  # default: data_dir/objects
    s3_endpoint_url: str | None = None  # None: AWS itself
    s3_public_endpoint_url: str | None = None  # host clients use for presigned URLs
    s3_bucket: str = "quire"
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"

    public_url: str | None = None  # base of absolute links; default: the request's own base URL
    # Signs the local store's URLs (and webhooks, through QUIRE_WEBHOOK_SECRET's default). Empty:
    # generated once into data_dir, which only SQLite allows: with a database server every host
    # needs the same key, and the API, workers and beat refuse to start without one.
    secret_key: str = ""
    presigned_url_ttl: int = Field(default=3600, ge=10, le=7 * 24 * 3600)

    max_upload_bytes: int = Field(default=2 * GiB, gt=0)
    max_files_per_job: int = Field(default=10_000, gt=0)
    max_entry_bytes: int = Field(default=100 * MiB, gt=0)
    max_total_uncompressed_bytes: int = Field(default=20 * GiB, gt=0)
    max_compression_ratio: float = Field(default=100.0, gt=1)
    # A DOCX is itself a zip: each of its parts, and all of them together, may expand to at
    # most this much. Counted while the worker reads the parts, never taken from their headers.
    max_part_expanded_bytes: int = Field(default=256 * MiB, gt=0)
    max_package_expanded_bytes: int = Field(default=1 * GiB, gt=0)

    conversion_timeout: int = Field(default=120, ge=1)
    # Conversions of one file that were started but never finished (its worker or LibreOffice
    # died each time) before the file is FAILED instead of being tried again.
    max_attempts: int = Field(default=3, ge=1)
    job_task_time_limit: int = Field(default=3600, ge=60)  # ingest and archive of a whole job
    libreoffice_start_timeout: int = Field(default=60, ge=1)
    # A restart costs about 0.8 s; every 1,000 conversions that is under 2 % of the time.
    libreoffice_restart_after: int = Field(default=1000, ge=1)
    soffice_path: str = "soffice"
    # LibreOffice runs sandboxed (workers/libreoffice/sandbox.py): it can read only its
    # installation, the fonts, its profile and the document's scratch folder, write only the last
    # two, and has no network. A worker that cannot set the sandbox up refuses to convert. "off"
    # is for debugging only, and every start logs a warning.
    sandbox: Literal["on", "off"] = "on"
    # Each LibreOffice's address-space limit (RLIMIT_AS), in MiB: a document that makes it swell
    # runs out of memory in its own instance, not the host's. 0: no limit. Measured here, an
    # instance needs 0.4 GiB to start and at most 1.5 GiB for any document tried (the corpus, 20
    # 12-megapixel photos, a 256-megapixel picture): docs/security.md, "The LibreOffice sandbox".
    libreoffice_memory_mb: int = Field(default=3072, ge=0)
    converter: Literal["uno", "cli", "fake"] = "uno"
    # One more worker process than cores: while a worker does its bookkeeping (store, database,
    # queue), its LibreOffice idles, and the extra process keeps every core converting. Measured
    # on 2 cores: 27 docs/s with 2 processes, 32 with 3 (make bench; docs/benchmarks.md).
    worker_concurrency: int = Field(default_factory=lambda: (os.cpu_count() or 1) + 1, ge=1)
    scratch_dir: Path | None = None  # default: data_dir/scratch
    # A folder of font files an operator adds (TTF, OTF, TTC): LibreOffice may read it inside
    # its sandbox, and fontconfig sees it beside the system's fonts, for the conversions and
    # for the font report alike (workers/fonts.py). None: the system's fonts only.
    fonts_dir: Path | None = None

    # A non-terminal file or job untouched this long is re-sent by the sweeper.
    stale_after: int = Field(default=900, ge=10)
    # Finished jobs (their objects and rows) are removed this long after they ended.
    job_ttl: int = Field(default=7 * 24 * 3600, ge=1)
    # What an upload left when the API died receiving it (a partial object, or one no job row
    # names) is removed once nothing wrote to it for this long (workers/orphans.py, in a sweep).
    # Longer than any live upload may pause between two writes, and any job's creation takes.
    orphan_upload_grace: int = Field(default=3600, ge=1)
    # The API refuses uploads (507) when the local store's disk has less free space than this.
    min_free_bytes: int = Field(default=512 * MiB, ge=0)
    # How often beat starts a sweep. With QUIRE_LEASE_SECONDS it bounds how long a dead worker's
    # files wait: lease + sweep interval (docs/reliability.md, "A dead worker's files").
    sweep_interval: int = Field(default=10, ge=1)
    # A worker holds a lease on each file whose message it holds, renewed every third of this;
    # a lease that runs out means its worker died, and the sweeper re-sends the file.
    lease_seconds: int = Field(default=20, ge=5, le=600)
    # Conversions in flight at once (sent to the broker, not finished), across the service. 0:
    # twice the conversion processes of the live workers, which follows the cluster as workers
    # come and go (app/scheduling.py). Wider only adds to the wait of a small job behind a batch.
    dispatch_window: int = Field(default=0, ge=0, le=100_000)

    # Comma-separated API keys. When set, every /api/v1 call needs "Authorization: Bearer <key>"
    # and sees only the jobs its own key created. Empty: no authentication (a trusted network).
    api_keys: str = ""
    # Live event streams (GET /api/v1/jobs/{id}/events) one caller may hold open at once, per
    # API process: each holds a connection and polls the database. Counted per API key, or per
    # client address when no keys are set; 429 past it.
    max_event_streams_per_key: int = Field(default=8, ge=1)
    # Quotas per API key (per jobs.owner; without keys, all clients count together). Active jobs:
    # those PENDING or IN_PROGRESS; queued files: their files not yet COMPLETED or FAILED. None:
    # no limit. Past either, POST /api/v1/jobs answers 429 with Retry-After
    # (app/services/quotas.py).
    max_active_jobs_per_key: int | None = Field(default=None, ge=1)
    max_queued_files_per_key: int | None = Field(default=None, ge=1)
    # What GET /metrics needs ("Authorization: Bearer <token>") while API keys are set: the
    # figures describe every client's work. With API keys and no token, /metrics answers 401.
    # Without API keys /metrics is open like the rest of the API (a trusted network).
    metrics_token: str = ""

    # Webhooks: a job with a callback_url gets its status document POSTed there when it ends.
    # The HMAC-SHA256 key of the Quire-Signature header. Empty: derived from the secret key, so
    # it survives restarts and every worker sharing QUIRE_SECRET_KEY signs alike.
    webhook_secret: str = ""
    # Attempts of one callback before it is FAILED; retries wait 10 s * 3^(n-1), at most 1 h
    # (app.webhooks.retry_delay), so 8 attempts span about 2 hours.
    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    # Seconds each phase of a callback (connect, send, wait for the answer) may take.
    webhook_timeout: float = Field(default=10.0, gt=0, le=300)
    # Callbacks go to public addresses only (app/callback_targets.py): a worker POSTing to
    # 127.0.0.1, 10.x or 169.254.169.254 would reach the deployment's own services. True lets
    # them reach loopback, private and link-local receivers, for trusted clients only.
    webhook_allow_private: bool = False

    log_level: str = "INFO"
    # json (one object per line, with the job and file ids bound) suits containers and log
    # shippers, and is what the image runs with; text is for reading in a terminal.
    log_format: Literal["json", "text"] = "json"

    # OpenTelemetry traces (app/tracing.py): the OTLP/HTTP base URL of a collector, e.g.
    # http://collector:4318 (spans go to its /v1/traces). Empty: no tracing, and none of
    # OpenTelemetry's SDK loaded. The API exports as "<service name>-api", workers as "-worker".
    otel_endpoint: str = Field(default="", max_length=2048, pattern=r"^(https?://\S+)?$")
    otel_service_name: str = Field(default="quire", min_length=1, max_length=100)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        self._refuse_published_secrets()
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise ValueError("QUIRE_S3_BUCKET is required when QUIRE_STORAGE_BACKEND=s3")
        if self.lease_seconds + self.sweep_interval >= self.stale_after:
            raise ValueError(
                f"QUIRE_LEASE_SECONDS + QUIRE_SWEEP_INTERVAL ({self.lease_seconds} + "
                f"{self.sweep_interval}) must stay below QUIRE_STALE_AFTER ({self.stale_after}): "
                "the lease is how a dead worker's files are found before the last resort"
            )
        if self.stale_after <= self.task_hard_time_limit:
            raise ValueError(
                f"QUIRE_STALE_AFTER ({self.stale_after}) must exceed the conversion task's hard "
                f"time limit ({self.task_hard_time_limit} s), or running work would be re-sent"
            )
        return self

    def _refuse_published_secrets(self) -> None:
        database_password = urlsplit(self.database_url).password if self.database_url else None
        secrets_in_use = {
            "QUIRE_SECRET_KEY": [self.secret_key],
            "QUIRE_WEBHOOK_SECRET": [self.webhook_secret],
            "QUIRE_S3_SECRET_KEY": [self.s3_secret_key or ""],
            "QUIRE_METRICS_TOKEN": [self.metrics_token],
            "QUIRE_API_KEYS": self.api_key_list,
            "the password in QUIRE_DATABASE_URL": [database_password or ""],
        }
        for name, values in secrets_in_use.items():
            if any(value.strip().lower() in KNOWN_PUBLIC_SECRETS for value in values if value):
                raise ValueError(
                    f"{name} is a published default value that anyone can read; set a secret "
                    'of your own (e.g. python3 -c "import secrets; print(secrets.token_hex(32))")'
                )

    # Derived values: one place computes them so API, workers and sweeper agree.

    @property
    def api_key_list(self) -> list[str]:
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'quire.db').resolve()}"

    @property
    def resolved_local_store_dir(self) -> Path:
        return (self.local_store_dir or self.data_dir / "objects").resolve()

    @property
    def resolved_scratch_dir(self) -> Path:
        return (self.scratch_dir or self.data_dir / "scratch").resolve()

    @property
    def libreoffice_profiles_dir(self) -> Path:
        # Apart from the documents' scratch space: a full scratch disk then fails documents
        # with a clear message instead of keeping LibreOffice from starting at all.
        return (self.data_dir / "libreoffice").resolve()

    @property
    def task_soft_time_limit(self) -> int:
        # A conversion may crash and be retried once on a fresh instance: two conversions, two
        # LibreOffice starts, and a minute for the store round trips around them.
        return 2 * (self.conversion_timeout + self.libreoffice_start_timeout) + 60

    @property
    def task_hard_time_limit(self) -> int:
        return self.task_soft_time_limit + 30

    @property
    def database_is_shared(self) -> bool:
        """Whether processes of other hosts may use this database too. SQLite is a file that the
        processes of one host share; a database server may have any number of hosts beside."""
        return not self.resolved_database_url.startswith("sqlite")

    def require_shared_secret_key(self) -> None:
        """Raise SecretKeyRequired when this process would sign with a key that other hosts of
        its deployment do not hold: no QUIRE_SECRET_KEY, and a database other hosts may share.

        The one check: resolved_secret_key() makes it, and check_before_start() makes it when
        the API, a worker, beat or the runner starts, before anything is signed."""
        if self.database_is_shared and not self.secret_key:
            raise SecretKeyRequired(UNSHARED_KEY_REFUSAL)

    def resolved_secret_key(self) -> str:
        """The configured key, or one generated once into data_dir (restarts keep URLs valid).

        Generated only where the database is SQLite: one host, whose processes share data_dir.
        The file is created 0600 (and data_dir 0700) by the call that creates it, never made
        private afterwards: whoever reads it can sign download URLs and webhooks."""
        if self.secret_key:
            return self.secret_key
        self.require_shared_secret_key()
        path = self.data_dir / "secret_key"
        if not path.exists():
            make_private_dir(path.parent)
            tmp = path.with_name(f"secret_key.{os.getpid()}.tmp")
            descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(secrets.token_hex(32))
            # link() refuses to replace: if two processes race, both read the winner's key.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
            tmp.unlink()
        elif path.stat().st_mode & 0o077:
            path.chmod(0o600)  # written 0644 by releases before issue 12
        return path.read_text().strip()


class SecretKeyRequired(RuntimeError):
    """A process of a deployment that may span hosts has no QUIRE_SECRET_KEY."""


UNSHARED_KEY_REFUSAL = (
    "QUIRE_SECRET_KEY is not set, and QUIRE_DATABASE_URL names a database server, which other "
    "hosts may share. Without the key each host generates one of its own into its "
    "QUIRE_DATA_DIR: a download or upload URL signed by one API replica is refused by another, "
    "and webhooks sent by different workers carry different signatures. Give the API, every "
    "worker and beat the same QUIRE_SECRET_KEY, e.g. the output of "
    'python3 -c "import secrets; print(secrets.token_hex(32))"'
)


def check_before_start(settings: Settings) -> None:
    """The refusals the API, each worker, beat and the embedded runner make at start, before
    they serve or sign anything: logged as one ``start.refused`` line (uvicorn buries the exit
    message in a traceback), then SystemExit with the reason and the fix, since Celery's signal
    handlers swallow any other exception and a process that failed later would fail per use."""
    try:
        settings.require_shared_secret_key()
    except SecretKeyRequired as error:
        get_logger("quire.config").error("start.refused", str(error))
        raise SystemExit(f"quire: {error}") from None


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) readable by its owner only; tighten it if it exists.

    Created with the mode, so there is no moment at which others may look in."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_mode & 0o077 and info.st_uid == os.getuid():
        path.chmod(0o700)  # made by an older release, or by hand


@lru_cache
def get_settings() -> Settings:
    return Settings()
