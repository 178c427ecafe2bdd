"""A Quire cluster on one machine: one Linux network namespace per host, on a bridge of its own.

Each host (PostgreSQL, Redis, the S3 server, two API replicas, two worker hosts, beat and the
client) runs in its namespace with its own address and its own data and scratch directories, so
a hidden dependence on a shared disk or on ``localhost`` shows up as a failure. The namespaces
have no default route: traffic can only go to the hosts on the bridge and to each namespace's
own loopback. The bridge itself has an address too (the test process on the machine's side,
which watches the database and the logs; no Quire process talks to it).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import io
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from celery import Celery

from app.queue import CONVERT_QUEUE
from tests.bench.documents import bench_zip, marker
from tests.pdf import pdf_pages

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python")
PG_BIN = Path("/usr/lib/postgresql/15/bin")

# Every namespace, bridge and veth of the test starts with this, so a later run can find and
# remove what a killed run left behind.
PREFIX = "qcl-"
BRIDGE = f"{PREFIX}br"
# A private /24 that nothing on this machine uses (the machine's own network is elsewhere).
SUBNET = "10.231.17"
BRIDGE_ADDRESS = f"{SUBNET}.1"
# Only one cluster at a time may own the prefix and the addresses: a second run (another
# `make test` in the same checkout) waits here instead of deleting the first one's hosts.
LOCK_PATH = Path("/run/lock/quire-cluster-test.lock")

HOSTS = ("postgres", "redis", "s3", "api-1", "api-2", "worker-1", "worker-2", "beat", "client")
# Which CPU each worker host is pinned to: one core a host, so two hosts can scale.
WORKER_CPUS = {"worker-1": 0, "worker-2": 1}

PG_PORT, REDIS_PORT, S3_PORT, API_PORT = 5432, 6379, 9000, 8000
# Every host's QUIRE_SECRET_KEY: made once with secrets.token_hex(32) for this test only.
CLUSTER_SECRET_KEY = "648d2ef12ff70688552a63a6b4b48c13898776bb418db97e7dd0a6b59cb68116"
TERMINAL = {"COMPLETED", "FAILED"}


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def in_namespace(namespace: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", namespace, *argv]


def namespace_pids(namespace: str) -> list[int]:
    listing = sh("ip", "netns", "pids", namespace, check=False).stdout
    return [int(pid) for pid in listing.split()]


def kill_namespace(namespace: str, sig: signal.Signals = signal.SIGKILL) -> list[int]:
    """Send ``sig`` to every process of ``namespace`` until none is left (for SIGKILL) and
    return the pids signalled first: the host's power cord pulled."""
    first = namespace_pids(namespace)
    deadline = time.monotonic() + 30
    pids = first
    while pids and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if sig != signal.SIGKILL:
            break
        time.sleep(0.1)
        pids = [pid for pid in namespace_pids(namespace) if not _zombie(pid)]
    return first


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def remove_network() -> None:
    """Remove every namespace, bridge and veth with the prefix, killing what runs inside."""
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        namespace = line.split()[0] if line.split() else ""
        if namespace.startswith(PREFIX):
            kill_namespace(namespace)
            sh("ip", "netns", "del", namespace, check=False)
    for line in sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith(PREFIX):
            sh("ip", "link", "del", name, check=False)


