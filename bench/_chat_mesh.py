"""A throwaway mesh for the chat_svc benchmarks: store, real agent_svc, LiveKit stand-in, chat_svc."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.conftest import Store
from tests.support.mesh import start_test_mesh


@asynccontextmanager
async def chat_mesh() -> AsyncIterator[str]:
    """Yields the address of a serving chat_svc (calling a real agent_svc) on its own embedded store."""
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as folder:
        base = Path(folder)
        store = Store(base / "store", base / "store.log")
        store.start()
        try:
            mesh = start_test_mesh(store, base / "mesh", database="bench", with_chat=True, with_envoy=False)
            try:
                assert mesh.chat_addr is not None
                yield mesh.chat_addr
            finally:
                mesh.close()
        finally:
            store.stop()
