"""Fixtures shared by every test tier. Area-specific fixtures live in each folder's conftest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devrun.ports import free_port
from devrun.processes import ManagedProcess
from devrun.store import start_store
from tests.support.identity import JWT_SECRET
from tests.support.mesh import mesh, mesh_factory  # noqa: F401 - shared mesh fixtures for every folder


class Store:
    """A running nx-27017 process on an ephemeral port."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.host = "127.0.0.1"
        self.port = free_port()
        self.process: ManagedProcess | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/?serverSelectionTimeoutMS=5000"

    def start(self) -> None:
        self.process = start_store(self.data_dir, self.port, self.log_path, self.host)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def restart(self) -> None:
        """Stops and starts the store on the same port and data (for fault tests)."""
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One embedded store for the session; tests isolate themselves by database name."""
    base = tmp_path_factory.mktemp("store")
    running = Store(base / "data", base / "store.log")
    running.start()
    yield running
    running.stop()


@pytest.fixture
def database_name(request: pytest.FixtureRequest) -> str:
    """A database name unique to the test, so tests sharing the store never see each other's data."""
    safe = "".join(ch if ch.isalnum() else "_" for ch in request.node.name)[:40]
    return f"t_{safe}_{id(request) % 100000}"


@pytest.fixture(scope="session")
def jwt_secret() -> str:
    return JWT_SECRET