def wait_for_tcp(address: str, port: int, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {address}:{port}")


@dataclass
class Host:
    """One machine of the cluster: its namespace, address, directories and processes."""

    name: str
    address: str
    root: Path  # this host's own disk: nothing under it is seen by another host
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return f"{PREFIX}{self.name}"

    @property
    def host_veth(self) -> str:
        return f"{PREFIX}h-{self.name}"

    @property
    def log_path(self) -> Path:
        return self.root / "host.log"

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return f"({self.name}: no log)"
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join([f"--- {self.name} ---", *text])

    def start(
        self, argv: list[str], env: dict[str, str], cpu: int | None = None
    ) -> subprocess.Popen[bytes]:
        pinned = ["taskset", "-c", str(cpu), *argv] if cpu is not None else argv
        with open(self.log_path, "ab") as log:
            process = subprocess.Popen(
                in_namespace(self.namespace, *pinned),
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def run(self, argv: list[str], env: dict[str, str], timeout: float = 120) -> str:
        done = subprocess.run(
            in_namespace(self.namespace, *argv),
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"{argv} on {self.name} failed:\n{done.stdout}{done.stderr}"
        return done.stdout

    def signal_all(self, sig: signal.Signals) -> None:
        for pid in namespace_pids(self.namespace):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def kill_all(self) -> list[int]:
        """SIGKILL every process of this host (LibreOffice included) and reap our children."""
        killed = kill_namespace(self.namespace)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        self.processes = [p for p in self.processes if p.poll() is None]
        return killed


@dataclass
class Cluster:
    hosts: dict[str, Host]
    workdir: Path
    pg_dir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    engine: sa.Engine | None = None
    # The test's own Celery client, for the workers' remote control (the scaling measurement).
    controller: Celery | None = None

    # -- addresses ---------------------------------------------------------------------------

    @property
    def database_url(self) -> str:
        return f"postgresql+psycopg://postgres@{self.hosts['postgres'].address}:{PG_PORT}/quire"

    @property
    def broker_url(self) -> str:
        return f"redis://{self.hosts['redis'].address}:{REDIS_PORT}/0"

    @property
    def api_urls(self) -> list[str]:
        return [f"http://{self.hosts[name].address}:{API_PORT}" for name in ("api-1", "api-2")]

    def logs(self, *names: str) -> str:
        return "\n".join(self.hosts[name].log_tail() for name in names or tuple(self.hosts))

    # -- the network ---------------------------------------------------------------------------

    def build_network(self) -> None:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        for host in self.hosts.values():
            inner = f"{PREFIX}n-{host.name}"
            sh("ip", "netns", "add", host.namespace)
            sh("ip", "link", "add", host.host_veth, "type", "veth", "peer", "name", inner)
            sh("ip", "link", "set", inner, "netns", host.namespace)
            sh("ip", "link", "set", host.host_veth, "master", BRIDGE, "up")
            ns = in_namespace(host.namespace)
            sh(*ns, "ip", "link", "set", "lo", "up")
            sh(*ns, "ip", "link", "set", inner, "name", "eth0")
            sh(*ns, "ip", "addr", "add", f"{host.address}/24", "dev", "eth0")
            sh(*ns, "ip", "link", "set", "eth0", "up")

    def partition(self, name: str) -> None:
        sh("ip", "link", "set", self.hosts[name].host_veth, "down")

    def heal(self, name: str) -> None:
        sh("ip", "link", "set", self.hosts[name].host_veth, "up")

    # -- the services --------------------------------------------------------------------------

    def base_env(self, host: Host) -> dict[str, str]:
        """A process's whole environment: nothing of the test's own (no proxies, no QUIRE_*
        of the test run), a home and a data directory of its host's own."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(host.root / "home"),
            "PYTHONUNBUFFERED": "1",
        }

    def quire_env(self, host: Host) -> dict[str, str]:
        return {
            **self.base_env(host),
            "QUIRE_DATA_DIR": str(host.root / "data"),
            "QUIRE_SCRATCH_DIR": str(host.root / "scratch"),
            "QUIRE_DATABASE_URL": self.database_url,
            "QUIRE_BROKER_URL": self.broker_url,
            "QUIRE_STORAGE_BACKEND": "s3",
            "QUIRE_S3_ENDPOINT_URL": f"http://{self.hosts['s3'].address}:{S3_PORT}",
            "QUIRE_S3_BUCKET": "quire-cluster",
            "QUIRE_S3_ACCESS_KEY": "test",
            "QUIRE_S3_SECRET_KEY": "test",
            # Shared by every host (each would otherwise generate its own into its data dir), and
            # required where the database is PostgreSQL: a fixed random value, no published one.
            "QUIRE_SECRET_KEY": CLUSTER_SECRET_KEY,
            "QUIRE_WORKER_CONCURRENCY": "1",
            # Short leases, so a lost host's files move on within seconds.
            "QUIRE_LEASE_SECONDS": "6",
            "QUIRE_SWEEP_INTERVAL": "2",
            "QUIRE_LOG_LEVEL": "INFO",
        }

    def start_postgres(self) -> None:
        host = self.hosts["postgres"]
        # PostgreSQL refuses to run as root: its directory belongs to the postgres user, directly
        # under /tmp (pytest's folders are for root only).
        self.pg_dir = Path(tempfile.mkdtemp(prefix="quire-cluster-pg-"))
        postgres = pwd.getpwnam("postgres")
        os.chown(self.pg_dir, postgres.pw_uid, postgres.pw_gid)
        data = self.pg_dir / "pgdata"
        env = self.base_env(host)

        def as_postgres(tool: str, *args: str) -> None:
            host.run(["runuser", "-u", "postgres", "--", str(PG_BIN / tool), *args], env)

        as_postgres("initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {SUBNET}.0/24 trust\n")
        options = (
            f"-p {PG_PORT} -k {self.pg_dir} -c listen_addresses={host.address} -c fsync=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        as_postgres(
            "pg_ctl",
            "-D",
            str(data),
            "-w",
            "-l",
            str(self.pg_dir / "pg.log"),
            "-o",
            options,
            "start",
        )
        as_postgres("createdb", "-h", host.address, "-p", str(PG_PORT), "quire")

    def start_redis(self) -> None:
        host = self.hosts["redis"]
        host.start(
            [
                "redis-server",
                "--bind",
                host.address,
                "--port",
                str(REDIS_PORT),
                "--protected-mode",
                "no",
                "--dir",
                str(host.root),
                "--save",
                "",
                "--appendonly",
                "no",
                "--loglevel",
                "warning",
            ],
            self.base_env(host),
        )

    def start_s3(self) -> None:
        host = self.hosts["s3"]
        moto = str(REPO / ".venv" / "bin" / "moto_server")
        host.start([moto, "-H", host.address, "-p", str(S3_PORT)], self.base_env(host))

    def start_api(self, name: str) -> None:
        host = self.hosts[name]
        host.start(
            [
                PYTHON,
                "-m",
                "uvicorn",
                "app.main:app",
                "--host",
                host.address,
                "--port",
                str(API_PORT),
                "--no-access-log",
            ],
            self.quire_env(host),
        )

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        host = self.hosts[name]
        # Every namespace shares the machine's hostname: the node names must differ, for Celery
        # and for the scheduler's worker registry (keyed by the Celery hostname).
        return host.start(
            [
                PYTHON,
                "-m",
                "workers",
                "-A",
                "workers.celery_app:celery",
                "worker",
                "--loglevel",
                "INFO",
                "--hostname",
                f"{name}@%h",
                "--without-gossip",
                "--without-mingle",
            ],
            self.quire_env(host),
            cpu=WORKER_CPUS[name],
        )

    def start_beat(self) -> None:
        host = self.hosts["beat"]
        host.start(
            [
                PYTHON,
                "-m",
                "workers",
                "-A",
                "workers.celery_app:celery",
                "beat",
                "--loglevel",
                "WARNING",
                "--scheduler",
                "celery.beat:Scheduler",
            ],
            self.quire_env(host),
        )

    def start(self) -> None:
        for host in self.hosts.values():
            for sub in ("data", "scratch", "home"):
                (host.root / sub).mkdir(parents=True, exist_ok=True)
        self.build_network()
        self.start_postgres()
        self.start_redis()
        self.start_s3()
        wait_for_tcp(self.hosts["redis"].address, REDIS_PORT)
        wait_for_tcp(self.hosts["s3"].address, S3_PORT)
        # The schema once, from one host, before any API or worker starts (as compose's
        # migrate service and the k8s Job do).
        api_1 = self.hosts["api-1"]
        api_1.run([PYTHON, "-m", "app.migrate"], self.quire_env(api_1))
        self.engine = sa.create_engine(self.database_url, poolclass=sa.pool.NullPool)
        # Both replicas at once: nothing on start-up may race (the bucket, the schema).
        self.start_api("api-1")
        self.start_api("api-2")
        for name in WORKER_CPUS:
            self.start_worker(name)
        self.start_beat()
        for name, url in zip(("api-1", "api-2"), self.api_urls, strict=True):
            self.wait_ready(name, url)
        for name in WORKER_CPUS:
            self.wait_registered(name)

    def wait_ready(self, name: str, url: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if direct_get(f"{url}/readyz").status_code == 200:
                    return
            time.sleep(0.3)
        raise AssertionError(f"{name} did not become ready:\n{self.logs(name)}")

    def live_workers(self) -> set[str]:
        assert self.engine is not None
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT name FROM workers WHERE expires_at > CURRENT_TIMESTAMP")
            )
            return {str(row[0]).split("@")[0] for row in rows}

    def wait_registered(self, name: str, timeout: float = 120) -> None:
        """Wait until the worker host heartbeats into the registry (its LibreOffice is up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(sa.exc.OperationalError, sa.exc.ProgrammingError):
                if name in self.live_workers():
                    return
            time.sleep(0.3)
        raise AssertionError(f"{name} never registered:\n{self.logs(name)}")

    def claims_in_progress(self, job_id: str) -> set[tuple[str, str]]:
        """The job's files being converted now: (file id, the claim's fencing token)."""
        assert self.engine is not None
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT id, lease_token FROM files "
                    "WHERE job_id = :job AND status = 'IN_PROGRESS'"
                ),
                {"job": job_id},
            )
            return {(str(row[0]), str(row[1])) for row in rows}

    def open_transactions(self, name: str) -> int:
        """How many of host ``name``'s database sessions are inside a transaction or running a
        statement now: the rows it wrote stay locked until it commits or its session ends."""
        assert self.engine is not None
        with self.engine.connect() as connection:
            count = connection.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE client_addr = CAST(:address AS inet) AND state <> 'idle'"
                ),
                {"address": self.hosts[name].address},
            ).scalar_one()
        return int(count)

    def claim_of(self, file_id: str) -> tuple[str, str]:
        """A file's status and its latest claim's fencing token."""
        assert self.engine is not None
        with self.engine.connect() as connection:
            status, token = connection.execute(
                sa.text("SELECT status, lease_token FROM files WHERE id = :id"), {"id": file_id}
            ).one()
        return str(status), str(token)

    def file_counts(self, job_id: str) -> tuple[int, int]:
        """How many of the job's files are copied into the store (ingested), and how many are
        COMPLETED."""
        assert self.engine is not None
        with self.engine.connect() as connection:
            ingested, completed = connection.execute(
                sa.text(
                    "SELECT count(input_bytes), count(*) FILTER (WHERE status = 'COMPLETED') "
                    "FROM files WHERE job_id = :job"
                ),
                {"job": job_id},
            ).one()
        return int(ingested), int(completed)

    def affinities(self, name: str) -> set[frozenset[int]]:
        """The CPUs each process of host ``name`` may run on, LibreOffice included."""
        found = set()
        for pid in namespace_pids(self.hosts[name].namespace):
            with contextlib.suppress(ProcessLookupError):
                found.add(frozenset(os.sched_getaffinity(pid)))
        return found

    def set_priority(self, niceness: int) -> None:
        """Give every host's processes this niceness: their scheduler autogroups (each host
        process starts a session, and with autogroups on, a niceness weighs only inside its
        group) and every thread of them (new processes inherit it). During the scaling phases
        the cluster runs ahead of the machine's other work (at niceness 0), as if the two cores
        were its own, while its hosts still compete with each other as equals."""
        for host in self.hosts.values():
            for pid in namespace_pids(host.namespace):
                with contextlib.suppress(OSError):
                    Path(f"/proc/{pid}/autogroup").write_text(str(niceness))
                with contextlib.suppress(OSError):
                    for task in os.listdir(f"/proc/{pid}/task"):
                        with contextlib.suppress(OSError):
                            os.setpriority(os.PRIO_PROCESS, int(task), niceness)

    def set_converting(self, name: str, converting: bool) -> None:
        """Let worker host ``name`` take conversions, or stop it taking more (Celery's remote
        control: add or cancel its consumer of the conversion queue). Either way it stays up,
        warm, with its LibreOffice running and its place in the registry (so the scheduler's
        window stays the same); a conversion it runs when stopped finishes."""
        if self.controller is None:
            self.controller = Celery(
                "quire-cluster-test", broker=self.broker_url, set_as_current=False
            )
        node = [f"{name}@{socket.gethostname()}"]  # every namespace shares the hostname
        control = self.controller.control
        if converting:
            replies = control.add_consumer(CONVERT_QUEUE, destination=node, reply=True, timeout=10)
        else:
            replies = control.cancel_consumer(
                CONVERT_QUEUE, destination=node, reply=True, timeout=10
            )
        assert replies is not None and len(replies) == 1, replies
        assert "ok" in next(iter(replies[0].values())), replies

    def stop(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
        if self.controller is not None:
            self.controller.close()
        remove_network()
        for host in self.hosts.values():
            for process in host.processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=10)
        if self.pg_dir is not None:
            shutil.rmtree(self.pg_dir, ignore_errors=True)


