"""Fixtures shared by every test tier. Area-specific fixtures live in each folder's conftest."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devrun.store import EmbeddedStore
from tests.support.identity import JWT_SECRET
from tests.support.mesh import mesh, mesh_factory  # noqa: F401 - shared mesh fixtures for every folder

# The store every test tier uses; benchmarks start the same class.
Store = EmbeddedStore


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
