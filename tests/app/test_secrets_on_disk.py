"""The generated signing key and the data directory are private to their owner from the
moment they exist (issue 12): whoever reads the key can sign download URLs and webhooks."""

from __future__ import annotations

import importlib.util
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from app.config import Settings, make_private_dir

ROOT = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 0: a file or folder is private only if it was created with a private mode."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_the_generated_key_is_0600_in_a_0700_folder_from_its_creation(
    tmp_path: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    modes_when_published: list[int] = []
    link = os.link

    def watching_link(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        # The key becomes visible under its name here: it must be private already.
        modes_when_published.append(mode(Path(source)))
        link(source, target)

    monkeypatch.setattr(os, "link", watching_link)
    key = Settings(data_dir=data_dir).resolved_secret_key()
    assert len(key) == 64
    assert modes_when_published == [0o600]
    assert mode(data_dir / "secret_key") == 0o600
    assert mode(data_dir) == 0o700
    assert [p.name for p in data_dir.iterdir()] == ["secret_key"]  # no temporary left
    assert Settings(data_dir=data_dir).resolved_secret_key() == key  # stable


def test_a_key_left_readable_by_an_older_release_is_made_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "secret_key").write_text("a" * 64)
    (data_dir / "secret_key").chmod(0o644)
    assert Settings(data_dir=data_dir).resolved_secret_key() == "a" * 64
    assert mode(data_dir / "secret_key") == 0o600


def test_private_folders_are_created_and_tightened(tmp_path: Path, open_umask: None) -> None:
    make_private_dir(tmp_path / "a" / "b")
    assert mode(tmp_path / "a" / "b") == 0o700
    (tmp_path / "old").mkdir(mode=0o755)
    make_private_dir(tmp_path / "old")
    assert mode(tmp_path / "old") == 0o700


def load_runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_embedded", ROOT / "infra/run_embedded.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Stop(Exception):
    pass


def test_make_run_creates_its_data_directory_0700(
    tmp_path: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_embedded = load_runner()
    data_dir = tmp_path / "quire-data"
    monkeypatch.setenv("QUIRE_DATA_DIR", str(data_dir))
    runner = run_embedded.Runner()

    def stop_here() -> None:  # nothing is started: only the folder is under test
        raise Stop

    monkeypatch.setattr(runner, "start_redis", stop_here)
    with pytest.raises(Stop):
        runner.start()
    assert mode(data_dir) == 0o700