def direct_get(url: str) -> httpx.Response:
    """A GET from the test process itself (readiness only), never through a proxy."""
    with httpx.Client(trust_env=False, timeout=5) as client:
        return client.get(url)


@contextlib.contextmanager
def cluster_lock(timeout: float = 300) -> Iterator[None]:
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_PATH, "w") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError("another cluster test holds the cluster") from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def running_cluster(workdir: Path) -> Iterator[Cluster]:
    with cluster_lock():
        remove_network()  # what an earlier, killed run left
        hosts = {
            name: Host(name, f"{SUBNET}.{10 + index}", workdir / name)
            for index, name in enumerate(HOSTS)
        }
        cluster = Cluster(hosts, workdir)
        atexit.register(remove_network)  # if the finalizer never runs (an interrupted run)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
            atexit.unregister(remove_network)


# -- the client, in its own namespace ------------------------------------------------------------

CLIENT_SCRIPT = Path(__file__).with_name("client.py")


def client(cluster: Cluster, *args: str, timeout: float = 400) -> dict[str, Any]:
    """Run tests/cluster/client.py on the client host; its last output line is JSON."""
    host = cluster.hosts["client"]
    output = host.run([PYTHON, str(CLIENT_SCRIPT), *args], cluster.base_env(host), timeout)
    answer: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return answer


