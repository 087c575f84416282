"""A throwaway mesh for the chat_svc benchmarks: store, the LiveKit server, real agent_svc, chat_svc."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from bench.harness import BENCH_JWT_SECRET
from bench.identity import BENCH_SERVICE_JWT_SECRET
from devrun.mesh import start_mesh
from devrun.store import EmbeddedStore


@asynccontextmanager
async def chat_mesh() -> AsyncIterator[str]:
    """Yields the address of a serving chat_svc (calling a real agent_svc) on its own embedded store."""
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as folder:
        base = Path(folder)
        store = EmbeddedStore(base / "store", base / "store.log")
        store.start()
        try:
            mesh = start_mesh(
                store,
                base / "mesh",
                jwt_secret=BENCH_JWT_SECRET,
                service_jwt_secret=BENCH_SERVICE_JWT_SECRET,
                database="bench",
                with_chat=True,
                with_envoy=False,
            )
            try:
                assert mesh.chat_addr is not None
                yield mesh.chat_addr
            finally:
                mesh.close()
        finally:
            store.stop()
