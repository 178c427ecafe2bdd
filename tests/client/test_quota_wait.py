"""A full quota (429 with Retry-After) in the SDK and the ``quire`` command: ``TooManyRequests``
carries the wait; ``submit`` waits it out and sends again, within a bound; ``quire convert``
says that it waits. Against ``FakeQuire(max_active_jobs=...)``, whose held job ends during the
client's wait (the client's ``sleep`` is injected: nothing here waits for real)."""

from __future__ import annotations

import functools
from pathlib import Path

import httpx
import pytest

from quire_client import Client, JobStatus, TooManyRequests
from quire_client.cli import commands
from quire_client.cli.errors import EXIT_ERROR, EXIT_OK
from quire_client.client import QUOTA_WAIT
from quire_client.testing import STORE, FakeQuire
from tests.docx_factory import make_docx

SERVER = "http://quire.test"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    root.mkdir()
    (root / "a.docx").write_bytes(make_docx("a"))
    (root / "b.docx").write_bytes(make_docx("b"))
    return root


class Sleeper:
    """The client's ``sleep``: records each wait and, at the first, ends the fake's held job
    (as a server's running job ends while the client waits)."""

    def __init__(self, fake: FakeQuire, held: str | None = None) -> None:
        self.fake = fake
        self.held = held
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.held is not None:
            self.fake.finish(self.held)
            self.fake.hold = False
            self.held = None


def job_posts(fake: FakeQuire) -> list[httpx.Request]:
    return [r for r in fake.requests if r.method == "POST" and r.url.path == "/api/v1/jobs"]


def held_job(fake: FakeQuire, folder: Path) -> str:
    with Client(SERVER, transport=fake.transport()) as quire:
        return quire.submit(folder).job_id


@pytest.mark.parametrize("direct_uploads", [True, False], ids=["direct", "multipart"])
def test_submit_waits_for_the_quota_as_the_server_says_and_sends_again(
    folder: Path, direct_uploads: bool
) -> None:
    fake = FakeQuire(hold=True, max_active_jobs=1, retry_after=7, direct_uploads=direct_uploads)
    held = held_job(fake, folder)
    sleeper = Sleeper(fake, held)
    shown: list[tuple[TooManyRequests, float]] = []
    with Client(SERVER, transport=fake.transport(), sleep=sleeper) as quire:
        submitted = quire.submit(
            folder, quota_wait=60, on_quota_wait=lambda r, s: shown.append((r, s))
        )
        assert quire.job(submitted.job_id).status is JobStatus.COMPLETED
    assert sleeper.waits == [7.0]
    [(refusal, seconds)] = shown
    assert seconds == 7.0 and refusal.retry_after == 7.0
    assert refusal.status == 429 and refusal.code == "quota_exceeded"
    assert refusal.message.startswith("Quota reached: 1 active job of 1 allowed")
    first, second = job_posts(fake)[1:]  # the held job's, then this one's two
    if direct_uploads:
        # The zip was PUT once; only the job's creation was sent again, with one key.
        puts = [r for r in fake.requests if r.url.path.startswith(STORE)]
        assert len(puts) == 2  # the held job's and this one's
        assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
        assert first.read() == second.read()
    else:
        assert len(second.read()) == len(first.read()) > 0  # the whole body, sent again


def test_the_wait_is_bounded_and_the_last_refusal_is_raised(folder: Path) -> None:
    fake = FakeQuire(hold=True, max_active_jobs=1, retry_after=5)
    held_job(fake, folder)
    sleeper = Sleeper(fake)  # the held job never ends
    with Client(SERVER, transport=fake.transport(), sleep=sleeper) as quire:
        with pytest.raises(TooManyRequests, match="Quota reached") as raised:
            quire.submit(folder, quota_wait=12)
        assert raised.value.retry_after == 5.0
        assert sleeper.waits == [5.0, 5.0, 2.0]  # 12 s in all, the last wait cut short
        posts = len(job_posts(fake))
        with pytest.raises(TooManyRequests):
            quire.submit(folder)  # by default the SDK does not wait
        assert sleeper.waits == [5.0, 5.0, 2.0] and len(job_posts(fake)) == posts + 1


def test_a_429_without_retry_after_waits_the_clients_own_delay(folder: Path) -> None:
    fake = FakeQuire(hold=True, max_active_jobs=1, retry_after=None)
    sleeper = Sleeper(fake, held_job(fake, folder))
    with Client(SERVER, transport=fake.transport(), sleep=sleeper) as quire:
        assert quire.submit(folder, quota_wait=60).file_count == 2
        assert sleeper.waits == [QUOTA_WAIT]
        # Only the job's creation waits for a quota: a refused upload offer is raised at once.
        fake.refuse_next(429, "Too many uploads.", retry_after=3)
        with pytest.raises(TooManyRequests, match="Too many uploads") as raised:
            quire.submit(folder, quota_wait=60)
        assert raised.value.retry_after == 3.0 and sleeper.waits == [QUOTA_WAIT]


def cli(fake: FakeQuire, sleeper: Sleeper, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        commands, "Client", functools.partial(Client, transport=fake.transport(), sleep=sleeper)
    )
    monkeypatch.delenv("QUIRE_SERVER", raising=False)
    monkeypatch.delenv("QUIRE_API_KEY", raising=False)


def test_quire_convert_shows_that_it_waits_for_the_quota(
    folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = FakeQuire(hold=True, max_active_jobs=1, retry_after=15)
    sleeper = Sleeper(fake, held_job(fake, folder))
    cli(fake, sleeper, monkeypatch)
    out = tmp_path / "out"
    assert commands.main(["convert", str(folder), "-o", f"{out}/"]) == EXIT_OK
    captured = capsys.readouterr()
    assert "Quota reached: 1 active job of 1 allowed per API key; retrying in 15 s…" in captured.err
    assert sleeper.waits == [15.0]
    assert sorted(p.name for p in out.iterdir()) == ["a.pdf", "b.pdf"]


def test_quire_convert_gives_up_after_quota_wait(
    folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = FakeQuire(hold=True, max_active_jobs=1, retry_after=15)
    held_job(fake, folder)
    sleeper = Sleeper(fake)
    cli(fake, sleeper, monkeypatch)
    arguments = ["convert", str(folder), "-o", f"{tmp_path}/out/", "--quota-wait", "20"]
    assert commands.main(arguments) == EXIT_ERROR
    err = capsys.readouterr().err
    assert sleeper.waits == [15.0, 5.0]
    assert "retrying in 15 s…" in err and "retrying in 5 s…" in err
    assert "quire: error: 429 Too Many Requests: Quota reached" in err
    assert "--quota-wait" in err