@dataclass
class ClusterSummary:
    """What the cluster tests found, summed over every job they accounted for."""

    jobs: int = 0
    lost: int = 0
    duplicates: int = 0
    scaling: ScalingFigure | None = None  # the scaling test's measurement


@dataclass
class Outcome:
    job_id: str
    status: dict[str, Any]
    lost: set[str]
    duplicates: int
    server_errors: int
    polls: dict[str, int]
    archive_url: str  # where the client got the archive, after the API's redirect


def submit(cluster: Cluster, batch: bytes, api: int) -> str:
    path = cluster.hosts["client"].root / f"batch-{time.monotonic_ns()}.zip"
    path.write_bytes(batch)
    answer = client(cluster, "submit", cluster.api_urls[api], str(path))
    return str(answer["job_id"])


def wait(cluster: Cluster, job_id: str, until: str, timeout: float = 400) -> dict[str, Any]:
    """Poll both API replicas in turn from the client host until ``until`` holds:
    ``terminal``, or ``completed>=N``."""
    return client(
        cluster,
        "wait",
        ",".join(cluster.api_urls),
        job_id,
        until,
        str(timeout),
        timeout=timeout + 30,
    )


def settle(cluster: Cluster, job_id: str, markers: dict[str, str], timeout: float = 400) -> Outcome:
    """Wait for the end of the job and account for every file: its PDF in the archive, once,
    with its own text. The archive is fetched by the client host from the presigned URL."""
    answer = wait(cluster, job_id, "terminal", timeout)
    status = answer["status"]
    files = {f["filename"]: f for f in status["files"]}
    lost = {name for name in markers if files.get(name, {}).get("status") not in TERMINAL}
    duplicates = 0
    archive_url = ""
    if status["status"] == "COMPLETED":
        archive_path = cluster.hosts["client"].root / f"{job_id}.zip"
        fetched = client(cluster, "download", str(status["download_url"]), str(archive_path))
        archive_url = str(fetched["final_url"])
        with zipfile.ZipFile(io.BytesIO(archive_path.read_bytes())) as archive:
            names = archive.namelist()
            duplicates = len(names) - len(set(names))
            for name, text in markers.items():
                pdf = files[name]["output_name"]
                if files[name]["status"] != "COMPLETED" or pdf not in names:
                    lost.add(name)
                elif text not in pdf_pages(archive.read(pdf))[0]:
                    lost.add(name)  # a PDF, but not this document's
    else:
        lost |= set(markers)
    return Outcome(
        job_id, status, lost, duplicates, answer["server_errors"], answer["polls"], archive_url
    )


def wait_until(
    check: Callable[[], bool],
    what: str,
    logs: Callable[[], str],
    timeout: float = 120,
    interval: float = 0.2,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"{what} did not happen within {timeout} s:\n{logs()}")


@contextlib.contextmanager
def frozen_holding_claim(
    cluster: Cluster, name: str, job_id: str, *, outside_transaction: bool = False
) -> Iterator[tuple[str, str]]:
    """Freeze every process of worker host ``name`` (SIGSTOP) at a moment it holds a claimed
    file of the job, and yield that claim (file id, fencing token); its processes continue
    (SIGCONT) when the block ends, or are killed in it.

    A file IN_PROGRESS under the same claim before and after a second in which the other worker
    host recorded a file is this host's: the other converts one file at a time, and this one is
    frozen. Conversions take a fraction of a second, so a fault at a random moment often finds
    the host between two files (its last one recorded, the next not yet received), holding
    nothing to hand over. With ``outside_transaction`` the host also has no database
    transaction open: frozen inside one (recording a file, renewing its leases), its row locks
    would hold up every other writer of those rows for as long as it stays away."""
    host = cluster.hosts[name]
    (other,) = (cluster.hosts[one] for one in WORKER_CPUS if one != name)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        host.signal_all(signal.SIGSTOP)
        try:
            before = cluster.claims_in_progress(job_id)
            # Read after ``before``: the other host converts one file at a time, so once it
            # records a file after that look, no claim held at both looks can be its own.
            offset = other.log_size()
            time.sleep(1)
            held = before & cluster.claims_in_progress(job_id)
            other_recorded = conversions_recorded(other.log_since(offset)) > 0
            idle = not outside_transaction or cluster.open_transactions(name) == 0
            if held and other_recorded and idle:
                yield held.pop()
                return
        finally:
            host.signal_all(signal.SIGCONT)
        time.sleep(0.3)
    raise AssertionError(f"{name} never held a file:\n{cluster.logs(*WORKER_CPUS)}")


def conversions_recorded(text: str) -> int:
    """How many conversions a worker host's log says it recorded (``file.completed``)."""
    return sum(1 for line in text.splitlines() if '"event": "file.completed"' in line)


# -- scaling: one worker host against two, in turns, within one job ------------------------------

# Conversions per phase of the scaling measurement, whose phases take one worker host and two
# in turns. Short phases, many of them: the machine's other load comes and goes over seconds,
# and the more often the two kinds of phase take turns, the more alike it weighs on both.
SCALING_PHASE_FILES = 30
# The cluster's niceness during the scaling phases: ahead of whatever else runs on the machine
# (other test runs, at 0), so each worker host has its core, as the measurement assumes.
SCALING_NICENESS = -10
# The job's last files are left out of every phase: with fewer files waiting than the
# scheduler's window, a host may idle for want of work.
SCALING_TAIL = 10
# Conversions each host makes before the first phase starts: both hosts warm, their LibreOffice
# started and their first documents behind them.
SCALING_WARM_UP = 3


def scaling_phases(files: int) -> tuple[int, ...]:
    """The phases for ``files`` conversions, by how many worker hosts take them: two, one, two,
    ..., two (odd, so symmetric: a steady drift of the machine's speed weighs on both alike)."""
    count = max(3, files // SCALING_PHASE_FILES)
    count -= 1 - count % 2
    return tuple(2 if index % 2 == 0 else 1 for index in range(count))


def bench_batch(count: int, tag: str, pages: int = 2) -> tuple[bytes, dict[str, str]]:
    """A zip of ``count`` of make bench's documents (tests/bench/documents.py: tables, an image,
    non-Latin text; ``pages`` pages each) under folder ``tag``: entry name -> the text of its
    first page."""
    markers = {f"{tag}/doc-{i:05}.docx": marker(i, 1) for i in range(count)}
    return bench_zip(count, pages, folder=tag), markers


def log_times(host: Host, offset: int, event: str, job_id: str | None = None) -> list[datetime]:
    """When worker host ``host`` logged ``event`` (of the job ``job_id``, if given), by its own
    log from ``offset`` on, in order."""
    times = []
    for line in host.log_since(offset).splitlines():
        if f'"{event}"' in line and (job_id is None or job_id in line):
            record = json.loads(line)
            if record.get("event") == event and job_id in (None, record.get("job_id")):
                times.append(datetime.fromisoformat(record["timestamp"]))
    return sorted(times)


def finishes(host: Host, offset: int, job_id: str) -> list[datetime]:
    """When worker host ``host`` finished each of the job's conversions (``file.completed``)."""
    return log_times(host, offset, "file.completed", job_id)


@dataclass(frozen=True)
class ScalingWindow:
    """One phase's steady conversion rate: ``files`` conversions finished in ``seconds``,
    counted from the phase's first finish to its last, after the switch had taken effect."""

    hosts: int
    files: int
    seconds: float
    # A one-host phase: worker-2's conversions finished after it was told to stop (the one it
    # was running, at most); the phase is counted from the last of them.
    stragglers: int = 0
    # A two-host phase: how many of its conversions were worker-2's.
    second_host_files: int = 0


@dataclass
class ScalingFigure:
    windows: list[ScalingWindow]
    # Phases left out because a LibreOffice started in them (a recycle after
    # QUIRE_LIBREOFFICE_RESTART_AFTER conversions): its start, not the conversions, set their
    # pace. By how many hosts each had.
    skipped: list[int] = field(default_factory=list)

    def rate(self, hosts: int) -> float:
        """Conversions a second with ``hosts`` worker hosts, over all their phases."""
        mine = [window for window in self.windows if window.hosts == hosts]
        return sum(w.files for w in mine) / sum(w.seconds for w in mine)

    @property
    def ratio(self) -> float:
        return self.rate(2) / self.rate(1)


def scaling_window(
    hosts: int, start: datetime, end: datetime, first: list[datetime], second: list[datetime]
) -> ScalingWindow:
    """The steady part of a phase that ran from ``start`` to ``end``, from the finish times of
    worker-1 (``first``) and worker-2 (``second``). A one-host phase starts once worker-2's
    last conversion finished; a two-host phase once worker-2 finished its first (until then,
    worker-1 converted alone)."""
    seconds_in = [t for t in second if start <= t <= end]
    if hosts == 1:
        begin = max([start, *seconds_in])
        times = [t for t in first if begin < t <= end]
    else:
        assert seconds_in, f"worker-2 converted nothing from {start} to {end}"
        begin = max(start, seconds_in[0])
        times = sorted(t for t in first + second if begin <= t <= end)
    assert len(times) >= 10, f"{len(times)} conversions in a {hosts}-host phase: too few to count"
    return ScalingWindow(
        hosts,
        len(times) - 1,
        (times[-1] - times[0]).total_seconds(),
        stragglers=len(seconds_in) if hosts == 1 else 0,
        second_host_files=len(seconds_in) if hosts == 2 else 0,
    )


def completed_at_least(cluster: Cluster, job_id: str, count: int) -> bool:
    return cluster.file_counts(job_id)[1] >= count


def measure_scaling(
    cluster: Cluster, batch: bytes, documents: int, timeout: float = 600
) -> tuple[str, ScalingFigure]:
    """Submit ``batch`` and measure its conversion rate on one worker host and on two, in
    turns within the job (scaling_phases); return the job's id and the figure. The job is left
    to finish: the caller settles it.

    Measured so that only the conversions' own pace counts: from the workers' own finish times
    (their logs), once the whole batch is in the store (the ingest runs on a worker host's core)
    and each host has converted a few (LibreOffice started, warm), and before the job's tail and
    its archive, and without the phases in which a LibreOffice (re)started; with the cluster's
    processes ahead of the machine's other work (SCALING_NICENESS). Worker-2 is switched on and
    off by Celery's remote control, so it stays warm and registered between phases. Nothing
    polls the API meanwhile: this process reads two counters from the database four times a
    second."""
    offsets = {name: cluster.hosts[name].log_size() for name in WORKER_CPUS}

    def times(name: str) -> list[datetime]:
        return finishes(cluster.hosts[name], offsets[name], job_id)

    def logs() -> str:
        return cluster.logs(*WORKER_CPUS)

    job_id = submit(cluster, batch, api=0)
    wait_until(
        lambda: cluster.file_counts(job_id)[0] == documents,
        "the batch's ingest",
        logs,
        timeout=timeout,
    )
    wait_until(
        lambda: all(len(times(name)) >= SCALING_WARM_UP for name in WORKER_CPUS),
        "both worker hosts converting",
        logs,
        timeout=timeout,
    )
    done = cluster.file_counts(job_id)[1]
    left = documents - done - SCALING_TAIL
    sequence = scaling_phases(left)
    step = left // len(sequence)
    assert step >= 20, f"{documents} documents leave {step} a phase: too few to measure"
    phases: list[tuple[int, datetime, datetime]] = []
    converting = True
    cluster.set_priority(SCALING_NICENESS)
    try:
        for index, hosts in enumerate(sequence):
            if (hosts == 2) != converting:
                converting = hosts == 2
                cluster.set_converting("worker-2", converting)
            start = datetime.now(UTC)
            # Each phase ends at a count fixed beforehand: the conversions that finish while a
            # switch is under way do not push the later phases past the job's end.
            target = done + (index + 1) * step
            wait_until(
                functools.partial(completed_at_least, cluster, job_id, target),
                f"{step} conversions on {hosts} worker host(s)",
                logs,
                timeout=timeout,
                interval=0.25,
            )
            phases.append((hosts, start, datetime.now(UTC)))
    finally:
        cluster.set_priority(0)
        if not converting:
            cluster.set_converting("worker-2", True)
    first, second = times("worker-1"), times("worker-2")
    starts = [
        moment
        for name in WORKER_CPUS
        for moment in log_times(cluster.hosts[name], offsets[name], "libreoffice.started")
    ]
    figure = ScalingFigure([])
    for hosts, start, end in phases:
        if any(start <= moment <= end for moment in starts):
            figure.skipped.append(hosts)
        else:
            figure.windows.append(scaling_window(hosts, start, end, first, second))
    assert {window.hosts for window in figure.windows} == {1, 2}, figure
    return job_id, figure


if __name__ == "__main__":  # pragma: no cover - by hand: remove what a killed run left
    remove_network()
    sys.exit(0)
